"""lionstore's durable Executor against lionagi 0.8.7's in-memory Executor, same run.

    python benchmarks/bench_executor.py [--rounds N] [--quick] [--n N]
        [--lionagi-venv PATH | --no-lionagi] [--profile VARIANT] [--dir DIR]

N trivial events (default 10,000; ``invoke`` sets the response and returns),
created outside the timed region. The timed region runs from creating the Executor
to every event being COMPLETED (``start()`` included; opening the store is not,
and is reported on its own). Shapes:

* ``one_batch``: capacity N; append all, one ``forward()``.
* ``cap100``: capacity 100; append all, ``forward()``. lionagi's ``forward`` runs one
  batch, so lionagi then calls ``process()`` until the queue is empty; lionstore's
  ``forward`` runs cycles until every forwarded event has had its turn.
* ``per_event``: capacity 100; ``append`` then ``forward`` for each event (lionagi's
  iModel pattern).

lionstore appends either with one ``await executor.extend(events)`` (one commit) or
with an ``await executor.append(e)`` loop (one commit each). It writes to a SQLite
file in a temporary directory, durability ``normal`` (shapes one_batch and cap100
also with ``full``). After each lionstore run the benchmark checks, outside the
timed region, that all N events are COMPLETED, then closes the store, reopens the
file and checks again.

``per_event`` also runs a **ceiling**: raw stdlib ``sqlite3`` on a file made by
lionstore's migrations, with the pragmas of lionstore's writer, doing only the three
durable commits per event the pattern needs (the append; the queued and claimed
records, before ``invoke`` starts; the outcome, before ``forward`` returns), each a
``BEGIN IMMEDIATE`` + insert(s) + ``COMMIT`` of the rows lionstore writes, JSON
encoded before the timed region, no digest, no head row, no reads. No durable
executor with those guarantees can beat it on this file system; lionagi / ceiling is
the most this shape can reach.

lionagi 0.8.7 runs in its own virtual environment, in a subprocess per run (see
benchmarks/_lionagi.py). Every figure is a median over rounds with (min-max); a
ratio is lionagi / lionstore within one round. Target: >= 10x on every shape.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import cProfile
import functools
import gc
import io
import os
import pstats
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import _lionagi
from _common import (
    Results,
    add_smoke_argument,
    fmt_num,
    fmt_summary,
    machine_line,
    print_table,
    round_order,
    summary,
)

import lionstore
from lionstore import Event, EventStatus, Executor, Processor
from lionstore.domain.event_records import EventAppended, EventClaimed, EventFinished, EventQueued
from lionstore.log.sqlite import SYNCHRONOUS
from lionstore.log.sqlite_checkpoint import RESTART_FRAMES, SAFETY_FRAMES

TARGET = 10.0
RUN_LABEL = "bench"
EXECUTOR_NAME = "bench-executor"


class TrivialEvent(Event):
    """The benchmark's event: invoke sets the response and returns."""

    async def invoke(self) -> None:
        self.response = "ok"


class TrivialProcessor(Processor):
    event_type = TrivialEvent


class TrivialExecutor(Executor):
    processor_type = TrivialProcessor


# -- the shapes --------------------------------------------------------------------------

SHAPES: dict[str, dict[str, Any]] = {
    # name: lionagi shape/capacity (None: capacity N)
    "one_batch": {"lionagi_shape": "batch", "capacity": None},
    "cap100": {"lionagi_shape": "batch", "capacity": 100},
    "per_event": {"lionagi_shape": "per_event", "capacity": 100},
}


@dataclass(frozen=True)
class LionstoreVariant:
    shape: str
    append: str  # "extend" | "append" | "per_event"
    durability: str

    @property
    def name(self) -> str:
        if self.shape == "per_event":
            return f"lionstore per_event ({self.durability})"
        return f"lionstore {self.shape} {self.append}+forward ({self.durability})"


def lionstore_variants(full: bool) -> list[LionstoreVariant]:
    out = []
    for durability in ("normal", "full") if full else ("normal",):
        for shape in ("one_batch", "cap100"):
            out.append(LionstoreVariant(shape, "extend", durability))
            out.append(LionstoreVariant(shape, "append", durability))
    out.insert(4 if full else len(out), LionstoreVariant("per_event", "per_event", "normal"))
    return out


