"""``lionstore verify``: re-decide a recorded run and compare it with its log.

The library behind it is :func:`lionstore.replay.verify`: the digest chain, the
processor cycles decided again by the live decision code with the recorded
permission answers and ``invoke()`` outcomes fed back, and every mail move. The
command exits 0 when the log is exactly what the code would have written and 1
with the first divergence otherwise: its position, its reason, and the expected
and actual records.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import lionstore
from lionstore.cli._common import describe_run, resolve_run, run_ref
from lionstore.cli._output import Progress, count_phrase, pretty_json, print_json_line
from lionstore.log.backend import RunInfo
from lionstore.replay import VerifyReport, verify
from lionstore.replay.state import Progress as ProgressCallback

__all__ = ["format_report", "register", "verify_run"]


async def verify_run(
    path: str | os.PathLike[str],
    *,
    run: str | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[RunInfo, VerifyReport]:
    """Verify run ``run`` (id or label; default: the newest) of the database at
    ``path``. Read-only; runs no user code and needs none of the run's classes."""
    async with lionstore.open(path, readonly=True) as store:
        info = await resolve_run(store, run)
        report = await verify(store, run=info.run_id, progress=progress)
    return info, report


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_report(info: RunInfo, report: VerifyReport) -> list[str]:
    """The human ``lionstore verify``: one OK line, or the first divergence with the
    expected and actual records as indented JSON."""
    done = f"{_plural(report.records, 'record')}, {_plural(report.cycles, 'processor cycle')}"
    divergence = report.divergence
    if divergence is None:
        counts = report.counts
        return [
            f"OK: run {describe_run(info)} verified: {done}; the log is exactly what the code "
            f"decides (events: {count_phrase(counts.get('events', {}))}; "
            f"mail: {count_phrase(counts.get('mail', {}))})"
        ]
    lines = [
        f"DIVERGENCE in run {describe_run(info)} at position {divergence.position}: "
        f"{divergence.reason}",
        f"(found after reading {done})",
        "expected record:",
    ]
    lines += (
        pretty_json(divergence.expected).splitlines()
        if divergence.expected is not None
        else ["  (none: no record like the one below belongs here)"]
    )
    lines.append("actual record:")
    lines += (
        pretty_json(divergence.actual).splitlines()
        if divergence.actual is not None
        else ["  (none: the log holds no record here)"]
    )
    return lines


# -- the command ----------------------------------------------------------------------------


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``verify`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "verify",
        help="check that a run's log is exactly what the code would have written",
        description=(
            "Re-run the Processor/Executor and Exchange decisions over a recorded run, "
            "feeding back the recorded invoke() outcomes, and compare the records this "
            "would write with the recorded ones (and the run's digest chain). Exit 0 when "
            "identical; otherwise exit 1 and show the first divergence. Read-only."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument(
        "--run", type=run_ref, metavar="R", help="the run (id or label); default: the newest"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object: run_id, ok, records, cycles, divergence "
        "(position, reason, expected, actual), counts",
    )
    parser.set_defaults(handler=_verify_command)


async def _verify_command(args: argparse.Namespace) -> int:
    with Progress("verifying") as progress:
        info, report = await verify_run(args.path, run=args.run, progress=progress)
    if args.json:
        print_json_line({**report.to_dict(), "label": info.label})
    else:
        for line in format_report(info, report):
            print(line)
    return 0 if report.ok else 1
