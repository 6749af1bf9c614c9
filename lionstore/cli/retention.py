"""``lionstore archive``, ``archive-verify`` and ``delete-run``: keep a finished run
in a file of its own, check it, and remove it from the database."""

from __future__ import annotations

import argparse
from typing import Any

from lionstore.cli._common import describe_run, run_ref
from lionstore.cli._output import output_stream, print_json_line
from lionstore.replay.retention import archive_run, delete_run, verify_archive

__all__ = ["register"]


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``archive``, ``archive-verify`` and ``delete-run`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "archive",
        help="write a run to a self-contained, verifiable JSON lines file",
        description=(
            "Write run R to FILE: a header with the run, then every record as `export` "
            "writes it plus `recorded_at_us` and `raw` (the stored data the digest covers). "
            "`lionstore archive-verify FILE` checks it without the database. Read-only."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a SQLite file path or a PostgreSQL URL")
    parser.add_argument("--run", type=run_ref, metavar="R", required=True, help="the run")
    parser.add_argument("--to", metavar="FILE", required=True, help="the archive to write")
    parser.set_defaults(handler=_archive_command)

    check = commands.add_parser(
        "archive-verify",
        help="check an archive's digest chain",
        description="Recompute the digest chain of an archive written by `lionstore archive`.",
        parents=[common],
    )
    check.add_argument("file", metavar="FILE", help="an archive")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.set_defaults(handler=_verify_command)

    delete = commands.add_parser(
        "delete-run",
        help="remove a finished run from a database",
        description=(
            "Delete run R (its records, streams and checkpoints) in one transaction. Refuses "
            "a run with events not finished or mail not delivered unless --force. Positions "
            "are never reused: the log keeps a gap, and every other run still verifies."
        ),
        parents=[common],
    )
    delete.add_argument("path", metavar="PATH", help="a SQLite file path or a PostgreSQL URL")
    delete.add_argument("--run", type=run_ref, metavar="R", required=True, help="the run")
    delete.add_argument("--force", action="store_true", help="delete an unfinished run too")
    delete.set_defaults(handler=_delete_command)


async def _archive_command(args: argparse.Namespace) -> int:
    with output_stream(args.to) as out:
        info, count = await archive_run(args.path, args.run, out)
    print(f"archived {count} records of run {describe_run(info)} to {args.to}")
    return 0


async def _verify_command(args: argparse.Namespace) -> int:
    check = verify_archive(args.file)
    if args.json:
        print_json_line(check.__dict__)
    elif check.ok:
        print(f"OK: archive of run {check.run_id}: {check.records} records, digest chain intact")
    else:
        print(f"BAD: {args.file} line {check.line}: {check.reason}")
    return 0 if check.ok else 1


async def _delete_command(args: argparse.Namespace) -> int:
    info, removed = await delete_run(args.path, args.run, force=args.force)
    print(f"deleted run {describe_run(info)}: {removed} records")
    return 0