PER_EVENT = LionstoreVariant("per_event", "per_event", "normal")


def capacity_of(shape: str, n: int) -> int:
    cap = SHAPES[shape]["capacity"]
    return n if cap is None else cap


async def run_lionstore(
    variant: LionstoreVariant,
    n: int,
    workdir: Path,
    *,
    verify: bool = True,
    profiles: Profiles | None = None,
    meter: contextlib.AbstractContextManager[None] | None = None,
) -> dict[str, float]:
    """One timed lionstore run on a fresh SQLite file; checks the outcome after.
    ``meter``, if given, is entered around the timed region (see :class:`Callgrind`)."""
    tmp = Path(tempfile.mkdtemp(prefix="exec-", dir=workdir))
    path = tmp / "executor.db"
    try:
        events = [TrivialEvent() for _ in range(n)]
        t = time.perf_counter()
        store = await lionstore.open(path, run=RUN_LABEL, durability=variant.durability)
        open_s = time.perf_counter() - t
        try:
            config = {
                "queue_capacity": capacity_of(variant.shape, n),
                "capacity_refresh_time": 0.001,
            }
            ex = None

            async def timed() -> tuple[float, float, float]:
                nonlocal ex
                t0 = time.perf_counter()
                ex = TrivialExecutor(config, store=store, name=EXECUTOR_NAME)
                await ex.start()
                if variant.append == "per_event":
                    append_s = 0.0
                    for e in events:
                        a = time.perf_counter()
                        await ex.append(e)
                        append_s += time.perf_counter() - a
                        await ex.forward()
                    return t0, t0 + append_s, time.perf_counter()
                if variant.append == "extend":
                    await ex.extend(events)
                else:
                    for e in events:
                        await ex.append(e)
                t1 = time.perf_counter()
                await ex.forward()
                return t0, t1, time.perf_counter()

            gc.collect()
            with profiles.active() if profiles else (meter or contextlib.nullcontext()):
                t0, t1, t2 = await timed()
            assert ex is not None
            if verify:
                _check_completed(ex, events, n, f"{variant.name}, live")
            ex.close()
        finally:
            await store.close()
        if verify:
            async with lionstore.open(path, run=RUN_LABEL) as store2:
                again = TrivialExecutor(store=store2, name=EXECUTOR_NAME)
                await again.load()
                _check_completed(again, None, n, f"{variant.name}, reopened")
                again.close()
        return {
            "total": t2 - t0,
            "append": t1 - t0,
            "dispatch": (t2 - t0) - (t1 - t0),
            "open": open_s,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- the per_event ceiling ---------------------------------------------------------------

CEILING = "raw sqlite3 ceiling per_event (normal)"
CEILING_BG = "raw sqlite3 ceiling per_event (normal), checkpoints on a thread"
_INSERT_STREAM = "INSERT INTO lionstore_streams (stream_no, run_no, stream_id) VALUES (?, ?, ?)"
_INSERT_RECORD = (
    "INSERT INTO lionstore_records (position, run_no, stream_no, stream_version, kind,"
    " kind_version, data, recorded_at_us, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _ceiling_texts() -> list[tuple[str, str]]:
    """(kind, JSON) of the four records lionstore writes for one per_event event,
    with values of the same shape and size."""
    now_us = time.time_ns() // 1000
    owner = "host.example:123456:0123abcd"
    records = [
        EventAppended(
            executor=EXECUTOR_NAME,
            event_class=f"{TrivialEvent.__module__}.{TrivialEvent.__qualname__}",
            created_at=time.time(),
        ),
        EventQueued(owner=owner, cycle=1, at_us=now_us, seen=3),
        EventClaimed(
            owner=owner,
            attempt=1,
            lease_expires_us=now_us + 300_000_000,
            cycle=1,
            at_us=now_us,
            seen=3,
        ),
        EventFinished(status="completed", attempt=1, duration_us=12, response="ok"),
    ]
    return [(r.kind, r.model_dump_json()) for r in records]


def raw_connection(path: Path, durability: str) -> sqlite3.Connection:
    """A stdlib connection to a lionstore file with the pragmas of lionstore's writer."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[durability]}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class _RawCheckpointer:
    """lionstore's checkpoint scheme at "normal" (lionstore.log.sqlite_checkpoint), done
    by hand for the raw floor: PASSIVE checkpoints on a thread every 100 commits, and one
    on the writer's connection before a commit once the WAL reaches RESTART_FRAMES."""

    def __init__(self, path: Path, writer: sqlite3.Connection) -> None:
        writer.execute(f"PRAGMA wal_autocheckpoint={SAFETY_FRAMES}")
        self.writer = writer
        self.commits = 0
        self.due = False
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self.thread.start()

    def _run(self, path: Path) -> None:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            while True:
                self.wake.wait()
                self.wake.clear()
                if self.stopping:
                    return
                frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][1]
                if frames >= RESTART_FRAMES:
                    self.due = True
        finally:
            conn.close()

    def committed(self) -> None:
        self.commits += 1
        if self.commits % 100 == 0:
            self.wake.set()

    def before_commit(self) -> None:
        if self.due and not self.writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][0]:
            self.due = False

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join()


