"""Append and executor throughput with 1, 2 and 4 worker processes, PostgreSQL beside SQLite;
and PostgreSQL executors scaled out to 1, 4 and 8 worker processes.

    python benchmarks/bench_postgres.py [--rounds N] [--quick] [--events N]
        [--appends N] [--batch N] [--invoke-ms MS] [--scale-events N]
        [--capacity N] [--only scale|compare] [--durable-server] [--dir DIR]

Every worker is a separate OS process (benchmarks/_pg_worker.py) on one database and
one run. Each variant gets a fresh database: a SQLite file in a temporary directory,
or a PostgreSQL database copied from a template holding the schema, on the server
named by $LIONSTORE_TEST_PG_URL or else a throwaway cluster started here (the tests'
tests/pg_cluster.py: fsync off, so neither backend fsyncs a commit; SQLite runs at
durability "normal"). ``--durable-server`` starts a throwaway server as one ships
instead, fsync and synchronous_commit on: every commit waits for its WAL on disk,
except an executor's claim, which its outcome's flush covers.

* ``append``: together the workers make ``--appends`` appends (default 4,000) of
  ``--batch`` records (default 1), each to a new stream; the total is split evenly.
* ``executor``: ``--events`` trivial events (default 10,000; ``invoke`` sets the
  response) are added to one executor beforehand; every worker then runs that
  executor (capacity 100) until none is left.

* ``scale`` (PostgreSQL only): the executor run with 1, 4 and 8 workers, once with
  events whose ``invoke`` awaits ``--invoke-ms`` (default 20 ms: a model call, the
  worker waits rather than computes; ``--scale-events`` events, default 2,000) and
  once with ``--events`` trivial events. Figures: events per second and the ratio to
  1 worker within each round. The load average is printed before and after: the
  machine's other work competes for the same cores.

Workers open their store and wait at a barrier; the time runs from the start signal
to the last worker's end. Figures: records or events per second, median over rounds
with (min-max), and PostgreSQL / SQLite within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
sys.path.insert(2, str(Path(__file__).resolve().parent.parent / "tests"))  # pg_cluster

import _pg_worker
from _common import (
    Results,
    add_smoke_argument,
    fmt_num,
    fmt_summary,
    git_state,
    machine_line,
    print_table,
)
from bench_executor import TrivialEvent
from pg_cluster import Cluster, UnavailableError

import lionstore
from lionstore import EventStatus

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BACKENDS = ("sqlite", "postgres")
WORKERS = (1, 2, 4)
SCALE_WORKERS = (1, 4, 8)
RUN = "bench"
LAST_CPU: list[float] = [0.0]  # the workers' CPU seconds in the last run_workers
# The server's CPU seconds in the last run_workers (None: not measurable), and the
# cluster whose server it is (set by main).
LAST_SERVER_CPU: list[float | None] = [None]
SERVER: list[Cluster] = []
LAST_REPORTS: list[dict[str, Any]] = []  # each worker's report of the last run
TIMEOUT = float(os.environ.get("BENCH_PG_TIMEOUT", "900"))


def _spawn(mode: str, cfg: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", "import _pg_worker; _pg_worker.main()", mode, json.dumps(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def server_cpu_seconds(cluster: Cluster) -> float | None:
    """CPU seconds the PostgreSQL server has used so far: its postmaster and every
    process under it, live (backends, background workers) or exited and reaped (their
    time is in the postmaster's cutime/cstime). None for a server this script did not
    start, or without /proc."""
    root = getattr(cluster, "_root", None)
    if root is None:
        return None
    try:
        postmaster = int((Path(root) / "data" / "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")

        def stat(pid: int) -> list[str]:
            text = Path(f"/proc/{pid}/stat").read_text()
            return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on

        fields = stat(postmaster)
        ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                child = stat(int(entry.name))
            except (OSError, ValueError):
                continue  # gone meanwhile
            if int(child[1]) == postmaster:  # ppid
                ticks += int(child[11]) + int(child[12])
        return ticks / tick
    except (OSError, ValueError, IndexError):
        return None


def run_workers(mode: str, configs: list[dict[str, Any]]) -> tuple[float, int]:
    """Start the workers, release them together; (seconds, work done)."""
    procs = [_spawn(mode, cfg) for cfg in configs]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"worker did not start: {line} {proc.communicate()[1]}")
        server_before = server_cpu_seconds(SERVER[0]) if SERVER else None
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        deadline = time.monotonic() + TIMEOUT
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)  # its tasks' stacks, then it is killed
                try:
                    _out, err = proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _out, err = proc.communicate()
                raise RuntimeError(f"worker hung past {TIMEOUT:g} s; its tasks:\n{err}") from None
            if proc.returncode != 0:
                raise RuntimeError(f"worker failed: {err}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        server_after = server_cpu_seconds(SERVER[0]) if SERVER else None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    start = min(r["start"] for r in reports)
    end = max(r["end"] for r in reports)
    LAST_CPU[:] = [sum(r.get("cpu", 0.0) for r in reports)]
    LAST_SERVER_CPU[:] = [
        None if server_before is None or server_after is None else server_after - server_before
    ]
    LAST_REPORTS[:] = reports
    return end - start, sum(r["done"] for r in reports)


async def seed_events(target: str, n: int, invoke_ms: float | None = None) -> None:
    async with lionstore.open(target, run=RUN) as store:
        ex = _pg_worker.executor(store)
        if invoke_ms is None:
            await ex.extend([TrivialEvent() for _ in range(n)])
        else:
            await ex.extend([_pg_worker.ModelCall(delay_ms=invoke_ms) for _ in range(n)])
        ex.close()


async def check_events(target: str, n: int) -> None:
    async with lionstore.open(target, run=RUN) as store:
        ex = _pg_worker.executor(store)
        await ex.load()
        done = sum(1 for e in ex.pile if e.status is EventStatus.COMPLETED)
        ex.close()
    if done != n:
        raise RuntimeError(f"{target}: {done} of {n} events completed")


class Targets:
    """Fresh databases per variant."""

    def __init__(self, workdir: Path, cluster: Cluster) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.made: list[str] = []

    def new(self, backend: str) -> str:
        if backend == "sqlite":
            path = Path(tempfile.mkdtemp(dir=self.workdir)) / "bench.db"
            return str(path)
        url = self.cluster.create_database()
        self.made.append(url)
        return url

    def drop_all(self) -> None:
        for url in self.made:
            self.cluster.drop_database(url)


def scale_round(args: argparse.Namespace, targets: Targets, res: Results, round_no: int) -> None:
    """The PostgreSQL executor with 1, 4 and 8 workers: model calls, then trivial events."""
    variants = [("model", args.scale_events, args.invoke_ms), ("trivial", args.events, None)]
    order = [(v, w) for v in variants for w in args.scale_workers]
    if round_no % 2:
        order.reverse()
    for (name, n, invoke_ms), workers in order:
        db = targets.new("postgres")
        asyncio.run(seed_events(db, n, invoke_ms))
        cfg = {"db": db, "run": RUN, "capacity": args.capacity}
        seconds, _ = run_workers("execute", [cfg] * workers)
        asyncio.run(check_events(db, n))
        res.add(f"scale {name} {workers}", n / seconds)
        res.add(f"cpu {name} {workers}", LAST_CPU[0] * 1000 / n)
        if LAST_SERVER_CPU[0] is not None:
            res.add(f"server cpu {name} {workers}", LAST_SERVER_CPU[0] * 1000 / n)
        # each worker's share of its run spent waiting for the claim turn, the mean
        turns = [r["turn_wait"] / max(r["end"] - r["start"], 1e-9) for r in LAST_REPORTS]
        res.add(f"turn wait {name} {workers}", 100 * sum(turns) / len(turns))
        taken = sum(r["turns"] for r in LAST_REPORTS)
        if taken:
            res.add(
                f"turn held {name} {workers}",
                1000 * sum(r["turn_held"] for r in LAST_REPORTS) / taken,
            )
        print(f"  round {round_no + 1}: {name} x{workers} done", file=sys.stderr, flush=True)


def one_round(args: argparse.Namespace, targets: Targets, res: Results, round_no: int) -> None:
    order = [(b, w) for w in args.workers for b in BACKENDS]
    if round_no % 2:
        order.reverse()
    for backend, workers in order:
        db = targets.new(backend)
        asyncio.run(_open_once(db))
        share = args.appends // workers
        configs = [
            {"db": db, "run": RUN, "worker": w, "appends": share, "batch": args.batch}
            for w in range(workers)
        ]
        seconds, done = run_workers("append", configs)
        assert done == share * workers * args.batch
        res.add(f"append {backend} {workers}", done / seconds)

        db = targets.new(backend)
        asyncio.run(seed_events(db, args.events))
        seconds, _ = run_workers("execute", [{"db": db, "run": RUN}] * workers)
        asyncio.run(check_events(db, args.events))
        res.add(f"executor {backend} {workers}", args.events / seconds)
        print(f"  round {round_no + 1}: {backend} x{workers} done", file=sys.stderr, flush=True)


async def _open_once(db: str) -> None:
    async with lionstore.open(db, run=RUN):
        pass  # creates the schema and the run before the clock starts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round, small N (smoke run)")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--appends", type=int, default=4_000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--invoke-ms", type=float, default=20.0)
    parser.add_argument("--scale-events", type=int, default=2_000)
    parser.add_argument("--capacity", type=int, default=100, help="queue capacity (scale)")
    parser.add_argument("--only", choices=("scale", "compare"), default=None)
    parser.add_argument(
        "--durable-server",
        action="store_true",
        help="start a server that fsyncs and waits for its WAL, as one ships"
        " (default: neither, to measure lionstore rather than the disk)",
    )
    parser.add_argument("--dir", default=None)
    add_smoke_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.events, args.appends, args.scale_events = 1, 400, 400, 400
    if args.smoke:
        args.rounds, args.events, args.appends, args.scale_events = 1, 100, 100, 100
    args.workers = (1, 2) if args.smoke else WORKERS
    args.scale_workers = (1, 2) if args.smoke else SCALE_WORKERS
    try:
        cluster = Cluster.start(durable=args.durable_server)
    except UnavailableError as exc:
        print(f"no PostgreSQL server: {exc}", file=sys.stderr)
        return 1
    SERVER[:] = [cluster]
    workdir = Path(tempfile.mkdtemp(prefix="bench-pg-", dir=args.dir))
    targets = Targets(workdir, cluster)
    res = Results()
    print(f"commit {git_state(ROOT)}; {machine_line()}")
    print(
        f"{args.rounds} rounds; append: {args.appends} appends of {args.batch} record(s);"
        f" executor: {args.events} events, capacity 100; scale: {args.scale_events} events"
        f" awaiting {args.invoke_ms:g} ms and {args.events} trivial ones, capacity"
        f" {args.capacity}"
    )
    if args.durable_server:
        print("server: fsync and synchronous_commit on (--durable-server)")
    print(f"load average before: {_loadavg()}\n")
    try:
        for round_no in range(args.rounds):
            if args.only != "scale":
                one_round(args, targets, res, round_no)
            if args.only != "compare":
                scale_round(args, targets, res, round_no)
    finally:
        targets.drop_all()
        cluster.drop_template()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average after: {_loadavg()}\n")
    if args.only != "scale":
        print_compare(args, res)
    if args.only != "compare":
        print_scale(args, res)
    return 0


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" ({os.cpu_count()} cores)"
    except OSError:
        return "unknown"


def print_scale(args: argparse.Namespace, res: Results) -> None:
    rows = []
    for name, what in (
        ("model", f"invoke awaits {args.invoke_ms:g} ms, {args.scale_events} events"),
        ("trivial", f"trivial, {args.events} events"),
    ):
        one = f"scale {name} 1"
        for workers in args.scale_workers:
            key = f"scale {name} {workers}"
            rows.append(
                [
                    f"{what}, {workers} worker{'s' if workers > 1 else ''}",
                    fmt_summary(res.get(key), fmt_num),
                    fmt_summary(res.ratio(key, one), lambda v: f"{v:.2f}x"),
                    fmt_summary(res.get(f"cpu {name} {workers}"), lambda v: f"{v:.3f}"),
                    fmt_summary(res.get(f"server cpu {name} {workers}"), lambda v: f"{v:.3f}"),
                    fmt_summary(res.get(f"turn wait {name} {workers}"), lambda v: f"{v:.0f}%"),
                    fmt_summary(res.get(f"turn held {name} {workers}"), lambda v: f"{v:.2f}"),
                ]
            )
    # The workers' CPU time per event, all workers together: each worker folds every
    # record of the run into its own projection, so it grows with the number of workers.
    # The server's: every process of the cluster this script started, from the start
    # signal to the last worker's report ("-" for a server named by URL). The claim turn:
    # the share of its run a worker waited for it (the mean over workers), and how long a
    # worker held it, from taking it to giving it back after the claim's commit (see
    # ExecutorRepository.begin_claim_turn).
    print_table(
        [
            "PostgreSQL executor (events/s)",
            "throughput",
            "vs 1 worker",
            "worker CPU ms/event",
            "server CPU ms/event",
            "waiting for the claim turn",
            "turn held, ms",
        ],
        rows,
    )


def print_compare(args: argparse.Namespace, res: Results) -> None:
    rows = []
    for what, unit in (("append", "records/s"), ("executor", "events/s")):
        for workers in args.workers:
            pg, lite = f"{what} postgres {workers}", f"{what} sqlite {workers}"
            rows.append(
                [
                    f"{what}, {workers} worker{'s' if workers > 1 else ''} ({unit})",
                    fmt_summary(res.get(lite), fmt_num),
                    fmt_summary(res.get(pg), fmt_num),
                    fmt_summary(res.ratio(pg, lite), lambda v: f"{v:.2f}x"),
                ]
            )
    print_table(["variant", "SQLite", "PostgreSQL", "PG / SQLite"], rows)
    print()


if __name__ == "__main__":
    sys.exit(main())
