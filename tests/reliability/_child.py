"""A child process running the reliability workload on a shared file.

    python tests/reliability/_child.py '{"db": ..., "run": ..., "seed": ..., "ack": ...,
        "side": ..., "sources": [...], "lease": ..., "rounds": null, "barrier": null,
        "index": 0}'

With ``rounds`` null it runs until it is killed (the crash loop). With a
``barrier`` directory it drops ``ready-<index>`` there and waits for ``go`` first
(the concurrency test). It prints one JSON line when it ends normally.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import rel_workload  # this folder is sys.path[0] when run as a script

import lionstore


async def main(cfg: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(cfg["seed"])
    random.seed(cfg["seed"])  # the denials and invoke() pauses
    async with lionstore.open(cfg["db"], run=cfg["run"]) as store:
        barrier = cfg.get("barrier")
        if barrier:
            Path(barrier, f"ready-{cfg['index']}").touch()
            deadline = time.monotonic() + 60
            while not Path(barrier, "go").exists():  # polling the start signal file
                if time.monotonic() > deadline:
                    raise TimeoutError("no go signal")
                await asyncio.sleep(0.005)
        await rel_workload.run_rounds(
            store,
            rng=rng,
            ack=cfg["ack"],
            side=cfg["side"],
            sources=cfg["sources"],
            lease_seconds=cfg["lease"],
            rounds=cfg.get("rounds"),
        )
    return {"ok": True}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
