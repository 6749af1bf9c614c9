"""Worker processes on PostgreSQL take disjoint work (claim turns).

Four real worker processes run one executor on one run. Every event is invoked once,
claimed once and COMPLETED once; each cycle decided on a log that already held every
other worker's earlier claims (the claim turn: no two cycles race for the same queue
head); the global positions run 1, 2, 3, ... with no gap; and verify re-decides every
cycle from the log and finds what was recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from proc_helpers import HERE, REPO, make_executor, read_all, worker_env
from processing_events import LineJob

import lionstore
from lionstore.domain.event import EventStatus
from lionstore.domain.event_records import EventClaimed
from lionstore.replay import verify

pytestmark = pytest.mark.usefixtures("pg_cluster")

WORKERS = 4
SCALE_WORKER = HERE / "_pg_scale_worker.py"


def _spawn(args: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCALE_WORKER), json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(),
        cwd=str(REPO),
    )


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


async def test_worker_processes_finish_every_event_once_with_disjoint_claims(
    pg_database: str, tmp_path: Path
) -> None:
    out, barrier = tmp_path / "lines.txt", tmp_path / "barrier"
    barrier.mkdir()
    async with lionstore.open(pg_database, run="scale") as store:
        executor = make_executor(store, name="scale")
        events = [LineJob(out=str(out)) for _ in range(240)]
        await executor.extend(events)
    ids = [e.id for e in events]
    args = {
        "db": pg_database,
        "run": "scale",
        "name": "scale",
        "config": {"queue_capacity": 10, "capacity_refresh_time": 0.01},
        "barrier_dir": str(barrier),
        "peers": WORKERS,
    }
    procs = [_spawn(args) for _ in range(WORKERS)]
    reports = []
    try:
        for proc in procs:
            stdout, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        _stop(procs)
    # Claim turns taken, and no race lost but after a turn not had in time (a turn
    # waited for longer than 2 s on a machine this busy: claimed without it).
    assert sum(r["turns"] for r in reports) > 0
    assert sum(r["lost"] for r in reports) <= sum(r["missed"] for r in reports), reports

    async with lionstore.open(pg_database, run="scale") as store:
        records = await read_all(store)
        executor = make_executor(store, name="scale")
        await executor.load()
        assert all(e.status is EventStatus.COMPLETED for e in executor.pile)
        report = await verify(store)
    assert report.divergence is None, report.divergence
    assert report.cycles > 0

    # Every event invoked once (user code), claimed once, finished once as completed.
    invoked = Counter(line.split()[0] for line in out.read_text().splitlines())
    assert invoked == Counter(str(i) for i in ids)
    claims: dict[Any, list[Any]] = defaultdict(list)
    finished: dict[Any, list[Any]] = defaultdict(list)
    for r in records:
        if r.kind == "event.claimed":
            claims[r.stream_id].append(r)
        elif r.kind == "event.finished":
            finished[r.stream_id].append(r)
    assert sorted(claims) == sorted(ids) and sorted(finished) == sorted(ids)
    assert all(len(claims[i]) == 1 and len(finished[i]) == 1 for i in ids)
    assert all(finished[i][0].data.status == "completed" for i in ids)
    assert not any(r.kind in ("event.requeued", "event.abandoned") for r in records)

    # Disjoint: each cycle saw (``seen``) every claim another worker committed before it
    # (a cycle that lost a race re-decides, but its records keep the ``seen`` it began
    # with).
    cycles: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for r in records:
        if isinstance(r.data, EventClaimed):
            cycles[(r.data.owner, r.data.cycle)].append(r)
    assert len({owner for owner, _ in cycles}) >= 2  # more than one worker claimed
    for (owner, _), group in cycles.items():
        seen = group[0].data.seen
        earlier = [
            r.position
            for r in records
            if isinstance(r.data, EventClaimed)
            and r.data.owner != owner
            and r.position < group[0].position
        ]
        if not any(r["missed"] for r in reports):
            assert all(p <= seen for p in earlier), (owner, seen, max(earlier))

    # The global order: positions 1..head, each taken once.
    assert [r.position for r in records] == list(range(1, len(records) + 1))
