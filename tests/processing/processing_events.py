"""Event classes shared by the processing tests and their subprocess workers.

They live in an importable module (not in a test file) so that a worker process
started with ``python tests/processing/_worker.py`` defines them under the very
same ``module.QualName`` the test process recorded: ``processing_events.Job``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from lionstore.domain.event import Event


class Job(Event):
    """A user event with pydantic fields; invoke() answers and mutates a field."""

    n: int = 0
    payload: dict[str, Any] = {}
    note: str = ""
    fail: bool = False

    async def invoke(self) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError(f"job {self.n} failed")
        self.note = f"done-{self.n}"
        self.response = {"double": self.n * 2, "payload": self.payload}


class OtherJob(Job):
    """A subclass, to check classes come back per event."""

    label: str = ""

    async def invoke(self) -> None:
        self.response = f"other:{self.label}"


class LineJob(Event):
    """Appends ``"<event id> <pid>"`` to ``out`` (one O_APPEND write), after waiting
    for the file ``gate`` to exist when one is given (the workload, polled)."""

    out: str
    gate: str | None = None

    async def invoke(self) -> None:
        if self.gate is not None:
            while not Path(self.gate).exists():
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.001)
        fd = os.open(self.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.id} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        self.response = os.getpid()
