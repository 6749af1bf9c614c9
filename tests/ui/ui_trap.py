"""An event class whose import leaves a marker file ($LIONSTORE_UI_TRAP): a run that
names it shows whether anything imported what the file names."""

from __future__ import annotations

import os
from pathlib import Path

import lionstore

_marker = os.environ.get("LIONSTORE_UI_TRAP")
if _marker:
    Path(_marker).write_text("ui_trap was imported\n")


class Trap(lionstore.Event):
    """Completes with its ``n``."""

    n: int

    async def invoke(self) -> None:
        self.response = self.n


async def record(path: str) -> None:
    """A run ``trap`` with three Traps, run to completion."""
    async with lionstore.open(path, run="trap") as store:
        executor = lionstore.Executor({"queue_capacity": 5, "capacity_refresh_time": 0.01})
        await executor.start()
        await executor.extend([Trap(n=n) for n in range(3)])
        await executor.forward()
        await executor.join()
        del store