async def run_ceiling(
    n: int,
    workdir: Path,
    durability: str = "normal",
    *,
    background_checkpoints: bool = False,
    meter: contextlib.AbstractContextManager[None] | None = None,
) -> dict[str, float]:
    """The per_event floor: raw sqlite3, three durable commits per event, nothing else
    (with ``background_checkpoints``, checkpointing as lionstore does at "normal";
    ``meter``, if given, is entered around the loop)."""
    tmp = Path(tempfile.mkdtemp(prefix="ceiling-", dir=workdir))
    path = tmp / "ceiling.db"
    try:
        async with lionstore.open(path, run=RUN_LABEL, durability=durability) as store:
            run_no = store.run.run_no
        conn = raw_connection(path, durability)
        try:
            position, stream_no = conn.execute(
                "SELECT last_position, last_stream_no FROM lionstore_head"
            ).fetchone()
            (appended, a_text), (queued, q_text), (claimed, c_text), (finished, f_text) = (
                _ceiling_texts()
            )
            ids = [str(e.id) for e in (TrivialEvent() for _ in range(n))]
            at_us, digest = time.time_ns() // 1000, "0" * 32
            execute, executemany = conn.execute, conn.executemany
            # At "full", lionstore commits the claim without a sync of its own (the
            # outcome's commit syncs it): the floor does the same.
            lazy = durability == "full"
            ckpt = _RawCheckpointer(path, conn) if background_checkpoints else None
            gc.collect()
            t0 = time.perf_counter()
            with meter or contextlib.nullcontext():
                for sid in ids:
                    stream_no += 1
                    if ckpt:
                        ckpt.before_commit()
                    execute("BEGIN IMMEDIATE")  # append: durable when append() returns
                    execute(_INSERT_STREAM, (stream_no, run_no, sid))
                    execute(
                        _INSERT_RECORD,
                        (position + 1, run_no, stream_no, 1, appended, 1, a_text, at_us, digest),
                    )
                    execute("COMMIT")
                    if lazy:
                        execute("PRAGMA synchronous=NORMAL")
                    if ckpt:
                        ckpt.committed()
                        ckpt.before_commit()
                    execute("BEGIN IMMEDIATE")  # forward's claim: before invoke()
                    executemany(
                        _INSERT_RECORD,
                        [
                            (position + 2, run_no, stream_no, 2, queued, 1, q_text, at_us, digest),
                            (position + 3, run_no, stream_no, 3, claimed, 1, c_text, at_us, digest),
                        ],
                    )
                    execute("COMMIT")
                    if lazy:
                        execute("PRAGMA synchronous=FULL")
                    if ckpt:
                        ckpt.committed()
                        ckpt.before_commit()
                    execute("BEGIN IMMEDIATE")  # the outcome: durable before forward() returns
                    execute(
                        _INSERT_RECORD,
                        (position + 4, run_no, stream_no, 4, finished, 1, f_text, at_us, digest),
                    )
                    execute("COMMIT")
                    if ckpt:
                        ckpt.committed()
                    position += 4
            total = time.perf_counter() - t0
            if ckpt:
                ckpt.stop()
            (count,) = conn.execute(
                "SELECT count(*) FROM lionstore_records WHERE run_no = ?", (run_no,)
            ).fetchone()
        finally:
            conn.close()
        if count != 4 * n + 1:
            raise AssertionError(f"ceiling: {count} records, not {4 * n + 1}")
        return {"total": total, "append": 0.0, "dispatch": total}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_completed(ex: Executor, events: Sequence[Event] | None, n: int, what: str) -> None:
    pile = ex.pile
    completed = ex.completed_events
    problems = []
    if len(pile) != n:
        problems.append(f"pile holds {len(pile)} events, not {n}")
    if len(completed) != n:
        problems.append(f"{len(completed)}/{n} COMPLETED")
    if len(ex.pending) or len(ex.processor.queue if ex.processor else []):
        problems.append("events left pending or queued")
    if events is not None:
        ids = {e.id for e in events}
        if {e.id for e in completed} != ids:
            problems.append("the completed ids are not the appended ids")
        if any(e.status != EventStatus.COMPLETED or e.response != "ok" for e in events):
            problems.append("an event object is not COMPLETED with response 'ok'")
    else:
        if any(e.response != "ok" for e in completed):
            problems.append("a reopened event lost its response")
    if problems:
        raise AssertionError(f"{what}: " + "; ".join(problems))


