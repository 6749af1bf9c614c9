"""Record kinds of the executor: an event's life, one stream per event.

::

    event.appended   -> in the executor's pile and pending progression (PENDING)
    event.queued     -> forwarded into the processor queue (PENDING)
    event.deferred   -> request_permission said no; stays queued until retry_at
    event.claimed    -> PROCESSING, owned by one processor until lease_expires
    event.finished   -> COMPLETED, FAILED, CANCELLED or ABORTED, with the outcome of
                        invoke()
    event.skipped    -> SKIPPED: denied, and handle_denied ended it unrun
    event.lease_renewed -> the owner, still invoking, moved its lease on
    event.requeued   -> the owner's lease expired, or its process is gone
                        (reason ``owner_gone``); back in the queue
    event.abandoned  -> the same, on the last allowed attempt; FAILED
    event.retried    -> an explicit retry of a finished event; pending again
    event.released   -> removed from the executor's working pile (pile.pop,
                        cleanup_completed); its records stay in the log

and, on the executor's own stream (``executor_stream_id(name)``):

    processor.started  -> a processor (owner) started, with its configuration
    processor.identity -> the process it runs in (host, pid, process start time):
                          what lets another process see that an owner is gone
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Literal

from lionstore.domain.ids import IDType
from lionstore.domain.records import RecordData, register_upcaster

__all__ = [
    "EVENT_KINDS",
    "EventAbandoned",
    "EventAppended",
    "EventClaimed",
    "EventDeferred",
    "EventFinished",
    "EventLeaseRenewed",
    "EventQueued",
    "EventReleased",
    "EventRequeued",
    "EventRetried",
    "EventSkipped",
    "LeaseTakenOver",
    "ProcessorIdentity",
    "ProcessorStarted",
    "duration_to_us",
    "executor_stream_id",
]

_NAMESPACE = uuid.UUID("5b0c0c6e-3f2a-4e0c-9d1e-6c6f6e73746f")


def executor_stream_id(name: str) -> IDType:
    """The stream of an executor's own records (one per name within a run)."""
    return IDType(uuid.uuid5(_NAMESPACE, f"executor:{name}"))


class EventAppended(RecordData):
    kind: ClassVar[str] = "event.appended"
    executor: str
    event_class: str
    created_at: float
    metadata: dict[str, Any] = {}
    fields: dict[str, Any] = {}


class EventQueued(RecordData):
    """Forwarded into the queue; ``owner``/``cycle`` are set when a processor cycle
    queued it together with its claims (Executor.forward)."""

    kind: ClassVar[str] = "event.queued"
    owner: str | None = None
    cycle: int | None = None
    at_us: int | None = None
    seen: int | None = None


class EventDeferred(RecordData):
    kind: ClassVar[str] = "event.deferred"
    reason: str
    retry_at_us: int
    denials: int
    owner: str = ""
    cycle: int = 0
    at_us: int = 0
    seen: int = 0


class EventClaimed(RecordData):
    """``at_us`` is when the cycle started and ``seen`` the executor projection's
    position then: what the cycle's decision was based on (verify replays it)."""

    kind: ClassVar[str] = "event.claimed"
    owner: str
    attempt: int
    lease_expires_us: int
    cycle: int
    at_us: int = 0
    seen: int = 0


class EventLeaseRenewed(RecordData):
    """The owner of claim ``attempt`` is still invoking the event: its lease now runs
    until ``lease_expires_us``. Appended with the event stream's version as expected
    (compare-and-set), so a renewal never revives a claim another processor has taken
    over. Written by ``lionstore.processing.heartbeat`` every third of the lease."""

    kind: ClassVar[str] = "event.lease_renewed"
    owner: str
    attempt: int
    lease_expires_us: int


