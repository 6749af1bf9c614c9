"""Heartbeats and dead owners (lionstore.processing.heartbeat, lionstore.repositories.leases).

A long ``invoke()`` keeps its lease alive while it runs, so a processor in another
real process never re-queues it; an owner SIGKILLed on this host is seen to be gone
and its claims are taken over at once, without waiting for the lease; a resume that
must wait for a lease says so."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from proc_helpers import make_executor, read_all, spawn_worker, wait_until
from processing_events import Job, LineJob

import lionstore
from lionstore.domain.event import EventStatus
from lionstore.domain.event_records import ProcessorIdentity, ProcessorStarted, executor_stream_id
from lionstore.replay import resume, verify
from lionstore.repositories import leases
from lionstore.repositories.leases import owner_is_gone, process_start_ticks, this_process

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _lines(path: Path) -> list[str]:
    return path.read_text().split()[::2] if path.exists() else []


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _finish(proc: subprocess.Popen[str], timeout: float) -> None:
    _out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err


async def _renewals_since(store: Any, position: int) -> int:
    return len(
        [r for r in await read_all(store, kinds=("event.lease_renewed",)) if r.position > position]
    )


async def test_a_long_invoke_keeps_its_lease_while_another_process_watches(
    open_store: Any, db_target: str, tmp_path: Path
) -> None:
    """Worker A invokes an event that waits (for a gate file) for several lease periods
    (lease 1 s); worker B, another process on the same executor, runs cycles all that
    time. A renews the lease every third of it, so B never re-queues the event: it is
    invoked once, claimed once, and verify accepts the renewals."""
    out, gate = tmp_path / "lines.txt", tmp_path / "gate"
    async with open_store(run="long") as store:
        executor = make_executor(store, name="mp")
        event = LineJob(out=str(out), gate=str(gate))
        await executor.extend([event])
    config = {"queue_capacity": 2, "capacity_refresh_time": 0.02, "lease_seconds": 1.0}
    args = {"db": db_target, "run": "long", "name": "mp", "config": config}
    a = spawn_worker("run", args)
    procs = [a]
    try:
        async with open_store(run="long") as store:

            async def claimed() -> bool:
                return bool(await read_all(store, kinds=("event.claimed",)))

            await wait_until(claimed, timeout=60, interval=0.02, what="A's claim")
            b = spawn_worker("run", args)
            procs.append(b)

            async def b_started() -> bool:
                started = await read_all(store, kinds=("processor.started",))
                return len(started) == 2  # A and B

            await wait_until(b_started, timeout=60, interval=0.02, what="B to start")
            since = (await read_all(store))[-1].position

            async def several_lease_periods() -> bool:
                return await _renewals_since(store, since) >= 7  # > 2 s at 1/3 s each

            await wait_until(several_lease_periods, timeout=60, interval=0.05, what="renewals")
            assert b.poll() is None and a.poll() is None
        gate.write_text("open")
        await asyncio.to_thread(_finish, a, 60)
        await asyncio.to_thread(_finish, b, 60)
    finally:
        _stop(procs)

    async with open_store(run="long") as store:
        records = await read_all(store)
        report = await verify(store)
    assert report.ok, report.divergence
    kinds = Counter(r.kind for r in records if r.stream_id == event.id)
    assert kinds["event.claimed"] == 1
    assert kinds["event.finished"] == 1
    assert kinds["event.lease_renewed"] >= 7
    assert kinds["event.requeued"] == kinds["event.abandoned"] == 0
    assert _lines(out) == [event.id]  # invoked once, by A
    assert out.read_text().split()[1] == str(a.pid)


async def test_a_sigkilled_owner_is_taken_over_at_once(
    open_store: Any, db_target: str, tmp_path: Path
) -> None:
    """With the default 300 s lease, worker A claims an event and is SIGKILLed while
    invoking it; worker B, already running, sees on this host that A's process is gone
    and takes the claim over at once (reason owner_gone), long before the lease would
    have expired, and finishes it. No worker exits with an error."""
    out, gate = tmp_path / "lines.txt", tmp_path / "gate"
    async with open_store(run="killed") as store:
        executor = make_executor(store, name="mp")
        events = [LineJob(out=str(out), gate=str(gate)) for _ in range(3)]
        await executor.extend(events)
    config = {"queue_capacity": 3, "capacity_refresh_time": 0.02}  # lease: 300 s
    args = {"db": db_target, "run": "killed", "name": "mp", "config": config}
    a = spawn_worker("run", args)
    procs = [a]
    try:
        async with open_store(run="killed") as store:

            async def a_claimed_all() -> bool:
                return len(await read_all(store, kinds=("event.claimed",))) == 3

            await wait_until(a_claimed_all, timeout=60, interval=0.02, what="A's claims")
            b = spawn_worker("run", args)
            procs.append(b)

            async def b_started() -> bool:
                return len(await read_all(store, kinds=("processor.identity",))) == 2

            await wait_until(b_started, timeout=60, interval=0.02, what="B to start")
            os.kill(a.pid, signal.SIGKILL)
            a.wait(timeout=30)
            gate.write_text("open")
            await asyncio.to_thread(_finish, b, 60)  # far less than the 300 s lease
    finally:
        _stop(procs)
    assert a.returncode == -signal.SIGKILL

    async with open_store(run="killed") as store:
        records = await read_all(store)
        report = await verify(store)
        executor = make_executor(store, name="mp")
        await executor.load()
        assert all(e.status is EventStatus.COMPLETED for e in executor.pile)
    assert report.ok, report.divergence
    requeued = [r for r in records if r.kind == "event.requeued"]
    assert sorted(r.stream_id for r in requeued) == sorted(e.id for e in events)
    assert {r.data.reason for r in requeued} == {"owner_gone"}  # type: ignore[union-attr]
    finished = [r for r in records if r.kind == "event.finished"]
    assert sorted(r.stream_id for r in finished) == sorted(e.id for e in events)
    assert {r.data.attempt for r in finished} == {2}  # type: ignore[union-attr]
    assert Counter(_lines(out)) == Counter(e.id for e in events)  # A never got past the gate
    assert set(out.read_text().split()[1::2]) == {str(b.pid)}


async def test_a_resume_that_must_wait_for_a_lease_says_so(
    open_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The owner of a claim is a processor of this very process (alive, so not gone):
    resume logs a warning with the owner and the time left, waits for the lease, then
    takes the event over."""
    async with open_store(run="wait") as store:
        first = make_executor(store, name="ex", lease_seconds=0.6)
        await first.start()
        assert first.processor is not None
        job = Job(n=4)
        await first.processor.enqueue(job)
        await asyncio.wait_for(first.processor.dequeue(), timeout=10)  # claimed, never run
        first.close()
        with caplog.at_level(logging.WARNING, logger="lionstore.resume"):
            counts = await asyncio.wait_for(resume(store), timeout=30)
        assert counts["events"] == {"completed": 1}
        records = await read_all(store, stream=job.id)
        report = await verify(store)
    assert report.ok, report.divergence
    waits = [r for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waits) == 1, caplog.text
    message = waits[0].getMessage()
    assert first.processor.owner in message and "1 events are claimed" in message
    seconds = float(message.split("waiting up to ")[1].split(" s")[0])
    assert 0 < seconds <= 0.6
    requeued = [r for r in records if r.kind == "event.requeued"]
    assert [r.data.reason for r in requeued] == ["lease_expired"]  # type: ignore[union-attr]


