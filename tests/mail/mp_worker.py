"""A worker process for test_multiprocess.py: runs one Exchange over a shared file.

Usage: ``python mp_worker.py '<json config>'`` with keys db, run, name, ids (source
ids), expected (mails to wait for), barrier (a directory), index and timeout.

It signals ``ready-<index>`` in the barrier directory, waits for ``go``, registers
the sources by id (the other worker does the same at the same moment), then loops
``collect_all(); deliver_all()`` until its view of the file shows every expected
mail in an inbox. It prints one JSON line: how many mails its own sweeps moved.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import lionstore
from lionstore import Exchange, Source


def _delivered(ex: Exchange) -> int:
    return sum(len(p) for box in ex.mailboxes.values() for p in box.pending_ins.values())


async def run(cfg: dict[str, Any]) -> int:
    deadline = time.monotonic() + cfg["timeout"]
    barrier = Path(cfg["barrier"])
    async with lionstore.open(cfg["db"], run=cfg["run"]) as store:
        ex = Exchange(store=store, name=cfg["name"])
        await ex.load()
        (barrier / f"ready-{cfg['index']}").touch()
        while not (barrier / "go").exists():
            if time.monotonic() > deadline:
                print(json.dumps({"error": "no go signal"}))
                return 2
            await asyncio.sleep(0.002)  # polling the barrier file; the exit is the file
        added = await ex.add_source([Source(id=i) for i in cfg["ids"]])
        collected = delivered = sweeps = 0
        while True:
            collected += await ex.collect_all()
            delivered += await ex.deliver_all()
            sweeps += 1
            if _delivered(ex) >= cfg["expected"]:
                break
            if time.monotonic() > deadline:
                print(json.dumps({"error": "timeout", "seen": _delivered(ex)}))
                return 3
            await asyncio.sleep(0.001)  # pacing between sweeps; the exit is the condition
        print(
            json.dumps(
                {
                    "added": len(added),
                    "collected": collected,
                    "delivered": delivered,
                    "sweeps": sweeps,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run(json.loads(sys.argv[1]))))
