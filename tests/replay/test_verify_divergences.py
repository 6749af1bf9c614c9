"""verify(): one tampering test per divergence, asserting the whole Divergence.

Each test writes a small run with the real Executor or Exchange into a SQLite file,
then either appends a record carrying a deliberately wrong decision (through
``Store.append``, which checks versions but not decisions) or edits a stored record
behind lionstore's back. The report must name the record's position, the exact
reason, the record the code would have written (or None) and the record found, as
stored in the file (read back with sqlite3, not through lionstore)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bounds import bounded
from dbtools import execute, query, rechain, set_field
from replay_scenarios import Recording, ReplayJob, positions, record_run

import lionstore
import lionstore.repositories.executor as decisions
from lionstore.cli import main
from lionstore.domain.event_records import (
    EventAbandoned,
    EventAppended,
    EventClaimed,
    EventFinished,
    EventLeaseRenewed,
    EventQueued,
    EventRequeued,
    EventRetried,
    EventSkipped,
    ProcessorStarted,
)
from lionstore.domain.ids import IDType
from lionstore.domain.mail_records import (
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailExcluded,
    MailSent,
    SourceDeleted,
)
from lionstore.domain.records import RecordData
from lionstore.replay import VerifyReport, verify
from lionstore.replay.verify import Divergence
from lionstore.repositories.leases import OWNER_GONE

START = datetime(2026, 1, 1, tzinfo=UTC)
START_US = 1_767_225_600_000_000  # START in microseconds since 1970
LEASE_US = 10_000_000


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Nap(lionstore.Event):
    async def invoke(self) -> None:
        self.response = "ok"


def shown(path: str, position: int) -> dict[str, Any]:
    """The record at ``position`` as a divergence shows it, read with sqlite3."""
    ((kind, stream_id, version, data),) = query(
        path,
        "SELECT r.kind, s.stream_id, r.stream_version, r.data FROM lionstore_records r"
        " JOIN lionstore_streams s ON s.stream_no = r.stream_no WHERE r.position = ?",
        position,
    )
    return {
        "position": position,
        "kind": kind,
        "stream_id": stream_id,
        "stream_version": version,
        "data": json.loads(data),
    }


def head(path: str) -> int:
    ((last,),) = query(path, "SELECT MAX(position) FROM lionstore_records")
    return int(last)


async def _verify(path: str, run: str) -> VerifyReport:
    async with lionstore.open(path, readonly=True) as store:
        return await verify(store, run=run)


def verify_file(path: str, run: str) -> VerifyReport:
    return asyncio.run(_verify(path, run))


def append(
    path: str, run: str, records: list[tuple[IDType, RecordData]], at_us: int | None = None
) -> list[int]:
    """Append ``records`` in one commit (recorded at ``at_us``, default START)."""

    async def write() -> list[int]:
        clock = Clock()
        if at_us is not None:
            clock.now = START + timedelta(microseconds=at_us - START_US)
        async with lionstore.open(path, run=run, clock=clock) as store:
            return await store.append(records)

    return asyncio.run(write())


# -- an event claimed and still running --------------------------------------------------


@dataclass
class Held:
    path: str
    run: str
    owner: str
    event: IDType


async def _hold(path: str, max_attempts: int) -> Held:
    """processor.started (capacity 10, lease 10 s), one event appended, queued and
    claimed at START (attempt 1), never finished."""
    async with lionstore.open(path, run="held", clock=Clock()) as store:
        executor = lionstore.Executor(
            {
                "queue_capacity": 10,
                "capacity_refresh_time": 0.01,
                "lease_seconds": LEASE_US / 1_000_000,
                "max_attempts": max_attempts,
            },
            store=store,
            name="ex",
        )
        await executor.start()
        assert executor.processor is not None
        event = Nap()
        await executor.processor.enqueue(event)
        assert await bounded(executor.processor.dequeue(), "dequeue()") is event
        owner = executor.processor.owner
        executor.close()
    return Held(path, "held", owner, event.id)


def hold(tmp_path: Path, max_attempts: int = 2) -> Held:
    held = asyncio.run(_hold(str(tmp_path / "held.db"), max_attempts))
    assert verify_file(held.path, held.run).ok
    return held


def _finished(h: Held, attempt: int) -> RecordData:
    return EventFinished(status="completed", attempt=attempt, duration_us=1, response="ok")


def _renewed(owner: str | None, attempt: int) -> Callable[[Held], RecordData]:
    def make(h: Held) -> RecordData:
        return EventLeaseRenewed(
            owner=h.owner if owner is None else owner,
            attempt=attempt,
            lease_expires_us=START_US + 2 * LEASE_US,
        )

    return make


def _take_over(
    kind: type[EventRequeued | EventAbandoned], reason: str, by: str | None = None
) -> Callable[[Held], RecordData]:
    def make(h: Held) -> RecordData:
        return kind(
            reason=reason, previous_owner=h.owner, attempt=1, by=h.owner if by is None else by
        )

    return make


NOT_CLAIMED = "an outcome for an event that is not claimed at that attempt"
NOT_HOLDER = "a lease renewed by a processor that does not hold the claim"
EARLY = "a lease was taken over before it expired"

HELD_CASES: list[tuple[str, Callable[[Held], RecordData], int, str | None]] = [
    # (name, the record appended, when (µs after START), the reason, None: verifies)
    ("outcome-at-its-attempt", lambda h: _finished(h, 1), 1, None),
    ("outcome-at-another-attempt", lambda h: _finished(h, 2), 1, NOT_CLAIMED),
    ("renewal-by-the-holder", _renewed(None, 1), 1, None),
    ("renewal-by-another-owner", _renewed("someone-else", 1), 1, NOT_HOLDER),
    ("renewal-at-another-attempt", _renewed(None, 2), 1, NOT_HOLDER),
    (
        "retried-while-running",
        lambda h: EventRetried(attempt=2),
        1,
        "retried an event that had not finished",
    ),
    ("queued-while-claimed", lambda h: EventQueued(), 1, "queued an event that was not pending"),
    ("take-over-after-the-lease", _take_over(EventRequeued, "lease_expired"), LEASE_US, None),
    ("take-over-before-the-lease", _take_over(EventRequeued, "lease_expired"), LEASE_US - 1, EARLY),
    ("take-over-of-a-gone-owner", _take_over(EventRequeued, OWNER_GONE), 1, None),
    (
        # no processor.started to take max_attempts from (records written before
        # take-overs named their processor have by=""): the attempt rule is not checked
        "abandon-by-an-unknown-processor",
        _take_over(EventAbandoned, "abandoned", "elsewhere"),
        LEASE_US,
        None,
    ),
    (
        "claim-by-a-processor-never-started",
        lambda h: EventClaimed(owner="ghost", attempt=2, lease_expires_us=START_US, cycle=1),
        1,
        "processor ghost claims events but never recorded processor.started",
    ),
]


@pytest.mark.parametrize(
    ("make", "after_us", "reason"),
    [pytest.param(m, t, r, id=n) for n, m, t, r in HELD_CASES],
)
def test_a_record_about_a_running_event(
    tmp_path: Path, make: Callable[[Held], RecordData], after_us: int, reason: str | None
) -> None:
    held = hold(tmp_path)
    before = head(held.path)
    (position,) = append(held.path, held.run, [(held.event, make(held))], START_US + after_us)
    report = verify_file(held.path, held.run)
    assert report.records == before + 1
    if reason is None:
        assert report.ok, report.divergence
        assert report.divergence is None
        return
    assert report.divergence == Divergence(position, reason, None, shown(held.path, position))
    assert not report.ok


@pytest.mark.parametrize(
    ("max_attempts", "kind", "want"),
    [(2, EventAbandoned, "event.requeued"), (1, EventRequeued, "event.abandoned")],
)
def test_a_take_over_with_the_wrong_outcome_for_its_attempt(
    tmp_path: Path, max_attempts: int, kind: type[EventRequeued | EventAbandoned], want: str
) -> None:
    held = hold(tmp_path, max_attempts)
    record = _take_over(kind, "lease_expired")(held)
    (position,) = append(held.path, held.run, [(held.event, record)], START_US + LEASE_US)
    report = verify_file(held.path, held.run)
    assert report.divergence == Divergence(
        position,
        f"attempt 1 of max {max_attempts} should be {want}",
        {"kind": want, "stream_id": str(held.event)},
        shown(held.path, position),
    )


UNKNOWN_CASES: list[tuple[RecordData, str]] = [
    (EventFinished(status="completed", attempt=1), "event.finished for an unknown event"),
    (EventQueued(), "event.queued for an unknown event"),
    (EventRetried(attempt=2), "event.retried for an unknown event"),
    (EventLeaseRenewed(owner="x", attempt=1, lease_expires_us=START_US), NOT_HOLDER),
    (
        EventRequeued(reason="lease_expired", previous_owner="x", attempt=1, by="x"),
        "a lease take-over of an unclaimed event",
    ),
    (
        EventClaimed(owner="x", attempt=1, lease_expires_us=START_US, cycle=7),
        "a cycle record for an unknown event",
    ),
    (EventSkipped(owner="x", cycle=7), "a cycle record for an unknown event"),
    (MailCollected(), "mail.collected for an unknown mail"),
    (MailExcluded(), "mail.excluded for an unknown mail"),
]


@pytest.mark.parametrize(
    ("record", "reason"), [pytest.param(d, r, id=d.kind) for d, r in UNKNOWN_CASES]
)
def test_a_record_for_a_stream_no_event_or_mail_owns(
    tmp_path: Path, record: RecordData, reason: str
) -> None:
    held = hold(tmp_path)
    (position,) = append(held.path, held.run, [(IDType.create(), record)], START_US + 1)
    report = verify_file(held.path, held.run)
    assert report.divergence == Divergence(position, reason, None, shown(held.path, position))


def test_a_take_over_of_a_finished_event(tmp_path: Path) -> None:
    held = hold(tmp_path)
    append(held.path, held.run, [(held.event, _finished(held, 1))], START_US + 1)
    record = _take_over(EventRequeued, "lease_expired")(held)
    (position,) = append(held.path, held.run, [(held.event, record)], START_US + LEASE_US)
    report = verify_file(held.path, held.run)
    assert report.divergence == Divergence(
        position, "a lease take-over of an unclaimed event", None, shown(held.path, position)
    )


def test_a_retry_of_a_finished_event_and_a_queue_of_a_pending_one_verify(tmp_path: Path) -> None:
    held = hold(tmp_path)
    append(held.path, held.run, [(held.event, _finished(held, 1))], START_US + 1)
    append(held.path, held.run, [(held.event, EventRetried(attempt=2))], START_US + 2)
    append(held.path, held.run, [(held.event, EventQueued())], START_US + 3)
    report = verify_file(held.path, held.run)
    assert report.ok, report.divergence
    assert report.counts["events"] == {"pending": 1}


# -- mail ----------------------------------------------------------------------------------


@dataclass
class Post:
    path: str
    run: str
    a: IDType
    b: IDType
    m1: IDType  # a -> b, sent first
    m2: IDType  # a -> b, sent second
    lost: IDType  # b -> a source nobody added


async def _post(path: str, stage: str) -> Post:
    async with lionstore.open(path, run="post") as store:
        exchange = lionstore.Exchange(store=store, name="post")
        await exchange.load()
        a, b = lionstore.Source(), lionstore.Source()
        await exchange.add_source([a, b])
        m1 = exchange.create_mail(a, b, "message", "one")
        m2 = exchange.create_mail(a, b, "message", "two")
        lost = exchange.create_mail(b, IDType.create(), "message", "to nobody")
        await a.send(m1)
        await a.send(m2)
        await b.send(lost)
        if stage in ("buffer", "buffer-a-deleted", "inbox"):
            await exchange.collect(a)
        if stage == "buffer-a-deleted":  # a's collected mail stays, to be delivered
            await exchange.delete_source(a)
        if stage == "inbox":
            await exchange.deliver(b)
        if stage == "dead":
            await exchange.collect(b)
    return Post(path, "post", a.id, b.id, m1.id, m2.id, lost.id)


ROUTED = "the mail should have been routed differently"
COLLECTED: dict[str, Any] = {"kind": "mail.collected", "data": {}}
DELIVERED: dict[str, Any] = {"kind": "mail.delivered", "data": {}}
UNKNOWN_RECIPIENT: dict[str, Any] = {
    "kind": "mail.dead_lettered",
    "data": {"reason": "recipient_unknown", "stage": "outbox"},
}

MAIL_CASES: list[tuple[str, str, str, RecordData, str | None, dict[str, Any] | None]] = [
    # (name, stage, mail, the record appended, the reason (None: verifies), expected)
    ("collect-the-head", "outbox", "m1", MailCollected(), None, None),
    (
        "collect-behind-the-head",
        "outbox",
        "m2",
        MailCollected(),
        "collected out of FIFO order",
        None,
    ),
    ("exclude-from-an-outbox", "outbox", "m2", MailExcluded(), None, None),
    (
        "dead-letter-to-an-active-recipient",
        "outbox",
        "m1",
        MailDeadLettered(reason="recipient_unknown", stage="outbox"),
        ROUTED,
        COLLECTED,
    ),
    (
        "sender-deleted-while-it-is-active",
        "outbox",
        "m1",
        MailDeadLettered(reason="sender_deleted", stage="outbox"),
        ROUTED,
        COLLECTED,
    ),
    ("deliver-from-an-outbox", "outbox", "m1", MailDelivered(), ROUTED, COLLECTED),
    (
        "collect-to-an-unknown-recipient",
        "outbox",
        "lost",
        MailCollected(),
        ROUTED,
        UNKNOWN_RECIPIENT,
    ),
    ("deliver-the-head", "buffer", "m1", MailDelivered(), None, None),
    (
        "deliver-behind-the-head",
        "buffer",
        "m2",
        MailDelivered(),
        "delivered out of FIFO order",
        None,
    ),
    ("collect-from-the-buffer", "buffer", "m1", MailCollected(), ROUTED, DELIVERED),
    ("exclude-from-the-buffer", "buffer", "m2", MailExcluded(), None, None),
    (
        "recipient-deleted-while-it-is-active",
        "buffer",
        "m1",
        MailDeadLettered(reason="recipient_deleted", stage="buffer"),
        ROUTED,
        DELIVERED,
    ),
    (
        "dead-letter-behind-the-head",
        "buffer",
        "m2",
        MailDeadLettered(reason="recipient_deleted", stage="buffer"),
        "delivered out of FIFO order",
        None,
    ),
    (
        "sender-deleted-in-the-buffer-while-it-is-active",
        "buffer",
        "m1",
        MailDeadLettered(reason="sender_deleted", stage="buffer"),
        ROUTED,
        DELIVERED,
    ),
    ("deliver-from-a-deleted-sender", "buffer-a-deleted", "m1", MailDelivered(), None, None),
    (
        # what earlier versions wrote when deleting a: accepted anywhere in the buffer
        "earlier-versions-sender-deleted-in-the-buffer",
        "buffer-a-deleted",
        "m2",
        MailDeadLettered(reason="sender_deleted", stage="buffer"),
        None,
        None,
    ),
    (
        "sender-deleted-at-the-wrong-stage",
        "buffer-a-deleted",
        "m2",
        MailDeadLettered(reason="sender_deleted", stage="outbox"),
        "delivered out of FIFO order",
        None,
    ),
    (
        "collect-from-an-inbox",
        "inbox",
        "m1",
        MailCollected(),
        "mail.collected for a mail in inbox",
        None,
    ),
    ("exclude-from-an-inbox", "inbox", "m2", MailExcluded(), None, None),
    (
        "deliver-a-dead-letter",
        "dead",
        "lost",
        MailDelivered(),
        "mail.delivered for a mail in dead",
        None,
    ),
    (
        "exclude-a-dead-letter",
        "dead",
        "lost",
        MailExcluded(),
        "excluded a mail that was not in a mailbox",
        None,
    ),
]


@pytest.mark.parametrize(
    ("stage", "which", "record", "reason", "expected"),
    [pytest.param(s, w, d, r, e, id=n) for n, s, w, d, r, e in MAIL_CASES],
)
def test_a_mail_moved(
    tmp_path: Path,
    stage: str,
    which: str,
    record: RecordData,
    reason: str | None,
    expected: dict[str, Any] | None,
) -> None:
    post = asyncio.run(_post(str(tmp_path / "post.db"), stage))
    assert verify_file(post.path, post.run).ok
    mail: IDType = getattr(post, which)
    (position,) = append(post.path, post.run, [(mail, record)])
    report = verify_file(post.path, post.run)
    if reason is None:
        assert report.ok, report.divergence
        return
    want = None if expected is None else {"position": position, **expected, "stream_id": str(mail)}
    if want is not None:
        want = {k: want[k] for k in ("position", "kind", "stream_id", "data")}
    assert report.divergence == Divergence(position, reason, want, shown(post.path, position))


async def _deletions(path: str) -> None:
    """delete_source dead-letters: mail to the deleted source waiting behind other mail
    in an outbox, its own outbox, its buffered mail; then mail a deleted source sent."""
    async with lionstore.open(path, run="deletions") as store:
        exchange = lionstore.Exchange(store=store, name="post")
        await exchange.load()
        a, b, c = lionstore.Source(), lionstore.Source(), lionstore.Source()
        await exchange.add_source([a, b, c])
        await c.send(exchange.create_mail(c, b, "message", "c to b, buffered"))
        await b.send(exchange.create_mail(b, c, "message", "b to c, buffered"))
        await exchange.collect_all()
        await a.send(exchange.create_mail(a, b, "message", "a to b"))
        await a.send(exchange.create_mail(a, c, "message", "a to c, behind a to b"))
        await c.send(exchange.create_mail(c, a, "message", "c to a, first"))
        await c.send(exchange.create_mail(c, a, "message", "c to a, second"))
        await exchange.delete_source(c)
        await c.send(exchange.create_mail(c, a, "message", "sent after its deletion"))
        await exchange.collect_all()
        await exchange.deliver_all()


def test_what_deleting_a_source_dead_letters_verifies(tmp_path: Path) -> None:
    path = str(tmp_path / "deletions.db")
    asyncio.run(_deletions(path))
    dead = [
        json.loads(data)
        for (data,) in query(
            path, "SELECT data FROM lionstore_records WHERE kind = 'mail.dead_lettered'"
        )
    ]
    assert sorted((d["reason"], d["stage"]) for d in dead) == [
        ("recipient_deleted", "buffer"),
        ("recipient_deleted", "outbox"),
        ("sender_deleted", "outbox"),
        ("sender_deleted", "outbox"),
        ("sender_deleted", "outbox"),
    ]
    report = verify_file(path, "deletions")
    assert report.ok, report.divergence
    assert report.counts["mail"] == {"inbox": 2, "dead": 5}


def test_a_hidden_sender_deleted_dead_letter_is_caught(tmp_path: Path) -> None:
    """A dead letter's reason edited to sender_deleted, chain recomputed: the sender was
    never deleted, so the code would have collected it."""
    post = asyncio.run(_post(str(tmp_path / "post.db"), "dead"))
    ((position,),) = query(
        post.path, "SELECT position FROM lionstore_records WHERE kind = 'mail.dead_lettered'"
    )
    assert set_field(post.path, position, "reason", "sender_deleted") == 1
    rechain(post.path, post.run)
    report = verify_file(post.path, post.run)
    assert report.divergence == Divergence(
        position,
        ROUTED,
        {
            "position": position,
            "kind": "mail.dead_lettered",
            "stream_id": str(post.lost),
            "data": {"reason": "recipient_unknown", "stage": "outbox"},
        },
        shown(post.path, position),
    )


# -- integrity -------------------------------------------------------------------------------


DIGEST = (
    "digest mismatch: this record, or one before it in the run, was changed or deleted "
    "after it was written"
)


def test_an_edit_is_reported_with_the_record_as_stored(tmp_path: Path) -> None:
    held = hold(tmp_path)
    (claimed,) = query(
        held.path, "SELECT position FROM lionstore_records WHERE kind = 'event.claimed'"
    )
    position = claimed[0]
    assert set_field(held.path, position, "attempt", 5) == 1
    report = verify_file(held.path, held.run)
    assert report.divergence == Divergence(position, DIGEST, None, shown(held.path, position))
    assert report.records == position - 1
    assert report.to_dict() == {
        "run_id": str(report.run_id),
        "ok": False,
        "records": position - 1,
        "cycles": 0,
        "divergence": {
            "position": position,
            "reason": DIGEST,
            "expected": None,
            "actual": shown(held.path, position),
        },
        "counts": report.counts,
    }


def test_a_stream_version_jump_is_reported_exactly(tmp_path: Path) -> None:
    held = hold(tmp_path)
    (position,) = append(held.path, held.run, [(held.event, _finished(held, 1))], START_US + 1)
    assert query(
        held.path, "SELECT stream_version FROM lionstore_records WHERE position = ?", position
    ) == [(4,)]
    execute(
        held.path, "UPDATE lionstore_records SET stream_version = 6 WHERE position = ?", position
    )
    rechain(held.path, held.run)
    report = verify_file(held.path, held.run)
    assert report.divergence == Divergence(
        position,
        f"stream {held.event} jumps from version 3 to 6",
        None,
        shown(held.path, position),
    )


def test_a_known_kind_that_does_not_decode(tmp_path: Path) -> None:
    held = hold(tmp_path)
    (position,) = append(held.path, held.run, [(held.event, _finished(held, 1))], START_US + 1)
    execute(
        held.path,
        "UPDATE lionstore_records SET data = ? WHERE position = ?",
        '{"status":"finished-ish"}',
        position,
    )
    rechain(held.path, held.run)
    report = verify_file(held.path, held.run)
    assert report.divergence == Divergence(
        position,
        "a event.finished record that does not decode",
        None,
        shown(held.path, position),
    )
    assert report.records == position - 1


def test_a_record_the_fold_cannot_take(tmp_path: Path) -> None:
    """An appended event whose metadata names another class: the projection refuses it
    (it is never imported); verify reports the projection's error at its position."""
    held = hold(tmp_path)
    appended = EventAppended(
        executor="ex",
        event_class="tests.Nap",
        created_at=1.0,
        metadata={"lion_class": "os.system"},
    )
    (position,) = append(held.path, held.run, [(IDType.create(), appended)], START_US + 1)
    report = verify_file(held.path, held.run)
    assert report.divergence is not None
    assert report.divergence.position == position
    assert report.divergence.reason.startswith(
        f"the event.appended record at position {position} cannot be applied: "
    )
    assert report.divergence.expected is None
    assert report.divergence.actual == shown(held.path, position)


