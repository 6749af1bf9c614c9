"""Reopen a run and read its state at once, as lionagi code does (no ``load()``).

    python examples/reopen.py [PATH]      (default: reopen-example.db)

The first run of this script records three jobs in run "jobs-run" and runs them;
every later run, in a new process, only reopens the run and reads it back.
"""

from __future__ import annotations

import asyncio
import sys
from typing import ClassVar

import lionstore


class Job(lionstore.Event):
    """A job whose response is twice its number."""

    n: int = 0

    async def invoke(self) -> None:
        self.response = self.n * 2


class JobProcessor(lionstore.Processor):
    event_type: ClassVar[type[lionstore.Event]] = Job


class JobExecutor(lionstore.Executor):
    processor_type: ClassVar[type[lionstore.Processor]] = JobProcessor


CONFIG = {"queue_capacity": 10, "capacity_refresh_time": 0.01}


async def main(path: str) -> None:
    async with lionstore.open(path, run="jobs-run") as store:
        ex = JobExecutor(processor_config=CONFIG, store=store, name="jobs")
        print(len(ex.pile), len(ex.completed_events))  # the run as the file holds it
        if len(ex.pile) == 0:  # a new file: record the jobs and run them
            await ex.extend([Job(n=n) for n in (1, 2, 3)])
            await ex.start()
            await ex.forward()
            await asyncio.wait_for(ex.join(), timeout=30)
            print("recorded", len(ex.pile), len(ex.completed_events))
        else:
            print("responses", sorted(event.response for event in ex.completed_events))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "reopen-example.db"))
