"""What the executor repository stores, pinned where the mutation run found it unguarded
(docs/mutation.md, repositories/executor.py, "Left")."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bounds import bounded
from dbtools import query
from proc_helpers import make_executor, read_all
from processing_events import Job
from pydantic import BaseModel, field_serializer

import lionstore
from lionstore.domain.event import EventStatus
from lionstore.errors import RecordError
from lionstore.projections.executor import class_materializer
from lionstore.repositories.executor import ExecutorRepository, Outcome, user_fields


class Dated(lionstore.Event):
    """Fields whose JSON form differs from their Python form."""

    when: datetime
    pair: tuple[int, int]

    async def invoke(self) -> None:
        self.response = "ok"


class Opaque(lionstore.Event):
    """A field pydantic cannot turn into JSON."""

    thing: Any = None

    async def invoke(self) -> None:
        self.response = "ok"


WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_user_fields_are_json_ready() -> None:
    fields = user_fields(Dated(when=WHEN, pair=(1, 2)))
    assert fields == {"when": "2026-01-02T03:04:05Z", "pair": [1, 2]}
    assert json.loads(json.dumps(fields)) == fields


async def test_an_appended_events_fields_are_stored_as_json(tmp_path: Path) -> None:
    path = tmp_path / "dated.db"
    async with lionstore.open(path, run="dated") as store:
        executor = lionstore.Executor({"queue_capacity": 1}, store=store, name="ex")
        await bounded(executor.append(Dated(when=WHEN, pair=(1, 2))), "append()")
        executor.close()
    ((data,),) = query(path, "SELECT data FROM lionstore_records WHERE kind = 'event.appended'")
    assert json.loads(data)["fields"] == {"when": "2026-01-02T03:04:05Z", "pair": [1, 2]}


def test_unserializable_fields_are_named_in_the_error() -> None:
    event = Opaque(thing=object())
    with pytest.raises(RecordError) as raised:
        user_fields(event)
    assert str(raised.value).startswith(
        f"the fields of Opaque {event.id} are not JSON-serializable: "
    )


async def test_a_claims_records_carry_the_cycles_time_and_seen_position(
    tmp_path: Path, clock: Any
) -> None:
    """claim() writes the time and the seen position its cycle gives; without them,
    the store's clock and 0. A denial is deferred by the back-off, or due at once
    when named in ``no_backoff``."""
    async with lionstore.open(tmp_path / "claims.db", run="r", clock=clock) as store:
        executor = make_executor(store, lease_seconds=10.0)
        await executor.start()
        repo = executor._repo
        jobs = [Job(n=i) for i in range(5)]
        await executor.extend(jobs)
        await repo.queue([j.id for j in jobs])
        now = store.now_us()
        cycle_at = now - 5_000_000  # the cycle looked 5 s before the clock now shows
        await repo.claim(
            [jobs[0].id],
            [jobs[1].id, jobs[2].id],
            owner="me",
            lease_seconds=10.0,
            cycle=1,
            backoff=lambda denials: 0.5 * denials,
            now_us=cycle_at,
            seen=7,
            no_backoff=[jobs[2].id],
        )
        await repo.claim(
            [jobs[3].id],
            [jobs[4].id],
            owner="me",
            lease_seconds=10.0,
            cycle=2,
            backoff=lambda n: 1.0,
        )
        executor.close()
        records = {
            (r.stream_id, r.kind): r.data.model_dump(mode="json")
            for r in await read_all(store, kinds=("event.claimed", "event.deferred"))
        }
    assert records == {
        (jobs[0].id, "event.claimed"): {
            "owner": "me",
            "attempt": 1,
            "lease_expires_us": cycle_at + 10_000_000,
            "cycle": 1,
            "at_us": cycle_at,
            "seen": 7,
        },
        (jobs[1].id, "event.deferred"): {
            "reason": "permission_denied",
            "retry_at_us": cycle_at + 500_000,
            "denials": 1,
            "owner": "me",
            "cycle": 1,
            "at_us": cycle_at,
            "seen": 7,
        },
        (jobs[2].id, "event.deferred"): {
            "reason": "permission_denied",
            "retry_at_us": cycle_at,
            "denials": 1,
            "owner": "me",
            "cycle": 1,
            "at_us": cycle_at,
            "seen": 7,
        },
        (jobs[3].id, "event.claimed"): {
            "owner": "me",
            "attempt": 1,
            "lease_expires_us": now + 10_000_000,
            "cycle": 2,
            "at_us": now,
            "seen": 0,
        },
        (jobs[4].id, "event.deferred"): {
            "reason": "permission_denied",
            "retry_at_us": now + 1_000_000,
            "denials": 1,
            "owner": "me",
            "cycle": 2,
            "at_us": now,
            "seen": 0,
        },
    }


async def test_a_stale_outcome_is_logged_in_these_words(
    tmp_path: Path, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with lionstore.open(tmp_path / "stale.db", run="r", clock=clock) as store:
        executor = make_executor(store, lease_seconds=10.0)
        await executor.start()
        repo = executor._repo
        job = Job(n=1)
        await executor.extend([job])
        await repo.queue([job.id])
        ((_, attempt, version),) = await repo.claim(
            [job.id], [], owner="old", lease_seconds=10.0, cycle=1, backoff=lambda n: 0.0
        )
        clock.advance(11.0)
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="new") == 1
        outcome = Outcome(
            event_id=job.id,
            attempt=attempt,
            claim_version=version,
            status=EventStatus.COMPLETED,
            duration=0.001,
            response="late",
            error=None,
            fields=None,
        )
        with caplog.at_level("WARNING", logger="lionstore.executor"):
            assert await bounded(repo.finish([outcome]), "finish()") == []
        executor.close()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"outcome of event {job.id} (attempt 1) dropped: its claim was taken over")
    ]


@contextlib.asynccontextmanager
async def _read_only_executor(path: Path) -> AsyncIterator[lionstore.Executor]:
    """An executor on a store opened read-only (its file made first): every write it
    tries fails. Closed after the block."""
    async with lionstore.open(path, run="r") as store:
        make_executor(store).close()
    async with lionstore.open(path, run="r", readonly=True) as store:
        executor = make_executor(store)
        yield executor
        executor.close()


async def test_a_failed_append_leaves_no_live_event_behind(tmp_path: Path) -> None:
    async with _read_only_executor(tmp_path / "live.db") as executor:
        repo = executor._repo
        with pytest.raises(lionstore.LionstoreError):
            await bounded(repo.append([Job(n=1)]), "append()")
        assert repo.state.live == {}


async def test_a_renewal_moves_on_only_the_current_claims_of_its_owner(
    tmp_path: Path, clock: Any
) -> None:
    """renew_leases() records the new expiry (now + the lease) for each claim still
    this owner's at that attempt, skipping the others (not claimed, another attempt,
    another owner) without stopping at them; a renewed claim outlives its first lease
    while the claim beside it is taken over."""
    async with lionstore.open(tmp_path / "renew.db", run="r", clock=clock) as store:
        executor = make_executor(store, lease_seconds=10.0)
        await executor.start()
        repo = executor._repo
        first, second, idle = Job(n=1), Job(n=2), Job(n=3)
        await executor.extend([first, second, idle])
        await repo.queue([first.id, second.id])
        won = await repo.claim(
            [first.id, second.id], [], owner="me", lease_seconds=10.0, cycle=1, backoff=None
        )
        assert [(e.id, attempt) for e, attempt, _ in won] == [(first.id, 1), (second.id, 1)]
        clock.advance(4.0)
        now = store.now_us()
        held = [(idle.id, 1), (second.id, 2), (first.id, 1)]
        assert await repo.renew_leases(held, owner="me", lease_seconds=10.0) == [first.id]
        assert await repo.renew_leases([(second.id, 1)], owner="you", lease_seconds=10.0) == []
        (renewed,) = await read_all(store, kinds=("event.lease_renewed",))
        assert (renewed.stream_id, renewed.data.model_dump()) == (
            first.id,
            {"owner": "me", "attempt": 1, "lease_expires_us": now + 10_000_000},
        )
        clock.advance(6.0)  # the first leases end; the renewed one holds for 4 s more
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="t") == 1
        assert [r.stream_id for r in await read_all(store, kinds=("event.requeued",))] == [
            second.id
        ]
        clock.advance(4.0)
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="t") == 1
        executor.close()


async def test_a_skipped_event_retried_is_due_for_its_first_attempt(
    tmp_path: Path, clock: Any
) -> None:
    """An event skipped from the queue (a ``handle_denied`` override) was never
    claimed: its retry records attempt 1, and its first claim is attempt 1."""
    async with lionstore.open(tmp_path / "skip.db", run="r", clock=clock) as store:
        executor = make_executor(store)
        await executor.start()
        repo = executor._repo
        job = Job(n=1)
        await executor.extend([job])
        await repo.queue([job.id])
        assert (
            await repo.claim(
                [], [], owner="me", lease_seconds=10.0, cycle=1, backoff=None, skips=[job.id]
            )
            == []
        )
        assert repo.state.status(job.id) is EventStatus.SKIPPED
        assert await repo.retry([job.id]) == [job.id]
        (retried,) = await read_all(store, kinds=("event.retried",))
        assert retried.data.model_dump() == {"attempt": 1}
        await repo.queue([job.id])
        won = await repo.claim([job.id], [], owner="me", lease_seconds=10.0, cycle=2, backoff=None)
        assert [(e.id, attempt) for e, attempt, _ in won] == [(job.id, 1)]
        executor.close()


class Ticking:
    """A store clock that moves on 1 ms at every reading: each commit reads it once, so
    two commits never share a ``recorded_at`` and the records of one commit always do."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


