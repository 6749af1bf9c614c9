"""Resume: carry on a run interrupted by a crash.

Every executor of the run is rebuilt with the user's classes (which must be
importable: lionstore never imports what a file names; the caller passes the
modules to import) and driven until its queue is drained; leases left by the
crashed process are honoured: its claims are re-queued once they expire.
Every mail router sweeps until nothing is left to collect or deliver.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from lionstore.domain.element import resolve_class
from lionstore.domain.event import Event
from lionstore.errors import EventClassNotFoundError
from lionstore.log.store import Store
from lionstore.mail.exchange import Exchange
from lionstore.processing.executor import Executor
from lionstore.processing.processor import Processor
from lionstore.replay.state import rebuild

__all__ = ["resume", "import_modules"]


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules the caller named (where the run's event classes live)."""
    for name in modules:
        importlib.import_module(name)


async def resume(store: Store, *, modules: Iterable[str] = ()) -> dict[str, Any]:
    """Finish the store's run; returns counts of events by status and mail by state."""
    import_modules(modules)
    projection = await rebuild(store)
    for name, state in projection.executors.items():
        classes = {e.event_class for e in state.pile if hasattr(e, "event_class")}
        for path in sorted(classes):
            resolve_class(path, Event)  # a clear error naming the class, before any work
        config = next(reversed(state.processors.values()), None) if state.processors else None
        executor_cls: type[Executor] = Executor
        processor_cls: type[Processor] = Processor
        kwargs: dict[str, Any] = {"queue_capacity": 100, "capacity_refresh_time": 0.05}
        if config is not None:
            kwargs = {
                "queue_capacity": config.queue_capacity,
                "capacity_refresh_time": config.capacity_refresh_time,
                "max_attempts": config.max_attempts,
                "lease_seconds": config.lease_seconds,
                "max_backoff": config.max_backoff,
            }
            try:
                executor_cls = resolve_class(config.executor_class, Executor)  # type: ignore[arg-type,assignment]
            except (EventClassNotFoundError, TypeError):
                executor_cls = Executor
            try:
                processor_cls = resolve_class(config.processor_class, Processor)  # type: ignore[arg-type,assignment]
            except (EventClassNotFoundError, TypeError):
                processor_cls = Processor

        class _Resumed(executor_cls):  # type: ignore[valid-type,misc]
            processor_type = processor_cls

        executor = _Resumed(kwargs, store=store, name=name)
        await executor.start()
        await executor.forward()
        await executor.join()
    for name in projection.routers:
        exchange = Exchange(store=store, name=name)
        await exchange.load()
        while await exchange.collect_all() + await exchange.deliver_all():
            pass
    return (await rebuild(store)).counts()
