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
from typing import Any

from lionstore.domain.element import resolve_class
from lionstore.domain.event import Event, EventStatus, Execution
from lionstore.domain.event_records import (
    EventAbandoned,
    EventAppended,
    EventClaimed,
    EventDeferred,
    EventFinished,
    EventQueued,
    EventRequeued,
    EventRetried,
    ProcessorStarted,
)
from lionstore.domain.ids import IDType
from lionstore.domain.lazy import LazyDict
from lionstore.domain.pile import Pile
from lionstore.domain.progression import Progression
from lionstore.domain.records import Recorded

__all__ = [
    "Claim",
    "ExecutorState",
    "Materializer",
    "RecordedEvent",
    "class_materializer",
    "raw_materializer",
]

Materializer = Callable[[IDType, EventAppended], Event]


class RecordedEvent(Event):
    """An event rebuilt without its class: the class name and raw fields."""

    event_class: str = ""
    fields: dict[str, Any] = {}


def raw_materializer(event_id: IDType, data: EventAppended) -> Event:
    return RecordedEvent(
        id=event_id,
        created_at=data.created_at,
        metadata=data.metadata,
        event_class=data.event_class,
        fields=data.fields,
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

    # -- queries -----------------------------------------------------------------------

    def knows(self, event_id: IDType) -> bool:
        return event_id in self.versions

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
        data = record.data
        sid = record.stream_id
        if isinstance(data, EventAppended):
            if data.executor != self.name or sid in self.versions:
                return
            event = self.live.pop(sid, None)
            if event is None:
                event = self.materialize(sid, data)
            event.execution = _execution(EventStatus.PENDING)
            self.pile._put(event)
            self.pending[sid] = None
        elif isinstance(data, ProcessorStarted):
            if data.executor == self.name:
                self.processors[data.owner] = data
                self.position = record.position
            return
        elif sid not in self.versions:
            return  # another executor's event (or not an event record)
        else:
            self._apply_change(sid, data)
        self.versions[sid] = record.stream_version
        self.position = record.position

    def _apply_change(self, sid: IDType, data: Any) -> None:
        event = self.pile._items[sid]
        if isinstance(data, EventQueued):
            self.pending.pop(sid, None)
            self.queue[sid] = None
        elif isinstance(data, EventDeferred):
            self.not_before_us[sid] = data.retry_at_us
            self.denials[sid] = data.denials
        elif isinstance(data, EventClaimed):
            self.queue.pop(sid, None)
            self.pending.pop(sid, None)
            self.not_before_us.pop(sid, None)
            self.denials.pop(sid, None)  # the back-off starts afresh after a claim
            self.claims[sid] = Claim(data.owner, data.attempt, data.lease_expires_us, data.cycle)
            self.attempts[sid] = data.attempt
            event.execution.status = EventStatus.PROCESSING
        elif isinstance(data, EventFinished):
            self.claims.pop(sid, None)
            if data.fields:
                _set_fields(event, data.fields)
            event.execution = _execution(
                EventStatus(data.status), data.duration, data.response, data.error
            )
        elif isinstance(data, EventRequeued):
            self.claims.pop(sid, None)
            self.queue[sid] = None
            event.execution.status = EventStatus.PENDING
        elif isinstance(data, EventAbandoned):
            self.claims.pop(sid, None)
            event.execution = _execution(
                EventStatus.FAILED,
                error=f"{data.reason}: lease of {data.previous_owner} expired on attempt "
                f"{data.attempt}",
            )
        elif isinstance(data, EventRetried):
            self.pending[sid] = None
            self.denials.pop(sid, None)
            event.execution = _execution(EventStatus.PENDING)


def _set_fields(event: Event, fields: dict[str, Any]) -> None:
    """Put recorded field values on an event, validated by its own class."""
    if isinstance(event, RecordedEvent):
        event.fields.update(fields)
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
    """An Execution from values a record already validated (validating them again
    costs less than pydantic's model_construct)."""
    return Execution(status=status, duration=duration, response=response, error=error)
