"""Several real OS processes on one file and run: each event is invoked by one of
them at a time and its outcome is recorded once, even when one is SIGKILLed in the
middle of a batch (compare-and-set on the event's stream, leases)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from bounds import bounded
from proc_helpers import make_executor, read_all, spawn_worker, wait_until, worker_env
from processing_events import LineJob

from lionstore import Exchange, Source
from lionstore.domain.event import EventStatus
from lionstore.domain.records import Recorded

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and O_APPEND")


def owner_pid(owner: str) -> int:
    """Processor owners are ``host:pid:suffix``."""
    return int(owner.split(":")[-2])


def read_lines(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        event_id, pid = line.split()
        rows.append((event_id, int(pid)))
    return rows


def by_stream(records: list[Recorded], kind: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        if r.kind == kind:
            found[r.stream_id].append(r.data)
    return found


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[str]:
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        outputs.append(out)
    return outputs


async def test_two_processes_share_one_executor(
    open_store: Any, db_target: str, tmp_path: Path
) -> None:
    out = tmp_path / "lines.txt"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    async with open_store(run="shared") as store:
        executor = make_executor(store, name="mp")
        events = [LineJob(out=str(out)) for _ in range(200)]
        await executor.extend(events)
    ids = [e.id for e in events]

    args = {
        "db": db_target,
        "run": "shared",
        "name": "mp",
        "config": {"queue_capacity": 10, "capacity_refresh_time": 0.02},
        "barrier_dir": str(barrier),
        "peers": 2,
    }
    procs = [spawn_worker("run", args), spawn_worker("run", args)]
    try:
        finish(procs, timeout=120)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    worker_pids = {proc.pid for proc in procs}

    async with open_store(run="shared") as store:
        records = await read_all(store)
        executor = make_executor(store, name="mp")
        await executor.load()
        assert [e.id for e in executor.pile] == ids
        assert all(e.status is EventStatus.COMPLETED for e in executor.pile)
        assert len(executor.pending) == 0

    finished = by_stream(records, "event.finished")
    claimed = by_stream(records, "event.claimed")
    assert sorted(finished) == sorted(ids)
    assert all(len(finished[i]) == 1 for i in ids)  # one outcome per event
    assert all(finished[i][0].status == "completed" for i in ids)
    assert all(len(claimed[i]) == 1 for i in ids)  # nobody died: one claim each
    assert all(claimed[i][0].attempt == 1 for i in ids)
    assert not any(r.kind in ("event.requeued", "event.abandoned") for r in records)

    lines = read_lines(out)
    assert Counter(event_id for event_id, _ in lines) == Counter(ids)  # invoked once each
    for event_id, pid in lines:  # by the process that held the claim
        assert pid == owner_pid(claimed[event_id][0].owner)
    assert {pid for _, pid in lines} == worker_pids  # both processes did work


async def test_a_sigkilled_worker_batch_is_recovered_after_its_lease(
    open_store: Any, db_target: str, tmp_path: Path
) -> None:
    out = tmp_path / "lines.txt"
    gate = tmp_path / "gate"  # the worker's invocations wait for this file
    async with open_store(run="crash") as store:
        executor = make_executor(store, name="mp")
        events = [LineJob(out=str(out), gate=str(gate)) for _ in range(12)]
        await executor.extend(events)
    ids = [e.id for e in events]
    config: dict[str, Any] = {
        "queue_capacity": 4,
        "capacity_refresh_time": 0.02,
        "lease_seconds": 1.0,
    }

    proc = spawn_worker("run", {"db": db_target, "run": "crash", "name": "mp", "config": config})
    try:
        async with open_store(run="crash") as store:

            async def worker_claimed_a_batch() -> bool:
                claims = await read_all(store, kinds=("event.claimed",))
                mine = [c for c in claims if owner_pid(c.data.owner) == proc.pid]  # type: ignore[union-attr]
                return len(mine) == 4

            await wait_until(worker_claimed_a_batch, timeout=60, interval=0.02, what="claims")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    gate.write_text("open")

    async with open_store(run="crash") as store:
        executor = make_executor(store, name="mp", **config)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        batch = [c.stream_id for c in await read_all(store, kinds=("event.claimed",))]
        assert len(batch) == 4
        assert all(executor.pile[i].status is EventStatus.PROCESSING for i in batch)

        async def requeued_all() -> bool:
            await processor.process()
            requeued = await read_all(store, kinds=("event.requeued",))
            return sorted(r.stream_id for r in requeued) == sorted(batch)

        await wait_until(requeued_all, timeout=10, interval=0.05, what="lease take-over")
        await bounded(executor.join(), "executor.join()")
        assert all(e.status is EventStatus.COMPLETED for e in executor.pile)
        records = await read_all(store)

    finished = by_stream(records, "event.finished")
    claimed = by_stream(records, "event.claimed")
    requeued = by_stream(records, "event.requeued")
    assert all(len(finished[i]) == 1 for i in ids)  # never two outcomes
    assert all(f[0].status == "completed" for f in finished.values())
    me = os.getpid()
    for i in ids:
        if i in batch:
            assert [c.attempt for c in claimed[i]] == [1, 2]
            assert [owner_pid(c.owner) for c in claimed[i]] == [proc.pid, me]
            assert requeued[i][0].previous_owner == claimed[i][0].owner
            assert finished[i][0].attempt == 2
        else:
            assert [c.attempt for c in claimed[i]] == [1]
            assert owner_pid(claimed[i][0].owner) == me
    lines = read_lines(out)
    assert Counter(event_id for event_id, _ in lines) == Counter(ids)
    assert {pid for _, pid in lines} == {me}  # the killed worker never got past the gate


MAIL_WORKER = Path(__file__).resolve().parents[1] / "mail" / "mp_worker.py"


async def test_executor_and_exchange_processes_share_one_run(
    open_store: Any, db_target: str, tmp_path: Path
) -> None:
    """Two executor processes and two exchange processes on one run at once, while this
    process sends mail through it: every event invoked and finished once, every mail
    sent, collected and delivered once (the records of both interleave in one log)."""
    out = tmp_path / "lines.txt"
    barrier, mail_barrier = tmp_path / "barrier", tmp_path / "mail-barrier"
    barrier.mkdir()
    mail_barrier.mkdir()
    sources = [Source(id=uuid.uuid4()) for _ in range(3)]
    mails_total = 30
    async with open_store(run="mixed") as store:
        executor = make_executor(store, name="mp")
        events = [LineJob(out=str(out)) for _ in range(60)]
        await executor.extend(events)
        exchange = Exchange(store=store, name="post")
        await exchange.add_source(sources)
    ids = [e.id for e in events]
    config = {"queue_capacity": 5, "capacity_refresh_time": 0.02}
    args = {"db": db_target, "run": "mixed", "name": "mp", "config": config}
    procs = [spawn_worker("run", {**args, "barrier_dir": str(barrier), "peers": 2}) for _ in "ab"]
    mail_cfg = {
        "db": db_target,
        "run": "mixed",
        "name": "post",
        "ids": [s.id for s in sources],
        "expected": mails_total,
        "barrier": str(mail_barrier),
        "timeout": 120,
    }
    procs += [
        subprocess.Popen(
            [sys.executable, str(MAIL_WORKER), json.dumps({**mail_cfg, "index": i})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=worker_env(),
        )
        for i in range(2)
    ]
    try:
        await wait_until(
            lambda: len(list(mail_barrier.iterdir())) == 2 or any(p.poll() for p in procs),
            timeout=120,
            what="the exchange workers to be ready",
        )
        (mail_barrier / "go").touch()
        async with open_store(run="mixed") as store:
            exchange = Exchange(store=store, name="post")
            await exchange.add_source(sources)
            for i in range(mails_total):
                sender, recipient = sources[i % 3], sources[(i + 1) % 3]
                await sender.send(exchange.create_mail(sender, recipient, "message", i))
        await asyncio.to_thread(finish, procs, 180)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    async with open_store(run="mixed") as store:
        records = await read_all(store)
    finished = by_stream(records, "event.finished")
    assert sorted(finished) == sorted(ids)
    assert all(len(finished[i]) == 1 and finished[i][0].status == "completed" for i in ids)
    assert Counter(event_id for event_id, _ in read_lines(out)) == Counter(ids)
    history: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.kind.startswith("mail."):
            history[r.stream_id].append(r.kind)
    assert len(history) == mails_total
    assert all(h == ["mail.sent", "mail.collected", "mail.delivered"] for h in history.values())
