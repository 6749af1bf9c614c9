"""The executor repository on PostgreSQL, where the mutation run's SQLite selection
does not reach (docs/mutation.md, repositories/executor.py): a claim-turn wait
cancelled before the turn comes ends cancelled and leaves the worker holding no turn
(tests/processing/test_claim_turns.py pins the other rules of the turn); an owner
holds its advisory lock from its first claim, not from a cycle that claimed nothing; the
check that finds an owner's lock free for the whole grace names that owner gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from bounds import bounded, cancelled

import lionstore
from lionstore.domain.event_records import executor_stream_id
from lionstore.processing.executor import Executor
from lionstore.repositories import leases

pytestmark = pytest.mark.usefixtures("pg_cluster")


class Job(lionstore.Event):
    n: int = 0

    async def invoke(self) -> None:
        self.response = self.n


@asynccontextmanager
async def _worker(url: str) -> AsyncIterator[Executor]:
    """A worker with its own store (its own sessions) on the run, its processor
    recorded, as a worker process would be."""
    async with lionstore.open(url, run="turns") as store:
        executor = Executor({"queue_capacity": 10, "capacity_refresh_time": 0.01}, store=store)
        await executor.start()
        try:
            yield executor
        finally:
            executor.close()


async def test_a_wait_for_the_turn_cancelled_before_it_comes_ends_cancelled(
    pg_database: str,
) -> None:
    """A holds the turn; B waits for it, catching up meanwhile, and is cancelled there
    (a processor stopped). B's wait ends with CancelledError, B holds no turn, and
    once A gives the turn back B takes it as any worker would."""
    async with _worker(pg_database) as a, _worker(pg_database) as b:
        await a.extend([Job(n=1)])
        repo = b._repo
        await repo.sync()
        sync = repo.sync
        parked = asyncio.Event()

        async def parks(**kw: Any) -> None:
            # B's catch-up while it waits: it parks here until cancelled
            await sync(**kw)
            parked.set()
            await asyncio.Event().wait()

        await a._repo.sync()
        assert await bounded(a._repo.begin_claim_turn(), "A's turn") is True
        repo.sync = parks  # type: ignore[method-assign]
        waiting = asyncio.ensure_future(repo.begin_claim_turn())
        try:
            await bounded(parked.wait(), "B to wait for the turn")
            await cancelled(waiting, "B's cancelled wait")
        finally:
            waiting.cancel()
            repo.sync = sync  # type: ignore[method-assign]
        await a._repo.end_claim_turn()
        assert await bounded(repo.begin_claim_turn(), "B's turn") is True
        await repo.end_claim_turn()


async def test_an_owner_holds_its_lock_from_its_first_claim(pg_database: str) -> None:
    """A cycle that claims nothing (it only defers) takes no owner lock: the lock
    stands for claims held. The first claim takes it, seen held from another session."""
    async with (
        lionstore.open(pg_database, run="locks") as store,
        lionstore.open(pg_database, run="locks") as probe,
    ):
        executor = Executor({"queue_capacity": 10}, store=store, name="ex")
        repo = executor._repo
        first, second = Job(n=1), Job(n=2)
        await executor.extend([first, second])
        await repo.queue([first.id, second.id])
        await repo.claim(
            [], [first.id], owner="o-1", lease_seconds=10.0, cycle=1, backoff=lambda n: 1.0
        )
        assert repo.state.denials == {first.id: 1}
        assert await probe.owner_lock_free("o-1") is True
        won = await repo.claim(
            [second.id], [], owner="o-1", lease_seconds=10.0, cycle=2, backoff=lambda n: 1.0
        )
        assert [e.id for e, _, _ in won] == [second.id]
        assert await probe.owner_lock_free("o-1") is False
        executor.close()


async def _claimed_remotely(url: str, owners: dict[str, bool]) -> None:
    """One job claimed (300 s lease) by each of ``owners``, processors on another host
    (their identity cannot be judged here) that recorded an advisory lock or not; the
    store that took their locks is then closed, so every such session has ended."""
    async with lionstore.open(url, run="remote") as store:
        executor = Executor({"queue_capacity": 10}, store=store, name="ex")
        jobs = [Job(n=n) for n in range(len(owners))]
        await executor.extend(jobs)
        await executor._repo.queue([j.id for j in jobs])
        await store.append(
            [
                (
                    executor_stream_id("ex"),
                    leases.ProcessIdentity("elsewhere", 4242 + n, "boot", "pid:[1]", 99).record(
                        "ex", owner, advisory_lock=locked
                    ),
                )
                for n, (owner, locked) in enumerate(owners.items())
            ]
        )
        for n, (job, owner) in enumerate(zip(jobs, owners, strict=True)):
            won = await executor._repo.claim(
                [job.id], [], owner=owner, lease_seconds=300.0, cycle=n, backoff=lambda n: 1.0
            )
            assert [e.id for e, _, _ in won] == [job.id]
        executor.close()


async def _first_gone(url: str) -> set[str]:
    """The first non-empty answer of ``gone_owners`` on a new store (polled, 30 s)."""
    async with lionstore.open(url, run="remote") as store:
        repo = Executor({"queue_capacity": 10}, store=store, name="ex")._repo
        await repo.load()
        deadline = time.monotonic() + 30
        while True:
            gone = await bounded(repo.gone_owners(exclude="t"), "gone_owners()")
            if gone:
                return gone
            assert time.monotonic() < deadline, "no owner was found gone within 30 s"
            await asyncio.sleep(0.05)


async def test_the_check_that_finds_a_lock_free_for_the_grace_names_its_owner_gone(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner on another host that recorded an advisory lock: once its session has
    ended and the lock has been seen free for the whole grace, that check's answer
    names the owner, so the reclaim that asked takes its claim over then, not one
    cycle later."""
    monkeypatch.setattr(leases, "OWNER_LOCK_GRACE", 0.3)
    remote = "elsewhere:4242:remote01"
    await _claimed_remotely(pg_database, {remote: True})
    assert await _first_gone(pg_database) == {remote}


async def test_owners_without_a_lock_do_not_stop_the_lock_checks_of_others(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Among owners that cannot be judged here, those that recorded no advisory lock
    are left to their leases, one by one: the owner with a lock is still checked,
    wherever it comes among them (40 without, so it comes first only by chance)."""
    monkeypatch.setattr(leases, "OWNER_LOCK_GRACE", 0.3)
    locked = "elsewhere:4242:locked"
    owners = {f"elsewhere:{n}:unlocked": False for n in range(40)}
    await _claimed_remotely(pg_database, {**owners, locked: True})
    assert await _first_gone(pg_database) == {locked}
