"""A worker process of bench_postgres.py (imported there for the event classes).

    python -c "import _pg_worker; _pg_worker.main()" MODE CONFIG_JSON

It opens the store, prints ``ready``, waits for ``go`` on stdin, does its share and
prints one JSON line: ``{"start": ..., "end": ..., "done": ...}`` (time.time()).

``append``
    ``appends`` appends of ``batch`` records each, each append to a new stream.
``execute``
    Run the shared executor (``forward`` + ``join``) until no event is left
    (``capacity``: its queue capacity, 100 unless given).

The events are :class:`~bench_executor.TrivialEvent` (``invoke`` sets the response)
or :class:`ModelCall` (``invoke`` awaits ``delay_ms``, as a model call would: the
process waits, it does not compute).
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import sys
import time
from typing import Any, ClassVar

from bench_executor import TrivialEvent, TrivialExecutor

import lionstore
from lionstore import IDType, RecordData

EXECUTOR_NAME = "bench-pg-executor"


class ModelCall(TrivialEvent):
    """An event whose ``invoke`` awaits ``delay_ms`` milliseconds (a model call)."""

    delay_ms: float = 20.0

    async def invoke(self) -> None:
        await asyncio.sleep(self.delay_ms / 1000)
        self.response = "ok"


class Tick(RecordData):
    """The appended record: a worker number and a sequence number."""

    kind: ClassVar[str] = "bench.tick"
    worker: int
    seq: int


def executor(
    store: lionstore.Store, capacity: int = 100, refresh: float = 0.005
) -> TrivialExecutor:
    config = {"queue_capacity": capacity, "capacity_refresh_time": refresh}
    return TrivialExecutor(config, store=store, name=EXECUTOR_NAME)


async def work(mode: str, cfg: dict[str, Any]) -> dict[str, Any]:
    async with lionstore.open(cfg["db"], run=cfg["run"], lock_timeout=120) as store:
        # seconds waiting for claim turns, turns taken, seconds holding them
        waited = [0.0, 0, 0.0]
        if store.claim_turns:
            backend = store._backend
            take, give_back = backend.take_claim_turn, backend.end_claim_turn
            taken_at = [0.0]

            async def timed_take(name: str) -> int | None:
                t = time.perf_counter()
                try:
                    return await take(name)
                finally:
                    taken_at[0] = time.perf_counter()
                    waited[0] += taken_at[0] - t
                    waited[1] += 1

            async def timed_give_back(name: str) -> None:
                await give_back(name)
                waited[2] += time.perf_counter() - taken_at[0]

            backend.take_claim_turn = timed_take  # type: ignore[method-assign]
            backend.end_claim_turn = timed_give_back  # type: ignore[method-assign]
        ex = None
        if mode == "execute":
            ex = executor(store, int(cfg.get("capacity", 100)), float(cfg.get("refresh", 0.005)))
        if ex is not None:
            await ex.start()
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("no start signal")
        start, cpu = time.time(), time.process_time()
        # $BENCH_PG_PROFILE=DIR: the worker's share (from the start signal on) is
        # profiled into DIR/worker-PID.prof; its figures are then not comparable.
        profile_dir = os.environ.get("BENCH_PG_PROFILE")
        profile = cProfile.Profile() if profile_dir else None
        if profile is not None:
            profile.enable()
        done = 0
        if ex is None:
            worker, batch = int(cfg["worker"]), int(cfg["batch"])
            for seq in range(int(cfg["appends"])):
                await store.append([(IDType.create(), Tick(worker=worker, seq=seq))] * batch)
                done += batch
        else:
            await ex.forward()
            await ex.join()
        # The work is done: what follows (counting the events, closing) is bookkeeping,
        # which eight workers at once would otherwise add to the run on two cores.
        end, cpu = time.time(), time.process_time() - cpu
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.path.join(str(profile_dir), f"worker-{os.getpid()}.prof"))
        if ex is not None:
            done = len(ex.completed_events)
            ex.close()
        return {
            "start": start,
            "end": end,
            "done": done,
            "cpu": cpu,
            "turn_wait": waited[0],
            "turns": waited[1],
            "turn_held": waited[2],
        }


def _dump_tasks() -> None:
    """Print every task's stack to stderr (on SIGUSR1: a worker that hangs says where)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


async def _work_dumping(mode: str, cfg: dict[str, Any]) -> dict[str, Any]:
    import signal

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    return await work(mode, cfg)


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    print(json.dumps(asyncio.run(_work_dumping(mode, json.loads(raw)))), flush=True)
