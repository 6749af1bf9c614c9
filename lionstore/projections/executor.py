"""The executor projection: records -> pile, pending progression, queue, claims.

``ExecutorState.apply`` is the only code that changes executor state, live or in
replay. How an ``event.appended`` record becomes an object is the caller's
choice (``materialize``): live executors rebuild the user's Event subclass (or
reuse the very object that was appended); inspection without the user's classes
uses :class:`RecordedEvent`, which keeps the fields as raw data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from sys import intern
from typing import Any

from lionstore.domain.element import Element, resolve_class
from lionstore.domain.event import Event, EventStatus, Execution
from lionstore.domain.event_records import (
    EventAbandoned,
    EventAppended,
    EventClaimed,
    EventDeferred,
    EventFinished,
    EventLeaseRenewed,
    EventQueued,
    EventReleased,
    EventRequeued,
    EventRetried,
    EventSkipped,
    ProcessorStarted,
)
from lionstore.domain.ids import IDType
from lionstore.domain.lazy import LazyDict
from lionstore.domain.lazy import set_raw_unchecked as _set_raw
from lionstore.domain.pile import Pile
from lionstore.domain.progression import Progression
from lionstore.domain.records import Recorded
from lionstore.projections._build import fields_set, unchecked

__all__ = [
    "Claim",
    "ExecutorState",
    "Materializer",
    "RecordedEvent",
    "class_materializer",
    "compact_finished",
    "raw_materializer",
]

Materializer = Callable[[IDType, EventAppended], Event]


class RecordedEvent(Event):
    """An event rebuilt without its class: the class name and raw fields."""

    event_class: str = ""
    fields: dict[str, Any] = {}


def raw_materializer(event_id: IDType, data: EventAppended) -> Event:
    """A :class:`RecordedEvent` for an ``event.appended`` record."""
    if data.metadata and Element._lion_class_key in data.metadata:
        # Element's metadata check (it refuses a class mismatch) decides these.
        return RecordedEvent(
            id=event_id,
            created_at=data.created_at,
            metadata=data.metadata,
            event_class=data.event_class,
            fields=data.fields,
        )
    # No second validation: decoding EventAppended checked every value (created_at
    # a float, metadata and fields dicts with str keys), the id is the stream's as
    # the log holds it (what validation would pass through unchanged), and the
    # projection never mutates these dicts (_set_fields replaces ``fields``).
    return unchecked(
        RecordedEvent,
        _RECORDED_FIELDS,
        {
            "id": event_id,
            "created_at": data.created_at,
            "metadata": data.metadata,
            "execution": _execution(EventStatus.PENDING),
            "event_class": intern(data.event_class),  # one copy of each class name
            "fields": data.fields,
        },
    )


def class_materializer(base: type[Event]) -> Materializer:
    """Rebuild events as their own classes, found among ``base`` and its subclasses
    defined in this process (never imported because the log names them)."""

    def materialize(event_id: IDType, data: EventAppended) -> Event:
        cls = resolve_class(data.event_class, base)
        event = cls.model_validate(
            {
                **data.fields,
                "id": event_id,
                "created_at": data.created_at,
                "metadata": data.metadata,
            }
        )
        assert isinstance(event, Event)
        return event

    return materialize


@dataclass(slots=True)
class Claim:
    owner: str
    attempt: int
    lease_expires_us: int
    cycle: int


class ExecutorState:
    """Everything one executor knows, folded from its records."""

    def __init__(
        self,
        name: str,
        materialize: Materializer,
        *,
        item_type: type[Event] | None = None,
        strict_type: bool = False,
    ) -> None:
        self.name = name
        self.materialize = materialize
        self.pile: Pile[Event] = Pile(item_type=item_type, strict_type=strict_type)._freeze(
            "Executor methods (append, forward, retry)"
        )
        # Ordered sets (dict keys): O(1) add/remove, insertion-ordered.
        self.pending: dict[IDType, None] = {}
        self.queue: dict[IDType, None] = {}
        self.not_before_us: dict[IDType, int] = {}
        self.denials: dict[IDType, int] = {}
        self.claims: dict[IDType, Claim] = {}
        self.attempts: dict[IDType, int] = {}
        self.versions: dict[IDType, int] = {}
        self.position = 0
        self.processors: dict[str, ProcessorStarted] = {}  # owner -> configuration
        # Objects appended in this process, reused instead of rebuilt (identity kept).
        self.live: dict[IDType, Event] = {}
        # Events released from the pile (event.released): known, no longer held.
        self.released: set[IDType] = set()

    # -- queries -----------------------------------------------------------------------

    def knows(self, event_id: IDType) -> bool:
        return event_id in self.versions or event_id in self.released

    def status(self, event_id: IDType) -> EventStatus:
        items = self.pile._items
        if isinstance(items, LazyDict):  # restored from a checkpoint: read, not built
            status: EventStatus = items.tag(event_id)
            return status
        return items[event_id].status

    def pending_progression(self) -> Progression:
        return Progression(order=list(self.pending))._freeze("Executor.append / forward")

    def eligible(self, now_us: int) -> list[IDType]:
        """Queued events whose back-off (if any) has passed, in queue order."""
        nb = self.not_before_us
        return [i for i in self.queue if nb.get(i, 0) <= now_us]

    def next_wakeup_us(self, exclude: set[IDType] | frozenset[IDType] = frozenset()) -> int | None:
        """When the earliest deferred event becomes eligible or the earliest lease (of
        claims not in ``exclude``) expires; None if neither is pending."""
        times = [self.not_before_us[i] for i in self.queue if i in self.not_before_us]
        times += [c.lease_expires_us for i, c in self.claims.items() if i not in exclude]
        return min(times) if times else None

    def with_status(self, status: EventStatus) -> list[Event]:
        items = self.pile._items
        if isinstance(items, LazyDict):  # restored from a checkpoint: only these built
            return items.values_tagged(status)
        return [e for e in items.values() if e.status == status]

    # -- the fold ----------------------------------------------------------------------

    def apply(self, record: Recorded) -> None:
        self.fold(record.stream_id, record.stream_version, record.position, record.data)

    def fold(self, sid: IDType, version: int, position: int, data: Any) -> None:
        """Apply one record given by its parts (what :meth:`apply` takes from a Recorded)."""
        step = _STEPS.get(type(data), _UNSEEN)
        if step is _UNSEEN:
            step = _step_for(type(data))
        if step is _appended:
            self._append(sid, version, position, data)
        elif step is _processor_started:
            if data.executor == self.name:
                self.processors[data.owner] = data
                self.position = position
        elif sid in self.versions:
            if step is not None:
                step(self, sid, data)
            if step is not _released:
                self.versions[sid] = version
            self.position = position
        # else: another executor's event (or not an event record)

    def _append(self, sid: IDType, version: int, position: int, data: EventAppended) -> None:
        if data.executor != self.name or sid in self.versions:
            return
        items = _items(self)
        if (
            type(items) is _CompactEvents
            and self.materialize is raw_materializer
            and not self.live
            and not (data.metadata and Element._lion_class_key in data.metadata)
        ):
            # What raw_materializer would build, kept as its values (see compact_finished).
            _set_raw(items, sid, _pending_values(sid, data))
            self.pending[sid] = None
            self.versions[sid] = version
            self.position = position
            return
        event = self.live.pop(sid, None)
        if event is None:
            event = self.materialize(sid, data)
            # raw_materializer's unchecked events come with a fresh PENDING execution
            if event.__pydantic_fields_set__ is not _RECORDED_FIELDS:
                _set_execution(event, _execution(EventStatus.PENDING))
        else:
            _set_execution(event, _execution(EventStatus.PENDING))
        _items(self)[event.id] = event
        self.pending[sid] = None
        self.versions[sid] = version
        self.position = position


# One function per record class, found by type(data) (isinstance chains cost more on a
# replay of a million records); _step_for resolves other classes by isinstance, once.
_Step = Callable[[ExecutorState, IDType, Any], None]


def _items(state: ExecutorState) -> dict[IDType, Event]:
    # Pile._items without pydantic's __getattr__ for private attributes (the dict is
    # looked up afresh on each record: Pile methods may replace it).
    private: dict[str, Any] = state.pile.__pydantic_private__  # type: ignore[assignment]
    items: dict[IDType, Event] = private["_items"]
    return items


def _appended(state: ExecutorState, sid: IDType, data: Any) -> None:
    raise AssertionError("handled in ExecutorState.fold")  # pragma: no cover


def _processor_started(state: ExecutorState, sid: IDType, data: Any) -> None:
    raise AssertionError("handled in ExecutorState.fold")  # pragma: no cover


def _queued(state: ExecutorState, sid: IDType, data: EventQueued) -> None:
    state.pending.pop(sid, None)
    state.queue[sid] = None


def _deferred(state: ExecutorState, sid: IDType, data: EventDeferred) -> None:
    state.not_before_us[sid] = data.retry_at_us
    state.denials[sid] = data.denials


def _claimed(state: ExecutorState, sid: IDType, data: EventClaimed) -> None:
    items = state.pile.__pydantic_private__["_items"]  # type: ignore[index]
    event = dict.__getitem__(items, sid)  # a compact pile's values stay as they are
    state.queue.pop(sid, None)
    state.pending.pop(sid, None)
    if state.not_before_us:
        state.not_before_us.pop(sid, None)
    if state.denials:
        state.denials.pop(sid, None)  # the back-off starts afresh after a claim
    state.claims[sid] = Claim(data.owner, data.attempt, data.lease_expires_us, data.cycle)
    if type(event) is tuple:  # a compact pile's: (id, ..., status, outcome...)
        state.attempts[event[0]] = data.attempt  # keyed by the event's own id object
        _set_raw(items, sid, (*event[:5], EventStatus.PROCESSING, *event[6:]))
        return
    state.attempts[event.id] = data.attempt
    execution = event.execution
    if execution.__pydantic_fields_set__ is _EXECUTION_FIELDS:
        execution.__dict__["status"] = EventStatus.PROCESSING  # as in _set_status
    else:
        execution.status = EventStatus.PROCESSING


def _finished(state: ExecutorState, sid: IDType, data: EventFinished) -> None:
    items = state.pile.__pydantic_private__["_items"]  # type: ignore[index]
    event = dict.__getitem__(items, sid)
    state.claims.pop(sid, None)
    replays_own = type(event) is not tuple and _replays_own(event)
    if replays_own and type(items) is _CompactEvents:
        # Built because something read it: kept as a tuple again (keyed as before).
        event = (
            event.id,
            event.created_at,
            event.metadata or None,
            event.event_class,
            event.fields or None,
        )
    if type(event) is tuple:  # a compact pile's: the outcome goes into a new tuple
        fields = event[4]
        if data.fields:
            fields = {**fields, **data.fields} if fields else dict(data.fields)
        outcome = (_STATUS[data.status], data.duration, _interned(data.response), data.error)
        _set_raw(items, sid, (*event[:4], fields, *outcome))
        return
    if data.fields:
        _set_fields(event, data.fields)
    status = _STATUS[data.status]
    if replays_own:
        # A replay's own event and execution (built unchecked by this module; no
        # user code holds them): the outcome goes into it instead of a new one.
        values = event.execution.__dict__
        values["status"] = status
        values["duration"] = data.duration
        values["response"] = _interned(data.response)
        values["error"] = data.error
    else:
        _set_execution(event, _execution(status, data.duration, data.response, data.error))


def _replays_own(event: Event) -> bool:
    """Whether the event and its execution were built unchecked by this module."""
    return (
        event.__pydantic_fields_set__ is _RECORDED_FIELDS
        and event.execution.__pydantic_fields_set__ is _EXECUTION_FIELDS
    )


def _interned(response: Any) -> Any:
    """One copy of each string response (a replay holds thousands of equal ones)."""
    return intern(response) if type(response) is str else response


def _lease_renewed(state: ExecutorState, sid: IDType, data: EventLeaseRenewed) -> None:
    claim = state.claims.get(sid)
    if claim is not None:
        state.claims[sid] = Claim(claim.owner, claim.attempt, data.lease_expires_us, claim.cycle)


def _requeued(state: ExecutorState, sid: IDType, data: EventRequeued) -> None:
    event = _items(state)[sid]
    state.claims.pop(sid, None)
    state.queue[sid] = None
    _set_status(event, EventStatus.PENDING)


def _abandoned(state: ExecutorState, sid: IDType, data: EventAbandoned) -> None:
    event = _items(state)[sid]
    state.claims.pop(sid, None)
    if data.reason == "owner_gone":
        error = f"abandoned: {data.previous_owner} is gone (its process ended) on attempt "
    else:
        error = f"{data.reason}: lease of {data.previous_owner} expired on attempt "
    _set_execution(event, _execution(EventStatus.FAILED, error=f"{error}{data.attempt}"))


def _retried(state: ExecutorState, sid: IDType, data: EventRetried) -> None:
    event = _items(state)[sid]
    state.pending[sid] = None
    state.denials.pop(sid, None)
    _set_execution(event, _execution(EventStatus.PENDING))


def _skipped(state: ExecutorState, sid: IDType, data: EventSkipped) -> None:
    items = state.pile.__pydantic_private__["_items"]  # type: ignore[index]
    event = dict.__getitem__(items, sid)
    state.queue.pop(sid, None)
    state.pending.pop(sid, None)
    state.not_before_us.pop(sid, None)
    state.denials.pop(sid, None)
    if type(event) is tuple:  # a compact pile's
        _set_raw(items, sid, (*event[:5], EventStatus.SKIPPED, None, None, None))
        return
    _set_execution(event, _execution(EventStatus.SKIPPED))


def _released(state: ExecutorState, sid: IDType, data: EventReleased) -> None:
    # Out of the working pile and out of every decision; ``released`` keeps the id
    # known, so appending the same event again changes nothing.
    items = state.pile.__pydantic_private__["_items"]  # type: ignore[index]
    dict.pop(items, sid, None)
    state.live.pop(sid, None)
    state.versions.pop(sid, None)
    state.attempts.pop(sid, None)
    state.released.add(sid)


# In the order the classes are tested (a subclass goes to its first base listed).
_BY_CLASS: tuple[tuple[type, _Step], ...] = (
    (EventAppended, _appended),
    (ProcessorStarted, _processor_started),
    (EventQueued, _queued),
    (EventDeferred, _deferred),
    (EventClaimed, _claimed),
    (EventFinished, _finished),
    (EventLeaseRenewed, _lease_renewed),
    (EventRequeued, _requeued),
    (EventAbandoned, _abandoned),
    (EventRetried, _retried),
    (EventSkipped, _skipped),
    (EventReleased, _released),
)
_STEPS: dict[type, _Step | None] = dict(_BY_CLASS)
_UNSEEN: Any = object()


def _step_for(cls: type) -> _Step | None:
    """The step of a class not seen yet (None: the record changes nothing but versions)."""
    step = next((s for base, s in _BY_CLASS if issubclass(cls, base)), None)
    _STEPS[cls] = step
    return step


_STATUS = {s.value: s for s in EventStatus}
_EXECUTION_FIELDS = fields_set(Execution)
_RECORDED_FIELDS = fields_set(RecordedEvent)


def _set_execution(event: Event, execution: Execution) -> None:
    if event.__pydantic_fields_set__ is _RECORDED_FIELDS:
        # An unchecked RecordedEvent: what pydantic's assignment would do, directly.
        event.__dict__["execution"] = execution
    else:
        event.execution = execution


def _set_status(event: Event, status: EventStatus) -> None:
    execution = event.execution
    if execution.__pydantic_fields_set__ is _EXECUTION_FIELDS:
        # One of _execution's: the value is an EventStatus, so validation would pass it.
        execution.__dict__["status"] = status
    else:
        execution.status = status


def _set_fields(event: Event, fields: dict[str, Any]) -> None:
    """Put recorded field values on an event, validated by its own class."""
    if isinstance(event, RecordedEvent):
        # A new dict: the old one may be a decoded record's own.
        event.__dict__["fields"] = {**event.fields, **fields}
        return
    current = event.model_dump(exclude={"execution"})
    rebuilt = type(event).model_validate({**current, **fields})
    for name in fields:
        if name in type(event).model_fields:
            object.__setattr__(event, name, getattr(rebuilt, name))


def _execution(
    status: EventStatus,
    duration: float | None = None,
    response: Any = None,
    error: str | None = None,
) -> Execution:
    """An Execution from values a record already validated (no second validation)."""
    return unchecked(
        Execution,
        _EXECUTION_FIELDS,
        {"status": status, "duration": duration, "response": response, "error": error},
    )


class _CompactEvents(LazyDict[IDType, Event]):
    """A replay's pile: events kept as tuples of their values, built when read."""

    __slots__ = ()


