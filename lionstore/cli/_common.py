"""What the run commands share: finding the run a command is about, naming it."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from lionstore.errors import RunNotFoundError
from lionstore.log.backend import RunInfo
from lionstore.log.store import Store

__all__ = [
    "describe_run",
    "non_negative",
    "parse_time",
    "resolve_run",
    "run_label",
    "run_ref",
    "short_id",
]

_SHORT_ID = 8


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


def run_label(info: RunInfo) -> str:
    """How to name the run on a command line: its label, else its id."""
    return info.label or info.run_id


def run_ref(text: str) -> str:
    """argparse type of ``--run``: a non-blank run id or label."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a run id or label must not be empty")
    return text


def non_negative(text: str) -> int:
    """argparse type of a position or count: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
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