# -- processor cycles ------------------------------------------------------------------------


def _recorded(tmp_path: Path) -> tuple[Recording, str, dict[str, Any]]:
    """The replay scenario's run, its processor's owner and cycle 1's claim."""
    recording = asyncio.run(record_run(str(tmp_path / "run.db")))
    ((started,),) = query(
        recording.path, "SELECT data FROM lionstore_records WHERE kind = 'processor.started'"
    )
    first_claim = positions(recording.path, "event.claimed")[0]
    return recording, json.loads(started)["owner"], shown(recording.path, first_claim)


def test_a_cycle_that_would_defer_one_more_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cycle 1 (capacity 2) queued three jobs, claimed "fast", deferred "slow". Offered a
    third, it would also have deferred "bad": a record the log does not hold, expected
    after the cycle's last record."""
    recording, owner, claim = _recorded(tmp_path)
    original = decisions.cycle_candidates
    monkeypatch.setattr(
        decisions,
        "cycle_candidates",
        lambda state, capacity, now_us, forward: original(state, capacity + 1, now_us, forward),
    )
    report = verify_file(recording.path, recording.label)
    (deferred,) = positions(recording.path, "event.deferred")
    at_us = claim["data"]["at_us"]
    assert report.divergence == Divergence(
        deferred,
        f"processor cycle 1 of {owner} decided differently (capacity 2)",
        {
            "position": deferred,
            "kind": "event.deferred",
            "stream_id": str(recording.jobs[2]),
            "data": {
                "reason": "permission_denied",
                "retry_at_us": at_us + 20_000,
                "denials": 1,
                "owner": owner,
                "cycle": 1,
                "at_us": at_us,
                "seen": 6,
            },
        },
        None,
    )
    assert (report.cycles, report.records) == (1, deferred)