# -- the report --------------------------------------------------------------------------


def lionagi_name(shape: str) -> str:
    return f"lionagi 0.8.7 {shape} (in memory)"


def print_times(res: Results, names: list[str], n: int) -> None:
    rows = []
    for name in names:
        if name not in res:
            continue
        totals = res.get(f"{name}|total")
        med = summary(totals)[0]
        rows.append(
            [
                name,
                fmt_summary(totals),
                fmt_summary(res.get(f"{name}|append")),
                fmt_summary(res.get(f"{name}|dispatch")),
                fmt_num(n / med) if med == med and med else "-",
            ]
        )
    print_table(
        ["variant", "total s, median (min-max)", "append s", "forward/dispatch s", "events/s"],
        rows,
    )


def print_ratios(res: Results, variants: list[LionstoreVariant], have_lionagi: bool) -> list[str]:
    verdicts: list[str] = []
    rows = []
    for v in variants:
        base = lionagi_name(v.shape)
        if not have_lionagi or base not in res:
            continue
        ratios = res.ratio(f"{base}|total", f"{v.name}|total")
        med = summary(ratios)[0]
        ok = med >= TARGET
        rows.append(
            [
                v.name,
                fmt_num(summary(res.get(f"{base}|total"))[0]),
                fmt_num(summary(res.get(f"{v.name}|total"))[0]),
                fmt_summary(ratios, lambda x: f"{x:.2f}x"),
                f">= {TARGET:g}x",
                "PASS" if ok else "FAIL",
            ]
        )
        verdicts.append(f"{v.name}: {med:.2f}x -> {'PASS' if ok else 'FAIL'}")
    if rows:
        print_table(
            [
                "lionstore variant",
                "lionagi s",
                "lionstore s",
                "lionagi/lionstore",
                "target",
                "result",
            ],
            rows,
        )
    return verdicts


# -- profiling ---------------------------------------------------------------------------


