"""Processor: a capacity-limited queue of events, durable.

The seed's Processor, with its documented intent kept and lionagi 0.8.7's
losses fixed (shared/reference/lionagi-0.8.7-behaviour.md sections 2.7 and 5):

* **The queue is a projection.** ``enqueue`` records ``event.queued``; the queue
  is rebuilt from the log on reopen. ``queue`` is a read-only view of it.
* **A cycle (``process``) is two transactions**: one that claims the batch
  (``event.claimed`` with owner, attempt and lease; ``event.deferred`` for
  denials) and one that records every outcome (``event.finished``).
* **Capacity**: a cycle takes at most ``available_capacity`` events from the
  head of the queue; a denial uses a unit, as in lionagi. Capacity is always
  restored to ``queue_capacity`` when the cycle ends, whatever happened in it.
* **Denial**: a denied event stays in the queue, in place, and is not looked at
  again before a back-off of ``capacity_refresh_time * 2**(denials-1)`` seconds
  (capped at ``max_backoff``). It is never dropped.
* **Failure**: ``invoke()`` raising records FAILED with ``"ExcType: message"`` as
  the error and the measured duration.
* **Leases**: a claim is owned by this processor until ``lease_seconds`` pass.
  An expired claim (its owner crashed) is re-queued by the next cycle of any
  processor, up to ``max_attempts`` claims; then the event is FAILED with reason
  ``abandoned``. Invocation is therefore at-least-once; outcomes are recorded
  exactly once (compare-and-set on the event's stream).
* **Stop is sticky**: ``stop()`` before ``execute()`` starts is honoured;
  ``start()`` clears it. ``execution_mode`` is reset however ``execute`` ends.
* **join()** returns once the queue is empty and nothing is in flight (it runs
  cycles itself when no ``execute`` loop is running).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Self

from lionstore import _hooks
from lionstore._loop import Stoppable
from lionstore.domain.element import class_path
from lionstore.domain.event import TERMINAL_STATUSES, Event, EventStatus
from lionstore.domain.event_records import ProcessorStarted, executor_stream_id
from lionstore.domain.ids import IDType
from lionstore.errors import ProcessorNotStartedError, RecordError
from lionstore.processing.heartbeat import keep_leases
from lionstore.repositories.executor import Outcome, backoff_for, cycle_candidates, user_fields
from lionstore.repositories.leases import this_process

if TYPE_CHECKING:
    from lionstore.projections.executor import ExecutorState
    from lionstore.repositories.executor import ExecutorRepository

__all__ = ["Processor", "QueueView"]


class QueueView:
    """A read-only view of the processor queue (event ids, FIFO)."""

    def __init__(self, processor: Processor) -> None:
        self._processor = processor

    def _ids(self) -> list[IDType]:
        repo = self._processor._repo
        return list(repo.state.queue) if repo is not None else []

    def qsize(self) -> int:
        return len(self._ids())

    def empty(self) -> bool:
        return not self._ids()

    def __len__(self) -> int:
        return self.qsize()

    def __iter__(self) -> Iterator[IDType]:
        return iter(self._ids())

    def __repr__(self) -> str:
        return f"QueueView(size={self.qsize()})"


class Processor(Stoppable):
    """Processes queued events in capacity-limited batches (cycles)."""

    event_type: ClassVar[type[Event]] = Event

    def __init__(
        self,
        queue_capacity: int,
        capacity_refresh_time: float,
        *,
        max_attempts: int = 3,
        lease_seconds: float = 300.0,
        max_backoff: float = 60.0,
    ) -> None:
        for name, value in (
            ("queue_capacity", queue_capacity),
            ("capacity_refresh_time", capacity_refresh_time),
            ("lease_seconds", lease_seconds),
            ("max_backoff", max_backoff),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        if queue_capacity < 1:
            raise ValueError("Queue capacity must be greater than 0.")
        if capacity_refresh_time <= 0:
            raise ValueError("Capacity refresh time must be larger than 0.")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError("max_attempts must be an int >= 1")
        if lease_seconds <= 0 or max_backoff <= 0:
            raise ValueError("lease_seconds and max_backoff must be > 0")
        self.queue_capacity = int(queue_capacity)
        self.capacity_refresh_time = float(capacity_refresh_time)
        self.max_attempts = max_attempts
        self.lease_seconds = float(lease_seconds)
        self.max_backoff = float(max_backoff)
        self._available_capacity = self.queue_capacity
        self._execution_mode = False
        Stoppable.__init__(self)
        self._repo: ExecutorRepository | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{IDType.create()[:8]}"
        self._cycle = 0
        self._cycle_lock: asyncio.Lock | None = None
        self._in_flight: set[IDType] = set()

    # -- wiring --------------------------------------------------------------------------

    def _attach(self, repo: ExecutorRepository) -> None:
        self._repo = repo
        repo.store.subscribe(self._on_records)

    def _on_records(self, _records: Any) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _require_repo(self) -> ExecutorRepository:
        if self._repo is None:
            raise ProcessorNotStartedError(
                "this processor is not attached to an executor; create it through Executor.start()"
            )
        return self._repo

    def _lock(self) -> asyncio.Lock:
        if self._cycle_lock is None:
            self._cycle_lock = asyncio.Lock()
        return self._cycle_lock

    # -- properties ----------------------------------------------------------------------

    @property
    def queue(self) -> QueueView:
        return QueueView(self)

    @property
    def available_capacity(self) -> int:
        return self._available_capacity

    @available_capacity.setter
    def available_capacity(self, value: int) -> None:
        self._available_capacity = value

    @property
    def execution_mode(self) -> bool:
        return self._execution_mode

    @execution_mode.setter
    def execution_mode(self, value: bool) -> None:
        self._execution_mode = value

    # -- seed API ------------------------------------------------------------------------

    @classmethod
    async def create(cls, **kwargs: Any) -> Self:
        return cls(**kwargs)

    async def enqueue(self, event: Event) -> None:
        """Add an event to the queue (recording it first if the executor does not know it)."""
        await self._require_repo().enqueue_event(event)

    async def dequeue(self) -> Event:
        """Claim and return the next queued event (waiting for one).

        The caller owns the claim: if it never reports an outcome, the lease
        expires and the event is re-queued.
        """
        repo = self._require_repo()
        while True:
            async with self._lock():
                await repo.sync()
                # an expired lease (its owner crashed) puts its event back in the queue
                await repo.reclaim_expired(
                    max_attempts=self.max_attempts, in_flight=self._in_flight, by=self.owner
                )
                eligible = repo.state.eligible(repo.store.now_us())
                if eligible:
                    self._cycle += 1
                    won = await repo.claim(
                        eligible[:1],
                        [],
                        owner=self.owner,
                        lease_seconds=self.lease_seconds,
                        cycle=self._cycle,
                        backoff=self._backoff,
                    )
                    if won:
                        return won[0][0]
            await self._wait_for_change(self.capacity_refresh_time)

    async def join(self) -> None:
        """Return once the queue is empty and no event is in flight (here or, by an
        unexpired lease, elsewhere). Without an ``execute`` loop, runs cycles itself;
        leases of crashed owners are taken over when they expire."""
        repo = self._require_repo()
        state = repo.state
        while True:
            await repo.sync()
            if not state.queue and not state.claims and not self._in_flight:
                return
            if self._execution_mode:
                await self._wait_for_change(self.capacity_refresh_time)
                continue
            before = state.position
            await self.process()
            if state.position == before:  # nothing to do yet: wait for a change or a deadline
                await self._wait_for_change(self._seconds_until_next(state))

    async def request_permission(self, **kwargs: Any) -> bool:
        """Override to rate-limit or gate events; a denial defers the event."""
        return True

    async def process(self) -> None:
        """Run one cycle: claim up to ``available_capacity`` events, invoke them
        concurrently, record their outcomes. Capacity is then restored."""
        await self._cycle_with(forward=False)

    async def _cycle_with(self, *, forward: bool) -> None:
        repo = self._require_repo()
        async with self._lock():
            try:
                await self._process(repo, forward=forward)
            finally:
                self._available_capacity = self.queue_capacity

    async def execute(self) -> None:
        """Run cycles until ``stop()``; between cycles wait ``capacity_refresh_time``
        or until new work is recorded."""
        if self._stop_requested:
            return
        self._execution_mode = True
        try:
            while not self._stop_requested:
                await self.process()
                if self._stop_requested:
                    break
                repo = self._require_repo()
                if not repo.state.eligible(repo.store.now_us()):
                    await self._wait_for_change(
                        min(self.capacity_refresh_time, self._seconds_until_next(repo.state))
                    )
        finally:
            self._execution_mode = False

    # -- the cycle -----------------------------------------------------------------------

    def _backoff(self, denials: int) -> float:
        return float(backoff_for(self.capacity_refresh_time, self.max_backoff)(denials))

    async def _record_start(self, executor_class: str) -> None:
        """Record this processor's configuration (verify and resume read it)."""
        repo = self._require_repo()
        await repo.store.append(
            [
                (
                    executor_stream_id(repo.state.name),
                    ProcessorStarted(
                        executor=repo.state.name,
                        executor_class=executor_class,
                        processor_class=class_path(type(self)),
                        owner=self.owner,
                        queue_capacity=self.queue_capacity,
                        capacity_refresh_time=self.capacity_refresh_time,
                        max_attempts=self.max_attempts,
                        lease_seconds=self.lease_seconds,
                        max_backoff=self.max_backoff,
                    ),
                ),
                # where it runs: lets others see at once that it is gone (leases.py)
                (
                    executor_stream_id(repo.state.name),
                    this_process().record(
                        repo.state.name, self.owner, advisory_lock=repo.store.owner_locks
                    ),
                ),
            ]
        )

    def _seconds_until_next(self, state: ExecutorState) -> float:
        """Until the next deferred event is due or a lease expires (capped)."""
        wake: int | None = state.next_wakeup_us(exclude=self._in_flight)
        if wake is None:
            return self.capacity_refresh_time
        now = self._require_repo().store.now_us()
        return min(self.capacity_refresh_time, max(0.0, (wake - now) / 1_000_000))

    async def _wait_for_change(self, timeout: float) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=max(timeout, 0.001))

    async def _process(self, repo: ExecutorRepository, *, forward: bool) -> None:
        """One cycle. With ``forward``, the executor's pending events join the queue
        in the same transaction as the cycle's claims (Executor.forward)."""
        await repo.sync()
        await repo.reclaim_expired(
            max_attempts=self.max_attempts, in_flight=self._in_flight, by=self.owner
        )
        self._available_capacity = self.queue_capacity
        state = repo.state
        to_queue = list(state.pending) if forward else []
        now_us, seen = repo.store.now_us(), state.position
        candidates = cycle_candidates(state, self.queue_capacity, now_us, forward)
        if not candidates:
            return
        grants: list[IDType] = []
        denials: list[IDType] = []
        items = state.pile._items
        for event_id in candidates:
            self._available_capacity -= 1
            event = items[event_id]
            if await self.request_permission(**event.request):
                grants.append(event_id)
            else:
                denials.append(event_id)
        self._cycle += 1
        claimed = await repo.claim(
            grants,
            denials,
            owner=self.owner,
            lease_seconds=self.lease_seconds,
            cycle=self._cycle,
            backoff=self._backoff,
            queue_first=to_queue,
            now_us=now_us,
            seen=seen,
        )
        if not claimed:
            return
        self._in_flight.update(e.id for e, _, _ in claimed)
        try:
            async with keep_leases(
                repo,
                claimed,
                owner=self.owner,
                lease_seconds=self.lease_seconds,
                in_flight=self._in_flight,
            ):
                if len(claimed) == 1:  # no task to spawn for one event (append + forward)
                    outcomes = [await self._invoke(*claimed[0])]
                else:
                    outcomes = await asyncio.gather(
                        *(self._invoke(e, attempt, version) for e, attempt, version in claimed)
                    )
            await repo.finish(outcomes)
        finally:
            self._in_flight.difference_update(e.id for e, _, _ in claimed)

    async def _invoke(self, event: Event, attempt: int, claim_version: int) -> Outcome:
        try:
            before: dict[str, Any] = user_fields(event)
        except RecordError:
            before = {}
        error: str | None = None
        observed = (
            _hooks.start_invocation(event, self._require_repo().state.name, attempt)
            if _hooks.invocation_observers
            else None
        )
        started = time.perf_counter()
        try:
            await event.invoke()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the failure is the outcome
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        execution = event.execution
        if error is not None:
            status = EventStatus.FAILED
        elif execution.status in TERMINAL_STATUSES:
            status = execution.status  # invoke() decided itself (as lionagi's APICalling does)
            error = execution.error
        else:
            status = EventStatus.COMPLETED
        changed: dict[str, Any] | None
        try:
            after = user_fields(event)
        except RecordError as exc:  # never leave the batch PROCESSING over one bad field
            status, changed = EventStatus.FAILED, None
            error = f"the outcome could not be recorded: {exc}"
        else:
            changed = {k: v for k, v in after.items() if before.get(k) != v} or None
        duration = execution.duration if execution.duration is not None else elapsed
        if observed:
            _hooks.finish_invocation(observed, str(status.value), error, duration)
        return Outcome(
            event_id=event.id,
            attempt=attempt,
            claim_version=claim_version,
            status=status,
            duration=duration,
            response=execution.response,
            error=error,
            fields=changed,
        )
