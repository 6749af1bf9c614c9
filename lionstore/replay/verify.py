"""Verify: re-run a recorded run's decisions and compare them with the log.

Three layers, checked record by record in position order; the first failure is
reported with its position, the record the code would have written and the
record found:

1. **Integrity.** Each record's digest chains to the run's previous record
   (``lionstore.log.digest``); stream versions are contiguous; every record of
   a known kind decodes. An edit or deletion made behind lionstore's back fails
   here, at the first record it affects.
2. **Decisions.** Each processor cycle (the records one ``(owner, cycle)`` wrote)
   is decided again by the code the live Processor uses
   (``cycle_candidates`` and ``decide_claim`` in ``repositories/executor.py``)
   from the projection the cycle saw, with the recorded permission answers fed
   back; lease take-overs are checked against ``max_attempts`` and the lease (as
   renewed by ``event.lease_renewed``; a take-over before it expires must say the
   owner's process was gone). A change to the
   decision code (the capacity rule, the back-off) shows up as a divergence.
3. **Transitions.** Outcomes, collections and deliveries must follow the state
   machine (an outcome only for the current claim and attempt; mail collected
   and delivered FIFO from the head of its queue; dead letters with the reason
   the code gives). Recorded ``invoke()`` outcomes are inputs: they are fed back,
   never recomputed, so verifying runs no user code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lionstore.domain.event import TERMINAL_STATUSES
from lionstore.domain.event_records import (
    EventAbandoned,
    EventClaimed,
    EventDeferred,
    EventFinished,
    EventLeaseRenewed,
    EventQueued,
    EventRequeued,
    EventRetried,
    EventSkipped,
)
from lionstore.domain.ids import IDType
from lionstore.domain.mail_records import (
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailExcluded,
    SourceDeleted,
)
from lionstore.domain.records import NewRecord, Recorded, UnknownRecord, record_kinds
from lionstore.errors import RecordError
from lionstore.log.digest import chain_start, record_digest
from lionstore.log.store import Store
from lionstore.projections.executor import ExecutorState
from lionstore.projections.mail import MailState
from lionstore.replay.state import RunProjection
from lionstore.repositories import executor as executor_decisions
from lionstore.repositories.leases import OWNER_GONE

__all__ = ["Divergence", "VerifyReport", "verify"]


@dataclass(frozen=True)
class Divergence:
    """Where the log and the code part ways."""

    position: int
    reason: str
    expected: dict[str, Any] | None
    actual: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "reason": self.reason,
            "expected": self.expected,
            "actual": self.actual,
        }


@dataclass
class VerifyReport:
    run_id: str
    records: int = 0
    cycles: int = 0
    divergence: Divergence | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "records": self.records,
            "cycles": self.cycles,
            "divergence": self.divergence.to_dict() if self.divergence else None,
            "counts": self.counts,
        }


def _show(record: Recorded) -> dict[str, Any]:
    return {
        "position": record.position,
        "kind": record.kind,
        "stream_id": record.stream_id,
        "stream_version": record.stream_version,
        "data": record.to_json_dict()["data"],
    }


def _show_new(record: NewRecord | None, position: int) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "position": position,
        "kind": record.data.kind,
        "stream_id": record.stream_id,
        "data": record.data.model_dump(mode="json"),
    }


def _same(expected: NewRecord, actual: Recorded) -> bool:
    return (
        expected.stream_id == actual.stream_id
        and expected.data.kind == actual.kind
        and expected.data.model_dump(mode="json") == actual.to_json_dict()["data"]
    )


class _Verifier:
    def __init__(self, run_id: IDType) -> None:
        self.projection = RunProjection()
        self.tip = chain_start(run_id)
        self.versions: dict[IDType, int] = {}
        self.last_position: dict[IDType, int] = {}
        self.known_kinds = set(record_kinds())
        self.cycles = 0
        self.deleting: set[IDType] = set()  # sources deleted by the commit being checked

    # -- integrity -----------------------------------------------------------------------

    def integrity(self, r: Recorded) -> Divergence | None:
        digest = record_digest(
            self.tip,
            r.position,
            r.stream_id,
            r.stream_version,
            r.kind,
            r.kind_version,
            r.recorded_at_us,
            r.raw,
        )
        if digest != r.digest:
            return Divergence(
                r.position,
                "digest mismatch: this record, or one before it in the run, was changed or "
                "deleted after it was written",
                None,
                _show(r),
            )
        self.tip = digest
        expected_version = self.versions.get(r.stream_id, 0) + 1
        if r.stream_version != expected_version:
            return Divergence(
                r.position,
                f"stream {r.stream_id} jumps from version {expected_version - 1} to "
                f"{r.stream_version}",
                None,
                _show(r),
            )
        self.versions[r.stream_id] = r.stream_version
        if isinstance(r.data, UnknownRecord) and r.kind in self.known_kinds:
            return Divergence(r.position, f"a {r.kind} record that does not decode", None, _show(r))
        return None

    # -- a commit (records sharing one transaction) ----------------------------------------

    def commit(self, records: Sequence[Recorded]) -> Divergence | None:
        self.deleting = set()
        i = 0
        while i < len(records):
            key = _group_key(records[i])
            j = i + 1
            if key is not None:
                while j < len(records) and _group_key(records[j]) == key:
                    j += 1
            group = records[i:j]
            if key is not None and key[0] == "cycle":
                found = self.cycle(group)
            elif key is not None:
                found = self.reclaim(group)
            else:
                found = self.single(group[0])
            if found is not None:
                return found
            for r in group:
                try:
                    self.apply(r)
                except RecordError as exc:  # a record the fold cannot take: its problem
                    return Divergence(r.position, str(exc), None, _show(r))
            i = j
        return None

    def apply(self, r: Recorded) -> None:
        self.projection.apply(r)
        self.last_position[r.stream_id] = r.position

    def _executor_of(self, stream: IDType) -> ExecutorState | None:
        owner = self.projection.owner_of.get(stream)
        if owner is None or owner[0] != "executor":
            return None
        return self.projection.executors.get(owner[1])

    def _router_of(self, stream: IDType) -> MailState | None:
        owner = self.projection.owner_of.get(stream)
        if owner is None or owner[0] != "router":
            return None
        return self.projection.routers.get(owner[1])

    def cycle(self, group: Sequence[Recorded]) -> Divergence | None:
        """Decide the cycle again and compare."""
        self.cycles += 1
        first = group[0]
        data: Any = first.data
        state = self._executor_of(first.stream_id)
        if state is None:
            return Divergence(
                first.position, "a cycle record for an unknown event", None, _show(first)
            )
        config = state.processors.get(data.owner)
        if config is None:
            return Divergence(
                first.position,
                f"processor {data.owner} claims events but never recorded processor.started",
                None,
                _show(first),
            )
        at_us, seen = data.at_us, data.seen
        forward = [r.stream_id for r in group if isinstance(r.data, EventQueued)]
        claimed = {r.stream_id for r in group if isinstance(r.data, EventClaimed)}
        # Events that changed after the cycle looked (other writers) are left out of
        # the comparison: the cycle could not have seen those changes.
        touched = {s for s, p in self.last_position.items() if p > seen}
        for r in group:
            # ... but it committed against the state just before it (its expected
            # versions held), so what it decided about them was in its queue.
            sid = r.stream_id
            if sid in touched and sid not in forward and sid not in state.queue:
                return Divergence(
                    r.position,
                    f"processor cycle {data.cycle} of {data.owner} decided about an "
                    "event that was not in its queue",
                    None,
                    _show(r),
                )
        candidates = executor_decisions.cycle_candidates(
            state, config.queue_capacity, at_us, bool(forward)
        )
        raced = {s for s in touched if s in state.versions and s not in forward}
        if raced:
            # The cycle lost a race and decided again on fresher state with the batch it
            # had chosen, minus what others took meanwhile: it may hold fewer events than
            # capacity. What it did decide must still be the head of what it could see.
            decided = {r.stream_id for r in group if not isinstance(r.data, EventQueued)}
            pool = executor_decisions.cycle_candidates(
                state, config.queue_capacity + len(raced), at_us, bool(forward)
            )
            candidates = [c for c in pool if c not in raced][: len(decided - raced)]
        grants = [c for c in candidates if c in claimed or c not in {r.stream_id for r in group}]
        # handle_denied's decisions are user code: taken from the log (SKIPPED, or a
        # deferral due at once, which the seed's back-off never is).
        skips = [
            c
            for c in candidates
            if c in {r.stream_id for r in group if isinstance(r.data, EventSkipped)}
        ]
        at_once = [
            r.stream_id
            for r in group
            if isinstance(r.data, EventDeferred) and r.data.retry_at_us == r.data.at_us
        ]
        denials = [c for c in candidates if c not in grants and c not in skips]
        expected_records, _ = executor_decisions.decide_claim(
            state,
            grants,
            denials,
            forward,
            owner=data.owner,
            now_us=at_us,
            lease_us=int(config.lease_seconds * 1_000_000),
            cycle=data.cycle,
            backoff=executor_decisions.backoff_for(
                config.capacity_refresh_time, config.max_backoff
            ),
            seen=seen,
            skips=skips,
            no_backoff=at_once,
        )
        expected = [
            e for e in expected_records if e.stream_id not in touched or e.stream_id in forward
        ]
        actual = [r for r in group if r.stream_id not in touched or r.stream_id in forward]
        for k in range(max(len(expected), len(actual))):
            e = expected[k] if k < len(expected) else None
            a = actual[k] if k < len(actual) else None
            if e is not None and a is not None and _same(e, a):
                continue
            where = a.position if a is not None else group[-1].position
            return Divergence(
                where,
                f"processor cycle {data.cycle} of {data.owner} decided differently "
                f"(capacity {config.queue_capacity})",
                _show_new(e, where),
                _show(a) if a is not None else None,
            )
        return None

    def reclaim(self, group: Sequence[Recorded]) -> Divergence | None:
        for r in group:
            data: Any = r.data
            state = self._executor_of(r.stream_id)
            claim = state.claims.get(r.stream_id) if state else None
            if state is None or claim is None:
                return Divergence(
                    r.position, "a lease take-over of an unclaimed event", None, _show(r)
                )
            # An owner seen to be gone (its process ended on the taker's host) is taken
            # over at once: the log records that it was, not the evidence (a process
            # table is not replayable), so verify checks only that it says so.
            if claim.lease_expires_us > r.recorded_at_us and data.reason != OWNER_GONE:
                return Divergence(
                    r.position, "a lease was taken over before it expired", None, _show(r)
                )
            config = state.processors.get(data.by)
            if config is not None:
                abandon = claim.attempt >= config.max_attempts
                if abandon != isinstance(data, EventAbandoned):
                    want = "event.abandoned" if abandon else "event.requeued"
                    return Divergence(
                        r.position,
                        f"attempt {claim.attempt} of max {config.max_attempts} should be {want}",
                        {"kind": want, "stream_id": r.stream_id},
                        _show(r),
                    )
        return None

    def single(self, r: Recorded) -> Divergence | None:
        data: Any = r.data
        sid = r.stream_id
        if isinstance(data, (EventFinished, EventQueued, EventRetried)):
            state = self._executor_of(sid)
            if state is None:
                return Divergence(r.position, f"{r.kind} for an unknown event", None, _show(r))
            if isinstance(data, EventFinished):
                claim = state.claims.get(sid)
                if claim is None or claim.attempt != data.attempt:
                    return Divergence(
                        r.position,
                        "an outcome for an event that is not claimed at that attempt",
                        None,
                        _show(r),
                    )
            elif isinstance(data, EventQueued) and sid not in state.pending:
                return Divergence(
                    r.position, "queued an event that was not pending", None, _show(r)
                )
            elif isinstance(data, EventRetried) and state.status(sid) not in TERMINAL_STATUSES:
                return Divergence(
                    r.position, "retried an event that had not finished", None, _show(r)
                )
        elif isinstance(data, EventLeaseRenewed):
            state = self._executor_of(sid)
            claim = state.claims.get(sid) if state else None
            if claim is None or (claim.owner, claim.attempt) != (data.owner, data.attempt):
                return Divergence(
                    r.position,
                    "a lease renewed by a processor that does not hold the claim",
                    None,
                    _show(r),
                )
        elif isinstance(data, (MailCollected, MailDelivered, MailDeadLettered, MailExcluded)):
            return self.mail_move(r)
        elif isinstance(data, SourceDeleted):
            self.deleting.add(sid)
            return None
        return None

    def mail_move(self, r: Recorded) -> Divergence | None:
        state = self._router_of(r.stream_id)
        if state is None:
            return Divergence(r.position, f"{r.kind} for an unknown mail", None, _show(r))
        sid = r.stream_id
        mail = state.mails[sid]
        place = state.where.get(sid)
        data: Any = r.data
        if isinstance(data, MailExcluded):
            if place not in ("outbox", "inbox", "buffer"):
                return Divergence(
                    r.position, "excluded a mail that was not in a mailbox", None, _show(r)
                )
            return None
        if (
            isinstance(data, MailDeadLettered)
            and place == "outbox"
            and data.reason == "recipient_deleted"
            and mail.recipient in self.deleting
        ):
            # delete_source dead-letters mail to the source wherever it waits in another
            # source's outbox, in the same commit: not a collection, so no FIFO rule.
            return None
        if place == "outbox":
            if state.outbox(mail.sender)[:1] != [sid]:
                return Divergence(r.position, "collected out of FIFO order", None, _show(r))
            if not state.is_active(mail.sender) and mail.sender in state.deleted:
                # The sender's outbox, dead-lettered by its delete_source (the
                # source.deleted record comes first in that commit) or collected after.
                want: Any = MailDeadLettered(reason="sender_deleted", stage="outbox")
            elif state.is_active(mail.recipient):
                want = MailCollected()
            else:
                reason = (
                    "recipient_deleted" if mail.recipient in state.deleted else "recipient_unknown"
                )
                want = MailDeadLettered(reason=reason, stage="outbox")
        elif place == "buffer":
            if (
                isinstance(data, MailDeadLettered)
                and (data.reason, data.stage) == ("sender_deleted", "buffer")
                and not state.is_active(mail.sender)
                and mail.sender in state.deleted
            ):
                # Written by earlier lionstore versions (tests/fixtures/v1_schema0001.db):
                # delete_source dead-lettered the deleted sender's collected mail wherever
                # it waited (not from the head of a queue), deliver() any mail from a
                # deleted sender. The current code delivers such mail.
                return None
            if state.buffered_for(mail.recipient)[:1] != [sid]:
                return Divergence(r.position, "delivered out of FIFO order", None, _show(r))
            if state.is_active(mail.recipient):
                want = MailDelivered()
            else:  # deleted since it was collected: by its delete_source, or found at delivery
                want = MailDeadLettered(reason="recipient_deleted", stage="buffer")
        else:
            return Divergence(r.position, f"{r.kind} for a mail in {place}", None, _show(r))
        expected = NewRecord(sid, want)
        if not _same(expected, r):
            return Divergence(
                r.position,
                "the mail should have been routed differently",
                _show_new(expected, r.position),
                _show(r),
            )
        return None


def _group_key(r: Recorded) -> tuple[Any, ...] | None:
    data: Any = r.data
    if isinstance(data, (EventClaimed, EventDeferred, EventSkipped)):
        return ("cycle", data.owner, data.cycle)
    if isinstance(data, EventQueued) and data.owner is not None:
        return ("cycle", data.owner, data.cycle)
    if isinstance(data, (EventRequeued, EventAbandoned)):
        return ("reclaim", data.by)
    return None


async def verify(
    store: Store,
    *,
    run: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify a run (default: the store's). The report's ``divergence`` is None when
    the log is exactly what the code would have written."""
    info = store.run if run is None else await store.find_run(run)
    verifier = _Verifier(info.run_id)
    report = VerifyReport(run_id=info.run_id)
    commit: list[Recorded] = []
    failure: Divergence | None = None
    async for r in await store.read(run=info.run_id, page_size=2000):
        if commit and (
            r.recorded_at_us != commit[-1].recorded_at_us or r.position != commit[-1].position + 1
        ):
            failure = verifier.commit(commit)
            commit = []
            if failure is not None:
                # A commit whose next record breaks the digest chain was cut short by a
                # deleted record: report the broken chain, not the decision it skews.
                failure = verifier.integrity(r) or failure
                break
        failure = verifier.integrity(r)
        if failure is not None:
            break
        commit.append(r)
        report.records += 1
        if progress is not None and report.records % 10_000 == 0:
            progress(report.records)
    if commit and failure is None:
        # (After a failure ``commit`` holds only the part of a commit before the record
        # that broke the chain: deciding it again would report a spurious divergence.)
        failure = verifier.commit(commit)
    report.divergence = failure
    report.cycles = verifier.cycles
    report.counts = verifier.projection.counts()
    return report
