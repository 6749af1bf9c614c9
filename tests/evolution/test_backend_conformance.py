"""Checkpoints and run deletion on every backend (the ``backend`` fixture): the
fixture-file tests beside this one are SQLite-only, these run on PostgreSQL too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from bounds import bounded
from dbtools import execute, query

import lionstore
from lionstore.errors import LionstoreError, RunNotFoundError
from lionstore.log.backend import ReadQuery
from lionstore.replay import verify
from lionstore.replay.retention import delete_run

CONFIG = {"queue_capacity": 10, "capacity_refresh_time": 0.01}


class Chore(lionstore.Event):
    n: int = 0

    async def invoke(self) -> None:
        if self.n % 3 == 0:
            raise ValueError(f"chore {self.n} refused")
        self.response = self.n * 10


class ChoreProcessor(lionstore.Processor):
    event_type = Chore


class ChoreExecutor(lionstore.Executor):
    processor_type = ChoreProcessor


async def run_chores(open_store: Callable[..., Any], run: str, count: int) -> None:
    async with open_store(run=run) as store:
        executor = ChoreExecutor(CONFIG, store=store, name="chores")
        await executor.start()
        await executor.extend([Chore(n=n) for n in range(count)])
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        await executor.stop()


async def load(open_store: Callable[..., Any], run: str, **kwargs: Any) -> tuple[Any, Any]:
    async with open_store(run=run, **kwargs) as store:
        executor = ChoreExecutor(CONFIG, store=store, name="chores")
        await executor.load()
        view = [
            (e.id, e.n, e.status.value, e.execution.response, e.execution.error)
            for e in executor.pile
            if isinstance(e, Chore)
        ]
        assert len(view) == len(executor.pile)  # every event is a Chore
        return view, executor._repo.restored_from


async def test_a_checkpoint_written_at_close_restores_the_same_pile(
    open_store: Callable[..., Any], db_target: str
) -> None:
    await run_chores(open_store, "a", 12)
    await load(open_store, "a")  # folds the log, writes the checkpoint at close
    names = [row[0] for row in query(db_target, "SELECT name FROM lionstore_checkpoints")]
    assert names == ["executor:chores"]
    folded, none = await load(open_store, "a", checkpoints=False)
    restored, position = await load(open_store, "a")
    assert none is None and position is not None
    assert restored == folded
    assert [status for _, _, status, _, _ in restored].count("failed") == 4


async def test_a_checkpoint_over_a_changed_log_is_ignored(
    open_store: Callable[..., Any], db_target: str
) -> None:
    await run_chores(open_store, "a", 6)
    await load(open_store, "a")
    [(position,)] = query(db_target, "SELECT position FROM lionstore_checkpoints")
    execute(db_target, "UPDATE lionstore_checkpoints SET digest = ?", "0" * 32)
    folded, restored_from = await load(open_store, "a")
    assert restored_from is None  # not trusted: folded from the start instead
    assert folded == (await load(open_store, "a", checkpoints=False))[0]
    assert position > 0


async def test_deleting_a_run_leaves_the_others_whole(
    open_store: Callable[..., Any], db_target: str
) -> None:
    await run_chores(open_store, "gone", 4)
    await run_chores(open_store, "kept", 4)
    async with open_store(readonly=True) as reader:
        head = await reader.head()
    info, removed = await delete_run(db_target, "gone")
    assert info.label == "gone" and removed > 0
    with pytest.raises(RunNotFoundError):
        await delete_run(db_target, "gone")
    async with open_store(run="kept") as store:
        assert [r.label for r in await store.runs()] == ["kept"]
        assert (await verify(store, run="kept")).ok
        # positions are never reused: the next record goes after the old head
        [position] = await store.append([(lionstore.IDType.create(), _Note(text="after"))])
        assert position > head


async def test_deleting_the_last_run_hands_out_none_of_its_numbers_again(
    open_store: Callable[..., Any], db_target: str
) -> None:
    """The deleted run held the log's last positions and streams, which SQLite's
    commits do not write to the head row (a high-water mark there): the deletion
    raises the row first, so the next run goes on after them."""
    await run_chores(open_store, "kept", 2)
    await run_chores(open_store, "last", 3)
    async with open_store(readonly=True) as reader:
        head = await reader.head()
        last_streams = {r.stream_id async for r in await reader.read(run="last")}
    await delete_run(db_target, "last")
    async with open_store(readonly=True) as reader:
        assert await reader.head() == head  # not the kept run's last position
    async with open_store(run="after") as store:
        assert store.position == head + 1  # its run.started
        [position] = await store.append([(lionstore.IDType.create(), _Note(text="after"))])
        assert position == head + 2
        assert (await verify(store, run="kept")).ok and (await verify(store, run="after")).ok
    streams = dict(
        query(
            db_target,
            "SELECT r.label, max(s.stream_no) FROM lionstore_streams s"
            " JOIN lionstore_runs r ON r.run_no = s.run_no GROUP BY r.label",
        )
    )
    [(first_after,)] = query(
        db_target,
        "SELECT min(s.stream_no) FROM lionstore_streams s"
        " JOIN lionstore_runs r ON r.run_no = s.run_no WHERE r.label = 'after'",
    )
    # the deleted run's streams were numbered after the kept run's; none is reused
    assert set(streams) == {"kept", "after"}
    assert first_after > streams["kept"] + len(last_streams)


class _Note(lionstore.RecordData):
    kind = "test.backend_conformance.note"
    text: str


async def test_a_run_scan_gives_the_run_in_pages_then_closes(
    open_store: Callable[..., Any],
) -> None:
    """``LogBackend.scan_run``, what rebuild folds: the run's records in position order
    as plain rows, a page at a time, each stream's id on its first record at least;
    bounded by position and time; nothing after it is closed."""
    await run_chores(open_store, "scanned", 7)
    await run_chores(open_store, "other", 2)
    async with open_store(run="scanned", readonly=True) as store:
        records = [r async for r in await store.read(run="scanned")]
        backend = store._backend
        run_no = store.run.run_no
        pages = []
        async with backend.scan_run(ReadQuery(run_no=run_no), 4) as scan:
            while page := await scan.next_page():
                pages.append(page)
        assert [len(p) for p in pages[:-1]] == [4] * (len(pages) - 1)
        rows = [row for page in pages for row in page]
        assert [r[0] for r in rows] == [r.position for r in records]
        assert [(r[2], r[3], r[4], r[5]) for r in rows] == [
            (r.stream_version, r.kind, r.kind_version, r.raw) for r in records
        ]
        ids: dict[int, str] = {}
        for row, record in zip(rows, records, strict=True):
            if row[6] is not None:
                ids.setdefault(row[1], row[6])
            assert ids[row[1]] == record.stream_id
        middle = records[len(records) // 2]
        async with backend.scan_run(ReadQuery(run_no=run_no, upto=middle.position), 100) as scan:
            assert [r[0] for r in await scan.next_page()] == [
                r.position for r in records if r.position <= middle.position
            ]
        with pytest.raises(LionstoreError):
            await scan.next_page()
        await scan.close()  # again: nothing happens


async def test_a_scan_left_open_does_not_keep_the_store_from_closing(
    open_store: Callable[..., Any],
) -> None:
    await run_chores(open_store, "left", 2)
    store = await open_store(run="left", readonly=True, lock_timeout=1.0)
    scan = store._backend.scan_run(ReadQuery(run_no=store.run.run_no), 10)
    await scan.open()
    assert await scan.next_page()
    await asyncio.wait_for(store.close(), timeout=30)
