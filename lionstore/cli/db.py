"""``lionstore db upgrade|check|current``: the schema of a database file.

The functions here are the library behind the commands: :func:`inspect_database`
classifies a target without writing anything, :func:`upgrade_database` brings it to
a revision. Both take a file path or a SQLAlchemy URL.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.util import CommandError

from lionstore.cli._output import error_line, print_json_line
from lionstore.errors import (
    CorruptDatabaseError,
    LionstoreError,
    NotALionstoreDatabaseError,
    SchemaTooNewError,
    StoreError,
    StorePathError,
)
from lionstore.log import migrate

__all__ = [
    "DatabaseStatus",
    "inspect_database",
    "register",
    "upgrade_database",
]

#: Every state :func:`inspect_database` reports. Only ``"current"`` is usable as is;
#: ``"missing"``, ``"empty"`` and ``"outdated"`` are fixed by ``lionstore db upgrade``.
STATES = ("current", "outdated", "newer", "empty", "missing", "foreign", "corrupt", "unusable")


@dataclass(frozen=True)
class DatabaseStatus:
    """What is at a target, schema-wise, found without writing anything."""

    target: str
    state: str
    revision: str | None
    head: str
    reason: str | None = None
    error: LionstoreError | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """True when the target is a lionstore database at this lionstore's head."""
        return self.state == "current"

    @property
    def is_head(self) -> bool:
        """True when the schema revision is this lionstore's head revision."""
        return self.revision is not None and self.revision == self.head

    def to_json_dict(self) -> dict[str, Any]:
        """The status as ``--json`` prints it."""
        return {
            "target": self.target,
            "ok": self.ok,
            "state": self.state,
            "revision": self.revision,
            "head": self.head,
            "is_head": self.is_head,
            "reason": self.reason,
        }


def display_target(target: str) -> str:
    """``target`` as shown to people: a URL's password is hidden."""
    if not migrate.is_url(target):
        return target
    try:
        from sqlalchemy.engine import make_url

        return make_url(target).render_as_string(hide_password=True)
    except Exception:
        return target


async def inspect_database(target: str | os.PathLike[str]) -> DatabaseStatus:
    """Classify ``target`` (a path or URL) without changing a byte of it.

    Never raises for what it finds: a foreign, damaged or unreachable database is a
    status with a ``reason`` (and the ``error`` lionstore would raise on opening it).
    """
    target = os.fspath(target)
    head = migrate.head_revision()
    shown = display_target(target)
    path = migrate.sqlite_path(target)
    if path is None:
        return await _inspect_server(target, shown, head)
    try:
        state = migrate.inspect_sqlite_file(path)
    except NotALionstoreDatabaseError as exc:
        return DatabaseStatus(shown, "foreign", None, head, str(exc), exc)
    except CorruptDatabaseError as exc:
        return DatabaseStatus(shown, "corrupt", None, head, str(exc), exc)
    except StorePathError as exc:
        return DatabaseStatus(shown, "unusable", None, head, str(exc), exc)
    upgrade_hint = f"run `lionstore db upgrade {target}`"
    if state.status == "current":
        return DatabaseStatus(shown, "current", state.revision, head)
    if state.status == "outdated":
        reason = (
            f"{shown}: schema {state.revision} is older than this lionstore's {head}; "
            f"{upgrade_hint}"
        )
        return DatabaseStatus(shown, "outdated", state.revision, head, reason)
    if state.status == "newer":
        reason = (
            f"{shown}: schema {state.revision} was written by a newer lionstore "
            f"(this one knows up to {head}); upgrade lionstore to use it"
        )
        return DatabaseStatus(
            shown, "newer", state.revision, head, reason, SchemaTooNewError(reason)
        )
    if state.exists:
        reason = f"{shown}: an empty SQLite database without the lionstore schema; {upgrade_hint}"
        return DatabaseStatus(shown, "empty", None, head, reason)
    reason = (
        f"{shown}: no such file; create a lionstore database with `lionstore db upgrade {target}`"
    )
    return DatabaseStatus(shown, "missing", None, head, reason, StorePathError(reason))


async def _inspect_server(target: str, shown: str, head: str) -> DatabaseStatus:
    try:
        if target.startswith("postgresql"):
            revision = (await migrate.inspect_postgres(target, shown)).revision
        else:
            revision = await migrate.current_revision(target)
    except NotALionstoreDatabaseError as exc:
        return DatabaseStatus(shown, "foreign", None, head, str(exc), exc)
    except Exception as exc:
        reason = f"{shown}: cannot read the schema version ({exc})"
        return DatabaseStatus(shown, "unusable", None, head, reason, StoreError(reason))
    if revision is None:
        reason = f"{shown}: no lionstore schema; run `lionstore db upgrade {shown}`"
        return DatabaseStatus(shown, "empty", None, head, reason)
    if revision == head:
        return DatabaseStatus(shown, "current", revision, head)
    if revision in migrate.known_revisions():
        reason = f"{shown}: schema {revision} is older than {head}; run `lionstore db upgrade`"
        return DatabaseStatus(shown, "outdated", revision, head, reason)
    reason = f"{shown}: schema {revision} was written by a newer lionstore (head here: {head})"
    return DatabaseStatus(shown, "newer", revision, head, reason, SchemaTooNewError(reason))


