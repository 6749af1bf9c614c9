"""``lionstore timeline``: draw a run, so a person can look instead of read.

The library behind it is :mod:`lionstore.replay.timeline`: sources are lanes with
an arrow per mail (a cross for a dead letter, with its reason), events are rows
from their append through every wait, denial back-off and attempt to their
outcome, a processor killed and a run resumed are marked. ``mermaid`` is a
Markdown document (a sequence diagram with items as JSON, and a Gantt chart with
a section per executor and a task per attempt); ``html`` is one self-contained
page: the ``lionstore ui`` timeline with its scripts and the run's data inlined
(nothing is fetched). A long export shows a progress line on a terminal.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import lionstore
from lionstore.cli._common import describe_run, resolve_run, run_ref
from lionstore.cli._output import Progress, output_stream
from lionstore.log.backend import RunInfo
from lionstore.replay.state import Progress as ProgressCallback
from lionstore.replay.timeline import collect_timeline, to_html, to_mermaid

__all__ = ["FORMATS", "register", "render_timeline"]

FORMATS = ("mermaid", "html")


async def render_timeline(
    path: str | os.PathLike[str],
    *,
    run: str | None = None,
    fmt: str = "mermaid",
    progress: ProgressCallback | None = None,
) -> tuple[RunInfo, str]:
    """Run ``run`` (id or label; default: the newest) of the database at ``path``
    drawn as ``fmt`` (``mermaid`` or ``html``). Read-only."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    async with lionstore.open(path, readonly=True) as store:
        info = await resolve_run(store, run)
        timeline = await collect_timeline(store, run=info.run_id, progress=progress)
    return info, to_html(timeline) if fmt == "html" else to_mermaid(timeline)


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``timeline`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "timeline",
        help="draw a run: sources as lanes with mail arrows, events as bars",
        description=(
            "Draw run R (default: the newest run): sources as lanes with an arrow per mail "
            "(a cross for a dead letter), events as rows from their append through every "
            "attempt to their outcome. --format mermaid writes Markdown with Mermaid "
            "diagrams; --format html one self-contained page with the lionstore ui "
            "timeline (zoom, pan). Read-only."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument(
        "--run", type=run_ref, metavar="R", help="the run (id or label); default: the newest"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="mermaid or html (default: html when --output ends in .html, else mermaid)",
    )
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="write to FILE instead of standard output"
    )
    parser.set_defaults(handler=_timeline_command)


async def _timeline_command(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lower() if args.output else ""
        fmt = "html" if suffix in (".html", ".htm") else "mermaid"
    with Progress("drawing") as progress:
        info, document = await render_timeline(args.path, run=args.run, fmt=fmt, progress=progress)
    with output_stream(args.output) as out:
        out.write(document if document.endswith("\n") else document + "\n")
    if args.output not in (None, "-"):
        print(f"wrote the {fmt} timeline of run {describe_run(info)} to {args.output}")
    return 0