async def test_a_renewal_never_revives_a_claim_taken_over(open_store: Any, clock: Any) -> None:
    """Owner A's lease expires and B re-queues the event; A's renewal then renews
    nothing and A's outcome is dropped (compare-and-set on the event's stream)."""
    async with open_store(run="cas", clock=clock) as store:
        a = make_executor(store, name="ex", lease_seconds=5.0)
        await a.start()
        assert a.processor is not None
        job = Job(n=1)
        await a.processor.enqueue(job)
        await asyncio.wait_for(a.processor.dequeue(), timeout=10)
        owner_a = a.processor.owner
        repo = a._repo
        assert await repo.renew_leases([(job.id, 1)], owner=owner_a, lease_seconds=5.0) == [job.id]
        clock.advance(4)  # within the renewed lease: nobody may take it over
        b = make_executor(store, name="ex", lease_seconds=5.0)
        await b.start()
        assert b.processor is not None
        assert await b._repo.reclaim_expired(max_attempts=3, in_flight=set(), by="b") == 0
        clock.advance(2)
        assert await b._repo.reclaim_expired(max_attempts=3, in_flight=set(), by="b") == 1
        assert await repo.renew_leases([(job.id, 1)], owner=owner_a, lease_seconds=5.0) == []
        kinds = [r.kind for r in await read_all(store, stream=job.id)]
        report = await verify(store)
    assert kinds == [
        "event.appended",
        "event.queued",
        "event.claimed",
        "event.lease_renewed",
        "event.requeued",
    ]
    assert report.ok, report.divergence


