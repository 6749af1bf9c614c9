"""PostgreSQL restarting under lionstore (lionstore.log.postgres: reconnect with back-off).

The chaos test restarts a throwaway cluster of its own (``pg_ctl restart -m fast``)
several times while executor, exchange and sender processes share one run: no
worker may die of it, every event ends once, every mail is delivered once, and
``verify`` passes. (DBOS tests its workflows with PostgreSQL restarted every 5-40 s;
here the restarts are paced by the workload's progress.)"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_cluster import Cluster, UnavailableError

import lionstore
from lionstore import Exchange, Executor, Source
from lionstore.errors import StoreError
from lionstore.log.postgres import is_disconnect
from lionstore.replay import verify

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    """A throwaway cluster this module may restart (never $LIONSTORE_TEST_PG_URL's)."""
    try:
        cluster = Cluster.start(own=True)
    except UnavailableError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs PostgreSQL's binaries: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL restart tests need a throwaway cluster: {exc}")
    try:
        yield cluster
    finally:
        try:
            cluster.drop_template()
        finally:
            cluster.stop()


async def _restart(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.restart)


async def test_an_idle_store_carries_on_after_a_restart(own_cluster: Cluster) -> None:
    """The first calls after a restart (append, read, sync, runs) find the server
    gone, reconnect and succeed; nothing is lost or written twice."""
    url = own_cluster.create_database()
    stream = lionstore.IDType.create()
    async with lionstore.open(url, run="idle") as store:
        executor = Executor({"queue_capacity": 2, "capacity_refresh_time": 0.01}, store=store)
        await executor.start()  # a writer connection and a read pool, both idle now
        await store.append([(stream, _Note(n=1))], expected_versions={stream: 0})
        await _restart(own_cluster)
        await store.append([(stream, _Note(n=2))], expected_versions={stream: 1})
        await _restart(own_cluster)
        assert await _ns(await store.read(stream=stream)) == [1, 2]
        await _restart(own_cluster)
        await store.sync()
        assert len(await store.runs()) == 1
        report = await verify(store)
    assert report.ok, report.divergence


async def test_a_call_waits_for_the_server_to_come_back(
    own_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """With the server down, an append retries (and says so on the lionstore.postgres
    logger) until the server is back, then commits once."""
    url = own_cluster.create_database()
    stream = lionstore.IDType.create()
    async with lionstore.open(url, run="down") as store:
        await store.append([(stream, _Note(n=1))])
        await asyncio.to_thread(own_cluster.stop_server)
        try:
            with caplog.at_level(logging.WARNING, logger="lionstore.postgres"):
                task = asyncio.ensure_future(
                    store.append([(stream, _Note(n=2))], expected_versions={stream: 1})
                )
                await _wait_for(
                    lambda: "reconnecting for up to 60 s" in caplog.text or task.done(),
                    timeout=30,
                    what="the append to retry",
                )
                assert not task.done()
        finally:
            await asyncio.to_thread(own_cluster.start_server)
        await asyncio.wait_for(task, timeout=60)
        assert await _ns(await store.read(stream=stream)) == [1, 2]
    assert "reconnected to PostgreSQL" in caplog.text


async def test_opening_waits_for_the_server_to_come_back(
    own_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started while the server restarts waits for it at open, as a running
    store's calls do, instead of failing with 'cannot connect'."""
    url = own_cluster.create_database()
    async with lionstore.open(url, run="later") as store:  # the schema exists
        await store.append([(lionstore.IDType.create(), _Note(n=1))])
    await asyncio.to_thread(own_cluster.stop_server)
    try:
        with caplog.at_level(logging.WARNING, logger="lionstore.postgres"):
            opening = asyncio.ensure_future(lionstore.open(url, run="later").__aenter__())
            await _wait_for(
                lambda: "reconnecting for up to 60 s" in caplog.text or opening.done(),
                timeout=30,
                what="the open to retry",
            )
            assert not opening.done()
    finally:
        await asyncio.to_thread(own_cluster.start_server)
    store = await asyncio.wait_for(opening, timeout=60)
    try:
        assert await _ns(await store.read(kinds=["pgrestart.note"])) == [1]
    finally:
        await store.close()


async def test_reconnect_timeout_zero_raises_at_once(own_cluster: Cluster) -> None:
    url = own_cluster.create_database()
    stream = lionstore.IDType.create()
    async with lionstore.open(url, run="strict", reconnect_timeout=0) as store:
        await store.append([(stream, _Note(n=1))])
        await asyncio.to_thread(own_cluster.stop_server)
        try:
            with pytest.raises(StoreError) as failure:
                await asyncio.wait_for(store.append([(stream, _Note(n=2))]), timeout=30)
            assert is_disconnect(failure.value)
        finally:
            await asyncio.to_thread(own_cluster.start_server)
        await store.append([(stream, _Note(n=3))])  # the next call connects afresh
        assert await _ns(await store.read(stream=stream)) == [1, 3]


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "5", True])
async def test_a_bad_reconnect_timeout_is_refused(value: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reconnect_timeout"):
        lionstore.open(tmp_path / "x.db", reconnect_timeout=value)
    assert not (tmp_path / "x.db").exists()


class _Note(lionstore.RecordData):
    kind = "pgrestart.note"
    n: int


async def _ns(records: AsyncIterator[lionstore.Recorded]) -> list[int]:
    """The ``n`` of each note read, in order."""
    ns = []
    async for record in records:
        assert isinstance(record.data, _Note)
        ns.append(record.data.n)
    return ns


def _spawn(mode: str, cfg: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), str(REPO), env.get("PYTHONPATH", "")) if p
    )
    code = "import sys, chaos_workload; chaos_workload.main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, mode, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )


def _invocations(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


async def _wait_for(predicate: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_workers_survive_postgres_restarts(
    own_cluster: Cluster, tmp_path: Path, record_property: Any
) -> None:
    import chaos_workload

    url = own_cluster.create_database()
    started = time.monotonic()
    out = tmp_path / "invocations.txt"
    events_total, mails_total, restarts = 300, 80, 5
    sources = [Source(id=uuid.uuid4()) for _ in range(4)]
    async with lionstore.open(url, run="chaos") as store:
        executor = Executor(store=store, name=chaos_workload.EXECUTOR)
        events = [chaos_workload.ChaosJob(out=str(out), pause=0.05) for _ in range(events_total)]
        await executor.extend(events)
        exchange = Exchange(store=store, name=chaos_workload.ROUTER)
        await exchange.add_source(sources)
        executor.close()
    ids = [e.id for e in events]
    base = {"db": url, "run": "chaos", "reconnect_timeout": 60.0}
    config = {"queue_capacity": 3, "capacity_refresh_time": 0.02}
    procs = [_spawn("executor", {**base, "config": config}) for _ in range(3)]
    mail_cfg = {**base, "expected": mails_total, "timeout": 240}
    procs += [_spawn("exchange", mail_cfg) for _ in range(2)]
    sender_cfg = {**base, "ids": [s.id for s in sources], "mails": mails_total, "pause": 0.03}
    procs.append(_spawn("sender", sender_cfg))
    progress_at_restart: list[int] = []
    try:
        for k in range(1, restarts + 1):
            threshold = k * events_total // (restarts + 3)
            await _wait_for(
                lambda t=threshold: len(_invocations(out)) >= t or any(p.poll() for p in procs),
                timeout=120,
                what=f"{threshold} invocations",
            )
            for proc in procs:
                if proc.poll():
                    raise AssertionError(f"a worker failed: {proc.communicate()[1]}")
            progress_at_restart.append(len(_invocations(out)))
            await _restart(own_cluster)
        results, notes = [], Counter[str]()
        for proc in procs:
            stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=240)
            assert proc.returncode == 0, stderr
            results.append(json.loads(stdout.strip().splitlines()[-1]))
            for note in ("reconnected to PostgreSQL", "had committed", "had not committed"):
                notes[note] += stderr.count(note)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(n < events_total for n in progress_at_restart), progress_at_restart

    async with lionstore.open(url, run="chaos") as store:
        records = [r async for r in await store.read()]
        report = await verify(store)
    assert report.ok, report.divergence
    finished: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        if r.kind == "event.finished":
            finished[r.stream_id].append(r.data)
    assert sorted(finished) == sorted(ids)
    assert all(len(f) == 1 and f[0].status == "completed" for f in finished.values())
    assert Counter(_invocations(out)) == Counter(ids)  # each invoked once
    history: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if r.kind.startswith("mail."):
            history[r.stream_id].append(r.kind)
    assert len(history) == mails_total
    assert all(h == ["mail.sent", "mail.collected", "mail.delivered"] for h in history.values())
    assert [r["completed"] for r in results[:3]] == [events_total] * 3  # each saw them all
    record_property(
        "reliability",
        f"postgres restarts: {len(progress_at_restart)} restarts (pg_ctl restart -m fast) at "
        f"{progress_at_restart} of {events_total} invocations, {len(procs)} worker processes "
        f"(3 executors, 2 exchanges, 1 sender), {events_total} events each finished once, "
        f"{mails_total} mails each delivered once, {len(records)} records, verify OK, "
        f"every worker exited 0; {notes['reconnected to PostgreSQL']} reconnections after an "
        f"error, cut-off COMMITs found committed {notes['had committed']}, redone "
        f"{notes['had not committed']}; {time.monotonic() - started:.0f} s",
    )


async def test_owner_locks_are_taken_again_after_a_restart(own_cluster: Cluster) -> None:
    """A restart drops every session's advisory locks; the holder's watchdog takes its
    owner lock again once the server is back, so the owner looks alive again."""
    url = own_cluster.create_database()
    async with (
        lionstore.open(url, run="locks") as holder,
        lionstore.open(url, run="locks") as watcher,
    ):
        await holder.hold_owner_lock("owner-r")
        assert await watcher.owner_lock_free("owner-r") is False
        await _restart(own_cluster)
        deadline = time.monotonic() + 30
        while await watcher.owner_lock_free("owner-r"):  # free until the holder is back
            assert time.monotonic() < deadline, "the owner lock was not taken again"
            await asyncio.sleep(0.05)
        assert await watcher.owner_lock_free("owner-r") is False