async def test_enqueueing_a_new_event_appends_and_queues_it_in_one_commit(
    tmp_path: Path,
) -> None:
    """Processor.enqueue of an event the executor does not know: its ``event.appended``
    and ``event.queued`` are committed together (one moment in the log), and nothing
    more is written for it."""
    async with lionstore.open(tmp_path / "enqueue.db", run="r", clock=Ticking()) as store:
        executor = make_executor(store)
        await executor.start()
        assert executor.processor is not None
        job = Job(n=1)
        await bounded(executor.processor.enqueue(job), "enqueue()")
        records = await read_all(store, stream=job.id)
        assert executor._repo.state.status(job.id) is EventStatus.PENDING
        assert list(executor._repo.state.queue) == [job.id]
        executor.close()
    assert [r.kind for r in records] == ["event.appended", "event.queued"]
    assert records[0].recorded_at_us == records[1].recorded_at_us


async def test_enqueueing_a_known_pending_event_only_queues_it(tmp_path: Path) -> None:
    """An event already in the pile (appended, pending) is queued by one
    ``event.queued``: its fields were recorded when it was appended and are not read
    again, so a value that could not be stored now does not stop it."""
    async with lionstore.open(tmp_path / "known.db", run="r") as store:
        executor = make_executor(store)
        await executor.start()
        assert executor.processor is not None
        event = Opaque(thing=1)
        await bounded(executor.append(event), "append()")
        event.thing = object()  # not JSON: appending it now would be refused
        await bounded(executor.processor.enqueue(event), "enqueue()")
        assert list(executor._repo.state.queue) == [event.id]
        records = await read_all(store, stream=event.id)
        executor.close()
    assert [r.kind for r in records] == ["event.appended", "event.queued"]
    assert records[0].data.model_dump()["fields"] == {"thing": 1}


