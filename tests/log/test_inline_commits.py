"""Where a commit runs: on the event loop's thread when nothing else waits to run, on
the writer thread when an fsync would otherwise hold other tasks up.

Observed through SQLite itself: the trace callback of the writer connection runs on
the thread that executes each statement.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import lionstore
from lionstore.domain.records import RecordData


class Noted(RecordData):
    kind = "inlinetest.noted"
    n: int


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0)


def _trace_threads(store: lionstore.Store) -> dict[str, set[int]]:
    """Statement kind -> the threads that ran it, on the store's writer connection."""
    seen: dict[str, set[int]] = {}
    conn = store._backend._writer.connection()  # type: ignore[attr-defined]

    def note(statement: str) -> None:
        seen.setdefault(statement.split(" ", 1)[0].upper(), set()).add(threading.get_ident())

    conn.set_trace_callback(note)
    return seen


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_a_commit_with_nothing_else_ready_runs_on_the_loop_thread(
    tmp_path: Path, durability: str
) -> None:
    async with lionstore.open(tmp_path / "a.db", run="r", durability=durability) as store:
        await store.append([(lionstore.IDType.create(), Noted(n=0))])  # connection made
        seen = _trace_threads(store)
        positions = await store.append([(lionstore.IDType.create(), Noted(n=1))])
        assert positions == [await store.head()]
        assert seen["COMMIT"] == {threading.get_ident()}


async def test_a_full_durability_commit_leaves_the_loop_to_others_that_are_ready(
    tmp_path: Path,
) -> None:
    async with lionstore.open(tmp_path / "b.db", run="r", durability="full") as store:
        await store.append([(lionstore.IDType.create(), Noted(n=0))])
        seen = _trace_threads(store)
        ran: list[int] = []
        loop = asyncio.get_running_loop()

        def busy(left: int) -> None:  # another task's work, ready turn after turn
            ran.append(left)
            if left:
                loop.call_soon(busy, left - 1)

        loop.call_soon(busy, 3)
        # The append yields once (others' appends may join its commit); busy() is then
        # ready again when the commit is made, so the fsync goes to the writer thread.
        await store.append([(lionstore.IDType.create(), Noted(n=1))])
        assert threading.get_ident() not in seen["COMMIT"]
        await asyncio.wait_for(_until(lambda: ran == [3, 2, 1, 0]), timeout=10)
        records = [r async for r in await store.read()]
        assert [r.data.n for r in records if isinstance(r.data, Noted)] == [0, 1]


async def test_at_normal_durability_a_commit_stays_inline_even_with_others_ready(
    tmp_path: Path,
) -> None:
    async with lionstore.open(tmp_path / "c.db", run="r", durability="normal") as store:
        await store.append([(lionstore.IDType.create(), Noted(n=0))])
        seen = _trace_threads(store)
        asyncio.get_running_loop().call_soon(lambda: None)
        await store.append([(lionstore.IDType.create(), Noted(n=1))])
        assert seen["COMMIT"] == {threading.get_ident()}


async def test_a_stream_read_runs_on_the_idle_writer_connection(tmp_path: Path) -> None:
    """A page of one stream is read on the writer connection in the caller's thread
    when the writer is idle (no hop to the reader thread, which cost more than the
    read), and through the reader thread while the writer is busy."""
    async with lionstore.open(tmp_path / "s.db", run="r") as store:
        sid, other = lionstore.IDType.create(), lionstore.IDType.create()
        await store.append([(sid, Noted(n=0)), (other, Noted(n=-1)), (sid, Noted(n=1))])
        seen = _trace_threads(store)

        async def stream() -> list[int]:
            return [r.data.n async for r in await store.read(stream=sid)]  # type: ignore[union-attr]

        assert await stream() == [0, 1]
        assert seen["SELECT"] == {threading.get_ident()}
        seen.clear()
        async with store._backend._lock():  # type: ignore[attr-defined]  # a busy writer
            assert await stream() == [0, 1]
        assert "SELECT" not in seen  # read by the reader thread's own connection
        run = [r async for r in await store.read()][1:]  # after run.started
        assert [r.data.n for r in run] == [0, -1, 1]  # type: ignore[union-attr]
