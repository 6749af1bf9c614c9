"""Executor: a durable pile of events forwarded to a Processor.

The pile (every event, in append order, with its status and outcome) and the
``pending`` progression are projections of the run's ``event.*`` records for
this executor's ``name``. Opening the same file, run and name later, in any
process, rebuilds them and carries on: reading ``pile``, ``pending`` or a
``*_events`` view right after the constructor folds the history there and then
(once, synchronously; see ``repositories.base``), so no ``load()`` is needed.

Differences from lionagi 0.8.7, on purpose:

* ``append`` of an event already in the pile does nothing: a COMPLETED or FAILED
  event is never invoked again unless :meth:`retry` is called.
* ``forward`` before ``start`` raises :class:`ProcessorNotStartedError` and
  changes nothing.
* ``forward`` runs cycles until every event it forwarded has had its turn
  (finished, or deferred by a denial), so concurrent ``forward`` calls each see
  their own events run.
* ``pile`` and ``pending`` are read-only; they change through these methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, ClassVar

from lionstore import _hooks
from lionstore.domain.element import class_path
from lionstore.domain.event import TERMINAL_STATUSES, Event, EventStatus
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.pile import Pile
from lionstore.domain.progression import Progression
from lionstore.errors import IDError, ProcessorNotStartedError
from lionstore.log.store import Store, resolve_store
from lionstore.processing.processor import Processor
from lionstore.projections.executor import class_materializer
from lionstore.repositories.executor import ExecutorRepository

__all__ = ["Executor"]


class Executor:
    """Stores events in a durable pile and forwards them to its processor."""

    processor_type: ClassVar[type[Processor]] = Processor

    def __init__(
        self,
        processor_config: dict[str, Any] | None = None,
        strict_event_type: bool = False,
        *,
        store: Store | None = None,
        name: str | None = None,
    ) -> None:
        store = resolve_store(store, type(self).__name__)
        if processor_config is not None and not isinstance(processor_config, dict):
            raise TypeError("processor_config must be a dict")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError("name must be a non-empty string")
        self.processor_config: dict[str, Any] = dict(processor_config or {})
        self.name = name or class_path(type(self))
        self.processor: Processor | None = None
        self.store = store
        event_type = self.processor_type.event_type
        self._repo = ExecutorRepository(
            store,
            self.name,
            class_materializer(event_type),
            item_type=event_type,
            strict_type=strict_event_type,
        )

    # -- views ---------------------------------------------------------------------------

    @property
    def event_type(self) -> type[Event]:
        return self.processor_type.event_type

    @property
    def strict_event_type(self) -> bool:
        self._repo.require_loaded(f"executor {self.name!r}")
        return self._repo.state.pile.strict_type

    @property
    def pile(self) -> Pile[Event]:
        """Every event, in append order (read-only)."""
        self._repo.require_loaded(f"executor {self.name!r}")
        return self._repo.state.pile

    @property
    def pending(self) -> Progression:
        """Ids of events appended but not yet forwarded (read-only)."""
        self._repo.require_loaded(f"executor {self.name!r}")
        return self._repo.state.pending_progression()

    def _filtered(self, status: EventStatus) -> Pile[Event]:
        self._repo.require_loaded(f"executor {self.name!r}")
        pile = self._repo.state.pile
        return Pile(
            self._repo.state.with_status(status),
            item_type=pile.item_type,
            strict_type=pile.strict_type,
        )

    @property
    def completed_events(self) -> Pile[Event]:
        return self._filtered(EventStatus.COMPLETED)

    @property
    def pending_events(self) -> Pile[Event]:
        return self._filtered(EventStatus.PENDING)

    @property
    def failed_events(self) -> Pile[Event]:
        return self._filtered(EventStatus.FAILED)

    @property
    def processing_events(self) -> Pile[Event]:
        return self._filtered(EventStatus.PROCESSING)

    def __contains__(self, ref: Any) -> bool:
        try:
            return to_id(ref) in self.pile
        except IDError:
            return False

    def attempts(self, ref: Any) -> int:
        """How many times the event has been claimed."""
        self._repo.require_loaded(f"executor {self.name!r}")
        return self._repo.state.attempts.get(to_id(ref), 0)

    # -- commands ------------------------------------------------------------------------

    async def load(self) -> None:
        """Fold this executor's history from the log (done by every async method, and
        by the first read of a view; calling it is never required)."""
        await self._repo.load()

    async def _create_processor(self) -> None:
        processor = await self.processor_type.create(**self.processor_config)
        processor._attach(self._repo)
        await processor._record_start(class_path(type(self)))
        self.processor = processor

    async def start(self) -> None:
        await self._repo.load()
        if self.processor is None:
            await self._create_processor()
        assert self.processor is not None
        await self.processor.start()

    async def stop(self) -> None:
        if self.processor is not None:
            await self.processor.stop()

    async def append(self, event: Event) -> None:
        """Add an event to the pile and the pending progression (one commit)."""
        if _hooks.invocation_observers:
            _hooks.notify_appended([event], self.name)
        await self._repo.append([event])

    async def extend(self, events: Iterable[Event]) -> None:
        """Append many events in one commit."""
        events = list(events)
        if _hooks.invocation_observers:
            _hooks.notify_appended(events, self.name)
        await self._repo.append(events)

    async def forward(self) -> None:
        """Move every pending event into the processor queue and run cycles until
        each of them has had its turn."""
        if self.processor is None:
            raise ProcessorNotStartedError(
                f"executor {self.name!r}: call `await executor.start()` before forward()"
            )
        await self._repo.load()
        # Queued events count too: another forward may already have queued events
        # appended before this call, and this call must still see them run.
        forwarded = set(self._repo.state.pending) | set(self._repo.state.queue)
        await self.processor._cycle_with(forward=True)
        # Anything forwarded but not yet queued (a lost race, or an empty first cycle)
        # is queued now; then cycles run until each forwarded event has had its turn.
        if any(i in self._repo.state.pending for i in forwarded):
            await self._repo.queue(forwarded)
        await self._run_until_dispatched(forwarded)

    async def _run_until_dispatched(self, ids: set[IDType]) -> None:
        assert self.processor is not None
        state = self._repo.state
        queue, denials = state.queue, state.denials
        while any(i in queue and not denials.get(i) for i in ids):
            await self.processor.process()

    async def retry(self, events: Any) -> None:
        """Explicitly re-run finished events: they go back to pending, and the next
        claim records attempt + 1."""
        refs = events if isinstance(events, (list, tuple, set)) else [events]
        await self._repo.retry(refs)

    async def join(self) -> None:
        """Wait until the processor's queue is drained and nothing is in flight."""
        if self.processor is None:
            raise ProcessorNotStartedError(f"executor {self.name!r}: start() it first")
        await self.processor.join()

    def is_terminal(self, ref: Any) -> bool:
        self._repo.require_loaded(f"executor {self.name!r}")
        return self._repo.state.status(to_id(ref)) in TERMINAL_STATUSES

    def close(self) -> None:
        """Stop following the store's feed."""
        self._repo.close()

    # -- current lionagi's helpers -------------------------------------------------------

    @property
    def cancelled_events(self) -> Pile[Event]:
        return self._filtered(EventStatus.CANCELLED)

    @property
    def skipped_events(self) -> Pile[Event]:
        return self._filtered(EventStatus.SKIPPED)

    @property
    def aborted_events(self) -> Pile[Event]:
        return self._filtered(EventStatus.ABORTED)

    def status_counts(self) -> dict[str, int]:
        """How many events of the working pile are in each status (``{"completed": 2}``)."""
        counts: dict[str, int] = {}
        for event in self.pile:
            key = event.status.value
            counts[key] = counts.get(key, 0) + 1
        return counts

    def cleanup_completed(self) -> int:
        """Release every COMPLETED event from the working pile; returns how many.

        Synchronous, as in lionagi: the events leave the pile at once, and their
        ``event.released`` records are written by a task this schedules (or by
        :meth:`release_completed` / the next ``flush_released``). The log keeps each
        event's records; a reopen before the release is recorded shows them again."""
        ids = [e.id for e in self.pile if e.status == EventStatus.COMPLETED]
        self._release_now(ids)
        return len(ids)

    async def release(self, refs: Any, reason: str = "pop") -> list[IDType]:
        """Release finished events from the working pile, recorded (``event.released``).
        Unfinished events are left alone. Returns the ids released."""
        items = refs if isinstance(refs, (list, tuple, set)) else [refs]
        await self.flush_released()
        return await self._repo.release(items, reason)

    async def release_completed(self) -> int:
        """``cleanup_completed``, recorded before it returns."""
        ids = [e.id for e in self.pile if e.status == EventStatus.COMPLETED]
        await self.flush_released()
        return len(await self._repo.release(ids, "cleanup_completed"))

    async def flush_released(self) -> None:
        """Record the releases ``cleanup_completed`` made in memory only (returns once
        every one of them is committed)."""
        tasks: set[asyncio.Task[None]] = self.__dict__.get("_release_tasks", set())
        if tasks:
            await asyncio.gather(*tasks)
        await self._record_unrecorded()

    async def _record_unrecorded(self) -> None:
        unrecorded = self.__dict__.get("_unrecorded_releases")
        while unrecorded:
            batch = list(unrecorded)
            unrecorded.clear()
            await self._repo.release(batch, "cleanup_completed")

    def _release_now(self, ids: list[IDType]) -> None:
        if not ids:
            return
        from lionstore.domain.event_records import EventReleased
        from lionstore.projections.executor import _released

        # Applied to the projection now (what the record will apply again: idempotent).
        versions = dict(self._repo.state.versions)
        for i in ids:
            _released(self._repo.state, i, EventReleased(reason="cleanup_completed"))
            # the versions stay until the record is written (its compare-and-set)
            self._repo.state.versions[i] = versions[i]
        unrecorded: list[IDType] = self.__dict__.setdefault("_unrecorded_releases", [])
        unrecorded.extend(ids)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._record_unrecorded())
        self.__dict__.setdefault("_release_tasks", set()).add(task)
        task.add_done_callback(self.__dict__["_release_tasks"].discard)

    def inspect_state(self) -> dict[str, Any]:
        """A summary: total events, status counts, pending count and processor state."""
        processor = self.processor
        return {
            "total_events": len(self.pile),
            "status_counts": self.status_counts(),
            "pending_queue": len(self.pending),
            "processor_running": processor.execution_mode if processor else False,
            "processor_stopped": processor.is_stopped() if processor else True,
        }
