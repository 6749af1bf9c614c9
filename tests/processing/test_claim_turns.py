"""Claim turns on PostgreSQL (``ExecutorRepository.begin_claim_turn``), two workers in
one process, each with its own store (its own sessions), as two worker processes
would have.

A turn is asked for only when another processor of the executor could race for the
same work; a worker waiting for the turn catches up on what the holder commits; a
worker far behind gives its turn back once, catches up and takes it again (at most
three tries); a turn granted while its caller is cancelled is still given back. The
worker processes of test_pg_scale_out.py take turns for real; these tests pin each
rule on its own, in seconds (docs/mutation.md, repositories/executor.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from bounds import bounded, cancelled
from proc_helpers import make_executor, wait_until
from processing_events import Job

import lionstore
import lionstore.log.postgres
from lionstore.log.postgres import asyncpg_dsn
from lionstore.processing.executor import Executor
from lionstore.repositories.executor import _TURN_BEHIND, ExecutorRepository

pytestmark = pytest.mark.usefixtures("pg_cluster")


@asynccontextmanager
async def _worker(url: str) -> AsyncIterator[Executor]:
    """A worker: its own store on the run, an executor named ``ex``, started (its
    processor is recorded, as a worker process's is)."""
    async with lionstore.open(url, run="turns") as store:
        executor = make_executor(store, name="ex")
        await executor.start()
        try:
            yield executor
        finally:
            executor.close()


async def _turn(repo: ExecutorRepository) -> bool:
    return await bounded(repo.begin_claim_turn(), "begin_claim_turn()")


def _granted_at_once(
    repo: ExecutorRepository, before_take: Callable[[], Awaitable[Any]] | None = None
) -> list[bool]:
    """Count the claim turns ``repo`` asks its store for (``before_take``, then the
    real call: what it commits lands before the turn comes), and hold back the
    catch-up ``repo`` runs while a take is under way: as when the turn comes before
    the first catch-up of the wait, so that the check after it sees the worker as far
    behind as it was (with a real wait, whether it caught up first depends on
    timing)."""
    taken: list[bool] = []
    take = repo.store.take_claim_turn
    sync = repo.sync
    taking = False

    async def counted(name: str) -> int | None:
        nonlocal taking
        taking = True
        try:
            if before_take is not None:
                await before_take()
            got = await take(name)
            taken.append(got is not None)
            return got
        finally:
            taking = False

    async def catch_up(**kw: Any) -> None:
        if not taking:
            await sync(**kw)

    repo.store.take_claim_turn = counted  # type: ignore[method-assign]
    repo.sync = catch_up  # type: ignore[method-assign]
    return taken


async def test_a_turn_is_taken_only_when_another_processor_could_race_for_work(
    pg_database: str,
) -> None:
    async with _worker(pg_database) as a:
        repo = a._repo
        job = Job(n=1)
        await a.extend([job])  # pending work, one processor: nobody to race with
        assert await _turn(repo) is False
        async with _worker(pg_database) as b:
            await repo.sync()  # a second processor of the executor is recorded
            assert len(repo.state.processors) == 2
            assert await _turn(repo) is True  # pending work
            assert await _turn(repo) is False  # held already: not taken twice
            await repo.end_claim_turn()
            # given back once, so free: the other worker gets it at once
            assert await _turn(b._repo) is True
            await b._repo.end_claim_turn()
            await repo.queue([job.id])
            assert await _turn(repo) is True  # queued work
            await repo.end_claim_turn()
            await repo.claim([job.id], [], owner="me", lease_seconds=60, cycle=1, backoff=None)
            # claimed: nothing queued or pending, an idle cycle must not hold up others
            assert await _turn(repo) is False
            await b._repo.sync()
            assert await _turn(b._repo) is False


async def test_a_worker_waiting_for_the_turn_catches_up_on_what_the_holder_commits(
    pg_database: str,
) -> None:
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        jobs = [Job(n=i) for i in range(3)]
        await a.extend(jobs)
        await a._repo.sync()
        await b._repo.sync()  # B knows of pending work and of A's processor
        assert await _turn(a._repo) is True
        waiting = asyncio.ensure_future(b._repo.begin_claim_turn())
        try:
            await a._repo.queue([jobs[0].id])  # committed while A holds the turn
            head = await a._repo.store.head()

            def caught_up() -> bool:
                return b._repo.store.position >= head

            await wait_until(caught_up, timeout=30, what="B to catch up while waiting")
            assert not waiting.done()  # still A's turn
            await a._repo.end_claim_turn()
            assert await bounded(waiting, "B's turn") is True
        finally:
            waiting.cancel()
        assert list(b._repo.state.queue) == [jobs[0].id]
        await b._repo.end_claim_turn()


async def test_the_head_a_turn_comes_with_is_read_after_the_wait(pg_database: str) -> None:
    """B asks for the turn while A holds it; A commits, then gives it back. The head B's
    turn comes with includes A's commit: it is read once the lock is granted, not with
    a snapshot from before the wait (a plain SELECT of lock and head would give that)."""
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        await a.extend([Job(n=-1)])
        store_a, store_b = a._repo.store, b._repo.store
        assert await bounded(store_a.take_claim_turn("ex"), "A's turn") is not None
        waiting = asyncio.ensure_future(store_b.take_claim_turn("ex"))
        try:
            await wait_until(
                lambda: _advisory_waiters(pg_database), timeout=30, what="B to wait for the lock"
            )
            await a.extend([Job(n=i) for i in range(3)])  # committed while B waits
            head = await store_a.head()
            await store_a.end_claim_turn("ex")
            assert await bounded(waiting, "B's turn") == head
        finally:
            waiting.cancel()
        await store_b.end_claim_turn("ex")


async def test_the_catch_up_in_a_turn_reads_up_to_its_head_without_asking_again(
    pg_database: str,
) -> None:
    """What A committed before B's turn came is in B's projection when B's
    begin_claim_turn returns, read in one statement (no second read of the head)."""
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        jobs = [Job(n=i) for i in range(3)]
        await a.extend(jobs)
        await a._repo.sync()
        repo = b._repo
        await repo.sync()
        await a._repo.queue([jobs[0].id])  # B has not read it
        head = await a._repo.store.head()
        statements: list[str] = []
        backend: Any = repo.store._backend
        conn = await backend._writer()  # the connection syncs and commits go through
        conn.add_query_logger(lambda q: statements.append(q.query))
        taken = _granted_at_once(repo)  # (no catch-up while the take is under way)
        assert await _turn(repo) is True
        assert taken == [True]
        assert repo.store.position == head
        assert list(repo.state.queue) == [jobs[0].id]
        assert [q for q in statements if "lionstore_head" in q] == []
        assert len([q for q in statements if "lionstore_records" in q]) == 1
        await repo.end_claim_turn()


async def test_without_plpgsql_a_turn_takes_two_trips_and_still_brings_the_head(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server where the turn's function cannot be made (no PL/pgSQL): the lock and the
    head are asked for one after the other, and the turn works as before."""
    monkeypatch.setattr(
        lionstore.log.postgres,
        "_TAKE_TURN_FUNCTION",
        "CREATE FUNCTION pg_temp.lionstore_take_turn() RETURNS int LANGUAGE no_such_language"
        " AS 'x'",
    )
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        await a.extend([Job(n=i) for i in range(2)])
        store_a, store_b = a._repo.store, b._repo.store
        assert await bounded(store_a.take_claim_turn("ex"), "A's turn") == await store_a.head()
        assert store_a._backend._turn_one_trip is False  # type: ignore[attr-defined]
        await store_a.end_claim_turn("ex")
        assert await bounded(store_b.take_claim_turn("ex"), "B's turn") == await store_b.head()
        await store_b.end_claim_turn("ex")


async def test_a_turn_whose_call_fails_once_the_lock_came_leaves_nothing_held(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session advisory lock outlives a failed statement: a take that fails after the
    lock was granted ends its session, so the other workers are not kept waiting."""
    monkeypatch.setattr(
        lionstore.log.postgres,
        "_TAKE_TURN_FUNCTION",
        "CREATE FUNCTION pg_temp.lionstore_take_turn(a int, b int) RETURNS bigint"
        " LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_lock(a, b);"
        " RAISE EXCEPTION 'after the lock'; END $$",
    )
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        await a.extend([Job(n=1)])
        assert await bounded(a._repo.store.take_claim_turn("ex"), "A's take") is None
        monkeypatch.undo()  # B's turn session makes the real function
        # A's store is still open: B takes the turn. A lock left held by A's session
        # would make B's take give up after its 2 s lock_timeout, with None.
        assert await bounded(b._repo.store.take_claim_turn("ex"), "B's turn") is not None
        await b._repo.store.end_claim_turn("ex")


async def _advisory_locks(url: str, where: str, *args: Any) -> int:
    """How many advisory locks in ``pg_locks`` match ``where`` (asked from a session of
    its own)."""
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        found: int = await conn.fetchval(
            f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND {where}", *args
        )
    finally:
        await conn.close()
    return found


async def _advisory_waiters(url: str) -> bool:
    """Whether a session waits for an advisory lock."""
    return bool(await _advisory_locks(url, "NOT granted"))


async def test_a_worker_far_behind_gives_its_turn_back_once_and_catches_up(
    pg_database: str,
) -> None:
    """Exactly ``_TURN_BEHIND`` records behind: the turn is given back, the worker
    catches up, and takes it again (two turns); one record fewer, it keeps the first."""
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        repo = b._repo
        await a.extend([Job(n=-1)])
        await repo.sync()  # B knows of pending work
        taken = _granted_at_once(repo)
        await a.extend([Job(n=i) for i in range(_TURN_BEHIND)])  # B has not read them
        head = await a._repo.store.head()
        assert head - repo.store.position == _TURN_BEHIND
        assert await _turn(repo) is True
        assert taken == [True, True]
        assert repo.store.position == head  # caught up before its turn
        await repo.end_claim_turn()

        taken.clear()
        await a.extend([Job(n=i) for i in range(_TURN_BEHIND - 1)])
        assert await _turn(repo) is True
        assert taken == [True]  # near enough: kept, and caught up in it
        assert repo.store.position == await a._repo.store.head()
        await repo.end_claim_turn()


async def test_a_worker_kept_far_behind_keeps_its_third_turn(pg_database: str) -> None:
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        repo = b._repo
        await a.extend([Job(n=-1)])
        await repo.sync()
        turns = _granted_at_once(repo, lambda: a.extend([Job(n=i) for i in range(_TURN_BEHIND)]))
        assert await _turn(repo) is True
        assert turns == [True, True, True]
        await repo.end_claim_turn()
        assert await _turn(a._repo) is True  # given back: A gets it at once
        await a._repo.end_claim_turn()


async def test_a_turn_not_had_in_time_is_not_asked_for_again(pg_database: str) -> None:
    """A holds the turn; B, far behind, waits for it in vain (the backend's 2 s) and
    claims without it rather than asking again."""
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        repo = b._repo
        await a.extend([Job(n=-1)])
        await repo.sync()
        taken = _granted_at_once(repo)
        await a.extend([Job(n=i) for i in range(_TURN_BEHIND)])
        await a._repo.sync()
        assert await _turn(a._repo) is True
        try:
            assert await bounded(repo.begin_claim_turn(), "B's wait") is False
        finally:
            await a._repo.end_claim_turn()
        assert taken == [False]


async def test_a_turn_granted_while_its_caller_is_cancelled_is_given_back(
    pg_database: str,
) -> None:
    """B waits for A's turn; A gives it back and B's store is granted it, but B's wait
    is cancelled (a processor stopped) before it sees so. B still knows it holds the
    turn, so ending it (as the processor's cycle does) frees it for A."""
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        await a.extend([Job(n=1)])
        repo = b._repo
        await repo.sync()
        take = repo.store.take_claim_turn
        granted = asyncio.Event()

        async def noted(name: str) -> int | None:
            got = await take(name)
            granted.set()
            return got

        repo.store.take_claim_turn = noted  # type: ignore[method-assign]
        sync = repo.sync
        hold = False
        parked = asyncio.Event()

        async def held_up(**kw: Any) -> None:
            # the catch-up B runs while waiting; once ``hold`` is set it parks there
            # until B's store has been granted the turn (and then until cancelled)
            await sync(**kw)
            if hold:
                parked.set()
                await granted.wait()
                await asyncio.Event().wait()

        repo.sync = held_up  # type: ignore[method-assign]
        await a._repo.sync()
        assert await _turn(a._repo) is True
        waiting = asyncio.ensure_future(repo.begin_claim_turn())
        try:
            hold = True
            await bounded(parked.wait(), "B to wait for the turn")
            await a._repo.end_claim_turn()
            await bounded(granted.wait(), "B's store to be granted the turn")
            await cancelled(waiting, "B's cancelled wait")
        finally:
            waiting.cancel()
        repo.sync = sync  # type: ignore[method-assign]
        await repo.end_claim_turn()
        assert await _turn(a._repo) is True  # freed: A gets it at once, not after 2 s
        await a._repo.end_claim_turn()


async def test_sqlite_has_no_claim_turns(tmp_path: Any) -> None:
    async with lionstore.open(tmp_path / "x.db", run="turns") as store:
        a, b = make_executor(store, name="ex"), make_executor(store, name="ex")
        await a.start()
        await b.start()
        await a.extend([Job(n=1)])
        await a._repo.sync()
        assert len(a._repo.state.processors) == 2
        assert await _turn(a._repo) is False


async def test_sync_up_to_a_head_takes_only_a_head_a_turn_came_with(pg_database: str) -> None:
    """``Store.sync(upto=...)`` trusts its head not to need reading again, so a value no
    turn returned (one past the log's end would skip records committed later) is a
    ValueError, before anything is read."""
    async with _worker(pg_database) as a:
        store = a._repo.store
        await a.extend([Job(n=1)])
        head = await store.head()
        for bad in (head, True, "1", 1.0):
            with pytest.raises(ValueError, match="take_claim_turn"):
                await store.sync(upto=bad)  # type: ignore[arg-type]
        assert store.position == head  # (its own appends are delivered already)
        got = await bounded(store.take_claim_turn("ex"), "the turn")
        assert got == head
        assert await store.sync(upto=head) == head
        with pytest.raises(ValueError, match="take_claim_turn"):
            await store.sync(upto=head + 1)
        await store.end_claim_turn("ex")


async def test_a_processor_holds_its_owner_lock_from_its_start(pg_database: str) -> None:
    """The owner lock is taken when the processor starts, before any claim, so a
    first claim does not open the lock's session while the other workers wait for its
    turn; and another store sees the owner alive from then on."""
    async with _worker(pg_database) as a, lionstore.open(pg_database, run="turns") as probe:
        assert a.processor is not None
        assert a.processor._repo is not None and not a.processor._repo.state.queue
        assert await probe.owner_lock_free(a.processor.owner) is False


async def test_giving_back_a_turn_does_not_wait_for_the_unlock_and_close_waits_for_it(
    pg_database: str,
) -> None:
    """end_claim_turn returns before the unlock is answered (the cycle's events start
    meanwhile); the unlock still reaches the server (the other worker gets the turn),
    and a store closed at once waits for it rather than leaving it pending."""
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        await a.extend([Job(n=1)])
        await a._repo.sync()
        await b._repo.sync()
        store = a._repo.store
        assert await _turn(a._repo) is True
        await a._repo.end_claim_turn()
        unlocks = list(store._in_flight)
        assert len(unlocks) == 1 and not unlocks[0].done()  # sent, not yet answered
        assert await _turn(b._repo) is True  # (were A's turn still held: False after 2 s)
        await bounded(unlocks[0], "A's unlock to be answered")
        await b._repo.end_claim_turn()
        await store.end_claim_turn("ex", wait=False)  # nothing held: a no-op unlock
        pending = list(store._in_flight)
        await store.close()
        assert all(t.done() and not t.cancelled() for t in pending)


async def test_a_turn_is_given_back_once_the_claim_commits_before_it_is_folded(
    pg_database: str,
) -> None:
    """The claim's commit gives the turn back (the unlock is under way) before the
    claimed records are decoded and handed to the worker's own projection: the next
    worker needs only the claim in the log."""
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        job = Job(n=1)
        await a.extend([job])
        await a._repo.sync()
        await b._repo.sync()
        store = a._repo.store
        backend: Any = store._backend
        order: list[str] = []
        give_back = backend.end_claim_turn

        async def unlock(name: str) -> None:
            order.append("unlock")
            await give_back(name)

        backend.end_claim_turn = unlock
        store.subscribe(
            lambda records: order.extend(
                "claim folded" for r in records if r.kind == "event.claimed"
            )
        )
        await a._repo.queue([job.id])
        assert await _turn(a._repo) is True
        assert a.processor is not None
        won = await a._repo.claim(
            [job.id], [], owner=a.processor.owner, lease_seconds=60, cycle=1, backoff=None
        )
        assert [event.id for event, _, _ in won] == [job.id]
        assert order == ["unlock", "claim folded"]
        # B has not read the claim: it still sees the job queued and asks for the turn,
        # which A gave back (else it would give up after 2 s and return False)
        assert await _turn(b._repo) is True
        assert not b._repo.state.queue  # the turn's catch-up brought A's claim
        await b._repo.end_claim_turn()


async def test_the_loop_turn_after_a_commit_defers_a_cancellation() -> None:
    """Once a commit is made, the event loop is let run once without the caller
    becoming cancellable there: a cancel that comes meanwhile is raised at the next
    await, after the code that hands the outcome on has run."""
    from lionstore.log.postgres_commit import _one_loop_turn

    steps: list[str] = []
    entered = asyncio.Event()

    async def committing() -> None:
        entered.set()
        await _one_loop_turn()
        steps.append("outcome handed on")
        await asyncio.sleep(3600)  # the deferred cancellation lands here
        steps.append("not reached")

    task = asyncio.ensure_future(committing())
    await asyncio.sleep(0)  # the task runs until the yield inside _one_loop_turn
    assert entered.is_set() and steps == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bounded(task, "the committing task")
    assert steps == ["outcome handed on"]
    assert task.cancelled()


async def _turn_locks_held(url: str) -> int:
    """How many claim-turn locks sessions on this database hold."""
    return await _advisory_locks(
        url,
        "granted AND classid = $1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        lionstore.log.postgres._TURN_CLASS,
    )


async def test_an_unlock_is_sent_in_its_first_step_even_on_a_new_session(
    pg_database: str,
) -> None:
    """The unlock goes out as soon as its task first runs, even the first on a turn
    session (nothing to prepare first, whose answer would have to be read before the
    unlock itself is sent): with this event loop blocked right after that step, the
    server still sees the turn given back."""
    import concurrent.futures

    async with lionstore.open(pg_database, run="turns") as store:
        assert await bounded(store.take_claim_turn("ex"), "the turn") is not None
        assert await _turn_locks_held(pg_database) == 1
        await store.end_claim_turn("ex", wait=False)  # the unlock as a task
        await asyncio.sleep(0)  # the task's first step

        async def watched() -> None:
            async def free() -> bool:
                return await _turn_locks_held(pg_database) == 0

            await wait_until(free, timeout=10, what="the turn to be given back")

        # This loop does not run until the watcher is done: it cannot finish sending.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, watched()).result()
