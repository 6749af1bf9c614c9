"""Per-call overhead of a durable lionagi iModel (the ``lionagi`` extra).

    python benchmarks/bench_imodel.py [--rounds N] [--calls N] [--quick]

A chat-completions server on 127.0.0.1 (tests/integrations/model_server.py) answers
at once. Every round runs, in a rotating order, the same ``--calls`` (default
1,000) sequential ``iModel.invoke`` calls with

* lionagi's own executor (``RateLimitedAPIExecutor``, in memory);
* lionstore's (``lionstore.integrations.lionagi.durable``, a SQLite file,
  ``durability="normal"``): every call appended, queued, claimed, finished and
  released in the log.

Each call is timed; a round reports the median call of each variant and their
difference, the per-call overhead of recording (target: under 1 ms at the median).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    Results,
    add_smoke_argument,
    fmt_summary,
    git_state,
    machine_line,
    print_table,
    round_order,
)

import lionstore
from lionstore.integrations.lionagi import durable
from tests.integrations.model_server import ModelServer

VARIANTS = ("lionagi executor", "lionstore executor")


def make_model(server: ModelServer) -> object:
    import lionagi

    return lionagi.iModel(
        provider="openai",
        base_url=server.url("ok"),
        model="gpt-4.1-mini",
        api_key="sk-bench",
        requires_tokens=False,
        allow_local_network=True,
    )


async def run_calls(imodel: object, calls: int, tag: str) -> list[float]:
    times: list[float] = []
    for i in range(calls):
        started = time.perf_counter()
        call = await imodel.invoke(messages=[{"role": "user", "content": f"{tag}{i}"}])  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
        if getattr(call.status, "value", call.status) != "completed":
            raise RuntimeError(f"call {i} ended {call.status}")
    return times


async def variant(
    name: str, server: ModelServer, calls: int, folder: Path, round_no: int
) -> list[float]:
    imodel = make_model(server)
    if name == VARIANTS[0]:
        return await run_calls(imodel, calls, f"plain{round_no}-")
    async with lionstore.open(str(folder / f"round{round_no}.db"), run="bench"):
        durable(imodel)
        times = await run_calls(imodel, calls, f"durable{round_no}-")
        await imodel.executor.flush()  # type: ignore[attr-defined]
        return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 calls, 2 rounds")
    add_smoke_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls = 2, 100
    if args.smoke:
        args.rounds, args.calls = 1, 10
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server = ModelServer().start()
    results = Results()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-imodel-") as tmp:
            # one warm-up call each (imports, connection pools)
            await variant(VARIANTS[0], server, 5, Path(tmp), -1)
            await variant(VARIANTS[1], server, 5, Path(tmp), -1)
            for round_no in range(args.rounds):
                medians = {}
                for name in round_order(VARIANTS, round_no):
                    times = await variant(name, server, args.calls, Path(tmp), round_no)
                    medians[name] = statistics.median(times)
                    results.add(f"{name} median ms", medians[name] * 1000)
                overhead = medians[VARIANTS[1]] - medians[VARIANTS[0]]
                results.add("overhead ms", overhead * 1000)
    finally:
        server.stop()
    print(f"# iModel per-call overhead ({args.calls} calls x {args.rounds} rounds)")
    print(machine_line())
    print(f"code: {git_state(Path(__file__).resolve().parent.parent)}")
    print()
    rows = [
        [
            f"median call, {VARIANTS[0]}",
            fmt_summary(results.get(f"{VARIANTS[0]} median ms")) + " ms",
        ],
        [
            f"median call, {VARIANTS[1]}",
            fmt_summary(results.get(f"{VARIANTS[1]} median ms")) + " ms",
        ],
        ["overhead per call (same round)", fmt_summary(results.get("overhead ms")) + " ms"],
    ]
    print_table(["measure", "median (min-max over rounds)"], rows)


if __name__ == "__main__":
    asyncio.run(main())
