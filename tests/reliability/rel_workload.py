"""The mixed workload the reliability tests run, in child processes and in the test.

It is a top-level module (the reliability conftest and the child script put this
folder on ``sys.path``), so the classes are recorded as ``rel_workload.Task`` in
every process and ``lionstore.replay.resume`` finds them in the parent.

Two side files let the parent check what the log cannot say by itself:

* the **invocation file**: ``Task.invoke`` appends the event id and fsyncs it
  *before* doing anything, so a SIGKILL cannot hide an invocation;
* the **ack file**: after each awaited write returns, the workload appends what
  it wrote (``event <id>``, ``mail <id>``, ``source+ <id>`` ...) and fsyncs it, so
  every acknowledged write can be looked up in the log after the kill.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import lionstore
from lionstore import Event, Exchange, Executor, Processor, Source

EXECUTOR = "work"
ROUTER = "post"
FIXED_SOURCES = 4


def durable_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line with a single O_APPEND write and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """Whole lines of a side file (a torn last line, cut by a kill, is dropped)."""
    p = Path(path)
    if not p.exists():
        return []
    text = p.read_text()
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]


class Task(Event):
    """Counts its invocations durably, then succeeds or fails."""

    n: int = 0
    fail: bool = False
    deny: bool = False
    side: str = ""

    @property
    def request(self) -> dict[str, Any]:
        return {"deny": self.deny}

    async def invoke(self) -> None:
        if self.side:
            durable_line(self.side, self.id)
        await asyncio.sleep(random.random() * 0.002)  # a kill can land mid-invoke
        if self.fail:
            raise RuntimeError(f"task {self.n} fails on purpose")
        self.response = {"n": self.n, "pid": os.getpid()}


class DenyingProcessor(Processor):
    """Denies a ``deny`` task about half of the time (it is retried after a back-off)."""

    event_type = Task

    async def request_permission(self, **kwargs: Any) -> bool:
        return not (kwargs.get("deny") and random.random() < 0.5)


class WorkExecutor(Executor):
    processor_type = DenyingProcessor


def processor_config(lease_seconds: float) -> dict[str, Any]:
    return {
        "queue_capacity": 4,
        "capacity_refresh_time": 0.01,
        "max_attempts": 3,
        "lease_seconds": lease_seconds,
        "max_backoff": 0.02,
    }


def fixed_source_ids(seed: str) -> list[str]:
    """The sources every process registers (the same ids from the same seed)."""
    rng = random.Random(seed)
    return [str(lionstore.IDType(_uuid4(rng))) for _ in range(FIXED_SOURCES)]


def _uuid4(rng: random.Random) -> str:
    import uuid

    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


async def run_rounds(
    store: lionstore.Store,
    *,
    rng: random.Random,
    ack: str,
    side: str,
    sources: list[str],
    lease_seconds: float,
    rounds: int | None = None,
) -> None:
    """Run the mixed workload round after round (forever when ``rounds`` is None).

    A round appends tasks (some fail, some are denied at first), forwards them,
    registers a short-lived source, sends mail among the fixed sources, to the
    short-lived one and to ids nobody registered, collects, deletes the short-lived
    source, delivers, and joins the executor.
    """
    executor = WorkExecutor(processor_config(lease_seconds), store=store, name=EXECUTOR)
    await executor.start()
    exchange = Exchange(store=store, name=ROUTER)
    fixed = [Source(id=i) for i in sources]
    await exchange.add_source(fixed)
    for s in fixed:
        durable_line(ack, f"source+ {s.id}")
    done = 0
    while rounds is None or done < rounds:
        done += 1
        tasks = [
            Task(n=rng.randrange(1000), fail=rng.random() < 0.2, deny=rng.random() < 0.3, side=side)
            for _ in range(rng.randint(1, 6))
        ]
        if rng.random() < 0.5:
            await executor.extend(tasks)
            for t in tasks:
                durable_line(ack, f"event {t.id}")
        else:
            for t in tasks:
                await executor.append(t)
                durable_line(ack, f"event {t.id}")
        await executor.forward()

        doomed = Source()
        await exchange.add_source(doomed)
        durable_line(ack, f"source+ {doomed.id}")
        for _ in range(rng.randint(2, 8)):
            sender = rng.choice(fixed)
            roll = rng.random()
            if roll < 0.15:
                recipient: Any = doomed.id
            elif roll < 0.25:
                recipient = lionstore.IDType.create()  # nobody: recipient_unknown
            else:
                recipient = rng.choice(fixed).id
            mail = exchange.create_mail(sender, recipient, "message", {"k": rng.randrange(99)})
            await sender.send(mail)
            durable_line(ack, f"mail {mail.id}")
            if rng.random() < 0.3:
                await exchange.collect_all()
        if rng.random() < 0.5:
            await exchange.collect_all()
        await exchange.delete_source(doomed)
        durable_line(ack, f"source- {doomed.id}")
        await exchange.collect_all()
        await exchange.deliver_all()
        await asyncio.wait_for(executor.join(), 120)
        durable_line(ack, "joined " + " ".join(t.id for t in tasks))
