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

Current lionagi's protocol, as a superset (opt-in: the seed's calls behave as
before):

* ``concurrency_limit`` bounds concurrent invocations (a semaphore; None or 0:
  no bound); ``max_queue_size`` bounds the queue (``enqueue`` waits for room,
  ``try_enqueue`` returns False, ``queue_full`` tells).
* ``handle_denied(event)``: True ends a denied event as SKIPPED (recorded);
  False defers it. The default defers with the seed's back-off; a deferral
  asked for by an override is due again at the next cycle, as in lionagi.
* Streaming events (``streaming = True``) are consumed through ``stream()``; the
  recorded response is what the event left in ``execution.response``, or else
  the list of chunks it yielded.
* A cancelled ``process()`` records CANCELLED for the invocations it cancelled.
* A processor used on its own (no Executor) inside ``lionstore.open(...)`` keeps
  its queue as an executor of its own in that store.
* ``finish_each=True`` records each outcome as soon as its invocation ends (a
  long invocation no longer holds back the records of the short ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

from lionstore import _hooks
from lionstore._loop import Stoppable
from lionstore.domain.element import class_path
from lionstore.domain.event import TERMINAL_STATUSES, Event, EventStatus, notify_terminal
from lionstore.domain.event_records import ProcessorStarted, executor_stream_id
from lionstore.domain.ids import IDType
from lionstore.errors import ProcessorNotStartedError, RecordError
from lionstore.log.store import current_store
from lionstore.processing.heartbeat import keep_leases
from lionstore.projections.executor import class_materializer
from lionstore.repositories.executor import (
    ExecutorRepository,
    Outcome,
    backoff_for,
    cycle_candidates,
    user_fields,
)
from lionstore.repositories.leases import this_process

if TYPE_CHECKING:
    from lionstore.projections.executor import ExecutorState

__all__ = ["Processor", "QueueView"]


class QueueView:
    """A read-only view of the processor queue (event ids, FIFO)."""

    def __init__(self, processor: Processor) -> None:
        self._processor = processor

    def _ids(self) -> list[IDType]:
        processor = self._processor
        repo = processor._repo
        ids = list(repo.state.queue) if repo is not None else []
        return ids + [e.id for e in processor._staged]

    @property
    def maxsize(self) -> int:
        """``max_queue_size`` (0: unbounded), as ``asyncio.Queue.maxsize``."""
        return self._processor.max_queue_size

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
        concurrency_limit: int | None = None,
        max_queue_size: int = 0,
        *,
        max_attempts: int = 3,
        lease_seconds: float = 300.0,
        max_backoff: float = 60.0,
        name: str | None = None,
        finish_each: bool = False,
    ) -> None:
        for setting, value in (
            ("queue_capacity", queue_capacity),
            ("capacity_refresh_time", capacity_refresh_time),
            ("lease_seconds", lease_seconds),
            ("max_backoff", max_backoff),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{setting} must be a number, not {type(value).__name__}")
            if not math.isfinite(value):
                raise ValueError(f"{setting} must be a finite number, not {value}")
        if queue_capacity < 1:
            raise ValueError("Queue capacity must be greater than 0.")
        if capacity_refresh_time <= 0:
            raise ValueError("Capacity refresh time must be larger than 0.")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError("max_attempts must be an int >= 1")
        if lease_seconds <= 0 or max_backoff <= 0:
            raise ValueError("lease_seconds and max_backoff must be > 0")
        if concurrency_limit is not None and (
            isinstance(concurrency_limit, bool) or not isinstance(concurrency_limit, int)
        ):
            raise TypeError("concurrency_limit must be an int or None")
        if concurrency_limit is not None and concurrency_limit < 0:
            raise ValueError("concurrency_limit must be >= 0 (0 or None: no limit)")
        if isinstance(max_queue_size, bool) or not isinstance(max_queue_size, int):
            raise TypeError("max_queue_size must be an int")
        if max_queue_size < 0:
            raise ValueError("Queue size must be non-negative.")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError("name must be a non-empty string")
        self.concurrency_limit = concurrency_limit
        self.max_queue_size = max_queue_size
        self._concurrency_sem: asyncio.Semaphore | None = (
            asyncio.Semaphore(concurrency_limit) if concurrency_limit else None
        )
        # Events given to try_enqueue() and not yet recorded (a sync call cannot write).
        self._staged: list[Event] = []
        self._flush_task: asyncio.Task[None] | None = None
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
        self._name = name
        self._own_repo = False
        # Record each outcome as soon as its invocation ends (concurrent ones still
        # share group commits) instead of the whole cycle's in one transaction: a
        # crash then keeps every outcome that was reached (model calls: never resent).
        self.finish_each = bool(finish_each)

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
                "this processor is not attached to an executor; create it through "
                "Executor.start(), or use it inside `async with lionstore.open(...)`"
            )
        return self._repo

    async def _ensure_repo(self) -> ExecutorRepository:
        """The executor's repository; for a processor used on its own, an executor of
        its own in the ambient store (created, loaded and recorded on first use)."""
        if self._repo is None:
            store = current_store()
            if store is None:
                self._require_repo()  # raises
            assert store is not None
            name = self._name or f"{class_path(type(self))}@{self.owner}"
            # Any Event is accepted, as lionagi's processor queue does.
            repo = ExecutorRepository(store, name, class_materializer(Event), item_type=Event)
            await repo.load()
            self._attach(repo)
            self._own_repo = True
            await self._record_start("")
        await self._flush_staged()
        return self._require_repo()

    async def _flush_staged(self) -> None:
        while self._staged and self._repo is not None:
            event = self._staged[0]
            await self._repo.enqueue_event(event)
            if self._staged and self._staged[0] is event:
                self._staged.pop(0)

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

    @property
    def queue_full(self) -> bool:
        """Whether the queue holds ``max_queue_size`` events (never, when 0)."""
        return self.max_queue_size > 0 and self.queue.qsize() >= self.max_queue_size

    async def enqueue(self, event: Event) -> None:
        """Add an event to the queue (recording it first if the executor does not know
        it). With ``max_queue_size``, waits until the queue has room."""
        repo = await self._ensure_repo()
        while self.queue_full:
            await self._wait_for_change(self.capacity_refresh_time)
        await repo.enqueue_event(event)

    def try_enqueue(self, event: Event) -> bool:
        """Queue an event unless the queue is full (True if queued). A synchronous
        call cannot write, so the ``event.queued`` record is written by a task this
        schedules (or by the processor's next async call): until then the event is
        queued in memory only."""
        if not isinstance(event, Event):
            raise TypeError(f"expected an Event, not {type(event).__name__}")
        if self.queue_full:
            return False
        self._staged.append(event)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return True  # recorded by the next async call
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = loop.create_task(self._flush_soon())
        return True

    async def _flush_soon(self) -> None:
        with contextlib.suppress(ProcessorNotStartedError):
            await self._ensure_repo()

    async def dequeue(self) -> Event:
        """Claim and return the next queued event (waiting for one).

        The caller owns the claim: if it never reports an outcome, the lease
        expires and the event is re-queued.
        """
        repo = await self._ensure_repo()
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
        repo = await self._ensure_repo()
        state = repo.state
        while True:
            await repo.sync()
            if not state.queue and not state.claims and not self._in_flight:
                return
            if self._execution_mode:
                await self._wait_for_change(self.capacity_refresh_time)
                continue
            before = state.position
            ran = await self._cycle_with(forward=False)
            if not ran:  # nothing ran: wait for a change, a deadline or a refresh
                await self._wait_for_change(self._idle_wait(state, before))

    async def request_permission(self, **kwargs: Any) -> bool:
        """Override to rate-limit or gate events; a denial goes to :meth:`handle_denied`."""
        return True

    async def handle_denied(self, event: Event) -> bool:
        """What a denial does to ``event``: True ends it as SKIPPED (recorded, never
        run); False defers it. lionstore's default defers it with the seed's back-off
        (``capacity_refresh_time * 2**(denials-1)``, capped): a denied event is never
        dropped. (lionagi's default skips it; override this to do that.) When an
        override returns False the event is due again at the next cycle, as in
        lionagi, and ``join``/``execute`` wait ``capacity_refresh_time`` after a
        cycle in which nothing ran."""
        return False

    async def process(self) -> None:
        """Run one cycle: claim up to ``available_capacity`` events, invoke them
        concurrently, record their outcomes. Capacity is then restored."""
        await self._cycle_with(forward=False)

    async def _cycle_with(self, *, forward: bool, admit: Sequence[Event] | None = None) -> int:
        """One cycle; returns how many events it ran or ended. ``admit``: new events
        appended and queued in the cycle's own commit (after the pending ones)."""
        repo = await self._ensure_repo()
        async with self._lock():
            try:
                return await self._process(repo, forward=forward, admit=admit or [])
            finally:
                self._available_capacity = self.queue_capacity
                await repo.end_claim_turn()  # a cycle that claimed nothing still held it

    def _idle_wait(self, state: ExecutorState, before: int) -> float:
        """How long a loop waits after a cycle in which nothing ran: the refresh time
        if the cycle only deferred events, else until the next deadline."""
        if state.position != before:
            return self.capacity_refresh_time
        return self._seconds_until_next(state)

    async def execute(self) -> None:
        """Run cycles until ``stop()``; between cycles wait ``capacity_refresh_time``
        or until new work is recorded."""
        if self._stop_requested:
            return
        self._execution_mode = True
        try:
            repo = await self._ensure_repo()
            while not self._stop_requested:
                before = repo.state.position
                ran = await self._cycle_with(forward=False)
                if self._stop_requested:
                    break
                if not ran:
                    await self._wait_for_change(
                        min(self.capacity_refresh_time, self._idle_wait(repo.state, before))
                    )
                elif not repo.state.eligible(repo.store.now_us()):
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
                        concurrency_limit=self.concurrency_limit,
                        max_queue_size=self.max_queue_size,
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
        if repo.store.owner_locks:
            # Held from the start rather than from the first claim: on PostgreSQL that
            # opens the lock's session, which a first claim would otherwise do while
            # the other workers wait for its claim turn. (A session lost later is
            # opened again by the backend's lock watcher, in the background.)
            await repo.store.hold_owner_lock(self.owner)

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

    async def _process(
        self, repo: ExecutorRepository, *, forward: bool, admit: Sequence[Event] | None = None
    ) -> int:
        """One cycle. With ``forward``, the executor's pending events join the queue
        in the same transaction as the cycle's claims (Executor.forward)."""
        await repo.sync()
        await repo.reclaim_expired(
            max_attempts=self.max_attempts, in_flight=self._in_flight, by=self.owner
        )
        # Disjoint claims across processes (PostgreSQL): a turn taken brings in the
        # claims committed before it came.
        await repo.begin_claim_turn()
        self._available_capacity = self.queue_capacity
        state = repo.state
        admitted = (
            [(e, r) for e, r in repo.prepare_append(admit) if not state.knows(e.id)]
            if admit
            else []
        )
        forward = forward or bool(admitted)  # what verify sees: an append, then a forward
        to_queue = list(state.pending) if forward else []
        now_us, seen = repo.store.now_us(), state.position
        candidates = cycle_candidates(state, self.queue_capacity, now_us, forward)
        if admitted:
            room = self.queue_capacity - len(candidates)
            candidates += [e.id for e, _ in admitted[: max(room, 0)]]
        if not candidates:
            return 0
        grants: list[IDType] = []
        denials: list[IDType] = []
        skips: list[IDType] = []
        asked = self.request_permission
        if getattr(asked, "__func__", None) is _DEFAULT_PERMISSION:
            # The default, neither overridden nor replaced on the instance: it grants
            # every event, so nothing is asked (nor an event looked up).
            grants += candidates
            self._available_capacity -= len(candidates)
        else:
            new_events = {e.id: e for e, _ in admitted}
            items = state.pile.__pydantic_private__["_items"]  # type: ignore[index]
            for event_id in candidates:
                self._available_capacity -= 1
                event = items[event_id] if event_id not in new_events else new_events[event_id]
                if await asked(**event.request):
                    grants.append(event_id)
                elif await self.handle_denied(event):
                    skips.append(event_id)
                else:
                    denials.append(event_id)
        overridden = type(self).handle_denied is not Processor.handle_denied
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
            skips=skips,
            no_backoff=denials if overridden else (),
            admit=admitted,
        )
        ended = 0
        if skips:
            ended = sum(1 for i in skips if state.status(i) == EventStatus.SKIPPED)
            for i in skips:
                notify_terminal(state.pile._items[i])
        if not claimed:
            return ended
        self._in_flight.update(e.id for e, _, _ in claimed)
        started = time.perf_counter()
        try:
            async with keep_leases(
                repo,
                claimed,
                owner=self.owner,
                lease_seconds=self.lease_seconds,
                in_flight=self._in_flight,
            ):
                outcomes: list[Outcome] = []
                if len(claimed) == 1:  # no task to spawn for one event (append + forward)
                    outcomes = [await self._invoke(*claimed[0])]
                elif self.finish_each:
                    await asyncio.gather(
                        *(self._invoke_and_finish(repo, *claim) for claim in claimed)
                    )
                else:
                    outcomes = list(
                        await asyncio.gather(
                            *(self._invoke(e, attempt, version) for e, attempt, version in claimed)
                        )
                    )
            if outcomes:
                await repo.finish(outcomes)
        except asyncio.CancelledError:
            # The cycle was cancelled: what it cancelled is CANCELLED, not PROCESSING
            # until a lease expires (a crash still leaves the lease to expire).
            await asyncio.shield(self._record_cancelled(repo, claimed, started))
            raise
        finally:
            self._in_flight.difference_update(e.id for e, _, _ in claimed)
            for event, _, _ in claimed:
                if event.execution.status in TERMINAL_STATUSES:
                    notify_terminal(event)
        return ended + len(claimed)

    async def _invoke_and_finish(
        self, repo: ExecutorRepository, event: Event, attempt: int, version: int
    ) -> None:
        await repo.finish([await self._invoke(event, attempt, version)])

    async def _record_cancelled(
        self, repo: ExecutorRepository, claimed: list[tuple[Event, int, int]], started: float
    ) -> None:
        elapsed = time.perf_counter() - started
        outcomes = [
            Outcome(
                event_id=event.id,
                attempt=attempt,
                claim_version=version,
                status=EventStatus.CANCELLED,
                duration=event.execution.duration or elapsed,
                response=None,
                error="cancelled",
                fields=None,
            )
            for event, attempt, version in claimed
            if repo.state.versions.get(event.id) == version  # not recorded yet
        ]
        if outcomes:
            await repo.finish(outcomes)

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
        chunks: list[Any] | None = None
        try:
            if self._concurrency_sem is not None:
                async with self._concurrency_sem:
                    chunks = await self._run(event)
            else:
                chunks = await self._run(event)
        except asyncio.CancelledError:
            if observed:
                _hooks.finish_invocation(observed, "cancelled", "cancelled", None)
            raise
        except Exception as exc:  # the failure is the outcome
            error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        execution = event.execution
        if chunks is not None and execution.response is None:
            execution.response = _json_ready(chunks)
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

    @staticmethod
    async def _run(event: Event) -> list[Any] | None:
        """Invoke the event: its ``stream()`` if it streams (returning the chunks),
        current lionagi's template if it implements ``_invoke``, else its ``invoke``.
        (The claim made the event PROCESSING; the template's PENDING check is for
        callers that invoke it themselves.)"""
        if _streams(event):
            chunks: list[Any] = []
            async for chunk in event.stream():
                chunks.append(chunk)
            return chunks
        if type(event).invoke is Event.invoke:
            await event._run_template()
        else:
            await event.invoke()
        return None


#: Processor.request_permission as defined here: a cycle whose processor still has it
#: (not overridden, not replaced on the instance or patched on the class) asks nothing.
_DEFAULT_PERMISSION = Processor.request_permission


def _streams(event: Event) -> bool:
    """Whether ``event`` streams: its ``streaming`` field, or a class attribute of that
    name. (Not ``getattr(event, "streaming", False)``: on a pydantic model without the
    attribute that raises and catches an AttributeError, 15 us, on every event.)"""
    own = event.__dict__.get("streaming")
    if own is None:
        own = getattr(type(event), "streaming", False)
    return bool(own)


def _json_ready(value: Any) -> Any:
    """``value`` as JSON data (what a record can hold); text for what is not JSON."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return repr(value)
