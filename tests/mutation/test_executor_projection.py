"""The executor projection (lionstore/projections/executor.py) folding records: what
``raw_materializer`` builds, which queued events are eligible, when the next wake-up
is, what a lease renewal, an abandon, a retry and a release change. The fold is pure
in-memory code (no database: the records are the data a store decodes). Written from
mutmut's survivors (docs/mutation.md)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from foldlog import FoldLog

import lionstore
from lionstore.domain.element import Element
from lionstore.domain.event import EventStatus
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
)
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.lazy import LazyDict
from lionstore.projections import snapshot
from lionstore.projections.executor import (
    ExecutorState,
    RecordedEvent,
    compact_finished,
    raw_materializer,
)

CLASS = "some.module.Task"


class _Log(FoldLog):
    """Feeds an ExecutorState record data, with shorthands for its records."""

    def append(self, **over: Any) -> IDType:
        sid = to_id(uuid.uuid4())
        values: dict[str, Any] = {
            "executor": "ex",
            "event_class": CLASS,
            "created_at": 1.5,
            "metadata": {"k": "v"},
            "fields": {"n": 1},
        }
        values.update(over)
        self.fold(sid, EventAppended(**values))
        return sid

    def claim(self, sid: IDType, attempt: int = 1, lease: int = 1_000, cycle: int = 3) -> None:
        self.fold(
            sid, EventClaimed(owner="p1", attempt=attempt, lease_expires_us=lease, cycle=cycle)
        )


def _state(*, compact: bool = False) -> tuple[ExecutorState, _Log]:
    state = ExecutorState("ex", raw_materializer)
    if compact:
        compact_finished(state)
    return state, _Log(state)


def test_raw_materializer_keeps_the_recorded_values_as_a_pending_recorded_event() -> None:
    state, log = _state()
    sid = log.append()
    event = state.pile[sid]
    assert type(event) is RecordedEvent
    assert (event.id, event.created_at, event.metadata) == (sid, 1.5, {"k": "v"})
    assert (event.event_class, event.fields) == (CLASS, {"n": 1})
    assert event.status is EventStatus.PENDING
    assert list(state.pending) == [sid] and state.versions[sid] == 1


def test_raw_materializer_validates_an_event_whose_metadata_names_a_class() -> None:
    state, log = _state()
    key = Element._lion_class_key
    sid = log.append(metadata={key: f"{RecordedEvent.__module__}.RecordedEvent"})
    event = state.pile[sid]
    assert type(event) is RecordedEvent
    assert event.metadata[key] == f"{RecordedEvent.__module__}.RecordedEvent"
    assert (event.id, event.created_at) == (sid, 1.5)
    assert (event.event_class, event.fields, event.status) == (
        CLASS,
        {"n": 1},
        EventStatus.PENDING,
    )


@pytest.mark.parametrize("compact", [False, True])
def test_a_finished_events_recorded_fields_are_merged_into_its_own(compact: bool) -> None:
    state, log = _state(compact=compact)
    sid = log.append(fields={"n": 1, "keep": True})
    empty = log.append(fields={})
    for event_id in (sid, empty):
        log.fold(event_id, EventQueued())
        log.claim(event_id)
        log.fold(
            event_id,
            EventFinished(status="completed", attempt=1, response="ok", fields={"n": 2}),
        )
    assert state.pile[sid].fields == {"n": 2, "keep": True}
    assert state.pile[empty].fields == {"n": 2}
    assert state.pile[sid].metadata == {"k": "v"}
    assert state.pile[sid].execution.response == "ok"
    assert state.pile[sid].status is EventStatus.COMPLETED
    assert state.claims == {}


def test_a_deferred_event_is_eligible_from_its_retry_time_and_wakes_the_loop() -> None:
    state, log = _state()
    plain = log.append()
    later = log.append()
    for sid in (plain, later):
        log.fold(sid, EventQueued())
    log.fold(later, EventDeferred(reason="permission_denied", retry_at_us=500, denials=1))
    assert state.eligible(0) == [plain]  # a queued event with no back-off: at once
    assert state.eligible(499) == [plain]
    assert state.eligible(500) == [plain, later]
    assert state.next_wakeup_us() == 500
    assert state.denials == {later: 1}


def test_the_next_wake_up_is_the_earliest_deferral_or_lease_not_excluded() -> None:
    state, log = _state()
    a, b, c = log.append(), log.append(), log.append()
    for sid in (a, b, c):
        log.fold(sid, EventQueued())
    assert state.next_wakeup_us() is None  # nothing deferred, nothing claimed
    log.claim(a, lease=700)
    log.claim(b, lease=900)
    log.fold(c, EventDeferred(reason="permission_denied", retry_at_us=800, denials=1))
    assert state.next_wakeup_us() == 700
    assert state.next_wakeup_us(exclude={a}) == 800
    assert state.next_wakeup_us(exclude={a, b}) == 800
    assert state.not_before_us == {c: 800}


def test_a_lease_renewal_moves_only_the_expiry_of_the_claim() -> None:
    state, log = _state()
    sid = log.append()
    log.fold(sid, EventQueued())
    log.claim(sid, attempt=2, lease=1_000, cycle=7)
    log.fold(sid, EventLeaseRenewed(owner="p1", attempt=2, lease_expires_us=5_000))
    claim = state.claims[sid]
    assert (claim.owner, claim.attempt, claim.lease_expires_us, claim.cycle) == (
        "p1",
        2,
        5_000,
        7,
    )
    assert state.next_wakeup_us() == 5_000


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        ("owner_gone", "abandoned: p1 is gone (its process ended) on attempt 3"),
        ("lease_expired", "lease_expired: lease of p1 expired on attempt 3"),
    ],
)
def test_an_abandoned_event_fails_with_who_and_why_in_its_error(reason: str, error: str) -> None:
    state, log = _state()
    sid = log.append()
    log.fold(sid, EventQueued())
    log.claim(sid, attempt=3)
    log.fold(sid, EventAbandoned(reason=reason, previous_owner="p1", attempt=3, by="p2"))
    event = state.pile[sid]
    assert event.status is EventStatus.FAILED
    assert event.execution.error == error
    assert state.claims == {}


def test_a_retried_event_is_pending_again_with_its_back_off_forgotten() -> None:
    state, log = _state()
    sid = log.append()
    log.fold(sid, EventQueued())
    log.fold(sid, EventDeferred(reason="permission_denied", retry_at_us=10, denials=2))
    log.claim(sid)
    log.fold(sid, EventFinished(status="failed", attempt=1, error="boom"))
    log.fold(sid, EventRetried(attempt=1))
    assert state.pile[sid].status is EventStatus.PENDING
    assert list(state.pending) == [sid]
    assert state.denials == {} and state.not_before_us == {}


def test_a_released_event_is_known_but_held_no_longer() -> None:
    state, log = _state()
    sid = log.append()
    other = log.append()
    log.fold(sid, EventQueued())
    log.claim(sid)
    log.fold(sid, EventFinished(status="completed", attempt=1))
    state.live[sid] = state.pile[sid]
    log.fold(sid, EventReleased())
    assert sid not in state.pile and other in state.pile
    assert sid not in state.versions and sid not in state.attempts and sid not in state.live
    assert state.knows(sid) and sid in state.released


def test_compact_finished_refuses_a_state_it_cannot_compact() -> None:
    state, log = _state()
    log.append()
    with pytest.raises(
        ValueError, match=r"^compact_finished needs an empty state folding raw_materializer$"
    ):
        compact_finished(state)


def test_a_skipped_event_leaves_the_queue_and_its_back_off() -> None:
    state, log = _state()
    sid = log.append()
    other = log.append()
    for event_id in (sid, other):
        log.fold(event_id, EventQueued())
        log.fold(event_id, EventDeferred(reason="permission_denied", retry_at_us=9, denials=1))
    log.fold(sid, EventSkipped())
    assert state.pile[sid].status is EventStatus.SKIPPED
    assert list(state.queue) == [other]
    assert state.not_before_us == {other: 9} and state.denials == {other: 1}
    pending = log.append()
    log.fold(pending, EventSkipped())  # skipped before it was queued
    assert pending not in state.pending and state.pile[pending].status is EventStatus.SKIPPED


def test_a_requeued_event_is_pending_and_queued_again_without_its_claim() -> None:
    state, log = _state()
    sid = log.append()
    log.fold(sid, EventQueued())
    log.claim(sid)
    assert state.pile[sid].status is EventStatus.PROCESSING
    log.fold(sid, EventRequeued(reason="lease_expired", previous_owner="p1", attempt=1))
    assert state.pile[sid].status is EventStatus.PENDING
    assert list(state.queue) == [sid] and state.claims == {}


def test_a_claim_takes_the_event_out_of_the_queue_and_its_back_off() -> None:
    state, log = _state()
    sid = log.append()
    other = log.append()
    for event_id in (sid, other):
        log.fold(event_id, EventQueued())
        log.fold(event_id, EventDeferred(reason="permission_denied", retry_at_us=9, denials=2))
    log.claim(sid, attempt=1, lease=50, cycle=4)
    assert list(state.queue) == [other]
    assert state.not_before_us == {other: 9} and state.denials == {other: 2}
    assert state.attempts == {sid: 1} and state.claims[sid].cycle == 4
    assert state.pile[sid].status is EventStatus.PROCESSING
    early = log.append()
    log.claim(early)  # claimed straight from pending
    assert early not in state.pending


def test_a_replayed_event_keeps_its_outcomes_duration_and_error() -> None:
    state, log = _state()
    sid = log.append()
    log.fold(sid, EventQueued())
    log.claim(sid)
    log.fold(sid, EventFinished(status="failed", attempt=1, duration_us=2_500_000, error="boom"))
    execution = state.pile[sid].execution
    assert (execution.status, execution.duration, execution.error) == (
        EventStatus.FAILED,
        2.5,
        "boom",
    )


def test_the_pile_and_pending_progression_refuse_changes_naming_what_to_call() -> None:
    state, log = _state()
    log.append()
    with pytest.raises(lionstore.ReadOnlyProjectionError) as caught:
        state.pile.clear()
    assert str(caught.value) == (
        "this collection is rebuilt from the log; change it through Executor methods"
        " (append, forward, retry)"
    )
    with pytest.raises(lionstore.ReadOnlyProjectionError) as caught:
        state.pending_progression().clear()
    assert str(caught.value) == (
        "this collection is rebuilt from the log; change it through Executor.append / forward"
    )
    assert len(state.pile) == 1 and len(state.pending_progression()) == 1


# -- a replay's compact pile against the plain one -------------------------------------


def _response() -> str:
    # a new str object on each call, as each record's JSON decodes one
    return "".join(["do", "ne"])


def _fold_scenario(state: ExecutorState, *, read_midway: bool) -> dict[str, IDType]:
    """The same records whatever the state: events without metadata or fields, with
    metadata that names no class, one read (built) before its outcome comes in, and
    one still pending."""
    log = _Log(state)
    ids = {
        "bare": log.append(metadata={}, fields={}),
        "meta": log.append(),
        "read": log.append(metadata={"k": "w"}, fields={"n": 3}),
        "pending": log.append(metadata={}, fields={}),
    }
    if read_midway:
        state.pile[ids["read"]]
    for name in ("bare", "meta", "read"):
        sid = ids[name]
        log.fold(sid, EventQueued())
        log.claim(sid)
        log.fold(
            sid,
            EventFinished(status="completed", attempt=1, duration_us=1_000, response=_response()),
        )
    return ids


def test_a_compact_pile_keeps_unread_events_as_values_and_reads_them_as_the_plain_one() -> None:
    """A replay's compact pile (compact_finished) keeps each event whose metadata names
    no class unbuilt, as its values, from its event.appended on; read, every event is
    the one a plain fold builds, field by field, and equal string responses are one
    object in both."""
    plain, _ = _state()
    compact, _ = _state(compact=True)
    ids = _fold_scenario(plain, read_midway=False)
    # just appended (a finish keeps a built replay event as values again)
    fresh, log = _state(compact=True)
    appended = [log.append(metadata={}, fields={}), log.append()]
    items = fresh.pile._items
    assert isinstance(items, LazyDict)
    assert [items.is_built(sid) for sid in appended] == [False, False]
    cids = _fold_scenario(compact, read_midway=True)
    items = compact.pile._items
    assert isinstance(items, LazyDict)
    assert [items.is_built(cids[n]) for n in ("bare", "meta", "pending")] == [False] * 3
    for name in ids:
        want, got = plain.pile[ids[name]], compact.pile[cids[name]]
        assert type(got) is type(want) is RecordedEvent
        assert (got.created_at, got.metadata, got.event_class, got.fields) == (
            want.created_at,
            want.metadata,
            want.event_class,
            want.fields,
        ), name
        assert got.execution.model_dump() == want.execution.model_dump(), name
    assert compact.pile[cids["read"]].metadata == {"k": "w"}
    assert compact.pile[cids["pending"]].fields == {}
    for state, keys in ((plain, ids), (compact, cids)):
        bare, meta = (state.pile[keys[n]].execution.response for n in ("bare", "meta"))
        assert bare == "done" and bare is meta  # one copy of each string response


@pytest.mark.parametrize("compact", [False, True])
def test_an_event_whose_metadata_names_another_class_is_refused(compact: bool) -> None:
    """Element's metadata check decides an event whose metadata names a class, in a
    compact pile too: one naming a class that is not RecordedEvent is refused."""
    _, log = _state(compact=compact)
    with pytest.raises(ValueError, match="Metadata class mismatch"):
        log.append(metadata={Element._lion_class_key: "some.module.Other"})


def test_an_event_restored_from_a_checkpoint_is_pending_again_when_requeued() -> None:
    """An event a checkpoint restored (its execution validated from the snapshot, not
    built by the fold) is claimed, then requeued when its lease expires: pending and
    queued again, without its claim."""
    state, log = _state()
    sid = log.append()
    log.fold(sid, EventQueued())
    restored = snapshot.empty_like(state)
    assert isinstance(restored, ExecutorState)
    snapshot.load_state(restored, snapshot.dump_state(state))
    log.state = restored
    log.claim(sid)
    assert restored.pile[sid].status is EventStatus.PROCESSING
    log.fold(sid, EventRequeued(reason="lease_expired", previous_owner="p1", attempt=1, by="p2"))
    assert restored.pile[sid].status is EventStatus.PENDING
    assert list(restored.queue) == [sid] and restored.claims == {}


@pytest.mark.parametrize(
    ("records", "status"),
    [
        ([EventQueued(), EventQueued()], EventStatus.PENDING),
        ([EventQueued(), EventFinished(status="completed", attempt=1)], EventStatus.COMPLETED),
        (
            [EventQueued(), EventRequeued(reason="lease_expired", previous_owner="p1", attempt=1)],
            EventStatus.PENDING,
        ),
        (
            [EventQueued(), EventAbandoned(reason="lease_expired", previous_owner="p1", attempt=1)],
            EventStatus.FAILED,
        ),
    ],
    ids=["queued-twice", "finished-unclaimed", "requeued-unclaimed", "abandoned-unclaimed"],
)
def test_a_transition_lionstore_never_writes_still_folds(
    records: list[Any], status: EventStatus
) -> None:
    """lionstore writes none of these (an event queued twice, an outcome or a take-over
    with no claim: the repository decides from the claims, and verify reports them), but
    a file edited with its digest chain recomputed can hold them. The fold takes each
    record for what it says rather than stopping at a KeyError: the projection shows the
    log, and verify says where it went wrong."""
    state, log = _state()
    sid = log.append()
    for data in records:
        log.fold(sid, data)
    assert state.pile[sid].status is status
    assert state.claims == {} and state.versions[sid] == 1 + len(records)
