"""The executor repository: executor commands as records, with compare-and-set.

Every command expects the event streams it touches to be at the versions the
projection shows. A claim therefore succeeds for exactly one processor, across
tasks, processes and machines; an outcome is recorded only by the processor
whose claim is still current (its lease was not taken over).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import PydanticSerializationError

from lionstore._gcpause import gc_paused
from lionstore.domain.element import class_path
from lionstore.domain.event import TERMINAL_STATUSES, Event, EventStatus
from lionstore.domain.event_records import (
    EVENT_KINDS,
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
    ProcessorIdentity,
    duration_to_us,
    executor_stream_id,
)
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.records import NewRecord, Recorded, encode_data
from lionstore.errors import ItemNotFoundError, RecordError
from lionstore.log.store import Store
from lionstore.projections.executor import ExecutorState, Materializer
from lionstore.repositories.base import Decision, Repository
from lionstore.repositories.leases import OWNER_GONE, OwnerWatch

__all__ = [
    "ExecutorRepository",
    "Outcome",
    "backoff_for",
    "cycle_candidates",
    "decide_claim",
    "decide_reclaim",
]

_TURN_POLL = 0.01  # seconds between catch-ups while waiting for the claim turn
_TURN_BEHIND = 500  # records: a worker this far behind catches up before taking its turn
_TURN_TRIES = 3  # ... at most this many times in a row (the last turn it keeps)
_QUEUED = EventQueued()  # no fields: one instance and its JSON serve every event
_EMPTY = "{}"

log = logging.getLogger("lionstore.executor")

_BASE_FIELDS = frozenset({"id", "created_at", "metadata", "execution"})
# Event class -> whether it declares fields of its own (looking it up in pydantic's
# model_fields costs more than the rest of user_fields for such a class).
_HAS_OWN_FIELDS: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def user_fields(event: Event) -> dict[str, Any]:
    """The event's own fields, JSON-ready (what ``event.appended`` stores).

    Raises :class:`RecordError` if a field value cannot be stored as JSON.
    """
    cls = type(event)
    own = _HAS_OWN_FIELDS.get(cls)
    if own is None:
        own = _HAS_OWN_FIELDS[cls] = not cls.model_fields.keys() <= _BASE_FIELDS
    if not own and not event.__pydantic_extra__:
        return {}  # no fields of its own: nothing to dump
    try:
        return event.model_dump(mode="json", exclude=_BASE_FIELDS)  # type: ignore[arg-type]
    except (PydanticSerializationError, ValueError, RecursionError) as exc:
        raise RecordError(
            f"the fields of {type(event).__name__} {event.id} are not JSON-serializable: {exc}"
        ) from None


@dataclass(slots=True)
class Outcome:
    """What one invocation produced, before it is recorded."""

    event_id: IDType
    attempt: int
    claim_version: int
    status: EventStatus
    duration: float | None
    response: Any
    error: str | None
    fields: dict[str, Any] | None


class ExecutorRepository(Repository):
    kinds = EVENT_KINDS

    def __init__(
        self,
        store: Store,
        name: str,
        materialize: Materializer,
        *,
        item_type: type[Event] | None = None,
        strict_type: bool = False,
    ) -> None:
        self.state = ExecutorState(name, materialize, item_type=item_type, strict_type=strict_type)
        self.owners = OwnerWatch()
        self._turn = False  # whether this repository holds its executor's claim turn
        super().__init__(store)

    def apply(self, record: Recorded) -> None:
        data = record.data
        if type(data) is ProcessorIdentity:
            if data.executor == self.state.name:
                self.owners.learn(data)
            return
        self.state.apply(record)

    # -- append / queue ------------------------------------------------------------------

    async def append(self, events: Sequence[Event], *, queue: bool = False) -> list[Event]:
        """Record new events (pending; with ``queue``, queued too, in the same commit).
        Events already in the pile are left alone.

        Returns the events that were new. Raises TypeError for a wrong type and
        RecordError for unstorable fields, before anything is written.
        """
        prepared = self.prepare_append(events)

        def decide() -> Decision | None:
            fresh = [(e, r) for e, r in prepared if not self.state.knows(e.id)]
            for event, _ in fresh:
                self.state.live[event.id] = event
            records = [r for _, r in fresh]
            if queue:
                records += [NewRecord(e.id, _QUEUED, _EMPTY) for e, _ in fresh]
            return records, {e.id: 0 for e, _ in fresh}

        try:
            committed = await self.decide_and_append(decide)
        finally:
            for event, _ in prepared:
                self.state.live.pop(event.id, None)
        new = {r.stream_id for r in committed}
        return [e for e, _ in prepared if e.id in new]

    def prepare_append(self, events: Sequence[Event]) -> list[tuple[Event, NewRecord]]:
        """The ``event.appended`` record of each event (type checked and encoded, so bad
        input is refused before anything is written); duplicates dropped."""
        pile = self.state.pile
        limit = self.store.max_record_bytes
        prepared: list[tuple[Event, NewRecord]] = []
        seen: set[IDType] = set()
        name = self.state.name
        classes: dict[type[Event], str] = {}
        with gc_paused(len(events)):
            for event in events:
                cls = type(event)
                event_class = classes.get(cls)
                if event_class is None:  # the type check depends on the class alone
                    pile._check_type(event)
                    event_class = classes[cls] = class_path(cls)
                if event.id in seen:
                    continue
                seen.add(event.id)
                # (validating is cheaper than pydantic's model_construct, and copies
                # the metadata, so the record does not change with the event)
                data = EventAppended(
                    executor=name,
                    event_class=event_class,
                    created_at=event.created_at,
                    metadata=event.metadata,
                    fields=user_fields(event),
                )
                # encoded now, so bad fields are refused before anything is written
                prepared.append((event, NewRecord(event.id, data, encode_data(data, limit))))
        return prepared

    async def queue(self, ids: Iterable[IDType] | None = None) -> list[IDType]:
        """Move pending events (all, or those named) into the processor queue."""
        wanted = None if ids is None else list(ids)

        def decide() -> Decision | None:
            state = self.state
            chosen = (
                list(state.pending) if wanted is None else [i for i in wanted if i in state.pending]
            )
            return [NewRecord(i, _QUEUED, _EMPTY) for i in chosen], {
                i: state.versions[i] for i in chosen
            }

        committed = await self.decide_and_append(decide)
        return [r.stream_id for r in committed]

    async def enqueue_event(self, event: Event) -> None:
        """Processor.enqueue: append and queue a new event (one commit), or queue a
        known one if it is pending."""
        if not isinstance(event, Event):
            self.state.pile._check_type(event)  # raises TypeError, naming what it wanted
            raise TypeError(f"expected an Event, not {type(event).__name__}")
        await self.load()
        if not self.state.knows(event.id):
            await self.append([event], queue=True)
        await self.queue([event.id])

    # -- claims and outcomes ---------------------------------------------------------------

    async def claim(
        self,
        grants: Sequence[IDType],
        denials: Sequence[IDType],
        *,
        owner: str,
        lease_seconds: float,
        cycle: int,
        backoff: Any,
        queue_first: Sequence[IDType] = (),
        now_us: int | None = None,
        seen: int = 0,
        skips: Sequence[IDType] = (),
        no_backoff: Sequence[IDType] = (),
        admit: Sequence[tuple[Event, NewRecord]] = (),
    ) -> list[tuple[Event, int, int]]:
        """One transaction: queue the pending events ``queue_first`` (a forward),
        claim ``grants`` (PROCESSING, with a lease), defer ``denials`` (those in
        ``no_backoff`` due at once) and end ``skips`` as SKIPPED. Returns
        ``(event, attempt, claim_version)`` for each claim won; events someone else
        took meanwhile are skipped."""
        at_us = self.store.now_us() if now_us is None else now_us
        lease_us = int(lease_seconds * 1_000_000)
        if grants and self.store.owner_locks:
            # held before any claim: a free lock then means the owner's session ended
            await self.store.hold_owner_lock(owner)

        def decide() -> Decision | None:
            # ``admit``: new events appended in this same commit, then queued with the
            # forwarded ones (what an append followed by a forward cycle would write).
            fresh = [(e, r) for e, r in admit if not self.state.knows(e.id)]
            for event, _ in fresh:
                self.state.live[event.id] = event
            with gc_paused(len(grants) + len(queue_first)):
                records, expected = decide_claim(
                    self.state,
                    grants,
                    denials,
                    [*queue_first, *(e.id for e, _ in fresh)],
                    owner=owner,
                    now_us=at_us,
                    lease_us=lease_us,
                    cycle=cycle,
                    backoff=backoff,
                    seen=seen,
                    skips=skips,
                    no_backoff=no_backoff,
                    admitted={e.id for e, _ in fresh},
                )
            return [*(r for _, r in fresh), *records], {
                **expected,
                **{event.id: 0 for event, _ in fresh},
            }

        try:
            # A claim is not synced on its own (SQLite at "full", PostgreSQL): the
            # outcome's commit syncs it before forward() returns, and a power loss or a
            # server crash before then loses only the claim of a run that was cut short
            # anyway (its event runs again, as after any crash). Admitted events are
            # appends: synced.
            # The turn is given back as soon as the claim has committed, before its
            # records are decoded back and folded here: the next worker needs only the
            # claim in the log, and on two cores shared by eight workers that folding
            # took 0.35 ms of a turn (median; 80 ms for a forward queueing 2,000
            # events, while every other worker waited).
            committed = await self.decide_and_append(
                decide,
                sync=bool(admit),
                on_committed=self._end_claim_turn_soon if self._turn else None,
            )
        finally:
            for event, _ in admit:
                self.state.live.pop(event.id, None)
            await self.end_claim_turn()
        pile = self.state.pile.__pydantic_private__["_items"]  # type: ignore[index]
        claimed = EventClaimed.kind
        return [
            (pile[r.stream_id], r.data.attempt, r.stream_version)  # type: ignore[union-attr]
            for r in committed
            if r.kind == claimed
        ]

    async def begin_claim_turn(self) -> bool:
        """After a cycle's sync: wait for this executor's claim turn when the backend
        has them (PostgreSQL) and other processors of the executor were started in the
        run. True when taken, and then the projection holds every record committed
        before the turn came: decide on it. The turn is given back after the cycle's
        claim commits (``claim``) or by :meth:`end_claim_turn`; processors in other
        processes then decide on a log that holds this cycle's claims, so they take
        the events after them (disjoint work) instead of racing for the same queue
        head. Only an optimisation: claims stay compare-and-set, and a turn not had
        within a wait is claimed without.

        While the turn is held every other worker waits, so what is done in it is
        kept to two round trips before the claim's commit: taking the turn reads the
        head in the same call, and the catch-up reads the records up to that head
        without asking for it again. (The processor holds its owner lock from its
        start, so a first claim does not open the lock's session in the turn.)"""
        state = self.state
        if not self.store.claim_turns or self._turn or len(state.processors) < 2:
            return False
        if not state.queue and not state.pending:
            return False  # nothing to claim: an idle cycle must not hold up the others
        head: int | None = None
        for attempt in range(_TURN_TRIES):
            waiting = asyncio.ensure_future(self.store.take_claim_turn(state.name))
            try:
                while not (await asyncio.wait({waiting}, timeout=_TURN_POLL))[0]:
                    # Catch up while another worker holds the turn, not once it is
                    # ours: folding what the others wrote is then done side by side.
                    await self.sync()
            except BaseException:
                waiting.cancel()  # (a turn granted meanwhile is given back by the caller)
                if waiting.done() and not waiting.cancelled() and waiting.exception() is None:
                    self._turn = waiting.result() is not None
                raise
            head = waiting.result()
            self._turn = head is not None
            if (
                head is None
                or attempt == _TURN_TRIES - 1
                or head - self.store.position < _TURN_BEHIND
            ):
                break
            # Far behind (a large commit landed just now): folding it while holding the
            # turn would hold up every other worker. Give it back, catch up, ask again.
            await self.end_claim_turn()
            await self.sync()
        if head is not None:
            await self.sync(upto=head)  # the claims committed before the turn came
        return self._turn

    async def end_claim_turn(self) -> None:
        """Give back the claim turn if this repository holds it (idempotent). The
        unlock is not waited for: the claim has committed, and the cycle's events
        start while the unlock is on its way (the next turn of this store's waits
        behind it)."""
        self._end_claim_turn_soon()

    def _end_claim_turn_soon(self) -> None:
        if self._turn:
            self._turn = False
            self.store.end_claim_turn_soon(self.state.name)

    async def finish(self, outcomes: Sequence[Outcome]) -> list[IDType]:
        """Record outcomes in one transaction. An outcome whose claim is no longer
        current (the lease was taken over) is dropped and logged, never recorded twice."""
        limit = self.store.max_record_bytes
        prepared: list[tuple[Outcome, NewRecord]] = []
        with gc_paused(len(outcomes)):
            for outcome in outcomes:
                data = _finished(outcome)
                try:
                    text = encode_data(data, limit)
                except RecordError as exc:
                    data = _unrecordable(outcome, str(exc))
                    try:
                        text = encode_data(data, limit)
                    except RecordError:  # the reason itself is too long for the store
                        data = _unrecordable(outcome, _shortened(str(exc)))
                        text = encode_data(data, limit)
                prepared.append((outcome, NewRecord(outcome.event_id, data, text)))

        def decide() -> Decision | None:
            state = self.state
            claims = state.claims
            records: list[NewRecord] = []
            expected: dict[IDType, int] = {}
            for outcome, record in prepared:
                i = outcome.event_id
                # The claim is still current when nothing but its own lease renewals
                # came after it: an (event, attempt) is claimed once, so a claim of
                # that attempt in the projection is this one.
                claim = claims.get(i)
                if claim is None or claim.attempt != outcome.attempt:
                    log.warning(
                        "outcome of event %s (attempt %s) dropped: its claim was taken over",
                        i,
                        outcome.attempt,
                    )
                    continue
                records.append(record)
                expected[i] = state.versions[i]
            return records, expected

        committed = await self.decide_and_append(decide)
        return [r.stream_id for r in committed]

    async def renew_leases(
        self, held: Sequence[tuple[IDType, int]], *, owner: str, lease_seconds: float
    ) -> list[IDType]:
        """One transaction: move on the leases of the claims ``held`` (event, attempt)
        that are still this owner's, to ``lease_seconds`` from now. A claim taken
        over meanwhile is left alone (compare-and-set on its stream). Returns the
        events whose lease was renewed."""
        lease_us = int(lease_seconds * 1_000_000)

        def decide() -> Decision | None:
            state = self.state
            expires = self.store.now_us() + lease_us
            records: list[NewRecord] = []
            expected: dict[IDType, int] = {}
            for i, attempt in held:
                claim = state.claims.get(i)
                if claim is None or claim.attempt != attempt or claim.owner != owner:
                    continue
                renewed = EventLeaseRenewed(owner=owner, attempt=attempt, lease_expires_us=expires)
                records.append(NewRecord(i, renewed))
                expected[i] = state.versions[i]
            return records, expected

        committed = await self.decide_and_append(decide)
        return [r.stream_id for r in committed]

    async def gone_owners(self, *, exclude: str = "") -> set[str]:
        """Owners of current claims (other than ``exclude``) whose process is known to
        be gone (``lionstore.repositories.leases``)."""
        owners = {c.owner for c in self.state.claims.values()} - {exclude}
        if not owners:
            return set()
        if self.owners.unknown(owners):
            # processor.identity records come before the owner's first claim; one
            # read of the executor's own (short) stream brings those of older runs.
            stream = executor_stream_id(self.state.name)
            async for record in await self.store.read(
                stream=stream, kinds=(ProcessorIdentity.kind,)
            ):
                if isinstance(record.data, ProcessorIdentity):
                    self.owners.learn(record.data)
            for owner in self.owners.unknown(owners):  # none recorded: the lease decides
                self.owners.identities[owner] = _NO_IDENTITY
        gone = self.owners.gone_among(owners)
        if self.store.owner_locks:
            # Owners this host cannot judge: a free advisory lock, for the whole grace.
            for owner in owners - gone - self.owners.alive:
                identity = self.owners.identities.get(owner)
                if identity is None or not identity.advisory_lock:
                    continue  # it never held one: only its lease tells
                if self.owners.may_probe(owner) and self.owners.lock_seen(
                    owner, await self.store.owner_lock_free(owner)
                ):
                    gone.add(owner)
        return gone

    async def reclaim_expired(
        self, *, max_attempts: int, in_flight: set[IDType], by: str = ""
    ) -> int:
        """Re-queue (or, on the last attempt, abandon) events whose lease expired, and
        at once those whose owner's process is gone."""
        if not self.state.claims:
            return 0
        gone = await self.gone_owners(exclude=by)
        now_us = self.store.now_us()

        def decide() -> Decision | None:
            return decide_reclaim(self.state, now_us, max_attempts, in_flight, by, gone)

        return len(await self.decide_and_append(decide))

    async def release(self, refs: Iterable[Any], reason: str = "pop") -> list[IDType]:
        """Let finished events go from the working pile (``event.released``); events
        not finished (or not held) are left alone. Their records stay in the log."""
        ids = [to_id(r) for r in refs]

        def decide() -> Decision | None:
            state = self.state
            chosen = [
                i
                for i in dict.fromkeys(ids)
                if i in state.versions
                and i not in state.claims
                # (not held: cleanup_completed let it go in memory already)
                and (i not in state.pile._items or state.status(i) in TERMINAL_STATUSES)
            ]
            data = EventReleased(reason=reason)
            return [NewRecord(i, data) for i in chosen], {i: state.versions[i] for i in chosen}

        await self.load()
        committed = await self.decide_and_append(decide)
        return [r.stream_id for r in committed]

    async def retry(self, refs: Iterable[Any]) -> list[IDType]:
        """Put finished events back in pending (attempt + 1 when next claimed)."""
        ids = [to_id(r) for r in refs]
        for i in ids:
            if i not in self.state.versions:
                raise ItemNotFoundError(f"event {i} is not in this executor")

        def decide() -> Decision | None:
            state = self.state
            chosen = [i for i in ids if state.status(i) in TERMINAL_STATUSES]
            return [
                NewRecord(i, EventRetried(attempt=state.attempts.get(i, 0) + 1)) for i in chosen
            ], {i: state.versions[i] for i in chosen}

        committed = await self.decide_and_append(decide)
        return [r.stream_id for r in committed]


# Stands for an owner that recorded no identity (written before identities were).
_NO_IDENTITY = ProcessorIdentity(executor="", owner="", host="", pid=0)

_RECORDED_STATUS: dict[EventStatus, Any] = {
    EventStatus.COMPLETED: "completed",
    EventStatus.CANCELLED: "cancelled",
    EventStatus.ABORTED: "aborted",
}


_REASON_CHARS = 100
"""The characters of an unrecordable outcome's reason kept when the whole reason does
not fit in the store's record limit: at most 6 bytes of JSON each, so the failure
record stays well within the smallest limit a store takes (1024 bytes)."""


def _unrecordable(outcome: Outcome, reason: str) -> EventFinished:
    """The failure recorded instead of an outcome the store cannot hold."""
    return EventFinished(
        status="failed",
        attempt=outcome.attempt,
        duration_us=duration_to_us(outcome.duration),
        error=f"the outcome could not be recorded: {reason}",
    )


def _shortened(reason: str) -> str:
    if len(reason) <= _REASON_CHARS:
        return reason
    return f"{reason[:_REASON_CHARS]}... ({len(reason)} characters)"


def _finished(outcome: Outcome) -> EventFinished:
    return EventFinished(
        status=_RECORDED_STATUS.get(outcome.status, "failed"),
        attempt=outcome.attempt,
        duration_us=duration_to_us(outcome.duration),
        response=outcome.response,
        error=outcome.error,
        fields=outcome.fields,
    )


def cycle_candidates(
    state: ExecutorState, capacity: int, now_us: int, forward: bool
) -> list[IDType]:
    """The events a cycle offers to ``request_permission``, in order: the head of the
    eligible queue (then, for a forward, the pending events), at most ``capacity``.

    Shared by the live Processor and ``verify``: change the capacity rule here and
    verify reports every recorded cycle that no longer matches.
    """
    # Lazily: a cycle takes ``capacity`` events from the head of a queue that may be
    # far longer (ExecutorState.eligible would list all of it).
    not_before = state.not_before_us
    eligible: Iterable[IDType] = (i for i in state.queue if not_before.get(i, 0) <= now_us)
    if forward:
        eligible = itertools.chain(eligible, state.pending)
    return list(itertools.islice(eligible, max(capacity, 0)))


def decide_claim(
    state: ExecutorState,
    grants: Sequence[IDType],
    denials: Sequence[IDType],
    queue_first: Sequence[IDType],
    *,
    owner: str,
    now_us: int,
    lease_us: int,
    cycle: int,
    backoff: Any,
    seen: int = 0,
    skips: Sequence[IDType] = (),
    no_backoff: Sequence[IDType] = (),
    admitted: set[IDType] | frozenset[IDType] = frozenset(),
) -> Decision:
    """Records for one cycle: queue ``queue_first`` (pending, a forward), claim the
    granted events, defer the denied ones (at once for ``no_backoff``: a
    ``handle_denied`` override asked for it) and end ``skips`` as SKIPPED."""
    records: list[NewRecord] = []
    add = records.append
    expected: dict[IDType, int] = {}
    versions = state.versions
    queued: set[IDType] = set()
    # Every event of a cycle gets the same queued record and, per attempt number, the
    # same claimed record: one (frozen) data object and one JSON text serve them all.
    if queue_first:
        forwarded = EventQueued(owner=owner, cycle=cycle, at_us=now_us, seen=seen)
        forwarded_text = encode_data(forwarded)
        pending = state.pending
        for i in queue_first:
            if i in pending or i in admitted:
                add(NewRecord(i, forwarded, forwarded_text))
                expected[i] = versions.get(i, 0)
                queued.add(i)
    claims: dict[int, tuple[EventClaimed, str]] = {}
    attempts, queue = state.attempts, state.queue
    for i in grants:
        if i in queue or i in queued:
            attempt = attempts.get(i, 0) + 1
            claim = claims.get(attempt)
            if claim is None:
                data = EventClaimed(
                    owner=owner,
                    attempt=attempt,
                    lease_expires_us=now_us + lease_us,
                    cycle=cycle,
                    at_us=now_us,
                    seen=seen,
                )
                claim = claims[attempt] = (data, encode_data(data))
            add(NewRecord(i, *claim))
            expected.setdefault(i, versions.get(i, 0))
    immediate = set(no_backoff)
    for i in denials:
        if i in state.queue or i in queued:
            denied = state.denials.get(i, 0) + 1
            wait_us = 0 if i in immediate else int(backoff(denied) * 1_000_000)
            records.append(
                NewRecord(
                    i,
                    EventDeferred(
                        reason="permission_denied",
                        retry_at_us=now_us + wait_us,
                        denials=denied,
                        owner=owner,
                        cycle=cycle,
                        at_us=now_us,
                        seen=seen,
                    ),
                )
            )
            expected.setdefault(i, state.versions.get(i, 0))
    if skips:
        skipped = EventSkipped(owner=owner, cycle=cycle, at_us=now_us, seen=seen)
        skipped_text = encode_data(skipped)
        for i in skips:
            if i in state.queue or i in queued:
                add(NewRecord(i, skipped, skipped_text))
                expected.setdefault(i, versions.get(i, 0))
    return records, expected


def decide_reclaim(
    state: ExecutorState,
    now_us: int,
    max_attempts: int,
    in_flight: set[IDType],
    by: str = "",
    gone: Collection[str] = (),
) -> Decision:
    """Re-queue (or, on the last attempt, abandon) events whose lease has expired, or
    whose owner is in ``gone`` (its process is known to have ended)."""
    records: list[NewRecord] = []
    expected: dict[IDType, int] = {}
    for i, claim in state.claims.items():
        if i in in_flight:
            continue
        if claim.lease_expires_us > now_us:
            if claim.owner not in gone:
                continue
            reasons = (OWNER_GONE, OWNER_GONE)
        else:
            reasons = ("abandoned", "lease_expired")
        data: Any
        if claim.attempt >= max_attempts:
            data = EventAbandoned(
                reason=reasons[0], previous_owner=claim.owner, attempt=claim.attempt, by=by
            )
        else:
            data = EventRequeued(
                reason=reasons[1], previous_owner=claim.owner, attempt=claim.attempt, by=by
            )
        records.append(NewRecord(i, data))
        expected[i] = state.versions[i]
    return records, expected


def backoff_for(capacity_refresh_time: float, max_backoff: float) -> Any:
    """The denial back-off: ``capacity_refresh_time * 2**(denials-1)``, capped."""

    def backoff(denials: int) -> float:
        return float(min(max_backoff, capacity_refresh_time * 2 ** (denials - 1)))

    return backoff