async def test_enqueueing_what_is_not_an_event_is_refused_naming_it(tmp_path: Path) -> None:
    """Processor.enqueue refuses a non-Element and an Element that is not an Event with
    a TypeError naming the type it was given, before anything is written."""
    async with lionstore.open(tmp_path / "bad.db", run="r") as store:
        executor = make_executor(store)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        with pytest.raises(TypeError, match=r"^Invalid pile item int: piles hold Elements$"):
            await bounded(processor.enqueue(42), "enqueue()")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^Invalid item type in pile: Element is not one"):
            await bounded(processor.enqueue(lionstore.Element()), "enqueue()")  # type: ignore[arg-type]
        # a repository whose pile takes any Element still wants an Event here
        repo = ExecutorRepository(store, "any", class_materializer(lionstore.Event))
        with pytest.raises(TypeError, match=r"^expected an Event, not Element$"):
            await bounded(repo.enqueue_event(lionstore.Element()), "enqueue_event()")  # type: ignore[arg-type]
        kinds = {r.kind for r in await read_all(store)}
        executor.close()
    assert not kinds & {"event.appended", "event.queued"}


class Unstorable(BaseModel):
    """A response whose serialization fails with a long reason (it quotes the value)."""

    data: str = "x" * 3000

    @field_serializer("data")
    def _refuse(self, value: str) -> str:
        raise ValueError(f"cannot store {value!r}")


class Answers(lionstore.Event):
    """Responds with what ``kind`` names: a number, an unstorable model, an object."""

    kind: str = "number"

    async def invoke(self) -> None:
        self.response = {"number": 1, "long": Unstorable(), "object": object()}[self.kind]