class Profiles:
    """cProfile of the event-loop thread, plus of every call lionstore's SQLite
    backend runs on its writer/reader threads (large commits run there, so a
    main-thread profile alone shows them only as time in ``epoll``).

    ``with profiles.active(): ...`` profiles both for the block only. Reaches into
    the private ``lionstore.log.sqlite_threads._run_call``; if that is gone the thread
    listing says so.
    """

    def __init__(self) -> None:
        self.main = cProfile.Profile()
        self.threads: list[cProfile.Profile] = []
        self.thread_seconds = 0.0
        self.patched = False
        self._on = False
        self._local = threading.local()
        self._lock = threading.Lock()

    def install(self) -> None:
        try:
            from lionstore.log import sqlite_threads as backend
        except ImportError:
            return
        original = getattr(backend, "_run_call", None)
        if original is None:
            return
        profiles = self

        def _run_call(*call: Any) -> Any:
            if not profiles._on:
                return original(*call)
            prof = getattr(profiles._local, "prof", None)
            if prof is None:
                prof = profiles._local.prof = cProfile.Profile()
                with profiles._lock:
                    profiles.threads.append(prof)
            started = time.perf_counter()
            prof.enable()
            try:
                return original(*call)
            finally:
                prof.disable()
                with profiles._lock:
                    profiles.thread_seconds += time.perf_counter() - started

        backend._run_call = _run_call  # type: ignore[assignment]  # same call, profiled
        self.patched = True

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._on = True
        self.main.enable()
        try:
            yield
        finally:
            self.main.disable()
            self._on = False

    def print(self, top: int) -> None:
        for key in ("tottime", "cumulative"):
            print(f"### event-loop thread, by {key}\n")
            print(_stats_text(pstats.Stats(self.main), key, top))
            print()
        if not self.patched:
            print("(SQLite threads not profiled: lionstore.log.sqlite_threads._run_call not found)")
        elif self.threads:
            print(
                f"### SQLite writer/reader threads ({self.thread_seconds:.3f} s wall inside "
                "their calls), by tottime\n"
            )
            stats = pstats.Stats(self.threads[0])
            for prof in self.threads[1:]:
                stats.add(prof)
            print(_stats_text(stats, "tottime", top))
            print()
        else:
            print("(no call ran on the SQLite threads in the timed region)")


def _stats_text(stats: pstats.Stats, key: str, top: int) -> str:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats(key).print_stats(top)
    text = buf.getvalue()
    return text[text.find("   ncalls") :].rstrip()


def profile_variant(variant: LionstoreVariant, n: int, workdir: Path, top: int) -> None:
    """One lionstore run with its timed region under cProfile (no verification)."""
    profiles = Profiles()
    profiles.install()
    out = asyncio.run(run_lionstore(variant, n, workdir, verify=False, profiles=profiles))
    print(
        f"## cProfile: {variant.name}, N={n:,} (timed region under the profiler "
        f"{out['total']:.2f} s; append {out['append']:.2f} s, forward "
        f"{out['dispatch']:.2f} s)\n"
    )
    profiles.print(top)


# -- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="1 round, N=2,000: a smoke run")
    parser.add_argument("--n", type=int, default=None, help="events per run (default 10,000)")
    parser.add_argument(
        "--no-full", action="store_true", help="skip the durability='full' variants"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the temporary SQLite files go (default: the system temp dir)",
    )
    parser.add_argument(
        "--profile",
        metavar="VARIANT",
        default=None,
        help="instead of the benchmark, cProfile one lionstore run: "
        "one_batch-extend, one_batch-append, cap100-extend, cap100-append, "
        "per_event (durability normal)",
    )
    parser.add_argument("--top", type=int, default=30, help="rows per profile listing")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instead of timing, count per_event's instructions per event against the"
        " raw sqlite3 ceiling's under valgrind's callgrind (same on a busy machine)",
    )
    parser.add_argument("--count-run", choices=tuple(COUNTED), help=argparse.SUPPRESS)
    _lionagi.add_venv_argument(parser)
    add_smoke_argument(parser)
    args = parser.parse_args(argv)
    n = args.n or (200 if args.smoke else 2_000 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick or args.smoke else 3)
    workdir = Path(tempfile.mkdtemp(prefix="lionstore-bench-exec-", dir=args.dir))
    try:
        if args.count_run:  # the process --instructions runs under valgrind
            asyncio.run(_counted_run(args.count_run, n, workdir))
            return 0
        if args.instructions:
            return run_instructions(args.n or (100 if args.smoke else 2_000), workdir)
        if args.profile:
            shape, _, how = args.profile.partition("-")
            if shape not in SHAPES:
                parser.error(f"unknown variant {args.profile!r}")
            how = "per_event" if shape == "per_event" else (how or "extend")
            profile_variant(LionstoreVariant(shape, how, "normal"), n, workdir, args.top)
            return 0
        status = run_benchmark(args, n, rounds, workdir)
        if args.smoke:  # the counting mode too, so that it cannot rot; CI has valgrind
            print()
            counted = run_instructions(100, workdir, required=os.environ.get("CI") == "true")
            status = status or counted
        return status
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_sync(variant: LionstoreVariant, n: int, workdir: Path) -> dict[str, Any]:
    return asyncio.run(run_lionstore(variant, n, workdir))