async def upgrade_database(
    target: str | os.PathLike[str], revision: str = "head"
) -> tuple[DatabaseStatus, DatabaseStatus]:
    """Bring ``target`` to ``revision`` (default: head), creating a missing file.

    Refuses, without writing anything, a database lionstore did not create, a damaged
    one, one written by a newer lionstore, or a file or directory it cannot write.
    Returns the status before and after.
    """
    target = os.fspath(target)
    before = await inspect_database(target)
    if before.state in ("foreign", "corrupt", "unusable", "newer"):
        raise before.error or StoreError(before.reason or before.state)
    if before.state == "current" and revision in ("head", before.head):
        return before, before
    if revision not in ("head", "heads") and revision not in migrate.known_revisions():
        known = ", ".join(sorted(migrate.known_revisions()))
        raise StoreError(f"unknown schema revision {revision!r} (known: head, {known})")
    path = migrate.sqlite_path(target)
    if path is not None:
        _require_writable(path)
    try:
        await migrate.upgrade(target, revision)
    except CommandError as exc:
        raise StoreError(f"{before.target}: cannot upgrade to {revision!r}: {exc}") from exc
    return before, await inspect_database(target)


def _require_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise StorePathError(f"{path}: the file is read-only")
    elif not os.access(parent, os.W_OK):
        raise StorePathError(f"{path}: directory {parent} is not writable")


# -- the commands -----------------------------------------------------------------------


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``db`` and its subcommands to the ``lionstore`` parser."""
    db = commands.add_parser(
        "db",
        help="create, upgrade and check database schemas",
        description="Create, upgrade and check the schema of a lionstore database.",
        parents=[common],
    )
    db.set_defaults(group_parser=db)
    sub = db.add_subparsers(title="commands", metavar="COMMAND")

    up = sub.add_parser(
        "upgrade",
        help="create the schema or bring it to the newest revision",
        description=(
            "Bring the database at TARGET to REVISION (default: head), creating the file "
            "if it does not exist. Refuses databases lionstore did not create."
        ),
        parents=[common],
    )
    up.add_argument("target", metavar="TARGET", help="a SQLite file path or a SQLAlchemy URL")
    up.add_argument("--revision", default="head", metavar="REV", help="target revision (head)")
    up.set_defaults(handler=_upgrade_command)

    check = sub.add_parser(
        "check",
        help="exit 0 if TARGET is a lionstore database at head",
        description=(
            "Exit 0 if TARGET is a lionstore database at this lionstore's head revision; "
            "otherwise print the reason and exit 1. Never writes."
        ),
        parents=[common],
    )
    check.add_argument("target", metavar="TARGET", help="a SQLite file path or a SQLAlchemy URL")
    check.add_argument("--json", action="store_true", help="print the status as JSON")
    check.set_defaults(handler=_check_command)

    current = sub.add_parser(
        "current",
        help="print the schema revision and whether it is head",
        description="Print the schema revision of TARGET and whether it is head. Never writes.",
        parents=[common],
    )
    current.add_argument("target", metavar="TARGET", help="a SQLite file path or a SQLAlchemy URL")
    current.add_argument("--json", action="store_true", help="print the status as JSON")
    current.set_defaults(handler=_current_command)


async def _upgrade_command(args: argparse.Namespace) -> int:
    before, after = await upgrade_database(args.target, args.revision)
    if before.revision == after.revision and before.state == after.state:
        print(f"{after.target}: already at {_describe_revision(after)}; nothing to do")
    elif before.state == "missing":
        print(f"{after.target}: created a lionstore database at {_describe_revision(after)}")
    else:
        print(
            f"{after.target}: upgraded {before.revision or 'empty'} -> {_describe_revision(after)}"
        )
    return 0


async def _check_command(args: argparse.Namespace) -> int:
    status = await inspect_database(args.target)
    if args.json:
        print_json_line(status.to_json_dict())
    elif status.ok:
        print(f"{status.target}: ok, a lionstore database at head ({status.revision})")
    else:
        error_line(status.reason or status.state)
    return 0 if status.ok else 1


async def _current_command(args: argparse.Namespace) -> int:
    status = await inspect_database(args.target)
    readable = status.state in ("current", "outdated", "newer", "empty")
    if args.json:
        print_json_line(status.to_json_dict())
    elif readable:
        print(_describe_revision(status))
    else:
        error_line(status.reason or status.state)
    return 0 if readable else 1


def _describe_revision(status: DatabaseStatus) -> str:
    if status.state == "current":
        return f"{status.revision} (head)"
    if status.state == "outdated":
        return f"{status.revision} (outdated; head is {status.head})"
    if status.state == "newer":
        return f"{status.revision} (newer than this lionstore's head {status.head})"
    return f"none (no lionstore schema; head is {status.head})"
