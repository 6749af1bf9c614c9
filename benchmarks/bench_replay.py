"""lionstore's replay (``lionstore.replay.rebuild``) against a raw sqlite3 scan, same run.

    python benchmarks/bench_replay.py [--rounds N] [--quick] [--n N] [--file PATH]
        [--dir DIR] [--no-memory] [--profile | --profile-memory] [--top N]

A run of about N records (default 1,000,000; ``--quick``: 100,000) is built once
by the real lionstore objects: two Executors (``extend`` of 10,000 trivial events,
then ``forward`` with ``queue_capacity`` 10,000: event.appended/queued/claimed/
finished, four records per event) and an Exchange with five sources (``send``, then
``collect_all`` + ``deliver_all``: mail.sent/collected/delivered), interleaved in
blocks of about 50,000 records, four fifths executor records and one fifth mail.

Every round then measures, back to back in a rotating order:

* ``await lionstore.replay.rebuild(store)``: every projection of the whole run (the
  store opened read-only outside the timed region);
* raw sqlite3 over the same rows: the record columns (joined to the streams for the
  stream id) ``WHERE run_no = ? ORDER BY position``, ``fetchmany(1000)``,
  ``json.loads`` of every data column. **The comparator for the target.**

and then the peak memory of a rebuild in a fresh subprocess that does nothing
else (its peak RSS, ``VmHWM``, plus RSS sampled every 10 ms), so that nothing the parent
allocated earlier hides it.

Targets (issue 5, Speed): rebuild >= 50% of the raw rows/s (per-round ratio,
median), peak memory of the rebuild < 300 MB. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    Results,
    RssSampler,
    Stopwatch,
    add_smoke_argument,
    fmt_mib,
    fmt_num,
    fmt_pct,
    fmt_summary,
    git_state,
    loadavg1,
    machine_line,
    peak_rss_bytes,
    print_table,
    round_order,
    rss_bytes,
    summary,
)

import lionstore
from lionstore import Event, Exchange, Executor, Processor, Source
from lionstore.replay import rebuild

_ROOT = str(Path(__file__).resolve().parent.parent) + "/"  # shortens paths in reports
TARGET_RATIO = 0.50
TARGET_PEAK_BYTES = 300 * 1000 * 1000  # "300 MB"
RUN_LABEL = "bench"
EXECUTORS = ("bench-executor-0", "bench-executor-1")
EXCHANGE_NAME = "bench-exchange"
N_SOURCES = 5
EVENTS_PER_BLOCK = 10_000
MAILS_PER_BLOCK = 3_333  # 3 records each: ~10,000 mail records per block
QUEUE_CAPACITY = 10_000

# -- the run -----------------------------------------------------------------------------


class TrivialEvent(Event):
    """invoke sets the response and returns."""

    async def invoke(self) -> None:
        self.response = "ok"


class TrivialProcessor(Processor):
    event_type = TrivialEvent


class TrivialExecutor(Executor):
    processor_type = TrivialProcessor


@dataclass
class Built:
    path: Path
    records: int  # records of the run, run.started included
    events: int
    mails: int
    seconds: float
    reused: bool = False


async def build_run(path: Path, n: int) -> Built:
    """About ``n`` records through the real Executor and Exchange (see the module doc)."""
    events_total = mails_total = 0
    t0 = time.perf_counter()
    async with lionstore.open(path, run=RUN_LABEL, durability="normal") as store:
        executors = []
        for name in EXECUTORS:
            ex = TrivialExecutor(
                {"queue_capacity": QUEUE_CAPACITY, "capacity_refresh_time": 0.001},
                store=store,
                name=name,
            )
            await ex.start()
            executors.append(ex)
        sources = [Source() for _ in range(N_SOURCES)]
        exchange = Exchange(sources, store=store, name=EXCHANGE_NAME)
        await exchange.load()
        block_records = 4 * EVENTS_PER_BLOCK + 3 * MAILS_PER_BLOCK
        block = 0
        while (left := n - store.position) > 10:
            scale = min(1.0, left / block_records)
            n_events = max(1, int(EVENTS_PER_BLOCK * scale))
            n_mails = max(1, int((left - 4 * n_events) / 3)) if scale < 1 else MAILS_PER_BLOCK
            ex = executors[block % len(executors)]
            await ex.extend([TrivialEvent() for _ in range(n_events)])
            await ex.forward()
            events_total += n_events
            for k in range(n_mails):
                i = k % N_SOURCES
                to = (i + 1 + (k // N_SOURCES) % (N_SOURCES - 1)) % N_SOURCES
                item = {"seq": mails_total + k, "text": f"message {k} of block {block}"}
                mail = exchange.create_mail(sources[i].id, sources[to].id, "message", item)
                await sources[i].send(mail)
            await exchange.collect_all()
            await exchange.deliver_all()
            mails_total += n_mails
            block += 1
            if block % 5 == 0:
                print(f"  {block} blocks: {store.position:,} records", flush=True)
        for ex in executors:
            await ex.stop()
            ex.close()
        records = store.position
    return Built(path, records, events_total, mails_total, time.perf_counter() - t0)


def count_run(path: Path) -> tuple[int, int, int]:
    """(records, event.appended, mail.sent) of the bench run in an existing file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (run_no,) = conn.execute(
            "SELECT run_no FROM lionstore_runs WHERE label = ?", (RUN_LABEL,)
        ).fetchone()
        counts = dict(
            conn.execute(
                "SELECT kind, count(*) FROM lionstore_records WHERE run_no = ? GROUP BY kind",
                (run_no,),
            ).fetchall()
        )
    finally:
        conn.close()
    return sum(counts.values()), counts.get("event.appended", 0), counts.get("mail.sent", 0)


