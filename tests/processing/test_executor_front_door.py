"""Reopen without ceremony: an Executor built on a run with history is read at once.

lionagi-style code constructs an executor and reads ``pile`` / ``*_events`` straight
away; the first read folds the run's history (synchronously, through a read-only
store of its own), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from proc_helpers import FAST, make_executor, snapshot
from processing_events import Job

import lionstore
from lionstore import EventStatus, Executor


async def _history(store: lionstore.Store) -> dict[str, Any]:
    """Three completed jobs, a failed one and one left pending; the executor's view."""
    ex = make_executor(store, name="jobs")
    await ex.extend([Job(n=1), Job(n=2), Job(n=3), Job(n=4, fail=True)])
    await ex.start()
    await ex.forward()
    await asyncio.wait_for(ex.join(), timeout=30)
    left = Job(n=5)
    await ex.append(left)
    return {"snapshot": snapshot(ex), "left": left.id}


async def test_a_reopened_executor_reads_its_history_right_after_the_constructor(
    open_store: Any,
) -> None:
    async with open_store(run="jobs-run") as store:
        before = await _history(store)
    async with open_store(run="jobs-run") as store:
        ex = make_executor(store, name="jobs")
        # the snippet: no load(), no NotLoadedError
        assert (len(ex.pile), len(ex.completed_events)) == (5, 3)
        assert len(ex.failed_events) == 1 and len(ex.processing_events) == 0
        assert [e.id for e in ex.pending_events] == [before["left"]]
        assert list(ex.pending) == [before["left"]]
        assert snapshot(ex) == before["snapshot"]
        assert ex.pile[before["left"]].status is EventStatus.PENDING
        assert before["left"] in ex and ex.is_terminal(ex.completed_events[0])
        # ... and it carries on from there
        await ex.start()
        await ex.forward()
        await asyncio.wait_for(ex.join(), timeout=30)
        assert len(ex.completed_events) == 4
        assert ex.pile[before["left"]].execution.response["double"] == 10


async def test_each_view_read_first_folds_the_history(open_store: Any) -> None:
    async with open_store(run="r") as store:
        before = await _history(store)
    reads: dict[str, Callable[[Executor], int]] = {
        "pile": lambda ex: len(ex.pile),
        "pending": lambda ex: len(ex.pending),
        "completed_events": lambda ex: len(ex.completed_events),
        "pending_events": lambda ex: len(ex.pending_events),
        "failed_events": lambda ex: len(ex.failed_events),
        "processing_events": lambda ex: len(ex.processing_events),
    }
    wanted = {
        "pile": 5,
        "pending": 1,
        "completed_events": 3,
        "pending_events": 1,
        "failed_events": 1,
        "processing_events": 0,
    }
    for name, read in reads.items():
        async with open_store(run="r") as store:
            ex = make_executor(store, name="jobs")
            assert read(ex) == wanted[name], name
            assert snapshot(ex) == before["snapshot"], name


async def test_the_ambient_store_reads_a_reopened_run(db_target: str) -> None:
    async with lionstore.open(db_target, run="jobs-run") as store:
        before = await _history(store)
    async with lionstore.open(db_target, run="jobs-run"):
        ex = Executor(FAST, name="jobs")  # no store=: the one this block opened
        assert (len(ex.pile), len(ex.completed_events)) == (5, 3)
        assert snapshot(ex) == before["snapshot"]


async def test_the_first_read_starts_from_the_checkpoint_and_sees_later_records(
    open_store: Any,
) -> None:
    """The sync load uses the checkpoint the last close wrote, then folds what came
    after it; records another store appended meanwhile are in too, once."""
    async with open_store(run="r") as store:
        await _history(store)  # the close writes a checkpoint
    async with open_store(run="r") as store, open_store(run="r") as other:
        ex = make_executor(store, name="jobs")
        later = Job(n=7)
        await make_executor(other, name="jobs").append(later)  # another writer
        await store.sync()  # this store's feed now holds it (held back: not loaded yet)
        assert len(ex.pile) == 6
        assert ex._repo.restored_from is not None and ex._repo.restored_from > 0
        assert [e.id for e in ex.pile].count(later.id) == 1
        assert list(ex.pending)[-1] == later.id
        again = Job(n=8)
        await make_executor(other, name="jobs").append(again)
        await store.sync()  # applied by the feed now that the executor is loaded
        assert [e.id for e in ex.pile][-2:] == [later.id, again.id]


async def test_the_first_read_on_a_run_without_checkpoints(open_store: Any) -> None:
    async with open_store(run="r", checkpoints=False) as store:
        before = await _history(store)
    async with open_store(run="r", checkpoints=False) as store:
        ex = make_executor(store, name="jobs")
        assert snapshot(ex) == before["snapshot"]
        assert ex._repo.restored_from is None


async def test_a_new_executor_on_a_fresh_run_reads_empty_views(open_store: Any) -> None:
    async with open_store(run="fresh") as store:
        ex = make_executor(store, name="jobs")
        assert (len(ex.pile), len(ex.pending), len(ex.completed_events)) == (0, 0, 0)


async def test_a_read_while_a_load_is_under_way_folds_once(open_store: Any) -> None:
    """A view read while an awaited load() has not finished loads on the spot; the
    load, when it resumes, keeps that state (nothing applied twice)."""
    async with open_store(run="r") as store:
        before = await _history(store)
    async with open_store(run="r") as store:
        ex = make_executor(store, name="jobs")
        loading = asyncio.ensure_future(ex.load())  # scheduled, not run yet
        assert snapshot(ex) == before["snapshot"]  # loads here, synchronously
        await asyncio.wait_for(loading, timeout=10)  # the load runs now, and keeps it
        assert snapshot(ex) == before["snapshot"]
        more = Job(n=6)
        await ex.append(more)
        assert [e.id for e in ex.pile][-1] == more.id and len(ex.pile) == 6

        again = make_executor(store, name="jobs")
        repo = again._repo
        started = asyncio.ensure_future(repo._load())  # an async fold, then a sync read
        repo._load_task = started
        assert len(again.pile) == 6
        await asyncio.wait_for(started, timeout=10)
        assert snapshot(again) == snapshot(ex)


async def test_the_first_read_of_a_relative_path_survives_a_chdir(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """The read-only store of the first read opens the file the store opened, even when
    the working directory changed since."""
    monkeypatch.chdir(tmp_path)
    async with lionstore.open("work.db", run="r") as store:
        before = await _history(store)
    (tmp_path / "elsewhere").mkdir()
    async with lionstore.open("work.db", run="r") as store:
        ex = make_executor(store, name="jobs")
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert snapshot(ex) == before["snapshot"]
