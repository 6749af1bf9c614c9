"""Helpers for the mail tests: reading the log back, waiting on conditions, counting commits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import pytest

import lionstore
from lionstore.domain.records import Recorded

MAIL_MOVES = ("mail.collected", "mail.delivered", "mail.dead_lettered", "mail.excluded")


async def log_records(
    store: lionstore.Store, *, kinds: Iterable[str] | None = None, after: int = 0
) -> list[Recorded]:
    """This run's records after ``after``, in position order."""
    return [r async for r in await store.read(kinds=kinds, after=after)]


async def kinds_by_mail(store: lionstore.Store) -> dict[str, list[str]]:
    """mail id -> the kinds of its records, in log order (mail streams only)."""
    out: dict[str, list[str]] = {}
    async for r in await store.read(kinds=("mail.sent", "mail.received", *MAIL_MOVES)):
        out.setdefault(r.stream_id, []).append(r.kind)
    return out


def assert_one_commit(records: list[Recorded]) -> None:
    """The records were written by one commit: one recorded_at, contiguous positions."""
    assert records, "expected records"
    assert len({r.recorded_at_us for r in records}) == 1, [r.recorded_at_us for r in records]
    positions = [r.position for r in records]
    assert positions == list(range(positions[0], positions[0] + len(positions)))


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Wait until ``condition()`` holds, checking after every turn of the event loop;
    fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.005)  # yields to the loop; the exit is the condition


class CommitCounter:
    """Counts the appends a store commits (each append reaches subscribers once)."""

    def __init__(self, store: lionstore.Store) -> None:
        self.batches: list[Sequence[Recorded]] = []
        self._sub = store.subscribe(self.batches.append)

    def reset(self) -> None:
        self.batches.clear()

    @property
    def count(self) -> int:
        return len(self.batches)

    def close(self) -> None:
        self._sub.close()
