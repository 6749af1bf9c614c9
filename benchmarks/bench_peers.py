"""lionstore against the libraries its users would otherwise pick, in the same run.

    python benchmarks/bench_peers.py [--rounds N] [--quick] [--tasks N] [--queued N]
        [--batches N] [--peers huey,dbos,eventsourcing] [--modes shipped,full]

Workloads (every peer runs in its own virtual environment, see benchmarks/_peers.py):

* ``one_at_a_time``: a task is enqueued, run and its result read before the next
  (lionstore: ``executor.append(e)`` then ``executor.forward()``, lionagi's iModel
  pattern; huey: enqueue, the worker's dequeue + execute, ``result.get()``; DBOS: a
  workflow of one step, called).
* ``queued``: N tasks enqueued, then run to completion (lionstore: capacity 100,
  ``extend`` + ``forward``; huey: enqueue all, dequeue + execute until empty, read
  every result; DBOS: ``queue.enqueue`` each, then every ``get_result``).
* ``appends``: batches of 100 records into new streams, one transaction per batch
  (lionstore: ``Store.append``; eventsourcing: ``SQLiteApplicationRecorder.
  insert_events``).

Two floors run beside them, raw stdlib ``sqlite3`` with nothing else (JSON encoded and
digests worked out before the timed region, no Python objects):

* ``raw sqlite3, one table``: ``executemany`` into one table with a unique index on
  (stream, version), the layout eventsourcing's recorder writes. No library writing
  that layout goes faster.
* ``raw sqlite3, lionstore's layout``: the same rows in a real lionstore file, as
  lionstore writes them (one task: its three commits, see bench_executor.py's ceiling;
  appends: the stream rows and the records with their digests, one commit per
  batch). lionstore cannot go faster than this. The floor of one layout over
  the other's peer is the most lionstore can reach against that peer without changing
  what it writes.

Each is run at two durabilities (``--modes``): ``shipped`` (each library as it ships)
and ``full`` (everyone at WAL + synchronous=FULL). The table prints the journal mode
and synchronous level **read back from each library's connection**, tasks (or
records) per second as the median over rounds with (min-max), and lionstore's
speed relative to each peer within the same round (>1: lionstore is faster).

The machine is shared and noisy: the order of contenders rotates per round, and only
same-round ratios are compared. Timings are never asserted (CI runs ``--quick`` only
to keep this script working).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import _peers
import bench_executor
from _common import (
    Results,
    add_smoke_argument,
    fmt_num,
    fmt_summary,
    machine_line,
    print_table,
    round_order,
)

import lionstore
from lionstore import Event, EventStatus, Executor, RecordData
from lionstore.log.digest import chain_digests
from lionstore.log.sqlite_commit import INSERT_RECORD, INSERT_STREAM, SYNCHRONOUS
from lionstore.replay.verify import verify

_SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
RAW_ONE_TABLE = "raw sqlite3, one table"
RAW_LIONSTORE = "raw sqlite3, lionstore's layout"


class Task(Event):
    n: int = 0

    async def invoke(self) -> None:
        self.response = self.n * 2


class Happened(RecordData):
    kind = "bench.happened"
    n: int
    text: str


def _settings(store: lionstore.Store) -> dict[str, str]:
    """What lionstore ran with, read back from its writer connection (a private
    attribute: the benchmark looks where the commits go, as it does for the peers)."""
    conn = store._backend._writer.connection()  # type: ignore[attr-defined]
    journal = conn.execute("pragma journal_mode").fetchone()[0]
    sync = _SYNC[conn.execute("pragma synchronous").fetchone()[0]]
    return {"journal_mode": journal, "synchronous": sync}


async def _lionstore_tasks(workload: str, n: int, mode: str) -> dict[str, Any]:
    durability = "full" if mode == "full" else "normal"
    with tempfile.TemporaryDirectory(prefix="bench-lionstore-") as work:
        path = Path(work) / "lionstore.db"
        events = [Task(n=i) for i in range(n)]
        async with lionstore.open(path, run="bench", durability=durability) as store:
            executor = Executor({"queue_capacity": 100, "capacity_refresh_time": 0.01})
            await executor.start()
            t0 = time.perf_counter()
            if workload == "one_at_a_time":
                for event in events:
                    await executor.append(event)
                    await executor.forward()
                    assert event.execution.response == event.n * 2
            else:
                await executor.extend(events)
                await executor.forward()
                await executor.join()
            seconds = time.perf_counter() - t0
            done = sum(1 for e in executor.pile if e.status is EventStatus.COMPLETED)
            assert done == n, f"lionstore completed {done} of {n}"
            read_back = _settings(store)
            executor.close()
    return {"seconds": seconds, "n": n, **read_back}


async def _lionstore_appends(batches: int, size: int, mode: str) -> dict[str, Any]:
    durability = "full" if mode == "full" else "normal"
    with tempfile.TemporaryDirectory(prefix="bench-lionstore-") as work:
        path = Path(work) / "lionstore.db"
        data = Happened(n=0, text="x" * 40)
        prepared = [
            [(lionstore.IDType.create(), data) for _ in range(size)] for _ in range(batches)
        ]
        async with lionstore.open(path, run="bench", durability=durability) as store:
            t0 = time.perf_counter()
            for batch in prepared:
                await store.append(batch, expected_versions=dict.fromkeys((s for s, _ in batch), 0))
            seconds = time.perf_counter() - t0
            read_back = _settings(store)
    return {"seconds": seconds, "n": batches, "events": batches * size, **read_back}


def _raw_appends(batches: int, size: int, mode: str) -> dict[str, Any]:
    """The floor of eventsourcing's layout: one table, one index on (stream,
    version), pre-encoded JSON."""
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as work:
        conn = sqlite3.connect(Path(work) / "raw.db", isolation_level=None)
        conn.execute("pragma journal_mode=wal")
        conn.execute(f"pragma synchronous={'FULL' if mode == 'full' else 'NORMAL'}")
        conn.execute(
            "create table log (position integer primary key, stream text not null, "
            "version integer not null, kind text not null, data text not null, "
            "unique (stream, version))"
        )
        text = json.dumps({"n": 0, "text": "x" * 40})
        prepared = [
            [(str(uuid.uuid4()), 1, "bench.happened", text) for _ in range(size)]
            for _ in range(batches)
        ]
        t0 = time.perf_counter()
        for batch in prepared:
            conn.execute("begin immediate")
            conn.executemany(
                "insert into log (stream, version, kind, data) values (?,?,?,?)", batch
            )
            conn.execute("commit")
        seconds = time.perf_counter() - t0
        journal = conn.execute("pragma journal_mode").fetchone()[0]
        sync = _SYNC[conn.execute("pragma synchronous").fetchone()[0]]
        conn.close()
    return {"seconds": seconds, "n": batches, "events": batches * size,
            "journal_mode": journal, "synchronous": sync}  # fmt: skip


async def _raw_lionstore_appends(batches: int, size: int, mode: str) -> dict[str, Any]:
    """The floor of lionstore's layout: per batch, the stream rows and the records with
    their digests (worked out before the timed region), in one commit, on a file
    lionstore made, with its writer's pragmas. (The head row is not written: since
    schema 0003 a commit on SQLite leaves it alone.)"""
    durability = "full" if mode == "full" else "normal"
    with tempfile.TemporaryDirectory(prefix="bench-raw-lionstore-") as work:
        path = Path(work) / "lionstore.db"
        async with lionstore.open(path, run="bench", durability=durability) as store:
            run_no = store.run.run_no
        conn = bench_executor.raw_connection(path, durability)
        try:
            position, stream_no = conn.execute(
                "select last_position, last_stream_no from lionstore_head"
            ).fetchone()
            (tip,) = conn.execute(
                "select digest from lionstore_records order by position desc limit 1"
            ).fetchone()
            text = Happened(n=0, text="x" * 40).model_dump_json()
            now_us = time.time_ns() // 1000
            prepared = []
            for _ in range(batches):
                sids = [str(uuid.uuid4()) for _ in range(size)]
                first = position + 1
                digests = chain_digests(
                    tip, first, now_us, sids, [1] * size,
                    [Happened.kind] * size, [1] * size, [text] * size,
                )  # fmt: skip
                tip = digests[-1]
                streams = [(stream_no + 1 + i, run_no, sid) for i, sid in enumerate(sids)]
                records = [
                    (first + i, run_no, stream_no + 1 + i, 1, Happened.kind, 1, text, now_us, d)
                    for i, d in enumerate(digests)
                ]
                position += size
                stream_no += size
                prepared.append((streams, records))
            t0 = time.perf_counter()
            for streams, records in prepared:
                conn.execute("begin immediate")
                conn.executemany(INSERT_STREAM, streams)
                conn.executemany(INSERT_RECORD, records)
                conn.execute("commit")
            seconds = time.perf_counter() - t0
            journal = conn.execute("pragma journal_mode").fetchone()[0]
            sync = _SYNC[conn.execute("pragma synchronous").fetchone()[0]]
        finally:
            conn.close()
        async with lionstore.open(path, run="bench") as store:  # what it wrote is a log
            report = await verify(store)
        assert report.ok, f"the raw lionstore-layout floor wrote a log that fails verify: {report}"
    return {"seconds": seconds, "n": batches, "events": batches * size,
            "journal_mode": journal, "synchronous": sync}  # fmt: skip


async def _raw_lionstore_tasks(n: int, mode: str) -> dict[str, Any]:
    """The floor of one task at a time in lionstore's layout: the three commits a task
    makes (bench_executor.py's ceiling; at "full" the claim's without a sync of its own,
    as lionstore makes it), nothing else."""
    durability = "full" if mode == "full" else "normal"
    with tempfile.TemporaryDirectory(prefix="bench-raw-lionstore-") as work:
        out = await bench_executor.run_ceiling(n, Path(work), durability)
    return {"seconds": out["total"], "n": n, "journal_mode": "wal",
            "synchronous": SYNCHRONOUS[durability]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny N, one round (CI)")
    parser.add_argument("--tasks", type=int, default=1000, help="one-at-a-time tasks")
    parser.add_argument("--queued", type=int, default=5000, help="queued tasks")
    parser.add_argument("--batches", type=int, default=200, help="batches of 100 appends")
    parser.add_argument("--peers", default="huey,dbos,eventsourcing")
    parser.add_argument("--modes", default="shipped,full")
    add_smoke_argument(parser)
    args = parser.parse_args(argv)
    if args.quick or args.smoke:
        args.rounds, args.tasks, args.queued, args.batches = 1, 20, 50, 5
    modes = [m for m in args.modes.split(",") if m]
    wanted = [p for p in args.peers.split(",") if p]

    print(f"# lionstore against its peers ({machine_line()})")
    peers: dict[str, _peers.Peer] = {}
    for name in wanted:
        got = _peers.ensure_venv(name)
        if isinstance(got, str):
            print(f"- {name}: left out ({got})")
        else:
            peers[name] = got
            print(f"- {name} {got.version} in {got.python.parent.parent}")
    print(f"- lionstore {lionstore.__version__} (this checkout), SQLite {sqlite3.sqlite_version}")
    print()

    plans: list[tuple[str, str, list[str], int]] = []
    for mode in modes:
        task_peers = [p for p in ("huey", "dbos") if p in peers]
        plans.append(("one_at_a_time", mode, ["lionstore", *task_peers, RAW_LIONSTORE], args.tasks))
        plans.append(("queued", mode, ["lionstore", *task_peers], args.queued))
        append_peers = [RAW_ONE_TABLE, RAW_LIONSTORE] + (
            ["eventsourcing"] if "eventsourcing" in peers else []
        )
        plans.append(("appends", mode, ["lionstore", *append_peers], args.batches))

    settings: dict[tuple[str, str], str] = {}
    res = Results()
    for round_no in range(args.rounds):
        for workload, mode, contenders, n in plans:
            for who in round_order(contenders, round_no):
                if who == "lionstore":
                    if workload == "appends":
                        out = asyncio.run(_lionstore_appends(n, 100, mode))
                    else:
                        out = asyncio.run(_lionstore_tasks(workload, n, mode))
                elif who == RAW_ONE_TABLE:
                    out = _raw_appends(n, 100, mode)
                elif who == RAW_LIONSTORE and workload == "appends":
                    out = asyncio.run(_raw_lionstore_appends(n, 100, mode))
                elif who == RAW_LIONSTORE:
                    out = asyncio.run(_raw_lionstore_tasks(n, mode))
                elif workload == "appends":
                    out = _peers.run_peer(peers[who], "appends", n, mode, batch=100)
                else:
                    out = _peers.run_peer(peers[who], workload, n, mode)
                count = out.get("events", out["n"])
                res.add(f"{workload}/{mode}/{who}", count / out["seconds"])
                settings[(mode, who)] = f"{out['journal_mode']} + {out['synchronous']}"

    for workload, mode, contenders, n in plans:
        unit = "records/s" if workload == "appends" else "tasks/s"
        size = f"{n} batches of 100" if workload == "appends" else f"{n} tasks"
        print(f"## {workload}, durability {mode} ({size}, {args.rounds} round(s))")
        rows = []
        for who in contenders:
            key = f"{workload}/{mode}/{who}"
            ratio = (
                "" if who == "lionstore"
                else fmt_summary(res.ratio(f"{workload}/{mode}/lionstore", key), fmt_num) + "x"
            )  # fmt: skip
            rows.append([who, settings[(mode, who)], fmt_summary(res.get(key)), ratio])
        print_table(["library", "journal + synchronous (read back)", unit, "lionstore / it"], rows)
        floors = [
            f"{floor} / {who} "
            + fmt_summary(
                res.ratio(f"{workload}/{mode}/{floor}", f"{workload}/{mode}/{who}"), fmt_num
            )
            + "x"
            for who in contenders
            if not who.startswith("raw") and who != "lionstore"
            for floor in (RAW_LIONSTORE,)
            if floor in contenders
        ]
        if floors:  # the most lionstore can reach against each peer, writing what it writes
            print("\nceiling: " + "; ".join(floors))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