def test_a_cycle_with_another_back_off_shows_both_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording, owner, claim = _recorded(tmp_path)
    original = decisions.backoff_for
    monkeypatch.setattr(
        decisions, "backoff_for", lambda refresh, cap: original(refresh * 2, cap * 2)
    )
    report = verify_file(recording.path, recording.label)
    (deferred,) = positions(recording.path, "event.deferred")
    actual = shown(recording.path, deferred)
    data = actual["data"]
    assert data["retry_at_us"] == claim["data"]["at_us"] + 20_000
    assert report.divergence == Divergence(
        deferred,
        f"processor cycle 1 of {owner} decided differently (capacity 2)",
        {
            "position": deferred,
            "kind": "event.deferred",
            "stream_id": str(recording.jobs[1]),
            "data": {**data, "retry_at_us": data["retry_at_us"] + 20_000},
        },
        actual,
    )


@pytest.mark.parametrize("seen", [0, 6])
def test_a_second_claim_of_a_claimed_event(tmp_path: Path, seen: int) -> None:
    """A claim no cycle would have made: the event was already claimed. Seen at 6 (the
    first claim's position) the cycle is decided again; at 0 (as if it lost a race to
    every record since) the event is left out of that, and still must have been queued."""
    held = hold(tmp_path)
    record = EventClaimed(
        owner=held.owner, attempt=2, lease_expires_us=START_US, cycle=9, seen=seen
    )
    (position,) = append(held.path, held.run, [(held.event, record)], START_US + 1)
    report = verify_file(held.path, held.run)
    reason = (
        "decided about an event that was not in its queue"
        if seen == 0
        else "decided differently (capacity 10)"
    )
    assert report.divergence == Divergence(
        position,
        f"processor cycle 9 of {held.owner} {reason}",
        None,
        shown(held.path, position),
    )
    assert report.cycles == 2


