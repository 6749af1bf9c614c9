"""Resume: carry on a run interrupted by a crash.

Every executor of the run is rebuilt with the user's classes (which must be
importable: lionstore never imports what a file names; the caller passes the
modules to import) and driven until its queue is drained; leases left by the
crashed process are honoured: its claims are re-queued once they expire, or at
once when its process is known to be gone (``lionstore.repositories.leases``).
When resume has to wait for leases it says so first: a warning on the
``lionstore.resume`` logger with the owners and the time left (``lionstore
resume`` prints it), so a wait is never mistaken for a hang.
Every mail router sweeps until nothing is left to collect or deliver.
"""

from __future__ import annotations

import importlib
import logging
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

__all__ = ["resume", "import_modules", "announce_waits"]

log = logging.getLogger("lionstore.resume")


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
        await announce_waits(executor)
        await executor.forward()
        await executor.join()
    for name in projection.routers:
        exchange = Exchange(store=store, name=name)
        await exchange.load()
        while await exchange.collect_all() + await exchange.deliver_all():
            pass
    return (await rebuild(store)).counts()


async def announce_waits(executor: Executor) -> tuple[int, float]:
    """Log what taking over ``executor``'s claims of other owners involves: claims of
    owners whose process is gone are taken over at once; the others wait for their
    leases. Returns (claims to wait for, seconds until the last lease expires)."""
    repo = executor._repo
    processor = executor.processor
    await repo.sync()
    mine = processor.owner if processor is not None else ""
    claims = {i: c for i, c in repo.state.claims.items() if c.owner != mine}
    if not claims:
        return 0, 0.0
    gone = await repo.gone_owners(exclude=mine)
    taken = [c for c in claims.values() if c.owner in gone]
    if taken:
        log.warning(
            "executor %r: %d events were claimed by %s, whose process is gone: taking "
            "them over now",
            executor.name,
            len(taken),
            ", ".join(sorted({c.owner for c in taken})),
        )
    now = repo.store.now_us()
    waits = [c for c in claims.values() if c.owner not in gone and c.lease_expires_us > now]
    if not waits:
        return 0, 0.0
    left = max(c.lease_expires_us for c in waits) - now
    log.warning(
        "executor %r: %d events are claimed by %s, which is still running or cannot be "
        "seen from here (another host); waiting up to %.1f s for their leases to expire "
        "before taking them over (a live owner renews its leases and keeps them)",
        executor.name,
        len(waits),
        ", ".join(sorted({c.owner for c in waits})),
        left / 1_000_000,
    )
    return len(waits), left / 1_000_000
