"""lionstore's durable Exchange against lionagi 0.8.7's in-memory Exchange, same run.

    python benchmarks/bench_mail.py [--rounds N] [--quick] [--sources S] [--mails M]
        [--lionagi-venv PATH | --no-lionagi] [--profile] [--dir DIR]

S sources (default 10) each send M mails (default 1,000) round-robin to the other
S-1. The send phase is not timed (it is reported): lionstore creates each mail with
``exchange.create_mail(...)`` and records it with ``await source.send(mail)``
(``lionstore.Source``); lionagi builds Mail + Package and calls ``append_out``.
The timed region is ``collect_all()`` + ``deliver_all()``.

lionstore writes to a SQLite file in a temporary directory (durability ``normal``;
``full`` is reported too). After each run the benchmark checks, outside the timed
region, that all S*M mails were delivered and that every recipient got each
sender's mail in the order it was sent, then reopens the file and checks again.

lionagi 0.8.7's ``Exchange.collect`` cannot run (it calls ``Pile.popleft``), so the
lionagi subprocess replaces it with the benchmark's own minimal corrected collect
(see benchmarks/_lionagi.py); ``deliver``/``deliver_all`` are stock, and the same
delivery and order check runs there. Figures are medians over rounds with
(min-max); the ratio is lionagi / lionstore within one round. Target: >= 3x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import shutil
import sys
import tempfile
import time
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
from bench_executor import Profiles

import lionstore
from lionstore import Exchange, Source
from lionstore.domain.ids import IDType

TARGET = 3.0
RUN_LABEL = "bench"
EXCHANGE_NAME = "bench-exchange"
LIONAGI = "lionagi 0.8.7 (in memory, collect repaired)"


def lionstore_name(durability: str) -> str:
    return f"lionstore Exchange ({durability})"


async def send_all(
    exchange: Exchange, sources: list[Source], per_source: int
) -> dict[IDType, dict[IDType, list[IDType]]]:
    """The untimed send phase; returns recipient -> sender -> mail ids in send order."""
    ids = [s.id for s in sources]
    expected: dict[IDType, dict[IDType, list[IDType]]] = {
        i: {j: [] for j in ids if j != i} for i in ids
    }
    for k in range(per_source):
        for i, src in enumerate(sources):
            others = ids[:i] + ids[i + 1 :]
            to = others[k % len(others)]
            mail = exchange.create_mail(src.id, to, "message", k)
            await src.send(mail)
            expected[to][src.id].append(mail.id)
    return expected


def check_delivered(
    exchange: Exchange,
    expected: dict[IDType, dict[IDType, list[IDType]]],
    total: int,
    what: str,
) -> None:
    problems = []
    delivered = 0
    for recipient, by_sender in expected.items():
        box = exchange.mailboxes[recipient]
        ins = box.pending_ins
        for sender, want in by_sender.items():
            got = list(ins.get(sender, []))
            delivered += len(got)
            if got != want:
                problems.append(f"{recipient[:8]} from {sender[:8]}: order or content differs")
        if len(box.pending_outs):
            problems.append(f"{recipient[:8]} still has {len(box.pending_outs)} outbound")
    if delivered != total:
        problems.append(f"{delivered}/{total} delivered")
    if any(exchange.buffer.values()):
        problems.append("mail left in the buffer")
    if exchange.dead_letters:
        problems.append(f"{len(exchange.dead_letters)} dead letters")
    if problems:
        raise AssertionError(f"{what}: " + "; ".join(problems[:5]))


async def run_lionstore(
    n_sources: int,
    per_source: int,
    durability: str,
    workdir: Path,
    *,
    verify: bool = True,
    profiles: Profiles | None = None,
) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="mail-", dir=workdir))
    path = tmp / "mail.db"
    total = n_sources * per_source
    try:
        async with lionstore.open(path, run=RUN_LABEL, durability=durability) as store:
            sources = [Source() for _ in range(n_sources)]
            exchange = Exchange(sources, store=store, name=EXCHANGE_NAME)
            await exchange.load()
            t = time.perf_counter()
            expected = await send_all(exchange, sources, per_source)
            send_s = time.perf_counter() - t
            gc.collect()
            with profiles.active() if profiles else contextlib.nullcontext():
                t0 = time.perf_counter()
                collected = await exchange.collect_all()
                t1 = time.perf_counter()
                delivered = await exchange.deliver_all()
                t2 = time.perf_counter()
            if verify:
                if collected != total or delivered != total:
                    raise AssertionError(
                        f"collect_all moved {collected}, deliver_all {delivered}, not {total}"
                    )
                check_delivered(exchange, expected, total, f"{lionstore_name(durability)}, live")
        if verify:
            async with lionstore.open(path, run=RUN_LABEL) as store2:
                again = Exchange(store=store2, name=EXCHANGE_NAME)
                await again.load()
                check_delivered(again, expected, total, f"{lionstore_name(durability)}, reopened")
        return {"send": send_s, "collect": t1 - t0, "deliver": t2 - t1, "total": t2 - t0}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def profile_run(n_sources: int, per_source: int, workdir: Path, top: int) -> None:
    """One lionstore run with collect_all + deliver_all under cProfile (no verification)."""
    profiles = Profiles()
    profiles.install()
    out = asyncio.run(
        run_lionstore(n_sources, per_source, "normal", workdir, verify=False, profiles=profiles)
    )
    print(
        f"## cProfile: lionstore collect_all + deliver_all, {n_sources} x {per_source:,} "
        f"(under the profiler: collect {out['collect']:.2f} s, deliver {out['deliver']:.2f} s)\n"
    )
    profiles.print(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="1 round, 10 x 200 mails: a smoke run")
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--mails", type=int, default=None, help="mails per source (default 1,000)")
    parser.add_argument("--no-full", action="store_true", help="skip durability='full'")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the temporary SQLite files go (default: the system temp dir)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the benchmark, cProfile one lionstore run's timed region",
    )
    parser.add_argument("--top", type=int, default=30, help="rows per profile listing")
    _lionagi.add_venv_argument(parser)
    add_smoke_argument(parser)
    args = parser.parse_args(argv)
    if args.sources < 2:
        parser.error("--sources must be at least 2")
    per_source = args.mails or (20 if args.smoke else 200 if args.quick else 1_000)
    rounds = args.rounds or (1 if args.quick or args.smoke else 3)
    total = args.sources * per_source
    workdir = Path(tempfile.mkdtemp(prefix="lionstore-bench-mail-", dir=args.dir))
    try:
        if args.profile:
            profile_run(args.sources, per_source, workdir, args.top)
            return 0

        print(
            "# Mail benchmark: lionstore Exchange (durable, SQLite) vs lionagi 0.8.7 "
            "Exchange (in memory)\n"
        )
        print(f"- {machine_line()}")
        env = None
        if not args.no_lionagi:
            env, why = _lionagi.ensure_venv(args.lionagi_venv)
            if env is None:
                print(f"- lionagi unavailable ({why}): lionstore figures only")
        if env is not None:
            print(
                f"- baseline: {env.describe()}; one subprocess per run; Exchange.collect "
                "replaced there by the benchmark's minimal corrected collect"
            )
        print(
            f"- lionstore {lionstore.__version__}; {args.sources} sources x {per_source:,} "
            f"mails = {total:,}, round-robin to the other {args.sources - 1}; rounds {rounds}"
        )
        print("- timed: collect_all() + deliver_all(); the send phase is untimed (shown apart)")
        if total != 10_000:
            print("- not the target's 10 x 1,000: ratios here are not the target's")
        print()

        durabilities = ["normal"] if args.no_full else ["normal", "full"]
        jobs: list[tuple[str, Any]] = [
            (
                lionstore_name(d),
                lambda d=d: asyncio.run(run_lionstore(args.sources, per_source, d, workdir)),
            )
            for d in durabilities
        ]
        if env is not None:
            jobs.append((LIONAGI, lambda: _lionagi.run_mail(env, args.sources, per_source)))
        res = Results()
        started = time.perf_counter()
        for r in range(rounds):
            for name, job in round_order(jobs, r):
                out = job()
                for key in ("send", "collect", "deliver", "total"):
                    res.add(f"{name}|{key}", out[key])
                res.add(name, 1.0)  # marks the variant as measured
                print(f"  round {r + 1}/{rounds}: {name}: {out['total']:.3f} s", flush=True)
        print(
            f"\n({rounds} rounds in {time.perf_counter() - started:.0f} s; every run verified: "
            f"all {total:,} delivered, per-sender order kept; lionstore also after reopening)\n"
        )

        rows = []
        for name, _ in jobs:
            totals = res.get(f"{name}|total")
            med = summary(totals)[0]
            rows.append(
                [
                    name,
                    fmt_summary(totals),
                    fmt_summary(res.get(f"{name}|collect")),
                    fmt_summary(res.get(f"{name}|deliver")),
                    fmt_num(total / med) if med else "-",
                    fmt_summary(res.get(f"{name}|send")),
                ]
            )
        print_table(
            [
                "variant",
                "collect_all+deliver_all s",
                "collect_all s",
                "deliver_all s",
                "mails/s",
                "send phase s (untimed)",
            ],
            rows,
        )
        if env is None:
            print("\n(lionagi unavailable: no ratios)")
            return 0
        print("\n## lionagi / lionstore (per round, same run)\n")
        rows = []
        verdicts = []
        for d in durabilities:
            name = lionstore_name(d)
            ratios = res.ratio(f"{LIONAGI}|total", f"{name}|total")
            med = summary(ratios)[0]
            verdict = "PASS" if med >= TARGET else "FAIL"
            rows.append(
                [
                    name,
                    fmt_num(summary(res.get(f"{LIONAGI}|total"))[0]),
                    fmt_num(summary(res.get(f"{name}|total"))[0]),
                    fmt_summary(ratios, lambda x: f"{x:.2f}x"),
                    f">= {TARGET:g}x",
                    verdict,
                ]
            )
            verdicts.append(f"{name}: {med:.2f}x -> {verdict}")
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
        print()
        for line in verdicts:
            print(f"- {line}")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
