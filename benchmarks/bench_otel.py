"""What OpenTelemetry costs the per-event path (append + forward per event), same run.

    python benchmarks/bench_otel.py [--rounds N] [--n N] [--smoke]

Three contenders, N trivial events each, in a fresh SQLite file, order rotated per round:

* ``off``: nothing instrumented (``lionstore._hooks`` lists empty: one truth test per
  invocation and per commit).
* ``no provider``: ``lionstore.otel.instrument()`` with OpenTelemetry's default (no-op)
  tracer and meter providers, as in an application that installed the extra but
  configured no SDK.
* ``sdk``: ``instrument()`` with the SDK's tracer provider, a batch span processor and an
  in-memory exporter, and a meter provider with an in-memory reader: what tracing costs
  when it is on.

Printed: events per second (median, min-max) and each contender's time relative to
``off`` within the same round. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

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
from lionstore import Event, Executor


class Tick(Event):
    n: int = 0

    async def invoke(self) -> None:
        self.response = self.n


def _providers(kind: str) -> dict[str, Any]:
    if kind != "sdk":
        return {}
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    return {
        "tracer_provider": tracer_provider,
        "meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
    }


async def run(kind: str, n: int) -> float:
    from lionstore.otel import instrument

    events = [Tick(n=i) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="bench-otel-") as work:
        async with lionstore.open(Path(work) / "otel.db", run="bench") as store:
            instrumentation = None if kind == "off" else instrument(store, **_providers(kind))
            try:
                executor = Executor({"queue_capacity": 100, "capacity_refresh_time": 0.01})
                await executor.start()
                t0 = time.perf_counter()
                for event in events:
                    await executor.append(event)
                    await executor.forward()
                seconds = time.perf_counter() - t0
                executor.close()
            finally:
                if instrumentation is not None:
                    instrumentation.close()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000)
    add_smoke_argument(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.n = 1, 20
    kinds = ["off", "no provider", "sdk"]
    res = Results()
    print(f"# OpenTelemetry on the per-event path ({machine_line()})")
    for round_no in range(args.rounds):
        for kind in round_order(kinds, round_no):
            res.add(kind, asyncio.run(run(kind, args.n)))
    rows = []
    for kind in kinds:
        rate = [args.n / s for s in res.get(kind)]
        rel = "" if kind == "off" else fmt_summary(res.ratio(kind, "off"), fmt_num) + "x"
        rows.append([kind, fmt_summary(rate), rel])
    print(f"{args.n} events, append + forward each, {args.rounds} round(s)")
    print_table(["instrumentation", "events/s", "time vs off"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