def _identity(**changes: Any) -> ProcessorIdentity:
    here = this_process()
    values = {
        "executor": "ex",
        "owner": "o",
        "host": here.host,
        "pid": here.pid,
        "boot_id": here.boot_id,
        "pid_namespace": here.pid_namespace,
        "process_started": here.process_started,
    }
    return ProcessorIdentity(**{**values, **changes})


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_owner_is_gone_only_when_its_process_certainly_ended() -> None:
    assert not owner_is_gone(_identity())  # this process
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start_ticks(child.pid)
        assert started is not None
        assert not owner_is_gone(_identity(pid=child.pid, process_started=started))
    finally:
        child.kill()
        child.wait()
    assert owner_is_gone(_identity(pid=child.pid, process_started=started))  # reaped
    here = this_process()
    assert here.process_started is not None
    # the same pid, started at another time: a reused pid, so the owner is gone
    assert owner_is_gone(_identity(process_started=here.process_started + 1))
    # anything that cannot be told: not gone (the lease decides)
    gone = {"pid": child.pid, "process_started": started}
    assert not owner_is_gone(_identity(host="another-host", **gone))
    assert not owner_is_gone(_identity(boot_id="another-boot", **gone))
    assert not owner_is_gone(_identity(pid_namespace="pid:[1]", **gone))
    assert not owner_is_gone(_identity(pid=child.pid, process_started=None))


# -- PostgreSQL: owner locks (liveness across machines) ------------------------------------

LOCK_HOLDER = """
import asyncio, sys
import lionstore

async def main() -> None:
    async with lionstore.open(sys.argv[1], run="locks") as store:
        await store.hold_owner_lock(sys.argv[2])
        print("held", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test closes stdin (or kills us)

asyncio.run(main())
"""


async def test_an_owner_lock_is_free_once_its_process_is_killed(pg_database: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, pg_database, "owner-x"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60) == "held\n"
        async with lionstore.open(pg_database, run="locks") as store:
            assert store.owner_locks
            assert await store.owner_lock_free("owner-x") is False
            assert await store.owner_lock_free("owner-y") is True
            assert await store.owner_lock_free("owner-x") is False  # probing took nothing
            child.kill()
            child.wait(timeout=30)

            async def freed() -> bool:
                return bool(await store.owner_lock_free("owner-x"))

            await wait_until(freed, timeout=30, interval=0.05, what="the lock to be released")
    finally:
        _stop([child])


async def test_sqlite_has_no_owner_locks(tmp_path: Path) -> None:
    async with lionstore.open(tmp_path / "x.db", run="r") as store:
        assert not store.owner_locks
        await store.hold_owner_lock("o")
        assert await store.owner_lock_free("o") is None


