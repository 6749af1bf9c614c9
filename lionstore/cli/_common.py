"""What the run commands share: finding the run a command is about, naming it."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from lionstore.domain.records import Recorded
from lionstore.errors import RunNotFoundError, StoreError
from lionstore.log.backend import RunInfo
from lionstore.log.store import Store

__all__ = [
    "MAX_POSITION",
    "PositionOutOfRangeError",
    "describe_run",
    "fork_origin",
    "non_negative",
    "parse_time",
    "resolve_run",
    "run_label",
    "run_range",
    "run_ref",
    "require_position_in_run",
    "short_id",
]

_SHORT_ID = 8

#: The largest whole number a position or count may be: SQLite's INTEGER is 64-bit.
MAX_POSITION = 2**63 - 1


class PositionOutOfRangeError(StoreError, ValueError):
    """A position given on the command line is not one of the run's positions."""


def short_id(ident: str) -> str:
    """The first eight characters of an id, as the commands show ids."""
    return ident[:_SHORT_ID]


async def resolve_run(store: Store, ref: str | None) -> RunInfo:
    """The run ``ref`` (an id or label) names; the newest run of the file when ``ref``
    is None. Raises :class:`RunNotFoundError` naming what was asked for."""
    if ref is not None:
        return await store.find_run(ref)
    runs = await store.runs()
    if not runs:
        raise RunNotFoundError(f"{store.target}: the database holds no runs yet")
    return runs[-1]


def describe_run(info: RunInfo) -> str:
    """``label (id)`` or just the id of an unlabelled run."""
    return f"{info.label} ({info.run_id})" if info.label else str(info.run_id)


async def _first_position_after(store: Store, info: RunInfo, after: int) -> int | None:
    records: AsyncIterator[Recorded] = await store.read(run=info.run_id, after=after, page_size=1)
    try:
        async for record in records:
            return record.position
        return None
    finally:
        aclose = getattr(records, "aclose", None)
        if aclose is not None:
            await aclose()


async def run_range(store: Store, info: RunInfo) -> tuple[int, int]:
    """The first and last positions of run ``info`` (its records are interleaved with
    other runs' in the log): two index look-ups and a binary search over the rest."""
    first = await _first_position_after(store, info, 0)
    if first is None:
        raise RunNotFoundError(f"run {describe_run(info)} holds no records")
    low, high = first, await store.head()  # a record at ``low``, none after ``high``
    while low < high:
        middle = (low + high + 1) // 2
        found = await _first_position_after(store, info, middle - 1)
        if found is None:
            high = middle - 1
        else:
            low = found
    return first, low


def fork_origin(info: RunInfo, runs: list[RunInfo]) -> str | None:
    """``forked from LABEL at position P`` for a fork, None for any other run."""
    if info.parent_run_id is None:
        return None
    parent = next((run for run in runs if run.run_id == info.parent_run_id), None)
    name = run_label(parent) if parent is not None else f"{info.parent_run_id} (deleted)"
    return f"forked from {name} at position {info.forked_at_position}"


async def require_position_in_run(
    store: Store, info: RunInfo, position: int, *, option: str = "--at"
) -> tuple[int, int]:
    """Refuse ``position`` unless it lies within run ``info``'s positions; the run's
    first and last positions otherwise. The message names the run's range (and, for a
    fork, where its positions came from)."""
    first, last = await run_range(store, info)
    if first <= position <= last:
        return first, last
    where = f"run {run_label(info)} holds positions {first} to {last}"
    origin = fork_origin(info, await store.runs())
    if origin is not None:
        where += f" ({origin}: its records were copied to new positions)"
    raise PositionOutOfRangeError(f"{option} {position}: not a position of this run; {where}")


def run_label(info: RunInfo) -> str:
    """How to name the run on a command line: its label, else its id."""
    return info.label or info.run_id


def run_ref(text: str) -> str:
    """argparse type of ``--run``: a non-blank run id or label."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a run id or label must not be empty")
    return text


def non_negative(text: str) -> int:
    """argparse type of a position or count: a whole number from 0 to
    :data:`MAX_POSITION` (the database stores 64-bit integers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    if value > MAX_POSITION:
        raise argparse.ArgumentTypeError(
            f"too large: {text} (positions and counts go up to {MAX_POSITION})"
        )
    return value


def parse_time(text: str) -> datetime:
    """argparse type of ``--time``: an ISO 8601 time; without a zone it is UTC (as
    ``lionstore log`` prints times, ``2026-01-01 12:00:00.000`` is accepted)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-01-01T12:00:00, UTC unless a zone is given)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
