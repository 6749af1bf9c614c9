"""Event classes of the ``lionstore resume`` tests, and the runs they leave behind.

The tests write their runs in a child process (``python -c "import resume_events;
..."``) and resume them in the test process with ``--import resume_events``: the
class path recorded in the file is ``resume_events.Doubler``, whatever imports it.
"""

from __future__ import annotations

import asyncio
import os

import lionstore

HANG = "LIONSTORE_TEST_HANG"


class Doubler(lionstore.Event):
    """Doubles ``n``. With ``$LIONSTORE_TEST_HANG`` set, ``invoke`` never returns (a
    process that is killed while it runs leaves the event claimed)."""

    n: int

    async def invoke(self) -> None:
        if os.environ.get(HANG):
            await asyncio.sleep(3600)
        self.response = 2 * self.n


async def make_pending_run(path: str, label: str, count: int = 3) -> None:
    """Append ``count`` Doublers to executor ``doubling`` without forwarding them."""
    async with lionstore.open(path, run=label) as store:
        executor = lionstore.Executor(store=store, name="doubling")
        await executor.extend([Doubler(n=n) for n in range(1, count + 1)])


async def make_crashed_run(path: str, label: str) -> None:
    """Start a processor (with the default 300 s leases) and forward two Doublers;
    with ``$LIONSTORE_TEST_HANG`` set this never returns: kill the process."""
    async with lionstore.open(path, run=label) as store:
        executor = lionstore.Executor(
            {"queue_capacity": 5, "capacity_refresh_time": 0.01},
            store=store,
            name="doubling",
        )
        await executor.start()
        await executor.extend([Doubler(n=10), Doubler(n=20)])
        await executor.forward()


def main(argv: list[str]) -> None:
    """``python -c "import sys, resume_events; resume_events.main(sys.argv[1:])" KIND PATH
    LABEL`` with KIND ``pending`` or ``crashed``."""
    kind, path, label = argv
    make = make_pending_run if kind == "pending" else make_crashed_run
    asyncio.run(make(path, label))