async def test_an_owner_on_another_host_is_taken_over_once_its_lock_is_free(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner's identity names another host, so only its advisory lock can tell:
    while its store is open its claim waits for the (300 s) lease; once its session
    ends and the lock stays free for the grace, the claim is taken over (owner_gone)."""
    monkeypatch.setattr(leases, "OWNER_LOCK_GRACE", 0.3)
    remote = "elsewhere:4242:remote01"
    async with lionstore.open(pg_database, run="remote") as store:
        ex = make_executor(store, name="ex")
        job = Job(n=7)
        await ex.extend([job])
        await ex._repo.queue([job.id])
        stream = executor_stream_id("ex")
        identity = leases.ProcessIdentity("elsewhere", 4242, "boot", "pid:[1]", 99)
        await store.append(
            [
                (
                    stream,
                    ProcessorStarted(
                        executor="ex",
                        executor_class="x.Executor",
                        processor_class="x.Processor",
                        owner=remote,
                        queue_capacity=10,
                        capacity_refresh_time=0.01,
                        max_attempts=3,
                        lease_seconds=300.0,
                        max_backoff=60.0,
                    ),
                ),
                (stream, identity.record("ex", remote, advisory_lock=True)),
            ]
        )
        won = await ex._repo.claim(
            [job.id], [], owner=remote, lease_seconds=300.0, cycle=1, backoff=lambda n: 1.0
        )
        assert [e.id for e, _, _ in won] == [job.id]

        async with lionstore.open(pg_database, run="remote") as other:
            taker = make_executor(other, name="ex")
            await taker.start()
            repo = taker._repo
            for _ in range(3):  # the lock is held: the lease decides
                assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="t") == 0
        # ``store`` still holds the remote owner's lock (its claim took it); closing it
        # ends the session, as the remote process dying would.
    async with lionstore.open(pg_database, run="remote") as other:
        taker = make_executor(other, name="ex")
        await taker.start()
        repo = taker._repo

        async def taken_over() -> bool:
            return await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="t") == 1

        await wait_until(taken_over, timeout=30, interval=0.05, what="the take-over")
        records = await read_all(other, stream=job.id)
        report = await verify(other)
    assert report.ok, report.divergence
    assert [r.kind for r in records][-1] == "event.requeued"
    assert records[-1].data.reason == "owner_gone"  # type: ignore[union-attr]


async def test_only_an_owner_that_recorded_its_lock_is_judged_by_it(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four owners on another host, each with a claim (300 s lease): ``gone`` recorded
    that it holds an advisory lock, and its session ended; ``held`` recorded so too,
    and its session still holds the lock; ``lockless`` recorded that it holds none, and
    ``silent`` recorded no identity (their locks are free: they never took them). Only
    ``gone`` is taken over (owner_gone) after the grace; the others wait for their
    leases, however long their locks are seen free."""
    monkeypatch.setattr(leases, "OWNER_LOCK_GRACE", 0.3)
    elsewhere = leases.ProcessIdentity("elsewhere", 4242, "boot", "pid:[1]", 99)
    identities = {
        "gone": elsewhere.record("ex", "gone", advisory_lock=True),
        "held": elsewhere.record("ex", "held", advisory_lock=True),
        "lockless": elsewhere.record("ex", "lockless"),
    }
    jobs = {owner: Job(n=n) for n, owner in enumerate(["gone", "held", "lockless", "silent"])}

    async def claim(store: lionstore.Store, owner: str) -> None:
        ex = make_executor(store, name="ex")
        await ex.load()
        won = await ex._repo.claim(
            [jobs[owner].id], [], owner=owner, lease_seconds=300.0, cycle=1, backoff=None
        )
        assert [e.id for e, _, _ in won] == [jobs[owner].id]

    async with lionstore.open(pg_database, run="locks") as holder:
        async with lionstore.open(pg_database, run="locks") as ended:
            ex = make_executor(ended, name="ex")
            await ex.extend(list(jobs.values()))
            await ex._repo.queue([j.id for j in jobs.values()])
            stream = executor_stream_id("ex")
            await ended.append([(stream, identity) for identity in identities.values()])
            for owner in ("gone", "lockless", "silent"):
                await claim(ended, owner)  # their sessions end with this store
        await holder.sync()
        await claim(holder, "held")

        async with lionstore.open(pg_database, run="locks") as other:
            taker = make_executor(other, name="ex")
            await taker.start()
            repo = taker._repo
            taken: list[int] = []

            async def taken_over() -> bool:
                taken.append(await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="t"))
                return sum(taken) > 0

            await wait_until(taken_over, timeout=30, interval=0.05, what="the take-over")
            assert sum(taken) == 1
            # three more graces of checks: nobody else is taken for gone
            deadline = asyncio.get_running_loop().time() + 3 * leases.OWNER_LOCK_GRACE
            while asyncio.get_running_loop().time() < deadline:
                assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="t") == 0
                await asyncio.sleep(0.05)
            requeued = await read_all(other, kinds=("event.requeued",))
    assert [(r.stream_id, r.data.reason) for r in requeued] == [  # type: ignore[union-attr]
        (jobs["gone"].id, "owner_gone")
    ]