# -- the variants ------------------------------------------------------------------------


async def timed_rebuild(path: Path) -> tuple[Stopwatch, Any, float]:
    """``rebuild(store)`` of the whole run; returns the time, the projection, and the
    open time (outside the timed region)."""
    with Stopwatch() as open_sw:
        store = await lionstore.open(path, run=RUN_LABEL, readonly=True)
    try:
        with Stopwatch() as sw:
            projection = await rebuild(store)
    finally:
        await store.close()
    return sw, projection, open_sw.seconds


def raw_select(path: Path) -> tuple[str, int]:
    """The raw scan's SQL (lionstore's record columns, the same rows as the run) and
    the run's number."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = {c[1] for c in conn.execute("PRAGMA table_info(lionstore_records)")}
        (run_no,) = conn.execute(
            "SELECT run_no FROM lionstore_runs WHERE label = ?", (RUN_LABEL,)
        ).fetchone()
    finally:
        conn.close()
    extra = ", r.digest" if "digest" in cols else ""
    sql = (
        "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version, r.data,"
        f" r.recorded_at_us, r.run_no{extra} FROM lionstore_records r"
        " JOIN lionstore_streams s ON s.stream_no = r.stream_no"
        " WHERE r.run_no = ? ORDER BY r.position"
    )
    return sql, run_no


def raw_scan(path: Path) -> tuple[Stopwatch, int]:
    """stdlib sqlite3: the run's rows in position order, fetchmany(1000), json.loads."""
    sql, run_no = raw_select(path)
    conn = sqlite3.connect(path, isolation_level=None)
    loads = json.loads
    count = 0
    try:
        with Stopwatch() as sw:
            cur = conn.execute(sql, (run_no,))
            while rows := cur.fetchmany(1000):
                count += len(rows)
                for row in rows:
                    loads(row[5])
    finally:
        conn.close()
    return sw, count


def check_projection(projection: Any, built: Built) -> None:
    """Outside the timed region: the rebuild saw every record and the end state."""
    counts = projection.counts()
    problems = []
    if projection.records != built.records:
        problems.append(f"{projection.records:,} records folded, not {built.records:,}")
    if projection.unknown:
        problems.append(f"{projection.unknown} unknown records")
    if counts["events"] != {"completed": built.events}:
        problems.append(f"events by status {counts['events']}, not {built.events} completed")
    if counts["mail"] != {"inbox": built.mails}:
        problems.append(f"mail by place {counts['mail']}, not {built.mails} in inboxes")
    if problems:
        raise AssertionError("rebuild: " + "; ".join(problems))