class EventFinished(RecordData):
    """The outcome of one attempt.

    Version 2 stores the duration as whole microseconds (``duration_us``), like
    every other time in the log (``at_us``, ``retry_at_us``, ``lease_expires_us``,
    ``recorded_at_us``); version 1 stored float seconds as ``duration``, with
    sub-microsecond noise (``1.3719999969907803e-05``). Version 1 records are
    upcast on read (:func:`_finished_v1_to_v2`); ``duration`` is still there, in
    seconds, as a property, which is what ``Execution.duration`` holds.
    """

    kind: ClassVar[str] = "event.finished"
    kind_version: ClassVar[int] = 2
    status: Literal["completed", "failed", "cancelled", "aborted"]
    attempt: int
    duration_us: int | None = None
    response: Any = None
    error: str | None = None
    fields: dict[str, Any] | None = None

    @property
    def duration(self) -> float | None:
        """The duration in seconds (None when unknown)."""
        return None if self.duration_us is None else self.duration_us / 1_000_000


def duration_to_us(seconds: float | None) -> int | None:
    """Seconds (``Execution.duration``) as the whole microseconds ``event.finished``
    stores; None stays None."""
    return None if seconds is None else round(seconds * 1_000_000)


def _finished_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """``event.finished`` v1 -> v2: float seconds ``duration`` -> ``duration_us``."""
    upgraded = {k: v for k, v in data.items() if k != "duration"}
    upgraded["duration_us"] = duration_to_us(data.get("duration"))
    return upgraded


register_upcaster(EventFinished.kind, 1, _finished_v1_to_v2)


class LeaseTakenOver(RecordData):
    """A claim taken over by processor ``by`` (base of event.requeued and
    event.abandoned): its lease expired (``reason`` ``lease_expired``, or
    ``abandoned`` on the last attempt), or, before that, its owner's process was
    seen to be gone (``owner_gone``, see ``lionstore.repositories.leases``)."""

    reason: str
    previous_owner: str
    attempt: int
    by: str = ""


class EventRequeued(LeaseTakenOver):
    kind: ClassVar[str] = "event.requeued"


class EventAbandoned(LeaseTakenOver):
    kind: ClassVar[str] = "event.abandoned"


class EventRetried(RecordData):
    kind: ClassVar[str] = "event.retried"
    attempt: int


class EventSkipped(RecordData):
    """A cycle asked for permission, was denied, and ``handle_denied`` ended the event
    (SKIPPED, never invoked). Part of the cycle's commit, like event.deferred."""

    kind: ClassVar[str] = "event.skipped"
    reason: str = "permission_denied"
    owner: str = ""
    cycle: int = 0
    at_us: int = 0
    seen: int = 0


class EventReleased(RecordData):
    """The executor let go of a finished event (``pile.pop``, ``cleanup_completed``):
    it leaves the working pile; its stream, outcome included, stays in the log."""

    kind: ClassVar[str] = "event.released"
    reason: str = "pop"


class ProcessorStarted(RecordData):
    kind: ClassVar[str] = "processor.started"
    executor: str
    executor_class: str
    processor_class: str
    owner: str
    queue_capacity: int
    capacity_refresh_time: float
    max_attempts: int
    lease_seconds: float
    max_backoff: float
    concurrency_limit: int | None = None
    max_queue_size: int = 0


class ProcessorIdentity(RecordData):
    """Where processor ``owner`` runs, recorded with its ``processor.started``: the
    host name, the boot id and pid namespace of that host (Linux), the pid and the
    process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22).
    A process on the same host, boot and pid namespace that finds no process with
    that pid and start time knows the owner is gone (a reused pid has another start
    time). None where the platform does not tell. ``advisory_lock``: on PostgreSQL
    the owner holds its advisory lock whenever it holds claims (a free lock then
    means its session ended)."""

    kind: ClassVar[str] = "processor.identity"
    executor: str
    owner: str
    host: str
    pid: int
    boot_id: str | None = None
    pid_namespace: str | None = None
    process_started: int | None = None
    advisory_lock: bool = False


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
        EventSkipped,
        EventReleased,
        ProcessorStarted,
        EventLeaseRenewed,
        ProcessorIdentity,
    )
)
