"""Reopening a large run: with projection checkpoints, and folding the whole log.

    python benchmarks/bench_reopen.py [--rounds N] [--quick] [--n N] [--file PATH]

A run of about N records (default 1,000,000; ``--quick``: 100,000) is built once
by ``bench_replay.build_run`` (two Executors, four records per event, and an
Exchange with five sources, three records per mail; four fifths executor
records). A first open with checkpoints on folds it and writes the checkpoints
(timed once and reported). Every round then measures, in a rotating order, a
reopen: ``lionstore.open(path, run=...)`` plus ``load()`` of both executors and
the exchange, the state every later command starts from,

* ``checkpoints=False``: every projection folded from the log;
* ``checkpoints=True``: each projection restored from its snapshot, then only the
  records after it folded (none here);
* the same, then every event, every mailbox's mail and the dead letters read (what a
  restore leaves as text is built then).

Target (issue 8): reopen with checkpoints >= 20x faster (per-round ratio, median).
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    Results,
    Stopwatch,
    add_smoke_argument,
    fmt_num,
    fmt_summary,
    git_state,
    loadavg1,
    machine_line,
    print_table,
    round_order,
)
from bench_replay import EXCHANGE_NAME, EXECUTORS, RUN_LABEL, TrivialExecutor, build_run

import lionstore

VARIANTS = ("fold the log", "from checkpoints", "from checkpoints, then every item read")


async def reopen(
    path: Path, checkpoints: bool, read_all: bool = False
) -> tuple[int, list[int | None]]:
    """Open the run and load every projection (with ``read_all``, then read every event,
    every mailbox's mail and the dead letters); return the events in the piles and the
    positions the projections were restored from (None: folded)."""
    async with lionstore.open(path, run=RUN_LABEL, checkpoints=checkpoints) as store:
        executors = [
            TrivialExecutor({"queue_capacity": 10}, store=store, name=name) for name in EXECUTORS
        ]
        exchange = lionstore.Exchange(store=store, name=EXCHANGE_NAME)
        for ex in executors:
            await ex.load()
        await exchange.load()
        events = sum(len(ex.pile) for ex in executors)
        if read_all:
            assert sum(len(list(ex.pile)) for ex in executors) == events
            for box in exchange.mailboxes.values():
                assert len(box.pile_) == len(box)
            assert all(d.mail.id for d in exchange.dead_letters)
        restored = [ex._repo.restored_from for ex in executors] + [exchange._repo.restored_from]
        for ex in executors:
            ex.close()
        exchange._repo.close()
        return events, restored


def snapshot_bytes(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        total: int = conn.execute(
            "SELECT sum(length(snapshot)) FROM lionstore_checkpoints"
        ).fetchone()[0]
        return total
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 records, 3 rounds")
    parser.add_argument("--file", type=Path, help="build the run here once, or reuse it")
    add_smoke_argument(parser)
    args = parser.parse_args()
    n = 30_000 if args.smoke else 100_000 if args.quick else args.n
    if args.smoke:
        args.rounds = 1
    print(machine_line())
    print(git_state(Path(__file__).resolve().parent.parent))
    tmp = tempfile.TemporaryDirectory(prefix="lionstore-reopen-")
    path = args.file or Path(tmp.name) / "reopen.db"
    if not path.exists():
        print(f"building a run of about {n:,} records in {path} ...", flush=True)
        built = asyncio.run(build_run(path, n))
        print(f"built {built.records:,} records in {built.seconds:.1f} s", flush=True)
    with Stopwatch() as first:
        events, restored = asyncio.run(reopen(path, True))
    how = (
        "restored from the file's checkpoints"
        if all(r is not None for r in restored)
        else "fold, then write the checkpoints"
    )
    print(
        f"first open with checkpoints on ({how}): "
        f"{first.seconds:.2f} s; {events:,} events; snapshots {snapshot_bytes(path) / 1e6:.1f} MB"
    )
    results = Results()
    for round_no in range(args.rounds):
        for variant in round_order(VARIANTS, round_no):
            gc.collect()
            with Stopwatch() as sw:
                count, restored = asyncio.run(
                    reopen(path, variant != "fold the log", variant == VARIANTS[2])
                )
            assert count == events
            if variant != "fold the log":
                assert all(r is not None for r in restored), restored
            else:
                assert all(r is None for r in restored), restored
            results.add(variant, sw.seconds)
            print(f"  round {round_no + 1} {variant}: {sw.seconds:.2f} s (load {loadavg1():.1f})")
    speedup = results.ratio("fold the log", "from checkpoints")
    read_all = results.ratio("fold the log", VARIANTS[2])
    print()
    print_table(
        ["reopen (open + 2 executors + exchange loaded)", "seconds, median (min-max)"],
        [[v, fmt_summary(results.get(v), lambda x: fmt_num(x, 3))] for v in VARIANTS]
        + [["speed-up with checkpoints (per round)", fmt_summary(speedup, lambda x: f"{x:.1f}x")]]
        + [["... then every item read (per round)", fmt_summary(read_all, lambda x: f"{x:.1f}x")]],
    )


if __name__ == "__main__":
    main()
