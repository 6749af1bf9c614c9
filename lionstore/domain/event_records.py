"""Record kinds of the executor: an event's life, one stream per event.

::

    event.appended   -> in the executor's pile and pending progression (PENDING)
    event.queued     -> forwarded into the processor queue (PENDING)
    event.deferred   -> request_permission said no; stays queued until retry_at
    event.claimed    -> PROCESSING, owned by one processor until lease_expires
    event.finished   -> COMPLETED or FAILED, with the outcome of invoke()
    event.requeued   -> the owner's lease expired; back in the queue
    event.abandoned  -> the lease expired on the last allowed attempt; FAILED
    event.retried    -> an explicit retry of a finished event; pending again
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from lionstore.domain.records import RecordData

__all__ = [
    "EVENT_KINDS",
    "EventAbandoned",
    "EventAppended",
    "EventClaimed",
    "EventDeferred",
    "EventFinished",
    "EventQueued",
    "EventRequeued",
    "EventRetried",
]


class EventAppended(RecordData):
    kind: ClassVar[str] = "event.appended"
    executor: str
    event_class: str
    created_at: float
    metadata: dict[str, Any] = {}
    fields: dict[str, Any] = {}


class EventQueued(RecordData):
    kind: ClassVar[str] = "event.queued"


class EventDeferred(RecordData):
    kind: ClassVar[str] = "event.deferred"
    reason: str
    retry_at_us: int
    denials: int


class EventClaimed(RecordData):
    kind: ClassVar[str] = "event.claimed"
    owner: str
    attempt: int
    lease_expires_us: int
    cycle: int


class EventFinished(RecordData):
    kind: ClassVar[str] = "event.finished"
    status: Literal["completed", "failed"]
    attempt: int
    duration: float | None = None
    response: Any = None
    error: str | None = None
    fields: dict[str, Any] | None = None


class EventRequeued(RecordData):
    kind: ClassVar[str] = "event.requeued"
    reason: str
    previous_owner: str
    attempt: int


class EventAbandoned(RecordData):
    kind: ClassVar[str] = "event.abandoned"
    reason: str
    previous_owner: str
    attempt: int


class EventRetried(RecordData):
    kind: ClassVar[str] = "event.retried"
    attempt: int


EVENT_KINDS = tuple(
    cls.kind
    for cls in (
        EventAppended,
        EventQueued,
        EventDeferred,
        EventClaimed,
        EventFinished,
        EventRequeued,
        EventAbandoned,
        EventRetried,
    )
)