# -- the memory child --------------------------------------------------------------------


async def _child(path: Path) -> dict[str, Any]:
    store = await lionstore.open(path, run=RUN_LABEL, readonly=True)
    try:
        gc.collect()
        before = rss_bytes()
        maxrss_before = peak_rss_bytes()
        with RssSampler() as rss, Stopwatch() as sw:
            projection = await rebuild(store)
        records = projection.records
        gc.collect()
        held = rss_bytes()
    finally:
        await store.close()
    return {
        "records": records,
        "seconds": sw.seconds,
        "rss_before": before,
        "maxrss_before": maxrss_before,
        "rss_peak_sampled": rss.peak,
        "rss_held": held,
        "maxrss": peak_rss_bytes(),
    }


def child_main(path: Path) -> int:
    out = asyncio.run(_child(path))
    print(json.dumps(out))
    return 0


def memory_in_subprocess(path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- profiles ----------------------------------------------------------------------------


def profile_rebuild(path: Path, top: int) -> None:
    """One rebuild with cProfile on the event loop and on lionstore's reader thread."""
    from bench_executor import Profiles

    profiles = Profiles()
    profiles.install()

    async def go() -> float:
        store = await lionstore.open(path, run=RUN_LABEL, readonly=True)
        try:
            with profiles.active():
                t = time.perf_counter()
                await rebuild(store)
                return time.perf_counter() - t
        finally:
            await store.close()

    seconds = asyncio.run(go())
    print(f"## cProfile: rebuild of the whole run ({seconds:.2f} s under the profiler)\n")
    profiles.print(top)


def profile_memory(path: Path, top: int) -> None:
    """What the finished projection holds, by allocating line (tracemalloc)."""
    import tracemalloc

    async def go() -> tuple[Any, Any]:
        store = await lionstore.open(path, run=RUN_LABEL, readonly=True)
        try:
            tracemalloc.start(1)
            projection = await rebuild(store)
            gc.collect()
            snap = tracemalloc.take_snapshot()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            return projection, (snap, peak)
        finally:
            await store.close()

    projection, (snap, peak) = asyncio.run(go())
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    print(
        f"## tracemalloc: the projection of {projection.records:,} records holds "
        f"{fmt_mib(total)} of Python objects (traced peak during the rebuild "
        f"{fmt_mib(peak)})\n"
    )
    print_table(
        ["allocated at", "MiB", "blocks", "bytes/record"],
        [
            [
                f"{s.traceback[0].filename.split('site-packages/')[-1].split(_ROOT)[-1]}"
                f":{s.traceback[0].lineno}",
                f"{s.size / (1 << 20):.1f}",
                f"{s.count:,}",
                f"{s.size / max(projection.records, 1):.0f}",
            ]
            for s in stats[:top]
        ],
        align="lrrr",
    )


# -- the report --------------------------------------------------------------------------


def verdict(ratios: list[float], target: float) -> str:
    med, lo, _ = summary(ratios)
    if med != med:
        return "-"
    if med >= target:
        return "PASS" if lo >= target else "PASS (median; min below)"
    return "FAIL"


def report(res: Results, built: Built, rounds: int, mem: list[dict[str, Any]]) -> None:
    def rate(key: str) -> str:
        return fmt_summary(res.get(key))

    def us(key: str) -> str:
        vals = res.get(key)
        return fmt_num(1e6 / summary(vals)[0]) if vals else "-"

    def in_gc(key: str) -> str:
        vals = res.get(f"{key}.gc")
        return fmt_pct(summary(vals)[0]) if vals else "-"

    ratio = res.ratio("rebuild", "raw")
    print(
        f"\n## Replay: the whole run, {built.records:,} rows, position order "
        f"({rounds} round(s); median (min-max) over rounds)\n"
    )
    print_table(
        ["pipeline", "rows/s", "µs/row", "in GC", "rebuild/raw", "target", "verdict"],
        [
            [
                "lionstore.replay.rebuild(store), every projection",
                rate("rebuild"),
                us("rebuild"),
                in_gc("rebuild"),
                fmt_summary(ratio, fmt_pct),
                f">= {TARGET_RATIO:.0%}",
                verdict(ratio, TARGET_RATIO),
            ],
            [
                "raw sqlite3 fetchmany(1000) + json.loads",
                rate("raw"),
                us("raw"),
                in_gc("raw"),
                "-",
                "",
                "",
            ],
        ],
        align="lrrrrll",
    )
    print()
    opens = res.get("rebuild.open_s")
    if opens:
        print(
            "- lionstore.open(readonly) before the rebuild (not in its time): "
            f"{fmt_summary([o * 1000 for o in opens])} ms"
        )
    print(
        "- in GC: share of the timed region spent in Python's cyclic garbage collector"
        " (gc.callbacks), median over rounds"
    )
    loads = res.get("loadavg1")
    if loads:
        print(
            f"- 1-minute load average at the start of each round: "
            f"{', '.join(f'{x:.2f}' for x in loads)} ({os.cpu_count()} CPUs)"
        )

    peak_verdict = "-"
    if mem:
        peaks = [m["maxrss"] for m in mem]
        peak_verdict = "PASS" if max(peaks) < TARGET_PEAK_BYTES else "FAIL"
        print(
            "\n## Peak memory of a rebuild, in a fresh subprocess that only opens the store "
            f"and rebuilds ({len(mem)} run(s))\n"
        )

        def col(key: str) -> str:
            vals = [m[key] for m in mem]
            if len(vals) == 1:
                return fmt_mib(vals[0])
            return f"{fmt_mib(summary(vals)[0])} ({fmt_mib(min(vals))}-{fmt_mib(max(vals))})"

        print_table(
            ["measure", "value", "target", "verdict"],
            [
                [
                    "peak RSS of the process, VmHWM (the figure the target is checked on)",
                    col("maxrss"),
                    f"< {TARGET_PEAK_BYTES / 1e6:.0f} MB ({fmt_mib(TARGET_PEAK_BYTES)})",
                    peak_verdict,
                ],
                ["RSS after imports + open, before the rebuild", col("rss_before"), "", ""],
                [
                    "RSS peak sampled every 10 ms during the rebuild",
                    col("rss_peak_sampled"),
                    "",
                    "",
                ],
                ["RSS with the finished projection held (after gc)", col("rss_held"), "", ""],
                [
                    "rebuild time in the subprocess",
                    fmt_summary([m["seconds"] for m in mem], lambda s: f"{s:.1f} s"),
                    "",
                    "",
                ],
            ],
            align="lrrl",
        )

    print("\n## Targets (issue 5, Speed)\n")
    rows = [
        [
            "rebuild rows/s vs raw fetch + json.loads (median of same-round ratios)",
            fmt_summary(ratio, fmt_pct),
            f">= {TARGET_RATIO:.0%}",
            verdict(ratio, TARGET_RATIO),
        ]
    ]
    if mem:
        rows.append(
            [
                "peak memory of the rebuild (max VmHWM over subprocess runs)",
                fmt_mib(max(m["maxrss"] for m in mem)),
                f"< {TARGET_PEAK_BYTES / 1e6:.0f} MB",
                peak_verdict,
            ]
        )
    print_table(["target", "measured", "threshold", "verdict"], rows, align="lrrl")


# -- main --------------------------------------------------------------------------------


@dataclass
class Variant:
    key: str
    run: Callable[[], Any]


async def _call(fn: Callable[[], Any]) -> Any:
    out = fn()
    if asyncio.iscoroutine(out):
        out = await out
    return out


async def prepare(path: Path, n: int) -> Built:
    if path.exists():
        records, events, mails = count_run(path)
        print(f"reusing {path} ({records:,} records)", flush=True)
        return Built(path, records, events, mails, 0.0, reused=True)
    print(f"building the {n:,}-record run ...", flush=True)
    built = await build_run(path, n)
    records, events, mails = count_run(path)
    assert (records, events, mails) == (built.records, built.events, built.mails), (
        records,
        events,
        mails,
        built,
    )
    print(
        f"  built in {built.seconds:.1f} s: {built.records:,} records, {built.events:,} "
        f"events, {built.mails:,} mails ({path.stat().st_size / 1e6:.0f} MB)",
        flush=True,
    )
    return built


async def run_benchmark(args: argparse.Namespace, path: Path, n: int, rounds: int) -> int:
    print("# lionstore replay benchmark: rebuild vs raw sqlite3, same process run\n")
    print(f"- {machine_line()}")
    code = git_state(Path(__file__).resolve().parent.parent)
    print(
        f"- lionstore {lionstore.__version__} at {code}; rounds {rounds};"
        " variant order rotates per round"
    )
    print()
    built = await prepare(path, n)
    kinds = _kind_mix(path)

    res = Results()
    mem: list[dict[str, Any]] = []

    async def rebuild_variant() -> None:
        sw, projection, open_s = await timed_rebuild(path)
        check_projection(projection, built)
        res.add("rebuild", projection.records / sw.seconds)
        res.add("rebuild.gc", sw.gc_share)
        res.add("rebuild.open_s", open_s)

    def raw_variant() -> None:
        sw, count = raw_scan(path)
        if count != built.records:
            raise AssertionError(f"raw scan read {count:,} rows, not {built.records:,}")
        res.add("raw", count / sw.seconds)
        res.add("raw.gc", sw.gc_share)

    variants = [Variant("rebuild", rebuild_variant), Variant("raw", raw_variant)]
    started = time.perf_counter()
    for r in range(rounds):
        res.add("loadavg1", loadavg1())
        for variant in round_order(variants, r):
            gc.collect()
            with Stopwatch() as sw:
                await _call(variant.run)
            gc.collect()
            print(f"  round {r + 1}/{rounds} {variant.key:<10} {sw.seconds:6.2f} s", flush=True)
        if not args.no_memory:
            t = time.perf_counter()
            m = memory_in_subprocess(path)
            if m["records"] != built.records:
                raise AssertionError(f"memory child folded {m['records']:,} records")
            mem.append(m)
            print(
                f"  round {r + 1}/{rounds} {'memory':<10} {time.perf_counter() - t:6.2f} s "
                f"(peak RSS {fmt_mib(m['maxrss'])})",
                flush=True,
            )
        print(f"round {r + 1} done at {time.perf_counter() - started:.0f} s", flush=True)

    print()
    if built.reused:
        print(f"- run reused from {path}: {built.records:,} records")
    else:
        print(
            f"- run built through lionstore.Executor and lionstore.Exchange in {built.seconds:.1f}"
            f" s: {built.records:,} records ({built.events:,} events, {built.mails:,} mails)"
        )
    print(f"- record kinds: {kinds}")
    report(res, built, rounds, mem)
    return 0


def _kind_mix(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT kind, count(*), avg(length(data)) FROM lionstore_records"
            " GROUP BY kind ORDER BY count(*) DESC"
        ).fetchall()
    finally:
        conn.close()
    return ", ".join(f"{k} {c:,} (~{size:.0f} B)" for k, c, size in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 100,000 records: a smoke run"
    )
    parser.add_argument(
        "--n", type=int, default=None, help="records in the run (default 1,000,000)"
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help="use this run file if it exists, else build it there and keep it",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the temporary file goes (default: system)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument(
        "--profile", action="store_true", help="instead of the benchmark, cProfile one rebuild"
    )
    parser.add_argument(
        "--profile-memory",
        action="store_true",
        help="instead of the benchmark, show what the rebuilt projection holds (tracemalloc)",
    )
    parser.add_argument("--top", type=int, default=25, help="rows per profile listing")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    add_smoke_argument(parser)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        return child_main(args.memory_child)
    n = args.n or (5_000 if args.smoke else 100_000 if args.quick else 1_000_000)
    rounds = args.rounds or (1 if args.quick or args.smoke else 3)

    tmp = None
    if args.file is not None:
        path = args.file
    else:
        tmp = Path(tempfile.mkdtemp(prefix="lionstore-bench-replay-", dir=args.dir))
        path = tmp / "replay.db"
    try:
        if args.profile or args.profile_memory:
            asyncio.run(prepare(path, n))
            if args.profile:
                profile_rebuild(path, args.top)
            else:
                profile_memory(path, args.top)
            return 0
        return asyncio.run(run_benchmark(args, path, n, rounds))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
