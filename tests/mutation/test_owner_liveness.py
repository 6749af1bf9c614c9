"""Whether the owner of a claim is gone (lionstore.repositories.leases and
``ExecutorRepository.gone_owners``), in this process, on SQLite.

tests/processing/test_leases.py SIGKILLs real worker processes; those tests run outside
the mutation run. These give the same rules in-process: an owner whose recorded
process is certainly gone (a reaped child of this test) is taken over at once, an
owner alive, on another host or with no identity waits for its lease; the identity
comes from the log after a reopen (a checkpoint holds none); and each piece of the
rule (``owner_state``, ``process_start_ticks``, ``OwnerWatch``) on its own, with a
test clock for the throttles and the lock grace (docs/mutation.md)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bounds import bounded

import lionstore
from lionstore.domain.event_records import (
    EventRequeued,
    ProcessorIdentity,
    executor_stream_id,
)
from lionstore.processing.executor import Executor
from lionstore.repositories import leases
from lionstore.repositories.leases import (
    OWNER_GONE,
    OWNER_LOCK_GRACE,
    OwnerWatch,
    ProcessIdentity,
    owner_is_gone,
    owner_state,
    process_start_ticks,
    this_process,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="the owner rule reads Linux /proc"
)


def _spawn(comm: bytes | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A child process (not lionstore) that runs until killed, and its start time as it
    read it itself (``/proc/self/stat`` field 22, split plainly: its name then has no
    spaces). ``comm``: a name it gives itself after (field 2)."""
    rename = "" if comm is None else f"open('/proc/self/comm', 'wb').write({comm!r}); "
    code = (
        "import sys; stat = open('/proc/self/stat').read(); "
        + rename
        + "print(stat.split()[21], flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    return child, int(child.stdout.readline())


class Job(lionstore.Event):
    n: int = 0

    async def invoke(self) -> None:
        self.response = self.n


def _end(child: subprocess.Popen[bytes]) -> None:
    child.kill()
    child.wait(timeout=30)


@pytest.fixture
def reaped() -> ProcessIdentity:
    """The identity of a process of this host that has ended (killed and reaped)."""
    child, started = _spawn()
    _end(child)
    here = this_process()
    return ProcessIdentity(here.host, child.pid, here.boot_id, here.pid_namespace, started)


@pytest.fixture
def running() -> Iterator[ProcessIdentity]:
    """The identity of a process of this host that runs for the whole test."""
    child, started = _spawn()
    here = this_process()
    try:
        yield ProcessIdentity(here.host, child.pid, here.boot_id, here.pid_namespace, started)
    finally:
        _end(child)


class Monotonic:
    """``time.monotonic`` for the leases module, moved on by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock_now(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    fake = Monotonic()
    monkeypatch.setattr(leases, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def _record(identity: ProcessIdentity, owner: str) -> ProcessorIdentity:
    return identity.record("ex", owner)


# -- the executor: who is taken over at once ------------------------------------------------


async def _claimed_by(
    store: lionstore.Store,
    owners: dict[str, ProcessIdentity | None],
    *,
    checkpoint: bool = False,
) -> Any:
    """One queued job claimed (300 s lease) by each owner, after its identity record
    (none for an owner mapped to None); with ``checkpoint``, the executor's checkpoint
    is written between the identities and the claims. Returns {owner: job}."""
    executor = Executor({"queue_capacity": 10}, store=store, name="ex")
    await executor.load()
    repo = executor._repo
    jobs = {owner: Job(n=n) for n, owner in enumerate(owners)}
    await executor.extend(list(jobs.values()))
    await repo.queue([j.id for j in jobs.values()])
    stream = executor_stream_id("ex")
    await store.append(
        [(stream, _record(ident, owner)) for owner, ident in owners.items() if ident is not None]
    )
    if checkpoint:
        await repo.sync()
        assert await repo.checkpoint()
    for owner, job in jobs.items():
        won = await repo.claim(
            [job.id], [], owner=owner, lease_seconds=300.0, cycle=1, backoff=lambda n: 1.0
        )
        assert [e.id for e, _, _ in won] == [job.id]
    executor.close()
    return jobs


async def _requeued(store: lionstore.Store) -> dict[Any, Any]:
    return {
        r.stream_id: r.data
        async for r in await store.read(kinds=("event.requeued",))
        if isinstance(r.data, EventRequeued)
    }


async def test_only_an_owner_whose_process_is_gone_is_taken_over_before_its_lease(
    tmp_path: Path, clock: Any, reaped: ProcessIdentity, running: ProcessIdentity
) -> None:
    here = this_process()
    elsewhere = ProcessIdentity("another-host", reaped.pid, "b", "pid:[1]", reaped.process_started)
    owners = {
        "dead": reaped,
        "alive": running,
        "me": here,
        "remote": elsewhere,
        "silent": None,  # recorded no identity (written before identities were)
    }
    async with lionstore.open(tmp_path / "x.db", run="r", clock=clock) as store:
        jobs = await _claimed_by(store, owners)
        taker = Executor({"queue_capacity": 10}, store=store, name="ex")
        await taker.load()
        repo = taker._repo
        assert await repo.gone_owners(exclude="me") == {"dead"}
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="me") == 1
        assert await _requeued(store) == {
            jobs["dead"].id: EventRequeued(
                reason=OWNER_GONE, previous_owner="dead", attempt=1, by="me"
            )
        }
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="me") == 0
        clock.advance(300.0)  # the leases end: every other claim is taken over
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="me") == 4
        requeued = await _requeued(store)
        assert {requeued[j.id].reason for o, j in jobs.items() if o != "dead"} == {"lease_expired"}
        taker.close()


async def test_after_a_reopen_the_owners_identity_comes_from_the_log(
    tmp_path: Path, clock: Any, reaped: ProcessIdentity
) -> None:
    """A checkpoint of the executor is written after the owners' identity records and
    before their claims; the next session, restored from it, folds only the claims,
    and reads the identities from the log."""
    path = tmp_path / "x.db"
    async with lionstore.open(path, run="r", clock=clock) as store:
        jobs = await _claimed_by(store, {"dead": reaped, "silent": None}, checkpoint=True)
    async with lionstore.open(path, run="r", clock=clock) as store:
        taker = Executor({"queue_capacity": 10}, store=store, name="ex")
        await taker.load()
        repo = taker._repo
        assert repo.restored_from  # restored: no identity folded
        assert await repo.gone_owners(exclude="t") == {"dead"}
        assert set(repo.owners.identities) == {"dead", "silent"}
        assert repo.owners.identities["dead"] == _record(reaped, "dead")
        assert await repo.gone_owners(exclude="dead") == set()  # excluded: not asked
        assert (
            await bounded(repo.reclaim_expired(max_attempts=3, in_flight=set(), by="t"), "reclaim")
            == 1
        )
        assert list(await _requeued(store)) == [jobs["dead"].id]
        taker.close()


async def test_no_claims_no_owners_to_ask_about(tmp_path: Path) -> None:
    async with lionstore.open(tmp_path / "x.db", run="r") as store:
        executor = Executor({"queue_capacity": 10}, store=store, name="ex")
        await executor.load()
        assert await executor._repo.gone_owners() == set()
        assert executor._repo.owners.identities == {}  # nothing was read or assumed
        executor.close()


# -- leases.py, piece by piece ---------------------------------------------------------------


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


@pytest.mark.parametrize(
    "comm",
    [None, b"a) b ) c d e", "\xe9) \xff x".encode("latin-1")],
    ids=["plain", "parentheses-and-spaces", "not-ascii"],
)
def test_process_start_ticks_reads_field_22_whatever_the_process_name(
    comm: bytes | None,
) -> None:
    """The start time in clock ticks since boot, as the process itself read it, and
    about the uptime when it started; a name may hold ")" and spaces, and bytes that
    are not ASCII."""
    before = _uptime()
    child, started = _spawn(comm)
    try:
        if comm is not None:
            assert Path(f"/proc/{child.pid}/comm").read_bytes().rstrip(b"\n") == comm[:15]
        assert process_start_ticks(child.pid) == started
    finally:
        _end(child)
    seconds = started / os.sysconf("SC_CLK_TCK")
    assert before - 1 <= seconds <= _uptime() + 1
    assert process_start_ticks(child.pid) is None  # reaped: no such process


def test_this_process_is_this_process() -> None:
    here = this_process()
    assert here.host == socket.gethostname()
    assert here.pid == os.getpid()
    assert here.boot_id == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert here.pid_namespace == os.readlink("/proc/self/ns/pid")
    assert here.process_started == process_start_ticks(os.getpid())
    assert here.process_started is not None


def test_a_process_identity_record_names_every_field() -> None:
    identity = ProcessIdentity("h", 42, "boot", "pid:[7]", 1234)
    assert identity.record("ex", "o") == ProcessorIdentity(
        executor="ex",
        owner="o",
        advisory_lock=False,
        host="h",
        pid=42,
        boot_id="boot",
        pid_namespace="pid:[7]",
        process_started=1234,
    )
    assert identity.record("ex", "o", advisory_lock=True).advisory_lock is True


def test_owner_state_gone_alive_or_unknown(
    reaped: ProcessIdentity, running: ProcessIdentity
) -> None:
    here = this_process()
    assert owner_state(_record(here, "o")) == "alive"
    assert owner_state(_record(running, "o")) == "alive"
    assert owner_state(_record(reaped, "o")) == "gone"
    # this very pid, started at another time: the pid was reused, the owner is gone
    assert here.process_started is not None
    reused = ProcessIdentity(
        here.host, here.pid, here.boot_id, here.pid_namespace, here.process_started + 1
    )
    assert owner_state(_record(reused, "o")) == "gone"
    # whatever cannot be told is unknown, even for an owner that would be gone
    gone = _record(reaped, "o")
    for change in (
        {"host": "another-host"},
        {"boot_id": "another-boot"},
        {"pid_namespace": "pid:[1]"},
        {"boot_id": None},
        {"pid_namespace": None},
        {"process_started": None},
    ):
        assert owner_state(gone.model_copy(update=change)) == "unknown", change
    # ... and so is any owner when this process cannot tell its own start time
    blind = ProcessIdentity(here.host, here.pid, here.boot_id, here.pid_namespace, None)
    assert owner_state(gone, blind) == "unknown"


def test_owner_state_judges_from_the_host_it_is_given(
    reaped: ProcessIdentity, running: ProcessIdentity
) -> None:
    """``here`` is where the caller runs: its pid and start time stand for the
    caller's own process (not read again), its host, boot and namespace for the host."""
    here = this_process()
    me = ProcessIdentity("h", here.pid, "b", "ns", 77)  # this pid, as the caller knows it
    assert owner_state(_record(me, "o"), me) == "alive"
    elsewhere = ProcessIdentity("h", reaped.pid, "b", "ns", reaped.process_started)
    assert owner_state(_record(elsewhere, "o"), me) == "gone"
    assert owner_is_gone(_record(elsewhere, "o"), me)
    assert not owner_is_gone(_record(elsewhere, "o"))  # from the real host: unknown
    assert not owner_is_gone(_record(me, "o"), me)
    assert not owner_is_gone(_record(running, "o"))


def test_an_owner_watch_learns_the_first_identity_of_each_owner() -> None:
    watch = OwnerWatch()
    first = ProcessIdentity("h", 1, "b", "ns", 5).record("ex", "a")
    watch.learn(first)
    watch.learn(ProcessIdentity("h", 2, "b", "ns", 6).record("ex", "a"))
    assert watch.identities == {"a": first}
    assert watch.unknown({"a", "b"}) == {"b"}


def test_an_owner_watch_asks_at_most_every_period_and_a_gone_owner_stays_gone(
    clock_now: Monotonic,
) -> None:
    child, started = _spawn()
    here = this_process()
    identity = ProcessIdentity(here.host, child.pid, here.boot_id, here.pid_namespace, started)
    watch = OwnerWatch(every=10.0)
    watch.learn(identity.record("ex", "child"))
    watch.learn(_record(here, "me"))
    try:
        # "stranger" has no identity: never judged
        assert watch.gone_among({"child", "me", "stranger"}) == set()
        assert watch.alive == {"child", "me"}
    finally:
        _end(child)
    clock_now.now += 9.999
    assert watch.gone_among({"child", "stranger"}) == set()  # not asked again yet
    assert watch.alive == {"child", "me"}
    clock_now.now += 0.001
    assert watch.gone_among({"child", "stranger"}) == {"child"}  # asked: gone
    assert watch.gone == {"child"} and watch.alive == {"me"}
    assert watch.gone_among({"me"}) == set()  # only the owners asked about
    clock_now.now += 100
    assert watch.gone_among({"child"}) == {"child"}


def test_an_owner_watch_checks_every_quarter_second_by_default(clock_now: Monotonic) -> None:
    watch = OwnerWatch()
    assert watch.may_probe("a") is True
    assert watch.may_probe("b") is True  # per owner
    clock_now.now += 0.125
    assert watch.may_probe("a") is False
    clock_now.now += 0.125
    assert watch.may_probe("a") is True


def test_an_owner_lock_must_be_seen_free_on_every_check_for_the_grace(
    clock_now: Monotonic,
) -> None:
    watch = OwnerWatch()
    assert watch.lock_seen("a", None) is False  # no owner locks here: nothing known
    assert watch.lock_seen("a", False) is False  # held
    start = clock_now.now
    assert watch.lock_seen("a", True) is False  # first seen free
    clock_now.now = start + 5
    assert watch.lock_seen("a", False) is False  # taken again: the grace starts over
    clock_now.now = start + 6
    assert watch.lock_seen("a", True) is False
    clock_now.now = start + OWNER_LOCK_GRACE
    assert watch.lock_seen("a", True) is False  # free for 4 s only
    assert "a" not in watch.gone
    clock_now.now = start + 6 + OWNER_LOCK_GRACE
    assert watch.lock_seen("a", True) is True  # free on every check for the grace
    assert watch.gone == {"a"}
    clock_now.now += 1
    assert watch.lock_seen("b", True) is False  # another owner: its own grace
    assert watch.lock_seen("b", None) is False
    assert watch.free_since == {"a": start + 6}


def test_the_lock_grace_of_an_owner_not_seen_held_since_is_not_reset_by_another(
    clock_now: Monotonic,
) -> None:
    watch = OwnerWatch()
    start = clock_now.now
    assert watch.lock_seen("a", True) is False
    clock_now.now = start + 1
    assert watch.lock_seen("b", False) is False  # b's lock is held: a's grace runs on
    clock_now.now = start + OWNER_LOCK_GRACE
    assert watch.lock_seen("a", True) is True
