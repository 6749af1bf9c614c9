"""``lionstore demo``: write a small run to a SQLite file and tell what happened.

The demo is a list of steps (:data:`DEMO_STEPS`), each an async function taking the
:class:`DemoContext`. A step does something with the store and says what it did;
add a step by writing a function and listing it. The steps show the log itself
(an atomic append, a stale write refused, a checked append, the run read back),
then the durable Executor (events that complete, fail, and are deferred by a
permission denial), the mail Exchange (three sources, a dead letter with its
reason), and finally ``verify`` re-deciding the whole run from its log.
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
from lionstore.cli._output import compact_json, terminal_width
from lionstore.cli.db import inspect_database
from lionstore.cli.log import LineFormat, format_record
from lionstore.cli.verify import format_report
from lionstore.domain.event import Event
from lionstore.domain.ids import IDType
from lionstore.domain.records import RecordData, Recorded
from lionstore.errors import ConcurrencyError, LionstoreError
from lionstore.log.store import Store
from lionstore.mail.exchange import Exchange
from lionstore.mail.source import Source
from lionstore.processing.executor import Executor
from lionstore.processing.processor import Processor
from lionstore.replay import verify

__all__ = [
    "DEFAULT_PATH",
    "DEMO_STEPS",
    "DemoContext",
    "DemoExecutor",
    "DemoNote",
    "DemoProcessor",
    "DemoResult",
    "DemoStep",
    "DemoTask",
    "add_checked_note",
    "exchange_mail",
    "read_back",
    "refuse_stale_write",
    "register",
    "run_demo",
    "run_events",
    "verify_run",
    "write_notes",
]

DEFAULT_PATH = "lionstore-demo.db"


class DemoNote(RecordData):
    """A note in the demo's notebook stream."""

    kind: ClassVar[str] = "demo.note"
    number: int
    text: str


class DemoTask(Event):
    """A small unit of work for the demo's executor: divide, in whole numbers.

    A zero ``denominator`` makes ``invoke`` raise, so the event ends FAILED.
    """

    name: str
    numerator: int
    denominator: int

    @property
    def request(self) -> dict[str, Any]:
        return {"task": self.name}

    async def invoke(self) -> None:
        self.response = self.numerator // self.denominator


class DemoProcessor(Processor):
    """A processor that denies the first request of the task named ``rate-limited``
    (as a rate limiter would): the event is deferred, never dropped, and runs once
    its back-off has passed."""

    event_type: ClassVar[type[Event]] = DemoTask

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.denied: set[str] = set()

    async def request_permission(self, **kwargs: Any) -> bool:
        task = kwargs.get("task")
        if task == "rate-limited" and task not in self.denied:
            self.denied.add(task)
            return False
        return True


class DemoExecutor(Executor):
    """The demo's executor: a durable pile of DemoTasks run by a DemoProcessor."""

    processor_type: ClassVar[type[Processor]] = DemoProcessor


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


def _outcome(event: Event) -> str:
    if event.execution.error:
        return f"error: {event.execution.error}"
    return f"response: {compact_json(event.response)}"


async def run_events(ctx: DemoContext) -> None:
    """Run three events through a durable Executor: one completes, one fails, one is
    deferred by a permission denial and completes on a later cycle."""
    executor = DemoExecutor(
        {"queue_capacity": 4, "capacity_refresh_time": 0.05}, store=ctx.store, name="demo"
    )
    try:
        await executor.start()
        tasks = [
            DemoTask(name="split the bill", numerator=120, denominator=4),
            DemoTask(name="rate-limited", numerator=7, denominator=2),
            DemoTask(name="divide by zero", numerator=1, denominator=0),
        ]
        await executor.extend(tasks)
        ctx.say(
            f"appended {len(tasks)} DemoTask events in one commit; pending: {len(executor.pending)}"
        )
        await executor.forward()
        await executor.join()
        for event in executor.pile:
            assert isinstance(event, DemoTask)
            ctx.say(
                f"{event.id[:8]}  {event.name:<14}  {event.status.value:<9}  "
                f"attempts {executor.attempts(event)}  {_outcome(event)}"
            )
        async for record in await ctx.store.read(kinds=["event.deferred"]):
            data: Any = record.data
            ctx.say(
                f"event {record.stream_id[:8]} was denied by request_permission and deferred "
                f"(position {record.position}, {data.denials} denial): it stayed in the queue "
                "and ran on a later cycle"
            )
    finally:
        executor.close()


async def exchange_mail(ctx: DemoContext) -> None:
    """Three sources exchange mail; one mail to an unknown recipient is dead-lettered."""
    alice, bob, carol = Source(), Source(), Source()
    names = {alice.id: "alice", bob.id: "bob", carol.id: "carol"}
    exchange = Exchange(store=ctx.store, name="demo-exchange")
    await exchange.add_source([alice, bob, carol])
    stranger = IDType.create()
    names[stranger] = "a stranger"
    sends = [
        (alice, bob, "message", "hello bob"),
        (bob, carol, "message", {"lunch": "at noon?"}),
        (carol, alice, "signal", "ack"),
        (alice, stranger, "message", "is anyone there?"),
    ]
    for sender, recipient, category, item in sends:
        await sender.send(exchange.create_mail(sender, recipient, category, item))
    ctx.say(
        f"alice, bob and carol joined the exchange and sent {len(sends)} mails "
        "(one to a stranger who never joined)"
    )
    collected = await exchange.collect_all()
    delivered = await exchange.deliver_all()
    dead = len(exchange.dead_letters)
    ctx.say(
        f"collect_all took {collected} mails from the outboxes ({collected - dead} into the "
        f"buffer, {dead} dead-lettered); deliver_all delivered {delivered}"
    )
    for source in (alice, bob, carol):
        mails = {mail.id: mail for mail in source.mailbox.pile_}
        inbox = [
            f"from {names.get(sender, sender[:8])}: {compact_json(mails[mail_id].package.item)}"
            for sender, queue in source.mailbox.pending_ins.items()
            for mail_id in queue
        ]
        ctx.say(f"{names[source.id]}'s inbox: {'; '.join(inbox) or 'empty'}")
    for letter in exchange.dead_letters:
        ctx.say(
            f"dead letter {letter.mail.id[:8]} from {names[letter.mail.sender]} to "
            f"{names.get(letter.mail.recipient, letter.mail.recipient[:8])}: reason "
            f"{letter.reason} (at the {letter.stage}, position {letter.position})"
        )


async def verify_run(ctx: DemoContext) -> None:
    """Re-decide the whole run from its log, as ``lionstore verify`` does."""
    report = await verify(ctx.store)
    for line in format_report(ctx.store.run, report):
        ctx.say(line)


#: The demo, in order: (title, step).
DEMO_STEPS: list[tuple[str, DemoStep]] = [
    ("Append three notes atomically", write_notes),
    ("Refuse a write made on stale information", refuse_stale_write),
    ("Append with the right expected version", add_checked_note),
    ("Read the run back from the file", read_back),
    ("Run events through a durable executor", run_events),
    ("Exchange mail among three sources", exchange_mail),
    ("Verify the run: re-decide it from its log", verify_run),
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
    print(f"  lionstore show {quoted} --run {label}", file=out)
    print(f"  lionstore verify {quoted} --run {label}", file=out)
    print(f"  lionstore timeline {quoted} --run {label} --format html --output demo.html", file=out)
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
