"""``lionstore runs``: the runs in a database, with their record counts."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import lionstore
from lionstore.cli._output import format_time, print_json_line
from lionstore.domain.ids import IDType

__all__ = ["RunSummary", "format_runs", "register", "summarize_runs"]


@dataclass(frozen=True)
class RunSummary:
    """One run: its id, label, start time and how many records it holds."""

    run_id: IDType
    label: str | None
    started_at: datetime
    records: int
    parent_run_id: IDType | None = None
    forked_at_position: int | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The run as ``lionstore runs --json`` prints it."""
        return {
            "run_id": self.run_id,
            "label": self.label,
            "started_at": self.started_at.isoformat(),
            "records": self.records,
            "parent_run_id": self.parent_run_id,
            "forked_at_position": self.forked_at_position,
        }


async def summarize_runs(path: str | os.PathLike[str]) -> list[RunSummary]:
    """Every run in the database at ``path``, oldest first, with its record count.

    Opens the file read-only; counts by streaming the log once.
    """
    async with lionstore.open(path, readonly=True) as store:
        infos = await store.runs()
        counts: Counter[str] = Counter()
        records = await store.read(run=None, page_size=5000)
        async for record in records:
            counts[record.run_id] += 1
    return [
        RunSummary(
            info.run_id,
            info.label,
            datetime.fromtimestamp(info.started_at_us / 1_000_000, UTC),
            counts[info.run_id],
            info.parent_run_id,
            info.forked_at_position,
        )
        for info in infos
    ]


def format_runs(runs: list[RunSummary]) -> list[str]:
    """An aligned table of ``runs`` with a header line."""
    rows = [("RUN ID", "LABEL", "STARTED (UTC)", "RECORDS")]
    rows += [(r.run_id, r.label or "-", format_time(r.started_at), str(r.records)) for r in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(
            (
                row[0].ljust(widths[0]),
                row[1].ljust(widths[1]),
                row[2].ljust(widths[2]),
                row[3].rjust(widths[3]),
            )
        ).rstrip()
        for row in rows
    ]


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``runs`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "runs",
        help="list the runs in a database",
        description="List the runs in the database at PATH: id, label, start, records.",
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument("--json", action="store_true", help="one JSON object per run and line")
    parser.set_defaults(handler=_runs_command)


async def _runs_command(args: argparse.Namespace) -> int:
    runs = await summarize_runs(args.path)
    if args.json:
        for run in runs:
            print_json_line(run.to_json_dict())
    else:
        for line in format_runs(runs):
            print(line)
    return 0
