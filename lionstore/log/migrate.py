"""Schema management: Alembic driven from code, and the checks made when a file is opened.

The Alembic scripts live in the top-level ``migrations/`` folder of the checkout
(beside ``lionstore/`` and ``alembic.ini``). The wheel ships them as
``lionstore/_migrations``; :func:`script_location` finds them in either place, so a
checkout, an editable install and a plain install migrate the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import threading
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from lionstore.errors import (
    CorruptDatabaseError,
    NotALionstoreDatabaseError,
    SchemaOutdatedError,
    SchemaTooNewError,
    StoreError,
    StorePathError,
)
from lionstore.log.schema import TABLE_NAMES, VERSION_TABLE

__all__ = [
    "FileState",
    "alembic_config",
    "check_migratable",
    "create_sqlite",
    "current_revision",
    "file_state",
    "downgrade",
    "head_revision",
    "inspect_postgres",
    "inspect_sqlite_file",
    "is_url",
    "make_async_engine",
    "readonly_uri",
    "require_async_url",
    "script_location",
    "sqlite_path",
    "to_url",
    "upgrade",
]

SQLITE_HEADER = b"SQLite format 3\x00"

# Alembic's command layer keeps module-level state; never run two at once. Within one
# event loop an asyncio.Lock queues the coroutines: a thread lock taken inside
# ``run_sync`` (on the loop's own thread) while another coroutine of the same loop holds
# it across its awaits would block the loop for good. The thread lock then only keeps
# out other threads' loops, which make progress on their own.
_ALEMBIC_LOCK = threading.Lock()
_LOOP_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def _alembic_lock() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    lock = _LOOP_LOCKS.get(loop)
    if lock is None:
        lock = _LOOP_LOCKS[loop] = asyncio.Lock()
    async with lock:
        with _ALEMBIC_LOCK:
            yield


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and "://" in target


def to_url(target: str | Path) -> str:
    """A SQLAlchemy async URL for a path or URL."""
    if is_url(target):
        url = str(target)
        if url.startswith("sqlite://"):
            url = "sqlite+aiosqlite://" + url[len("sqlite://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+asyncpg://" + url[len("postgresql://") :]
        return url
    return f"sqlite+aiosqlite:///{Path(target).resolve()}"


def sqlite_path(target: str | Path) -> Path | None:
    """The file behind a path or SQLite URL; None for other databases."""
    if not is_url(target):
        return Path(target)
    url = str(target)
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            return Path(url[len(prefix) :].split("?", 1)[0])
    return None


def make_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; on SQLite with explicit ``BEGIN IMMEDIATE`` transactions,
    WAL and foreign keys on (shared/reference/ecosystem-notes.md section 1.2)."""
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@functools.cache
def script_location() -> str:
    """The folder holding lionstore's Alembic environment and versions.

    An installed wheel has them in ``lionstore/_migrations``; a checkout (or an
    editable install of one) in ``migrations/`` beside ``lionstore/`` and
    ``alembic.ini``. The wheel's copy wins: a folder named ``migrations`` beside an
    installed package in site-packages belongs to something else.
    """
    package = Path(__file__).resolve().parent.parent
    shipped = package / "_migrations"
    if (shipped / "env.py").is_file():
        return str(shipped)
    checkout = package.parent
    if (checkout / "alembic.ini").is_file() and (checkout / "migrations" / "env.py").is_file():
        return str(checkout / "migrations")
    raise StoreError(
        f"lionstore's migration scripts are missing (looked in {shipped} and "
        f"{checkout / 'migrations'}); reinstall lionstore"
    )


