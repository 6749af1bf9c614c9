"""``lionstore runs``: the runs in a database, with their record counts and state.

The counts of events by status and mail by state come from
:meth:`lionstore.replay.RunProjection.counts`, folded in one pass over the log
(one projection per run, as :func:`lionstore.replay.rebuild` builds it).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import lionstore
from lionstore.cli._output import Progress, format_time, print_json_line
from lionstore.domain.ids import IDType
from lionstore.replay import RunProjection
from lionstore.replay.state import Progress as ProgressCallback

__all__ = ["RunSummary", "format_runs", "register", "summarize_runs"]


@dataclass(frozen=True)
class RunSummary:
    """One run: its id, label, start time, how many records it holds, its events by
    status and its mail by state."""

    run_id: IDType
    label: str | None
    started_at: datetime
    records: int
    parent_run_id: IDType | None = None
    forked_at_position: int | None = None
    events: dict[str, int] = field(default_factory=dict)
    mail: dict[str, int] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        """The run as ``lionstore runs --json`` prints it."""
        return {
            "run_id": self.run_id,
            "label": self.label,
            "started_at": self.started_at.isoformat(),
            "records": self.records,
            "parent_run_id": self.parent_run_id,
            "forked_at_position": self.forked_at_position,
            "events": self.events,
            "mail": self.mail,
        }


async def summarize_runs(
    path: str | os.PathLike[str], *, progress: ProgressCallback | None = None
) -> list[RunSummary]:
    """Every run in the database at ``path``, oldest first, with its record count and
    the counts of :meth:`RunProjection.counts` (events by status, mail by state).

    Opens the file read-only; folds every run in one pass over the log.
    """
    async with lionstore.open(path, readonly=True) as store:
        infos = await store.runs()
        projections: dict[str, RunProjection] = {}
        seen = 0
        records = await store.read(run=None, page_size=5000)
        async for record in records:
            projection = projections.get(record.run_id)
            if projection is None:
                projection = projections[record.run_id] = RunProjection()
            projection.apply(record)
            seen += 1
            if progress is not None and seen % 10_000 == 0:
                progress(seen)
    summaries = []
    for info in infos:
        projection = projections.get(info.run_id) or RunProjection()
        counts = projection.counts()
        summaries.append(
            RunSummary(
                info.run_id,
                info.label,
                datetime.fromtimestamp(info.started_at_us / 1_000_000, UTC),
                projection.records,
                info.parent_run_id,
                info.forked_at_position,
                counts["events"],
                counts["mail"],
            )
        )
    return summaries


def format_runs(runs: list[RunSummary]) -> list[str]:
    """An aligned table of ``runs`` with a header line."""
    rows = [("RUN ID", "LABEL", "STARTED (UTC)", "RECORDS", "EVENTS", "MAIL")]
    rows += [
        (
            r.run_id,
            r.label or "-",
            format_time(r.started_at),
            str(r.records),
            _counts_cell(r.events),
            _counts_cell(r.mail),
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i == 3 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def _counts_cell(counts: dict[str, int]) -> str:
    """``{"completed": 2, "failed": 1}`` as ``completed=2,failed=1`` (one word: the
    table splits on spaces); ``-`` when there is nothing."""
    return ",".join(f"{key}={value}" for key, value in counts.items()) or "-"


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``runs`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "runs",
        help="list the runs in a database",
        description=(
            "List the runs in the database at PATH: id, label, start, records, events by "
            "status and mail by state. Read-only."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument("--json", action="store_true", help="one JSON object per run and line")
    parser.set_defaults(handler=_runs_command)


async def _runs_command(args: argparse.Namespace) -> int:
    with Progress("counting") as progress:
        runs = await summarize_runs(args.path, progress=progress)
    if args.json:
        for run in runs:
            print_json_line(run.to_json_dict())
    else:
        for line in format_runs(runs):
            print(line)
    return 0
