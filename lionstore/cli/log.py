"""``lionstore log``: print the records of a database, in log order.

The library behind it is :meth:`lionstore.Store.read`; :func:`read_log` adds the
command's ``--limit``, :func:`follow_log` the polling of ``--follow`` and
:func:`format_record` its human line. Records of kinds this code does not know
are printed like any other (from their raw JSON), never dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import lionstore
from lionstore.cli._common import non_negative, run_ref
from lionstore.cli._output import (
    compact_json,
    format_time_us,
    print_json_line,
    shorten,
    terminal_width,
)
from lionstore.domain.ids import IDType
from lionstore.domain.records import Recorded, record_kinds
from lionstore.log.backend import RunInfo
from lionstore.log.store import Store

__all__ = [
    "FOLLOW_INTERVAL",
    "LineFormat",
    "follow_log",
    "format_record",
    "read_log",
    "register",
    "run_names",
]

_MAX_RUN_WIDTH = 24
_MAX_KIND_WIDTH = 28
_MIN_DATA_WIDTH = 30
_SHORT_ID = 8

#: How often ``lionstore log --follow`` looks for new records, in seconds.
FOLLOW_INTERVAL = 0.2


def run_names(runs: Iterable[RunInfo]) -> dict[IDType, str]:
    """How each run is shown in a line: its label, or the start of its id."""
    return {info.run_id: info.label or info.run_id[:_SHORT_ID] for info in runs}


@dataclass(frozen=True)
class LineFormat:
    """Column widths of the human ``lionstore log`` line."""

    run_names: Mapping[IDType, str]
    position_width: int = 6
    run_width: int = 8
    kind_width: int = 20
    data_width: int = 80

    @classmethod
    def for_log(cls, runs: Sequence[RunInfo], head: int, *, width: int | None = None) -> LineFormat:
        """Widths that align every line of a log with these ``runs`` and ``head`` position."""
        names = run_names(runs)
        run_width = min(_MAX_RUN_WIDTH, max((len(n) for n in names.values()), default=8))
        kinds = [*record_kinds(), "run.started"]
        kind_width = min(_MAX_KIND_WIDTH, max(len(k) for k in kinds))
        position_width = max(3, len(str(head)))
        prefix = position_width + 23 + run_width + kind_width + _SHORT_ID + 5 * 2
        total = width if width is not None else terminal_width()
        return cls(
            names,
            position_width,
            run_width,
            kind_width,
            max(_MIN_DATA_WIDTH, total - prefix),
        )


def format_record(record: Recorded, fmt: LineFormat) -> str:
    """One aligned line: position, time (UTC), run, kind, short stream id, compact data."""
    run = fmt.run_names.get(record.run_id) or record.run_id[:_SHORT_ID]
    kind = record.kind if record.kind_version == 1 else f"{record.kind}@v{record.kind_version}"
    return "  ".join(
        (
            str(record.position).rjust(fmt.position_width),
            format_time_us(record.recorded_at_us),
            shorten(run, fmt.run_width).ljust(fmt.run_width),
            kind.ljust(fmt.kind_width),
            record.stream_id[:_SHORT_ID],
            shorten(_data_text(record), fmt.data_width),
        )
    )


def _data_text(record: Recorded) -> str:
    """The data as one compact line, in its kind's current shape (see Recorded.data_json)."""
    if record.upcast:
        return compact_json(record.data_json())
    return _compact(record.raw)


def _compact(raw: str) -> str:
    try:
        return compact_json(json.loads(raw))
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
        return " ".join(raw.split())


async def read_log(
    store: Store,
    *,
    run: str | None = None,
    since: int = 0,
    kinds: Sequence[str] | None = None,
    limit: int | None = None,
    upto: int | None = None,
) -> AsyncGenerator[Recorded, None]:
    """Stream the records ``lionstore log`` prints, in position order.

    ``run`` is a run id or label (``None``: every run); ``since`` a position (records
    after it); ``kinds`` the kinds to keep (``None``: all); ``limit`` the most records;
    ``upto`` the last position to read (``None``: up to the end).
    """
    if limit is not None and limit <= 0:
        return
    page_size = 1000 if limit is None else max(1, min(1000, limit))
    records = await store.read(
        run=run, after=since, upto=upto, kinds=list(kinds) if kinds else None, page_size=page_size
    )
    count = 0
    try:
        async for record in records:
            yield record
            count += 1
            if limit is not None and count >= limit:
                return
    finally:
        await _close(records)


