"""A worker process of test_pg_scale_out.py: ``_worker.py run``, counting races.

    python tests/processing/_pg_scale_worker.py '{"db": ..., "run": ..., "name": ..., ...}'

Opens the executor, waits at the barrier (``barrier_dir``, ``peers``), then
``forward()`` and ``join()``, as ``_worker.py run`` does. It counts the claim turns
it waited for in vain (``missed``) and the commits the log refused for a stale
expected version (``lost``: a race with another worker), and prints them as the last
line of stdout, JSON. The counting wraps the real calls; nothing is simulated.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import lionstore
from lionstore.errors import ConcurrencyError
from lionstore.processing.executor import Executor


async def run(args: dict[str, Any]) -> dict[str, Any]:
    import processing_events  # noqa: F401  (defines the event classes)

    counts = {"missed": 0, "lost": 0, "turns": 0}
    async with lionstore.open(args["db"], run=args["run"]) as store:
        backend: Any = store._backend
        take = backend.take_claim_turn

        async def counted_take(name: str) -> int | None:
            head: int | None = await take(name)
            counts["turns" if head is not None else "missed"] += 1
            return head

        backend.take_claim_turn = counted_take
        append_records = store.append_records

        async def counted_append(*a: Any, **kw: Any) -> Any:
            try:
                return await append_records(*a, **kw)
            except ConcurrencyError:
                counts["lost"] += 1
                raise

        store.append_records = counted_append  # type: ignore[method-assign]
        executor = Executor(args["config"], store=store, name=args["name"])
        await executor.start()
        barrier = Path(args["barrier_dir"])
        (barrier / f"ready-{os.getpid()}").write_text("ready")
        deadline = time.monotonic() + 120  # a peer that never starts fails the test
        while len(list(barrier.iterdir())) < args["peers"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(list(barrier.iterdir()))} workers started")
            await asyncio.sleep(0.005)
        await executor.forward()
        await asyncio.wait_for(executor.join(), 150)
        return {"pid": os.getpid(), "completed": len(executor.completed_events), **counts}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))), flush=True)
