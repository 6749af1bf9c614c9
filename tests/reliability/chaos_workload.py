"""Worker processes for the PostgreSQL restart test (test_pg_restart.py).

A top-level module (the reliability conftest and the workers' PYTHONPATH put this
folder on ``sys.path``), so ``chaos_workload.ChaosJob`` is the recorded class path in
every process. Run a worker as::

    python -c "import sys, chaos_workload; chaos_workload.main(sys.argv[1:])" MODE JSON

``executor`` forwards and joins the executor (each invocation appends
``"<event id> <pid>"`` to the ``out`` file, one O_APPEND write, *before* it
returns, so an invocation is never hidden); ``exchange`` sweeps collect/deliver
until every expected mail is in an inbox; ``sender`` sends mails one at a time.
Each prints one JSON line and exits 0; any error reaching it exits non-zero.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import lionstore
from lionstore import Event, Exchange, Executor, Source

EXECUTOR = "work"
ROUTER = "post"


class ChaosJob(Event):
    """Waits ``pause`` seconds (the work), then records its invocation."""

    out: str
    pause: float = 0.0

    async def invoke(self) -> None:
        await asyncio.sleep(self.pause)
        fd = os.open(self.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.id} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        self.response = os.getpid()


def _open(cfg: dict[str, Any]) -> lionstore.open:
    return lionstore.open(cfg["db"], run=cfg["run"], reconnect_timeout=cfg["reconnect_timeout"])


async def executor(cfg: dict[str, Any]) -> dict[str, Any]:
    async with _open(cfg) as store:
        ex = Executor(cfg["config"], store=store, name=EXECUTOR)
        await ex.start()
        await ex.forward()
        await ex.join()
        return {"completed": len(ex.completed_events)}


def _delivered(ex: Exchange) -> int:
    return sum(len(p) for box in ex.mailboxes.values() for p in box.pending_ins.values())


async def exchange(cfg: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + cfg["timeout"]
    async with _open(cfg) as store:
        ex = Exchange(store=store, name=ROUTER)
        await ex.load()
        moved = 0
        while _delivered(ex) < cfg["expected"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {_delivered(ex)} mails delivered")
            moved += await ex.collect_all() + await ex.deliver_all()
            await asyncio.sleep(0.005)  # pacing between sweeps; the exit is the condition
        return {"moved": moved}


async def sender(cfg: dict[str, Any]) -> dict[str, Any]:
    async with _open(cfg) as store:
        ex = Exchange(store=store, name=ROUTER)
        sources = [Source(id=i) for i in cfg["ids"]]
        await ex.add_source(sources)
        for i in range(cfg["mails"]):
            a, b = sources[i % len(sources)], sources[(i + 1) % len(sources)]
            await a.send(ex.create_mail(a, b, "message", i))
            await asyncio.sleep(cfg["pause"])  # the workload's pace, not synchronisation
        return {"sent": cfg["mails"]}


MODES = {"executor": executor, "exchange": exchange, "sender": sender}


def main(argv: list[str]) -> None:
    mode, cfg = argv[0], json.loads(argv[1])
    result = asyncio.run(MODES[mode](cfg))
    print(json.dumps({"pid": os.getpid(), **result}))
    sys.stdout.flush()