def _pending_values(sid: IDType, data: EventAppended) -> tuple[Any, ...]:
    """A compact pile's values for a new event (what _build_event builds from)."""
    return (
        sid,
        data.created_at,
        data.metadata or None,
        intern(data.event_class),
        data.fields or None,
        EventStatus.PENDING,
        None,
        None,
        None,
    )


def _build_event(key: IDType, raw: tuple[Any, ...]) -> Event:
    eid, created_at, metadata, event_class, fields, status, duration, response, error = raw
    return unchecked(
        RecordedEvent,
        _RECORDED_FIELDS,
        {
            "id": eid,
            "created_at": created_at,
            "metadata": {} if metadata is None else metadata,
            "execution": _execution(status, duration, response, error),
            "event_class": event_class,
            "fields": {} if fields is None else fields,
        },
    )


def _built_status(event: Event) -> EventStatus:
    return event.execution.status


def _compact_status(raw: tuple[Any, ...]) -> EventStatus:
    status: EventStatus = raw[5]
    return status


def compact_finished(state: ExecutorState) -> None:
    """Have a replay's ``state`` (empty, folding with :func:`raw_materializer`) keep each
    event as a tuple of its values, about a fifth of the memory of the RecordedEvent
    and Execution models, building the model on first read (every read of the pile
    returns models; statuses are read without building). The fold changes an unread
    event by replacing its tuple (claimed, finished) and builds it only for the rare
    records that change a model in place (requeued, abandoned, retried); an event
    whose metadata names a class is built at once, as ``raw_materializer`` decides."""
    if state.versions or state.materialize is not raw_materializer:
        raise ValueError("compact_finished needs an empty state folding raw_materializer")
    state.pile._items = _CompactEvents(
        (), _build_event, tuple, tag=_built_status, raw_tag=_compact_status
    )