# -- the report, to_dict and the command line ------------------------------------------------


def test_a_verified_report_as_a_dict_and_as_the_commands_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = hold(tmp_path)
    report = verify_file(held.path, held.run)
    want = {
        "run_id": str(report.run_id),
        "ok": True,
        "records": 6,
        "cycles": 1,
        "divergence": None,
        "counts": {"events": {"processing": 1}, "mail": {}},
    }
    assert report.to_dict() == want
    capsys.readouterr()
    assert main(["verify", held.path, "--run", held.run, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {**want, "label": "held"}


def test_a_divergence_as_the_commands_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = hold(tmp_path)
    (position,) = append(held.path, held.run, [(held.event, _finished(held, 2))], START_US + 1)
    report = verify_file(held.path, held.run)
    divergence = {
        "position": position,
        "reason": NOT_CLAIMED,
        "expected": None,
        "actual": shown(held.path, position),
    }
    assert report.divergence is not None
    assert report.divergence.to_dict() == divergence
    capsys.readouterr()
    assert main(["verify", held.path, "--run", held.run, "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {
        "run_id": str(report.run_id),
        "ok": False,
        "records": position,
        "cycles": 1,
        "divergence": divergence,
        "counts": {"events": {"processing": 1}, "mail": {}},
        "label": "held",
    }


class VerifyNote(RecordData):
    """A record kind no projection folds (verify checks only its place in the chain)."""

    kind: ClassVar[str] = "test.verify.note"
    n: int


def test_progress_is_reported_every_ten_thousand_records(tmp_path: Path) -> None:
    held = hold(tmp_path)
    stream = IDType.create()
    append(held.path, held.run, [(stream, VerifyNote(n=i)) for i in range(10_000)])
    seen: list[int] = []

    async def check() -> VerifyReport:
        async with lionstore.open(held.path, readonly=True) as store:
            return await verify(store, run=held.run, progress=seen.append)

    report = asyncio.run(check())
    assert report.ok, report.divergence
    assert report.records == 10_006
    assert seen == [10_000]


def test_a_cycle_that_would_not_have_offered_its_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without "fast" among the candidates, cycle 1 would have deferred "slow" where the
    log holds the claim of "fast": reported at that claim, not at the cycle's end."""
    recording, owner, claim = _recorded(tmp_path)
    original = decisions.cycle_candidates
    monkeypatch.setattr(
        decisions,
        "cycle_candidates",
        lambda state, capacity, now_us, forward: original(state, capacity, now_us, forward)[1:],
    )
    report = verify_file(recording.path, recording.label)
    at_us = claim["data"]["at_us"]
    assert claim["stream_id"] == str(recording.jobs[0])
    assert report.divergence == Divergence(
        claim["position"],
        f"processor cycle 1 of {owner} decided differently (capacity 2)",
        {
            "position": claim["position"],
            "kind": "event.deferred",
            "stream_id": str(recording.jobs[1]),
            "data": {
                "reason": "permission_denied",
                "retry_at_us": at_us + 20_000,
                "denials": 1,
                "owner": owner,
                "cycle": 1,
                "at_us": at_us,
                "seen": 6,
            },
        },
        claim,
    )


class SkipOrRetry(lionstore.Processor):
    """Denies "skip" always and "again" once; skips the first, retries the second at
    once (an override of handle_denied returning False: no back-off)."""

    event_type: ClassVar[type[lionstore.Event]] = ReplayJob

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.denied: set[str] = set()

    async def request_permission(self, **kwargs: Any) -> bool:
        label = str(kwargs.get("label"))
        if label == "skip" or (label == "again" and label not in self.denied):
            self.denied.add(label)
            return False
        return True

    async def handle_denied(self, event: lionstore.Event) -> bool:
        return isinstance(event, ReplayJob) and event.label == "skip"


class SkipOrRetryExecutor(lionstore.Executor):
    processor_type: ClassVar[type[lionstore.Processor]] = SkipOrRetry


async def _skip_or_retry(path: str) -> None:
    async with lionstore.open(path, run="denials") as store:
        executor = SkipOrRetryExecutor(
            {"queue_capacity": 2, "capacity_refresh_time": 0.01}, store=store, name="ex"
        )
        await executor.start()
        await executor.extend([ReplayJob(value=1, label="skip"), ReplayJob(value=2, label="again")])
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        executor.close()


def test_a_skip_and_a_deferral_due_at_once_are_taken_from_the_log(tmp_path: Path) -> None:
    """handle_denied is user code: verify takes its answers (SKIPPED, or due at once)
    from the log and decides the rest around them."""
    path = str(tmp_path / "denials.db")
    asyncio.run(_skip_or_retry(path))
    assert len(positions(path, "event.skipped")) == 1
    (deferred,) = positions(path, "event.deferred")
    data = shown(path, deferred)["data"]
    assert data["retry_at_us"] == data["at_us"]
    report = verify_file(path, "denials")
    assert report.ok, report.divergence
    assert report.counts["events"] == {"skipped": 1, "completed": 1}


# -- a cycle that lost a race ------------------------------------------------------------------


def _processor(owner: str, capacity: int) -> ProcessorStarted:
    return ProcessorStarted(
        executor="ex",
        executor_class="tests.Executor",
        processor_class="tests.Processor",
        owner=owner,
        queue_capacity=capacity,
        capacity_refresh_time=0.01,
        max_attempts=3,
        lease_seconds=10.0,
        max_backoff=60.0,
    )


def _claimed(owner: str, seen: int) -> EventClaimed:
    return EventClaimed(
        owner=owner,
        attempt=1,
        lease_expires_us=START_US + LEASE_US,
        cycle=1,
        at_us=START_US,
        seen=seen,
    )


@pytest.mark.parametrize("taken", [1, 2])
def test_a_cycle_that_lost_a_race(tmp_path: Path, taken: int) -> None:
    """Processors x (capacity 1) and y (capacity 2) both saw the queue e0, e1, e2. x
    claimed e0 first; y, deciding again without it, claimed one event: the head of what
    was left (e1) verifies, e2 does not."""
    path, run = str(tmp_path / "race.db"), "race"
    events = [IDType.create() for _ in range(3)]
    appended = [
        (e, EventAppended(executor="ex", event_class="tests.Nap", created_at=1.0)) for e in events
    ]
    stream = IDType.create()
    append(path, run, [(stream, _processor("x", 1)), (stream, _processor("y", 2)), *appended])
    queued = append(path, run, [(e, EventQueued()) for e in events], START_US + 1)
    seen = queued[-1]
    append(path, run, [(events[0], _claimed("x", seen))], START_US + 2)
    (position,) = append(path, run, [(events[taken], _claimed("y", seen))], START_US + 3)
    report = verify_file(path, run)
    assert report.cycles == 2
    if taken == 1:
        assert report.ok, report.divergence
        return
    assert report.divergence == Divergence(
        position,
        "processor cycle 1 of y decided differently (capacity 2)",
        {
            "position": position,
            "kind": "event.claimed",
            "stream_id": str(events[1]),
            "data": {**_claimed("y", seen).model_dump(mode="json")},
        },
        shown(path, position),
    )


# -- verify() itself ---------------------------------------------------------------------------


def test_verify_defaults_to_the_stores_run(tmp_path: Path) -> None:
    held = hold(tmp_path)

    async def check() -> VerifyReport:
        async with lionstore.open(held.path, run=held.run, readonly=True) as store:
            return await verify(store)

    report = asyncio.run(check())
    assert report.ok, report.divergence
    assert (report.records, report.cycles) == (6, 1)


def test_a_later_commit_does_not_inherit_a_deletion(tmp_path: Path) -> None:
    """The dead letter of mail to a deleted source is exempt from the FIFO rule only in
    the deletion's own commit: in the next one (recorded later, at the next position)
    it must come from the head of its outbox."""
    post = asyncio.run(_post(str(tmp_path / "post.db"), "outbox"))
    append(post.path, post.run, [(post.b, SourceDeleted(router="post"))], START_US)
    dead = MailDeadLettered(reason="recipient_deleted", stage="outbox")
    (position,) = append(post.path, post.run, [(post.m2, dead)], START_US + 1)
    report = verify_file(post.path, post.run)
    assert report.divergence == Divergence(
        position, "collected out of FIFO order", None, shown(post.path, position)
    )


def _race(tmp_path: Path) -> tuple[str, str, list[IDType]]:
    """The race above, y taking e1: e0 and e1 claimed, e2 queued."""
    path, run = str(tmp_path / "race.db"), "race"
    events = [IDType.create() for _ in range(3)]
    appended = [
        (e, EventAppended(executor="ex", event_class="tests.Nap", created_at=1.0)) for e in events
    ]
    stream = IDType.create()
    append(path, run, [(stream, _processor("x", 1)), (stream, _processor("y", 2)), *appended])
    seen = append(path, run, [(e, EventQueued()) for e in events], START_US + 1)[-1]
    append(path, run, [(events[0], _claimed("x", seen))], START_US + 2)
    append(path, run, [(events[1], _claimed("y", seen))], START_US + 3)
    assert verify_file(path, run).ok
    return path, run, events


def test_a_take_over_of_two_events_then_another_record_in_one_commit(tmp_path: Path) -> None:
    """The two take-overs are checked together, the retry after them on its own."""
    path, run, events = _race(tmp_path)
    records: list[tuple[IDType, RecordData]] = [
        (e, EventRequeued(reason="lease_expired", previous_owner=o, attempt=1, by="z"))
        for e, o in zip(events[:2], "xy", strict=True)
    ]
    records.append((events[2], EventRetried(attempt=2)))
    *_, position = append(path, run, records, START_US + LEASE_US)
    report = verify_file(path, run)
    assert report.divergence == Divergence(
        position, "retried an event that had not finished", None, shown(path, position)
    )


def test_mail_from_a_sender_never_added_is_routed_by_its_recipient(tmp_path: Path) -> None:
    """Only a deleted sender's mail is dead-lettered as sender_deleted."""
    post = asyncio.run(_post(str(tmp_path / "post.db"), "outbox"))
    mail = IDType.create()
    sent = MailSent(
        router="post",
        sender=IDType.create(),
        recipient=post.b,
        created_at=1.0,
        package={
            "id": str(IDType.create()),
            "created_at": 1.0,
            "category": "message",
            "item": "from nowhere",
            "item_class": None,
            "request_source": None,
        },
    )
    append(post.path, post.run, [(mail, sent)], START_US)
    append(post.path, post.run, [(mail, MailCollected())], START_US + 1)
    report = verify_file(post.path, post.run)
    assert report.ok, report.divergence
    assert report.counts["mail"] == {"outbox": 3, "buffer": 1}