def run_benchmark(args: argparse.Namespace, n: int, rounds: int, workdir: Path) -> int:
    print("# Executor benchmark: lionstore (durable, SQLite) vs lionagi 0.8.7 (in memory)\n")
    print(f"- {machine_line()}")
    env = None
    if not args.no_lionagi:
        env, why = _lionagi.ensure_venv(args.lionagi_venv)
        if env is None:
            print(f"- lionagi unavailable ({why}): lionstore figures only")
    if env is not None:
        print(f"- baseline: {env.describe()}; one subprocess per run")
    print(
        f"- lionstore {lionstore.__version__}; N = {n:,} trivial events; rounds {rounds}; "
        "variant order rotates per round"
    )
    print(
        "- timed: executor creation to all events COMPLETED; events are created and the "
        "store opened outside it"
    )
    if n != 10_000:
        print(
            f"- N = {n:,} is not the target's N = 10,000: lionagi's append is quadratic in N, "
            "so its ratios here are not the target's"
        )
    print()
    variants = lionstore_variants(full=not args.no_full)
    jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    for v in variants:
        jobs.append((v.name, functools.partial(_run_sync, v, n, workdir)))
    # the ceiling runs right after the per_event variant (round_order keeps neighbours)
    at = next(i for i, (name, _) in enumerate(jobs) if name == PER_EVENT.name) + 1
    jobs.insert(at, (CEILING, lambda: asyncio.run(run_ceiling(n, workdir))))
    jobs.insert(
        at + 1,
        (
            CEILING_BG,
            lambda: asyncio.run(run_ceiling(n, workdir, background_checkpoints=True)),
        ),
    )
    if env is not None:
        for shape, spec in SHAPES.items():
            run = functools.partial(
                _lionagi.run_executor, env, spec["lionagi_shape"], n, capacity_of(shape, n)
            )
            jobs.append((lionagi_name(shape), run))
    res = Results()
    started = time.perf_counter()
    for r in range(rounds):
        for name, job in round_order(jobs, r):
            out = job()
            for key in ("total", "append", "dispatch", "open"):
                if key in out:
                    res.add(f"{name}|{key}", out[key])
            res.add(name, 1.0)  # marks the variant as measured
            print(f"  round {r + 1}/{rounds}: {name}: {out['total']:.3f} s", flush=True)
    print(
        f"\n({rounds} rounds in {time.perf_counter() - started:.0f} s; every lionstore run "
        "verified: all events COMPLETED, live and after reopening the file)\n"
    )
    names = [lionagi_name(s) for s in SHAPES] + [v.name for v in variants] + [CEILING, CEILING_BG]
    print_times(res, names, n)
    opens = [x for v in variants for x in res.get(f"{v.name}|open")]
    if opens:
        print(f"\nOpening the store (new file, schema created; not timed): {fmt_summary(opens)} s")
    verdicts: list[str] = []
    if env is not None:
        print("\n## lionagi / lionstore (per round, same run)\n")
        verdicts = print_ratios(res, variants, True)
        print()
        for line in verdicts:
            print(f"- {line}")
        print("\nTarget per shape (durability normal; append-all shapes with extend):\n")
        for shape, v in (
            ("one_batch", LionstoreVariant("one_batch", "extend", "normal")),
            ("cap100", LionstoreVariant("cap100", "extend", "normal")),
            ("per_event", PER_EVENT),
        ):
            med = summary(res.ratio(f"{lionagi_name(shape)}|total", f"{v.name}|total"))[0]
            verdict = "PASS" if med >= TARGET else "FAIL"
            print(f"- {shape}: lionagi/lionstore {med:.2f}x (target >= {TARGET:g}x): {verdict}")
    else:
        print("\n(lionagi unavailable: no ratios)")
    print_ceiling(res, env is not None)
    return 0


