"""The run the ``lionstore ui`` tests look at: a nightly report that is killed and resumed.

``python ui_scenario.py crash PATH`` records run ``nightly-report``: executor
``reports`` with six jobs (one denied once by a rate limiter, one failing, two that
hang until the process is SIGKILLed) and three named agents exchanging mail, one
of it to an agent that never joined (a dead letter). ``python ui_scenario.py
resume PATH`` resumes it in a fresh process: the hung jobs' leases expire, they
are taken over and completed. ``python ui_scenario.py live PATH LABEL N`` writes
a run of N events one by one, waiting for a line on stdin between them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any, ClassVar

import lionstore
import lionstore.replay
from lionstore.domain.ids import IDType
from lionstore.mail.exchange import Exchange
from lionstore.mail.source import Source
from lionstore.processing.executor import Executor
from lionstore.processing.processor import Processor

HANG = "LIONSTORE_UI_HANG"
LABEL = "nightly-report"


class Job(lionstore.Event):
    """Squares ``n``; ``n < 0`` fails; ``hang`` jobs never return while $HANG is set."""

    name: str
    n: int
    hang: bool = False

    @property
    def request(self) -> dict[str, Any]:
        return {"name": self.name}

    async def invoke(self) -> None:
        if self.hang and os.environ.get(HANG):
            await asyncio.sleep(3600)
        if self.n < 0:
            raise ValueError(f"cannot square a negative budget ({self.n})")
        self.response = {"square": self.n * self.n}


class LimitedProcessor(Processor):
    """Denies the first request of the job named ``fetch-prices`` (a rate limit)."""

    event_type: ClassVar[type[lionstore.Event]] = Job

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.denied = False

    async def request_permission(self, **kwargs: Any) -> bool:
        if kwargs.get("name") == "fetch-prices" and not self.denied:
            self.denied = True
            return False
        return True


class ReportExecutor(Executor):
    processor_type: ClassVar[type[Processor]] = LimitedProcessor


class Agent(Source):
    """A mail source with a name."""

    name: str


JOBS = [
    ("load-orders", 3, False),
    ("fetch-prices", 4, False),
    ("bad-budget", -1, False),
    ("render-charts", 5, True),
    ("email-report", 6, True),
    ("archive", 7, False),
]


async def crash(path: str) -> None:
    async with lionstore.open(path, run=LABEL) as store:
        exchange = Exchange(store=store, name="team")
        planner, worker, reviewer = (
            Agent(name="planner"),
            Agent(name="worker"),
            Agent(name="reviewer"),
        )
        await exchange.add_source([planner, worker, reviewer])
        await planner.send(
            exchange.create_mail(planner, worker, "message", {"task": "build the report"})
        )
        await exchange.collect_all()
        await exchange.deliver_all()
        executor = ReportExecutor(
            {
                "queue_capacity": 10,
                "capacity_refresh_time": 0.02,
                # long: the resumed process must take the hanging jobs over because it
                # sees their process gone, not because a lease ran out while a loaded
                # machine started it (the timeline tests expect "process gone")
                "lease_seconds": 60.0,
                "max_backoff": 0.3,
            },
            store=store,
            name="reports",
        )
        await executor.start()
        await executor.extend([Job(name=n, n=v, hang=h) for n, v, h in JOBS if not h])
        await executor.forward()
        await asyncio.wait_for(executor.join(), timeout=30)
        await worker.send(exchange.create_mail(worker, reviewer, "message", "charts are coming"))
        await worker.send(exchange.create_mail(worker, IDType.create(), "message", "cc the CFO"))
        await exchange.collect_all()
        await exchange.deliver_all()
        await executor.extend([Job(name=n, n=v, hang=h) for n, v, h in JOBS if h])
        print("HANGING", flush=True)
        await executor.forward()  # never returns: the test kills this process


async def resume(path: str) -> None:
    async with lionstore.open(path, run=LABEL) as store:
        await lionstore.replay.resume(store, modules=["ui_scenario"])


async def live(path: str, label: str, count: int) -> None:
    async with lionstore.open(path, run=label) as store:
        executor = Executor(
            {"queue_capacity": 5, "capacity_refresh_time": 0.02}, store=store, name="live"
        )
        await executor.start()
        print("READY", flush=True)
        for i in range(count):
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            await executor.append(Job(name=f"live-{i}", n=i))
            await executor.forward()
            await executor.join()
            print(f"WROTE {i}", flush=True)


async def many(path: str, label: str, count: int) -> None:
    """Run ``label``: ``count`` jobs in batches of 100 on executor ``bulk`` (ten at a
    time)."""
    async with lionstore.open(path, run=label) as store:
        executor = Executor(
            {"queue_capacity": 10, "capacity_refresh_time": 0.001}, store=store, name="bulk"
        )
        await executor.start()
        for start in range(0, count, 100):
            await executor.extend([Job(name=f"job-{i}", n=i) for i in range(start, start + 100)])
            await executor.forward()
        await asyncio.wait_for(executor.join(), timeout=120)


def main(argv: list[str]) -> None:
    """``python -c "import sys, ui_scenario; ui_scenario.main(sys.argv[1:])" KIND PATH ...``
    (run as a module, so the recorded class paths are ``ui_scenario.*``)."""
    kind, target, *rest = argv
    if kind == "crash":
        asyncio.run(crash(target))
    elif kind == "resume":
        asyncio.run(resume(target))
    elif kind == "many":
        asyncio.run(many(target, rest[0], int(rest[1])))
    else:
        asyncio.run(live(target, rest[0], int(rest[1])))
