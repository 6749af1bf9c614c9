"""Real OS processes appending to one database and one run at once.

All of them must succeed (no 'database is locked' ever reaches a caller), and the log
must come out whole: gapless positions, contiguous stream versions, every record there
exactly once, each process's appends in the order it made them. A reader tailing the
log while they write never skips a record (one committing late below a position the
reader has already passed would be skipped).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest

import lionstore
from lionstore import IDType

from ._kinds import Tick
from .logtools import HERE, read_line, records, subprocess_env

WORKER = HERE / "_appender.py"
APPENDS = 300
TIMEOUT = 120

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _spawn(config: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )


async def _tail(db: str, done: asyncio.Event) -> tuple[list[int], list[int]]:
    """Follow the log until ``done`` and nothing new: the positions a checkpointing
    reader (``read(after=checkpoint)``) saw, and those the store's feed (``sync()``)
    delivered."""
    read: list[int] = []
    fed: list[int] = []
    async with lionstore.open(db, run="together", lock_timeout=60) as store:
        store.subscribe(lambda batch: fed.extend(r.position for r in batch))
        checkpoint = 0
        while True:
            finished = done.is_set()
            async for record in await store.read(run=None, after=checkpoint):
                read.append(record.position)
                checkpoint = record.position
            await store.sync()
            if finished and checkpoint == await store.head():
                return read, fed
            await asyncio.sleep(0.001)  # pacing the polls; the exit is the condition


@pytest.mark.parametrize("workers", [3])
async def test_processes_append_to_one_run_concurrently(new_db_target: str, workers: int) -> None:
    db = new_db_target  # no schema yet: the workers race to create it
    shared = [str(IDType.create()) for _ in range(3)]
    procs = [
        _spawn(
            {"db": str(db), "run": "together", "worker": w, "appends": APPENDS, "shared": shared}
        )
        for w in range(workers)
    ]
    try:
        for proc in procs:  # the barrier: every worker is up before any starts
            assert proc.stdout is not None
            assert await asyncio.to_thread(read_line, proc.stdout, proc, TIMEOUT) == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        done = asyncio.Event()
        tailing = asyncio.ensure_future(_tail(db, done))
        outputs = await asyncio.wait_for(
            asyncio.gather(
                *(asyncio.to_thread(proc.communicate, timeout=TIMEOUT) for proc in procs)
            ),
            TIMEOUT + 30,
        )
        done.set()
        read, fed = await asyncio.wait_for(tailing, TIMEOUT)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)

    reports = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err.lower(), err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["appends"] == APPENDS for r in reports)
    total = sum(r["records"] for r in reports)
    contended = sum(r["retries"] for r in reports)

    async with lionstore.open(db, run="together") as store:
        runs = await store.runs()
        assert [r.label for r in runs] == ["together"]  # one run, however they raced
        everything = await records(store, run=None)
        head = await store.head()

    # positions: gapless 1..N, one run.started and every worker's records
    assert [r.position for r in everything] == list(range(1, head + 1))
    # the tailing reader saw every one of them, in order, once; so did the feed
    assert read == list(range(1, head + 1))
    assert fed == list(range(fed[0], head + 1)) if fed else head == 1
    assert head == 1 + total
    assert [r.kind for r in everything].count("run.started") == 1

    # each worker's positions are in the log, as its own records, in its own order
    by_position = {r.position: r for r in everything}
    claimed: set[int] = set()
    for report in reports:
        mine = report["positions"]
        assert len(mine) == report["records"]
        assert mine == sorted(mine)
        assert not claimed & set(mine)
        claimed |= set(mine)
        ticks = [by_position[p].data for p in mine]
        assert all(isinstance(t, Tick) and t.worker == report["worker"] for t in ticks)
        seqs = [t.seq for t in ticks]  # type: ignore[union-attr]
        assert seqs == sorted(seqs)
        assert set(seqs) == set(range(APPENDS))
    assert claimed == set(range(2, head + 1))

    # per-stream versions are 1, 2, 3 ... with no gap or repeat
    versions: dict[str, list[int]] = defaultdict(list)
    for r in everything:
        versions[r.stream_id].append(r.stream_version)
    for sid, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), sid
    # the shared streams got one record per guarded append, from every worker
    assert sum(len(versions[s]) for s in shared) == (APPENDS + 2) // 3 * workers
    for s in shared:
        writers = {by_position[r.position].data.worker for r in everything if r.stream_id == s}  # type: ignore[union-attr]
        assert writers == set(range(workers)), (s, writers, contended)