async def follow_log(
    store: Store,
    *,
    run: str | None = None,
    since: int = 0,
    kinds: Sequence[str] | None = None,
    limit: int | None = None,
    interval: float = FOLLOW_INTERVAL,
) -> AsyncGenerator[list[Recorded], None]:
    """Yield, batch by batch and forever, the records committed after position ``since``
    (by any process), looking every ``interval`` seconds; like ``tail -f``.

    Each batch holds the new records that match (``run``, ``kinds``), in position
    order; nothing is yielded while nothing new matches. Ends only when ``limit``
    records have been yielded (or the caller stops iterating, e.g. on Ctrl-C).
    """
    after = since
    remaining = limit
    while remaining is None or remaining > 0:
        head = await store.head()
        if head > after:
            # Positions are gapless and in commit order: everything up to ``head`` is
            # committed now, and what is committed later gets a larger position.
            batch = [
                record
                async for record in read_log(
                    store, run=run, since=after, kinds=kinds, limit=remaining, upto=head
                )
            ]
            after = head
            if batch:
                if remaining is not None:
                    remaining -= len(batch)
                yield batch
                continue
        await asyncio.sleep(interval)


async def _close(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


# -- the command -------------------------------------------------------------------------


def register(
    commands: argparse._SubParsersAction[Any],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``log`` to the ``lionstore`` parser."""
    parser = commands.add_parser(
        "log",
        help="print the records of a database in log order",
        description=(
            "Print the records of the database at PATH in log (position) order: one aligned "
            "line per record, or one JSON object per line with --json. Read-only."
        ),
        parents=[common],
    )
    parser.add_argument("path", metavar="PATH", help="a lionstore database file")
    parser.add_argument("--run", type=run_ref, metavar="R", help="only run R (id or label)")
    parser.add_argument(
        "--since", type=non_negative, default=0, metavar="P", help="only records after position P"
    )
    parser.add_argument(
        "--kind",
        action="append",
        metavar="K",
        help="only records of kind K (repeatable)",
    )
    parser.add_argument("--limit", type=non_negative, metavar="N", help="at most N records")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: position, stream_id, stream_version, run_id, kind, "
        "kind_version, data, recorded_at",
    )
    parser.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="after printing, keep printing new records as they are committed (like "
        "`tail -f`; every 0.2 s) until Ctrl-C",
    )
    parser.set_defaults(handler=_log_command)


async def _log_command(args: argparse.Namespace) -> int:
    path = os.fspath(args.path)
    async with lionstore.open(path, readonly=True, run=args.run) as store:
        head = await store.head()
        fmt = LineFormat.for_log(await store.runs(), head)

        async def emit(record: Recorded) -> None:
            nonlocal fmt
            if args.json:
                print_json_line(record.to_json_dict())
                return
            if record.run_id not in fmt.run_names:  # a run started while following
                fmt = LineFormat.for_log(await store.runs(), record.position)
            print(format_record(record, fmt))

        printed = 0
        records = read_log(
            store,
            run=args.run,
            since=args.since,
            kinds=args.kind,
            limit=args.limit,
            upto=head if args.follow else None,
        )
        async with aclosing(records):
            async for record in records:
                await emit(record)
                printed += 1
        if not args.follow:
            return 0
        remaining = None if args.limit is None else args.limit - printed
        sys.stdout.flush()
        batches = follow_log(
            store, run=args.run, since=max(head, args.since), kinds=args.kind, limit=remaining
        )
        async with aclosing(batches):
            async for batch in batches:
                for record in batch:
                    await emit(record)
                sys.stdout.flush()
    return 0
