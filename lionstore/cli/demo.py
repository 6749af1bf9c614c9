"""``lionstore demo``: write a small run to a SQLite file and tell what happened.

The demo is a list of steps (:data:`DEMO_STEPS`), each an async function taking the
:class:`DemoContext`. A step does something with the store and says what it did;
add a step by writing a function and listing it. Today the steps show the log
itself: an atomic append, a stale write refused, a checked append, and the run read
back. The executor and the mail exchange get their own steps as they land.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TextIO

import lionstore
from lionstore.cli._output import terminal_width
from lionstore.cli.db import inspect_database
from lionstore.cli.log import LineFormat, format_record
from lionstore.domain.ids import IDType
from lionstore.domain.records import RecordData, Recorded
from lionstore.errors import ConcurrencyError, LionstoreError
from lionstore.log.store import Store

__all__ = [
    "DEFAULT_PATH",
    "DEMO_STEPS",
    "DemoContext",
    "DemoNote",
    "DemoResult",
    "DemoStep",
    "add_checked_note",
    "read_back",
    "refuse_stale_write",
    "register",
    "run_demo",
    "write_notes",
]

DEFAULT_PATH = "lionstore-demo.db"


class DemoNote(RecordData):
    """A note in the demo's notebook stream."""

    kind: ClassVar[str] = "demo.note"
    number: int
    text: str


@dataclass
class DemoContext:
    """What the demo steps share: the open store, where to print, what was written."""

    store: Store
    path: Path
    out: TextIO
    notebook: IDType = field(default_factory=IDType.create)
    written: list[Recorded] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        """Print one line of the demo's story, indented under its step."""
        print(f"   {text}" if text else "", file=self.out)


DemoStep = Callable[[DemoContext], Awaitable[None]]


# -- the steps ---------------------------------------------------------------------------


async def write_notes(ctx: DemoContext) -> None:
    """Append three notes to a new stream in one transaction."""
    notes = [
        DemoNote(number=1, text="the log is the truth"),
        DemoNote(number=2, text="decide, record, apply"),
        DemoNote(number=3, text="one logical operation, one transaction"),
    ]
    records = await ctx.store.append_records(
        [(ctx.notebook, note) for note in notes], expected_versions={ctx.notebook: 0}
    )
    ctx.written.extend(records)
    ctx.say(
        f"appended {len(records)} demo.note records to stream {ctx.notebook[:8]} "
        f"in one transaction: positions {records[0].position}..{records[-1].position}, "
        f"stream versions 1..{records[-1].stream_version}"
    )


async def refuse_stale_write(ctx: DemoContext) -> None:
    """Append with a stale expected version: refused, and nothing is written."""
    head = await ctx.store.head()
    try:
        await ctx.store.append(
            [(ctx.notebook, DemoNote(number=0, text="a writer who missed notes 1-3"))],
            expected_versions={ctx.notebook: 0},
        )
    except ConcurrencyError as exc:
        ctx.say(f"refused a write expecting an empty stream: {exc}")
        after = await ctx.store.head()
        if after != head:
            raise LionstoreError("demo: a refused append changed the log") from None
        ctx.say(f"nothing was written: the log's head is still position {after}")
        return
    raise LionstoreError("demo: an append with a stale expected version was not refused")


async def add_checked_note(ctx: DemoContext) -> None:
    """Append one more note, expecting the stream at the version we last saw."""
    version = ctx.written[-1].stream_version
    records = await ctx.store.append_records(
        [(ctx.notebook, DemoNote(number=4, text="nothing is lost silently"))],
        expected_versions={ctx.notebook: version},
    )
    ctx.written.extend(records)
    ctx.say(
        f"appended note 4 expecting version {version}: committed at position "
        f"{records[0].position} as version {records[0].stream_version}"
    )


async def read_back(ctx: DemoContext) -> None:
    """Read this run back from the file, as ``lionstore log`` prints it."""
    fmt = LineFormat.for_log(
        await ctx.store.runs(), await ctx.store.head(), width=terminal_width() - 3
    )
    records = await ctx.store.read()
    count = 0
    async for record in records:
        ctx.say(format_record(record, fmt))
        count += 1
    ctx.say(f"({count} records in this run, including its run.started record)")


#: The demo, in order: (title, step). Later steps (the executor, the mail exchange)
#: are appended here.
DEMO_STEPS: list[tuple[str, DemoStep]] = [
    ("Append three notes atomically", write_notes),
    ("Refuse a write made on stale information", refuse_stale_write),
    ("Append with the right expected version", add_checked_note),
    ("Read the run back from the file", read_back),
]


@dataclass(frozen=True)
class DemoResult:
    """What a demo run wrote."""

    path: Path
    run_id: IDType
    label: str
    records: int
    new_file: bool


async def _next_label(path: Path) -> str:
    status = await inspect_database(path)
    if status.state != "current":
        return "demo-1"
    async with lionstore.open(path, readonly=True) as store:
        runs = await store.runs()
    labels = {info.label for info in runs}
    number = len(runs) + 1
    while f"demo-{number}" in labels:
        number += 1
    return f"demo-{number}"


async def run_demo(
    path: str | os.PathLike[str] = DEFAULT_PATH,
    *,
    out: TextIO | None = None,
    steps: Sequence[tuple[str, DemoStep]] | None = None,
) -> DemoResult:
    """Write a demo run to the SQLite file at ``path`` and print what happened.

    A new file is created with the schema; an existing lionstore file gets a new run
    (labelled ``demo-N``) next to its old ones.
    """
    out = out if out is not None else sys.stdout
    file = Path(path)
    new_file = not file.exists()
    label = await _next_label(file)
    async with lionstore.open(file, run=label) as store:
        where = "a new file" if new_file else "an existing file, next to its other runs"
        print(f"lionstore demo: writing run {label} ({store.run_id}) to {file} ({where})", file=out)
        ctx = DemoContext(store=store, path=file, out=out)
        for number, (title, step) in enumerate(steps if steps is not None else DEMO_STEPS, 1):
            print(file=out)
            print(f"{number}. {title}", file=out)
            await step(ctx)
        records = 0
        async for _ in await store.read():
            records += 1
        result = DemoResult(file, store.run_id, label, records, new_file)
    quoted = shlex.quote(str(file))
    print(file=out)
    print(f"Done: run {label} holds {records} records in {file}. Look again with:", file=out)
    print(f"  lionstore log {quoted} --run {label}", file=out)
    print(f"  lionstore runs {quoted}", file=out)
    return result


# -- the command -------------------------------------------------------------------------


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``demo`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "demo",
        help="write a small demo run to a SQLite file and show what happened",
        description=(
            "Write a small run to the SQLite file PATH (default: ./lionstore-demo.db) and "
            "print each step. An existing lionstore file gets a new run."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", nargs="?", default=DEFAULT_PATH)
    parser.set_defaults(handler=_demo_command)


async def _demo_command(args: argparse.Namespace) -> int:
    await run_demo(args.path)
    return 0