async def test_an_outcome_too_long_even_to_refuse_is_recorded_failed_with_its_reason_cut(
    open_store: Any,
) -> None:
    """An outcome the store cannot hold is recorded as a failure naming why. When that
    reason too is over the store's record limit (a serializer that quotes a large
    value), the reason is cut to its first 100 characters, so the failure still fits:
    the cycle's other outcomes are recorded with it, not lost with the commit.
    (Before, finish() raised RecordTooLargeError and every event of the cycle stayed
    PROCESSING until its lease expired.)"""
    async with open_store(run="r", max_record_bytes=1024) as store:
        executor = make_executor(store)
        await executor.start()
        events = [Answers(kind="long"), Answers(kind="number"), Answers(kind="object")]
        await executor.extend(events)
        await bounded(executor.forward(), "forward()")
        finished = {r.stream_id: r for r in await read_all(store, kinds=("event.finished",))}
        executor.close()
    assert [e.status for e in events] == [
        EventStatus.FAILED,
        EventStatus.COMPLETED,
        EventStatus.FAILED,
    ]
    long, number, unknown = (finished[e.id] for e in events)
    assert len(long.raw.encode()) <= 1024
    error = long.data.model_dump()["error"]
    prefix = "the outcome could not be recorded: event.finished: data is not JSON-serializable: "
    assert error.startswith(prefix) and error.endswith(" characters)")
    reason = error.removeprefix("the outcome could not be recorded: ")
    assert len(reason) == 100 + len("... (NNNN characters)")
    assert number.data.model_dump()["response"] == 1
    # a reason that fits is kept whole
    assert unknown.data.model_dump()["error"] == (
        prefix + "Unable to serialize unknown type: <class 'object'>"
    )


async def test_a_claim_admits_only_events_it_does_not_know(tmp_path: Path) -> None:
    """claim(admit=...) appends and queues, in the cycle's commit, the events the log
    does not hold yet; one already appended (by another worker meanwhile, say) is left
    as it is: not appended twice, and the claim still commits."""
    async with lionstore.open(tmp_path / "admit.db", run="r") as store:
        executor = make_executor(store)
        await executor.start()
        repo = executor._repo
        known, new = Job(n=1), Job(n=2)
        await executor.append(known)
        admit = repo.prepare_append([known, new])
        won = await bounded(
            repo.claim(
                [new.id], [], owner="me", lease_seconds=10.0, cycle=1, backoff=None, admit=admit
            ),
            "claim()",
        )
        assert [(e.id, attempt) for e, attempt, _ in won] == [(new.id, 1)]
        appended = [r.stream_id for r in await read_all(store, kinds=("event.appended",))]
        executor.close()
    assert appended == [known.id, new.id]


async def test_a_failed_claim_leaves_no_admitted_event_behind(tmp_path: Path) -> None:
    """The events a claim admits are held as live objects only while it decides: a
    claim that fails (a read-only store) lets them go, as a failed append does."""
    async with _read_only_executor(tmp_path / "live.db") as executor:
        repo = executor._repo
        job = Job(n=1)
        with pytest.raises(lionstore.LionstoreError):
            await bounded(
                repo.claim(
                    [job.id],
                    [],
                    owner="me",
                    lease_seconds=10.0,
                    cycle=1,
                    backoff=None,
                    admit=repo.prepare_append([job]),
                ),
                "claim()",
            )
        assert repo.state.live == {}


async def test_a_skip_records_the_cycles_owner_time_and_seen_position(
    tmp_path: Path, clock: Any
) -> None:
    """An event a cycle skips (a ``handle_denied`` override) gets an ``event.skipped``
    naming the cycle: its owner, number, time and seen position, as its claims and
    deferrals do; one event not in the queue is not skipped."""
    async with lionstore.open(tmp_path / "skips.db", run="r", clock=clock) as store:
        executor = make_executor(store)
        await executor.start()
        repo = executor._repo
        queued, pending = Job(n=1), Job(n=2)
        await executor.extend([queued, pending])
        await repo.queue([queued.id])
        cycle_at = store.now_us() - 5_000_000
        await repo.claim(
            [],
            [],
            owner="me",
            lease_seconds=10.0,
            cycle=3,
            backoff=None,
            now_us=cycle_at,
            seen=9,
            skips=[queued.id, pending.id],
        )
        skipped = await read_all(store, kinds=("event.skipped",))
        executor.close()
    assert [(r.stream_id, r.data.model_dump(mode="json")) for r in skipped] == [
        (
            queued.id,
            {
                "reason": "permission_denied",
                "owner": "me",
                "cycle": 3,
                "at_us": cycle_at,
                "seen": 9,
            },
        )
    ]