def print_ceiling(res: Results, have_lionagi: bool) -> None:
    """per_event against its floor: how close lionstore gets, and the most any durable
    executor making those three commits per event could reach against lionagi."""
    print("\n## per_event against the raw sqlite3 ceiling (per round, same run)\n")
    rows = [
        [
            f"{PER_EVENT.name} / ceiling (time)",
            fmt_summary(res.ratio(f"{PER_EVENT.name}|total", f"{CEILING}|total"), _times),
        ],
        [
            f"{PER_EVENT.name} / ceiling with lionstore's checkpoints on a thread (time)",
            fmt_summary(res.ratio(f"{PER_EVENT.name}|total", f"{CEILING_BG}|total"), _times),
        ],
    ]
    base = lionagi_name("per_event")
    if have_lionagi and base in res:
        rows.append(
            [
                "lionagi / ceiling: the most a durable per_event can reach",
                fmt_summary(res.ratio(f"{base}|total", f"{CEILING}|total"), _times),
            ]
        )
        rows.append(
            [
                "lionagi / lionstore per_event",
                fmt_summary(res.ratio(f"{base}|total", f"{PER_EVENT.name}|total"), _times),
            ]
        )
    print_table(["ratio", "median (min-max)"], rows)


def _times(x: float) -> str:
    return f"{x:.2f}x"


# -- instructions per event (valgrind's callgrind) ---------------------------------------

COUNTED = {"lionstore": PER_EVENT.name, "ceiling": CEILING}
WARM_UP = 200  # events run before the counted ones (first-use caches, lazy imports)


class Callgrind:
    """Counts the instructions of the block only: the process runs under ``valgrind
    --tool=callgrind --instr-atstart=no`` and the block switches instrumentation on and
    off (``callgrind_control``, which waits for callgrind to take the command). What is
    counted is the user-space work of every thread of the process (the checkpointer
    thread's included), not the kernel's (the writes and syncs themselves): the CPU
    work, the same from run to run whatever else the machine is doing."""

    @staticmethod
    def _switch(state: str) -> None:
        subprocess.run(
            ["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True
        )

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._switch("on")
        try:
            yield
        finally:
            self._switch("off")


async def _counted_run(what: str, n: int, workdir: Path) -> None:
    """The run ``--instructions`` counts: ``what`` with N events after WARM_UP uncounted
    ones (in the same process, on a file of their own)."""
    if what == "lionstore":
        await run_lionstore(PER_EVENT, WARM_UP, workdir, verify=False)
        await run_lionstore(PER_EVENT, n, workdir, verify=False, meter=Callgrind().active())
    else:
        await run_ceiling(WARM_UP, workdir)
        await run_ceiling(n, workdir, meter=Callgrind().active())


def count_instructions(what: str, n: int, workdir: Path) -> float:
    """Instructions per event of ``what`` ("lionstore" or "ceiling"), N events."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={workdir / f'callgrind-{what}.out'}",
        sys.executable,
        __file__,
        "--count-run",
        what,
        "--n",
        str(n),
        "--dir",
        str(workdir),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts every run
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or found is None:
        raise RuntimeError(f"{what} under callgrind failed:\n{done.stdout}{done.stderr[-3000:]}")
    return int(found.group(1)) / n


def run_instructions(n: int, workdir: Path, *, required: bool = True) -> int:
    """The ``--instructions`` table; without valgrind, 1 if ``required`` else 0."""
    print("# Executor benchmark: instructions per event, per_event (durability normal)\n")
    print(f"- {machine_line()}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("- valgrind is not installed (Debian: apt-get install valgrind): nothing counted")
        return 1 if required else 0
    print(
        f"- lionstore {lionstore.__version__}; N = {n:,} events counted after {WARM_UP} "
        "uncounted ones; user-space instructions of every thread, from callgrind"
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        found = pool.map(lambda what: count_instructions(what, n, workdir), COUNTED)
        counts = dict(zip(COUNTED, found, strict=True))
    rows = [[COUNTED[w], f"{counts[w]:,.0f}"] for w in COUNTED]
    rows.append(["lionstore / ceiling", f"{counts['lionstore'] / counts['ceiling']:.2f}x"])
    print()
    print_table(["variant", "instructions per event"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
