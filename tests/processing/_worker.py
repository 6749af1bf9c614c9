"""Subprocess entry point for the durability and multi-process tests.

    python tests/processing/_worker.py MODE '{"db": ..., "run": ..., "name": ..., ...}'

Modes:

``run``
    Open the executor, optionally wait at a barrier (``barrier_dir`` and ``peers``:
    each worker drops a file there and waits until ``peers`` files exist), then
    ``forward()`` and ``join()``. Prints ``{"pid": ...}``.
``dump``
    Rebuild the executor from the log and print its pile and pending progression
    as JSON.
``foreign``
    Define a *different* set of event classes (``processing_events`` is never
    imported), try to rebuild the executor, and report the error; then read the
    run's records raw.

The last line of stdout is the JSON result.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

# Run as a script, this file's folder is sys.path[0]: proc_helpers and
# processing_events import under the same names as in the test process.
from proc_helpers import snapshot

import lionstore
from lionstore.domain.event import Event
from lionstore.processing.executor import Executor


async def run(args: dict[str, Any]) -> dict[str, Any]:
    import processing_events  # noqa: F401  (defines the event classes)

    async with lionstore.open(args["db"], run=args["run"]) as store:
        executor = Executor(args["config"], store=store, name=args["name"])
        await executor.start()
        barrier = args.get("barrier_dir")
        if barrier:
            Path(barrier, f"ready-{os.getpid()}").write_text("ready")
            while len(list(Path(barrier).iterdir())) < args["peers"]:
                await asyncio.sleep(0.005)
        await executor.forward()
        await asyncio.wait_for(executor.join(), 120)
        return {"pid": os.getpid(), "completed": len(executor.completed_events)}


async def dump(args: dict[str, Any]) -> dict[str, Any]:
    import processing_events  # noqa: F401

    async with lionstore.open(args["db"], run=args["run"]) as store:
        executor = Executor(store=store, name=args["name"])
        await executor.load()
        return snapshot(executor)


class Unrelated(Event):
    """The only user event class this mode defines."""

    colour: str = ""

    async def invoke(self) -> None:
        self.response = self.colour


async def foreign(args: dict[str, Any]) -> dict[str, Any]:
    assert "processing_events" not in sys.modules
    result: dict[str, Any] = {}
    async with lionstore.open(args["db"], run=args["run"]) as store:
        executor = Executor(store=store, name=args["name"])
        try:
            await executor.load()
        except lionstore.EventClassNotFoundError as exc:
            result["error"] = type(exc).__name__
            result["message"] = str(exc)
        else:
            result["error"] = None
        appended = [r async for r in await store.read(kinds=["event.appended"])]
        result["raw"] = [
            {"id": r.stream_id, "class": r.data.event_class, "fields": r.data.fields}  # type: ignore[union-attr]
            for r in appended
        ]
        result["kinds"] = [r.kind async for r in await store.read()]
    result["imported"] = "processing_events" in sys.modules
    return result


MODES = {"run": run, "dump": dump, "foreign": foreign}


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    result = asyncio.run(MODES[mode](json.loads(raw)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