def alembic_config() -> Config:
    """An Alembic config for lionstore's scripts, with no ini file and no URL."""
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    cfg.set_main_option("path_separator", "os")
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def head_revision() -> str:
    heads = _script().get_heads()
    if len(heads) != 1:
        raise StoreError(f"lionstore's migrations have {len(heads)} heads; expected one")
    return heads[0]


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this lionstore knows (read once: the scripts ship with the package)."""
    return frozenset(rev.revision for rev in _script().walk_revisions())


def _run_command(connection: Connection, name: str, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Processes opening a new database at once migrate it one after another; the
        # later ones then find it at head and do nothing.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7510547)")
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    getattr(command, name)(cfg, revision)  # the caller holds _alembic_lock()


async def _migrate(target: str | Path, name: str, revision: str) -> None:
    async with _alembic_lock():
        engine = make_async_engine(to_url(target))
        try:
            async with engine.connect() as conn:
                await conn.run_sync(_run_command, name, revision)
                await conn.commit()
        finally:
            await engine.dispose()


async def upgrade(target: str | Path, revision: str = "head") -> None:
    """Bring the database at ``target`` to ``revision`` (creating the file if needed)."""
    await _migrate(target, "upgrade", revision)


async def create_sqlite(path: Path) -> bool:
    """Create a lionstore database at ``path`` whole, or not at all.

    The schema is built in a temporary file beside ``path`` and hard-linked into
    place, so a process opening ``path`` at the same moment sees no file or a
    complete one, never the empty file SQLite starts with (which it would have to
    refuse: lionstore does not take over files it did not make). Returns False
    when another process created ``path`` first; that file is left alone.
    Raises StorePathError when no file can be created in the directory.
    """
    parent = path.parent if str(path.parent) else Path(".")
    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:12]}.new"
    try:  # also tells a read-only directory apart, even for root
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as exc:
        raise StorePathError(
            f"{path}: cannot create a file in {parent} ({exc.strerror or exc})"
        ) from None
    try:
        await upgrade(tmp)
        conn = sqlite3.connect(tmp)
        try:  # everything into the main file before it is linked
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create in place
            await upgrade(path)
        return True
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{tmp}{suffix}")


async def downgrade(target: str | Path, revision: str) -> None:
    """Take the database at ``target`` back to ``revision`` (``"base"``: no schema)."""
    await _migrate(target, "downgrade", revision)


async def current_revision(target: str | Path) -> str | None:
    """The revision the database is at (None: no lionstore schema)."""
    path = sqlite_path(target)
    if path is not None:
        return inspect_sqlite_file(path).revision
    from alembic.runtime.migration import MigrationContext

    engine = make_async_engine(to_url(target))
    try:
        async with engine.connect() as conn:

            def _current(sync_conn: Connection) -> str | None:
                ctx = MigrationContext.configure(sync_conn, opts={"version_table": VERSION_TABLE})
                return ctx.get_current_revision()

            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


#: Older revisions whose files this lionstore reads as they are, without upgrading:
#: what changed since is only how a writer keeps the file, not what a reader finds
#: in it. 0002 to 0003: the SQLite head row became a high-water mark, which an
#: exact 0002 head row is.
READABLE_AS_IS = frozenset({"0002"})


@dataclass(frozen=True)
class FileState:
    """What is at a path, found without writing anything."""

    path: Path | str  # a file, or a server database's URL (password hidden)
    exists: bool
    revision: str | None
    status: str  # "new" | "current" | "outdated" | "newer"

    def require_current(self, *, upgrade_allowed: bool, reading: bool = False) -> None:
        """Raise unless the file may be opened as it is: current, upgradable when
        ``upgrade_allowed``, or only ``reading`` a revision in READABLE_AS_IS."""
        if reading and self.status == "outdated" and self.revision in READABLE_AS_IS:
            return
        if self.status == "outdated" and not upgrade_allowed:
            raise SchemaOutdatedError(
                f"{self.path}: written by an older lionstore schema ({self.revision}); "
                f"run `lionstore db upgrade {self.path}` or open with upgrade=True"
            )
        if self.status == "newer":
            raise SchemaTooNewError(
                f"{self.path}: written by a newer lionstore (schema {self.revision}); "
                "upgrade lionstore to open it"
            )


def inspect_sqlite_file(path: Path) -> FileState:
    """Classify the file at ``path`` without changing a byte of it.

    Raises StorePathError, NotALionstoreDatabaseError or CorruptDatabaseError.
    """
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise StorePathError(f"{path}: directory {parent} does not exist")
        return FileState(path, False, None, "new")
    if path.is_dir():
        raise StorePathError(f"{path}: is a directory, not a database file")
    with path.open("rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if len(header) == 0:
        raise NotALionstoreDatabaseError(
            f"{path}: the file is empty; lionstore creates its own files (remove it first)"
        )
    if header != SQLITE_HEADER:
        raise NotALionstoreDatabaseError(f"{path}: not a SQLite database")
    try:
        uri, _ = readonly_uri(path)
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise CorruptDatabaseError(f"{path}: cannot be opened ({exc})") from exc
    try:
        conn.execute("PRAGMA query_only=ON")
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        revision = None
        if VERSION_TABLE in tables:
            row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
            revision = row[0] if row else None
        check = conn.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        from lionstore.log.sqlite import io_error

        raise io_error(str(path), str(exc)) or CorruptDatabaseError(
            f"{path}: the database file is damaged ({exc})"
        ) from exc
    finally:
        conn.close()
    if check is None or check[0] != "ok":
        raise CorruptDatabaseError(f"{path}: integrity check failed ({check and check[0]})")
    return _classify(path, tables, revision, f"{path}: a SQLite database")


def _classify(where: Path | str, tables: set[str], revision: str | None, what: str) -> FileState:
    """The state of an existing database from its tables and recorded revision."""
    if (revision is None and tables - {VERSION_TABLE}) or (
        revision is not None and not TABLE_NAMES & tables and revision not in known_revisions()
    ):
        raise NotALionstoreDatabaseError(f"{what} that lionstore did not create")
    if revision is None:
        return FileState(where, True, None, "new")
    if revision == head_revision():
        return FileState(where, True, revision, "current")
    if revision in known_revisions():
        return FileState(where, True, revision, "outdated")
    return FileState(where, True, revision, "newer")


async def inspect_postgres(url: str, shown: str) -> FileState:
    """Classify the PostgreSQL database at ``url`` (its current schema) without writing.

    Raises StoreError when the server cannot be reached, NotALionstoreDatabaseError
    for a schema holding other tables and no lionstore version.
    """
    import asyncpg

    from lionstore.log.postgres import asyncpg_dsn

    try:
        conn = await asyncpg.connect(asyncpg_dsn(url))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreError(f"{shown}: cannot connect ({exc})") from exc
    try:
        tables = {
            row[0]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        revision = None
        if VERSION_TABLE in tables:
            revision = await conn.fetchval(f"SELECT version_num FROM {VERSION_TABLE}")
    finally:
        await conn.close()
    return _classify(shown, tables, revision, f"{shown}: a PostgreSQL database (schema)")


# -- the ``alembic`` command from a checkout ---------------------------------------------

_ASYNC_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


def require_async_url(url: str) -> None:
    """Refuse a synchronous driver URL (``sqlite:///x.db``), naming the URL to use.

    lionstore runs its migrations through asyncio drivers (aiosqlite, asyncpg).
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme in _ASYNC_SCHEMES:
        instead = f"{_ASYNC_SCHEMES[scheme]}://{rest}"
        with contextlib.suppress(Exception):  # never echo a password
            from sqlalchemy.engine import make_url

            instead = make_url(instead).render_as_string(hide_password=True)
        raise StoreError(
            f"{scheme}:// uses a synchronous driver; lionstore migrates through asyncio "
            f"drivers: use {instead}"
        )


def check_migratable(url: str) -> None:
    """Refuse, before anything is written, what ``lionstore db upgrade`` refuses: a
    database lionstore did not create, a damaged file, one written by a newer
    lionstore, a file in a missing directory. A missing file or an empty database is
    fine (the upgrade creates the schema).

    Raises the :class:`StoreError` subclass ``lionstore.open`` would raise.
    """
    require_async_url(url)
    path = sqlite_path(url)
    if path is not None:
        state = inspect_sqlite_file(path)
    elif url.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        shown = make_url(url).render_as_string(hide_password=True)
        state = asyncio.run(inspect_postgres(url, shown))
    else:
        raise StoreError(f"{url.split('://', 1)[0]}://: lionstore runs on SQLite and PostgreSQL")
    if state.status == "newer":
        state.require_current(upgrade_allowed=True)


# -- reading a file one may not write ------------------------------------------------------


def readonly_uri(path: Path) -> tuple[str, bool]:
    """How to open ``path`` for reading without writing a byte, even where no file may
    be created: the SQLite URI and whether it is ``immutable``.

    In WAL mode a reader needs the ``-shm`` index (and the ``-wal`` file) of the
    database. When both exist, ``mode=ro`` reads them (SQLite maps a ``-shm`` it may
    not write read-only). When they do not, ``mode=ro`` would create them: that is
    done only for a file of our own in a directory we may write, so that no file is
    left behind that the owner cannot write (another user's ``-shm`` breaks the
    owner's next write). Otherwise, with no ``-wal``, everything committed is in the
    main file and it is read ``immutable`` (no lock, no side file); nothing then tells
    SQLite about a writer that starts, so the reader compares :func:`file_state`
    before each read and opens again when it changed. A ``-wal`` without its
    ``-shm`` that we may not create holds committed records SQLite cannot read
    without building the index: StorePathError says so.
    """
    base = path.resolve().as_uri()
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    has_wal, has_shm = wal.exists(), shm.exists()
    if has_wal and has_shm:
        return f"{base}?mode=ro", False
    parent = path.parent if str(path.parent) else Path(".")
    try:
        ours = path.stat().st_uid == os.geteuid()
    except OSError:
        ours = False
    if ours and os.access(parent, os.W_OK):
        return f"{base}?mode=ro", False
    if has_wal and wal.stat().st_size > 0:
        raise StorePathError(
            f"{path}: its write-ahead log {wal.name} may hold committed records, which SQLite "
            f"cannot read without creating {shm.name} in {parent}; read it as the owner "
            "of the file, or after the owner has opened it once"
        )
    return f"{base}?mode=ro&immutable=1", True


def file_state(path: Path) -> tuple[bool, int, int, int]:
    """What tells a reader of an ``immutable`` file that it changed: whether a ``-wal``
    exists (a writer has the file open) and the main file's inode, size and mtime."""
    try:
        st = path.stat()
    except OSError:
        return (True, 0, 0, 0)
    return (Path(f"{path}-wal").exists(), st.st_ino, st.st_size, st.st_mtime_ns)
