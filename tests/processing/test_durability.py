"""The executor is durable: reopening the file (in this process or another) gives
the same pile and pending progression, and crashed claims are recovered by lease."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bounds import bounded
from proc_helpers import kinds_of, make_executor, read_all, run_worker, snapshot, status_of
from processing_events import Job, OtherJob

import lionstore
from lionstore.domain.event import Event, EventStatus
from lionstore.domain.event_records import EventAbandoned, EventFinished, EventRequeued
from lionstore.errors import ItemNotFoundError, RecordTooLargeError
from lionstore.repositories.executor import Outcome


async def build_history(store: lionstore.Store) -> dict[str, Any]:
    """A run with every kind of outcome: completed, failed, subclass, queued, pending."""
    executor = make_executor(store, queue_capacity=10)
    await executor.start()
    done = Job(n=1, payload={"k": [1, 2], "s": "x"}, metadata={"origin": "test"})
    failed = Job(n=2, fail=True)
    other = OtherJob(n=3, label="L")
    await executor.extend([done, failed, other])
    await executor.forward()
    queued = Job(n=4)
    assert executor.processor is not None
    await executor.processor.enqueue(queued)  # queued, never processed
    waiting = [Job(n=5), OtherJob(n=6, label="W")]
    await executor.extend(waiting)  # pending, never forwarded
    assert done.note == "done-1"  # invoke() changed a user field
    assert failed.execution.error == "RuntimeError: job 2 failed"
    return {
        "snapshot": snapshot(executor),
        "queue": list(executor.processor.queue),
        "ids": {"done": done.id, "failed": failed.id, "other": other.id, "queued": queued.id},
    }


def check_history(snap: dict[str, Any], ids: dict[str, str]) -> None:
    by_id = {e["id"]: e for e in snap["events"]}
    assert [e["class"] for e in snap["events"]] == [
        "processing_events.Job",
        "processing_events.Job",
        "processing_events.OtherJob",
        "processing_events.Job",
        "processing_events.Job",
        "processing_events.OtherJob",
    ]
    assert [e["status"] for e in snap["events"]] == [
        "completed",
        "failed",
        "completed",
        "pending",
        "pending",
        "pending",
    ]
    done = by_id[ids["done"]]
    assert done["fields"]["note"] == "done-1"
    assert done["fields"]["payload"] == {"k": [1, 2], "s": "x"}
    assert done["response"] == {"double": 2, "payload": {"k": [1, 2], "s": "x"}}
    assert done["duration"] is not None
    assert by_id[ids["failed"]]["error"] == "RuntimeError: job 2 failed"
    assert by_id[ids["other"]]["response"] == "other:L"
    assert len(snap["pending"]) == 2


async def test_reopen_in_process_gives_the_same_pile(open_store: Any) -> None:
    async with open_store(run="r") as store:
        history = await build_history(store)
    check_history(history["snapshot"], history["ids"])

    async with open_store(run="r") as store:
        executor = make_executor(store)
        # the first read folds the history: no load() needed
        assert snapshot(executor) == history["snapshot"]
        await executor.load()  # still allowed, and a no-op now
        assert snapshot(executor) == history["snapshot"]
        assert type(executor.pile[history["ids"]["done"]]) is Job
        assert type(executor.pile[history["ids"]["other"]]) is OtherJob
        done = executor.pile[history["ids"]["done"]]
        assert done.note == "done-1"
        assert done.metadata == {"origin": "test"}

        # ... and it carries on from there
        await executor.start()
        assert executor.processor is not None
        assert list(executor.processor.queue) == history["queue"]
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        assert [e.status for e in executor.pile][3:] == [EventStatus.COMPLETED] * 3
        assert len(executor.pending) == 0
        assert len(executor.completed_events) == 5


async def test_other_names_and_runs_are_separate(open_store: Any) -> None:
    async with open_store(run="r") as store:
        await build_history(store)
        stranger = make_executor(store, name="someone-else")
        await stranger.load()
        assert len(stranger.pile) == 0
        assert len(stranger.pending) == 0
    async with open_store(run="other-run") as store:
        executor = make_executor(store)
        await executor.load()
        assert len(executor.pile) == 0


async def test_reopen_in_a_fresh_process_gives_the_same_pile(
    open_store: Any, db_target: str
) -> None:
    async with open_store(run="r") as store:
        history = await build_history(store)
    dumped = run_worker("dump", {"db": db_target, "run": "r", "name": "ex"})
    assert dumped == history["snapshot"]
    check_history(dumped, history["ids"])


async def test_a_class_missing_on_reopen_is_named_and_raw_records_still_read(
    open_store: Any, db_target: str
) -> None:
    async with open_store(run="r") as store:
        history = await build_history(store)
    result = run_worker("foreign", {"db": db_target, "run": "r", "name": "ex"})
    assert result["error"] == "EventClassNotFoundError"
    assert "processing_events.Job" in result["message"]
    assert result["imported"] is False  # the file did not make it import anything
    raw = result["raw"]
    assert [r["id"] for r in raw] == [e["id"] for e in history["snapshot"]["events"]]
    assert raw[0]["class"] == "processing_events.Job"
    assert raw[0]["fields"]["payload"] == {"k": [1, 2], "s": "x"}
    assert raw[2]["class"] == "processing_events.OtherJob"
    assert "event.finished" in result["kinds"]


# -- outcomes that cannot be stored --------------------------------------------------------


class Unstorable(Event):
    how: str = "response"
    box: dict[str, Any] = {}

    async def invoke(self) -> None:
        if self.how == "response":
            self.response = object()
        elif self.how == "field":
            self.box = {"thing": object()}
        else:
            self.response = "fine"


async def test_unserializable_outcomes_fail_instead_of_sticking(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        by_response = Unstorable(how="response")
        by_field = Unstorable(how="field")
        fine = Unstorable(how="ok")
        await executor.extend([by_response, by_field, fine])
        await executor.forward()
        for event in (by_response, by_field):
            assert event.status is EventStatus.FAILED
            assert "the outcome could not be recorded" in (event.execution.error or "")
            assert (await kinds_of(store, event.id))[-1] == "event.finished"
        assert fine.status is EventStatus.COMPLETED
        assert list(executor.processing_events) == []

    async with open_store(run="r") as store:
        again = make_executor(store)
        await again.load()
        assert [e.status for e in again.pile] == [
            EventStatus.FAILED,
            EventStatus.FAILED,
            EventStatus.COMPLETED,
        ]
        assert "could not be recorded" in (again.pile[0].execution.error or "")


# -- leases --------------------------------------------------------------------------------


async def test_an_expired_claim_is_requeued_and_run(open_store: Any, clock: Any) -> None:
    async with open_store(run="r", clock=clock) as store:
        executor = make_executor(store, lease_seconds=10.0)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        event = Job(n=7)
        await processor.enqueue(event)
        claimed = await asyncio.wait_for(
            processor.dequeue(), timeout=5
        )  # this claim is never finished
        assert claimed is event and event.status is EventStatus.PROCESSING

        clock.advance(9.0)  # the lease still holds: nobody takes it over
        await processor.process()
        assert event.status is EventStatus.PROCESSING
        assert executor.attempts(event) == 1

        clock.advance(2.0)  # now it has expired
        await processor.process()
        assert status_of(event) is EventStatus.COMPLETED
        assert executor.attempts(event) == 2
        records = await read_all(store, stream=event.id)
        assert [r.kind for r in records] == [
            "event.appended",
            "event.queued",
            "event.claimed",
            "event.requeued",
            "event.claimed",
            "event.finished",
        ]
        requeued = records[3].data
        assert requeued.reason == "lease_expired"  # type: ignore[union-attr]
        assert requeued.previous_owner == processor.owner  # type: ignore[union-attr]
        assert [records[i].data.attempt for i in (2, 4, 5)] == [1, 2, 2]  # type: ignore[union-attr]


async def test_a_crashed_owner_claim_is_recovered_after_reopen(open_store: Any, clock: Any) -> None:
    async with open_store(run="r", clock=clock) as store:
        executor = make_executor(store, lease_seconds=30.0)
        await executor.start()
        assert executor.processor is not None
        event = Job(n=1)
        await executor.processor.enqueue(event)
        await asyncio.wait_for(executor.processor.dequeue(), timeout=5)
        crashed_owner = executor.processor.owner
        # the "process" ends here without recording an outcome

    async with open_store(run="r", clock=clock) as store:
        executor = make_executor(store, lease_seconds=30.0)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        back = executor.pile[event.id]
        assert back.status is EventStatus.PROCESSING
        await processor.process()
        assert back.status is EventStatus.PROCESSING  # lease still valid
        clock.advance(31)
        await bounded(processor.join(), "processor.join()")
        assert status_of(back) is EventStatus.COMPLETED
        claims = await read_all(store, kinds=("event.claimed",))
        assert [c.data.owner for c in claims] == [crashed_owner, processor.owner]  # type: ignore[union-attr]
        assert [c.data.attempt for c in claims] == [1, 2]  # type: ignore[union-attr]


async def test_repeated_expiry_ends_failed_abandoned(open_store: Any, clock: Any) -> None:
    async with open_store(run="r", clock=clock) as store:
        executor = make_executor(store, lease_seconds=5.0, max_attempts=2)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        event = Job(n=1)
        await processor.enqueue(event)
        assert (
            await asyncio.wait_for(processor.dequeue(), timeout=5) is event
        )  # attempt 1, never finished
        clock.advance(6)
        assert (
            await asyncio.wait_for(processor.dequeue(), timeout=5) is event
        )  # re-queued, attempt 2, never finished
        assert executor.attempts(event) == 2
        clock.advance(6)
        await processor.process()
        assert event.status is EventStatus.FAILED
        assert "abandoned" in (event.execution.error or "")
        assert executor.attempts(event) == 2
        assert (await kinds_of(store, event.id))[-1] == "event.abandoned"
        assert list(executor.failed_events) == [event]
        await bounded(processor.join(), "processor.join()")  # nothing left in flight
        assert event.status is EventStatus.FAILED

    async with open_store(run="r", clock=clock) as store:
        again = make_executor(store)
        await again.load()
        assert again.pile[event.id].status is EventStatus.FAILED
        assert "abandoned" in (again.pile[event.id].execution.error or "")


async def _claim_two(store: lionstore.Store, clock: Any) -> tuple[Any, Job, Job, list[int]]:
    """Two jobs claimed at attempt 1 with a 10 s lease, through the repository itself."""
    executor = make_executor(store, lease_seconds=10.0)
    await executor.start()
    repo = executor._repo
    first, second = Job(n=1), Job(n=2)
    await executor.extend([first, second])
    await repo.queue([first.id, second.id])
    won = await repo.claim(
        [first.id, second.id], [], owner="old", lease_seconds=10.0, cycle=1, backoff=lambda n: 0.0
    )
    assert [(e.id, attempt) for e, attempt, _ in won] == [(first.id, 1), (second.id, 1)]
    return repo, first, second, [version for _, _, version in won]


def _outcome(event: Job, attempt: int, version: int) -> Outcome:
    return Outcome(
        event_id=event.id,
        attempt=attempt,
        claim_version=version,
        status=EventStatus.COMPLETED,
        duration=0.001,
        response=f"attempt {attempt}",
        error=None,
        fields=None,
    )


async def test_a_claim_still_in_flight_is_not_reclaimed_when_its_lease_expires(
    open_store: Any, clock: Any
) -> None:
    async with open_store(run="r", clock=clock) as store:
        repo, first, second, _ = await _claim_two(store, clock)
        clock.advance(11.0)  # both leases expired; the first is still running here
        assert await repo.reclaim_expired(max_attempts=3, in_flight={first.id}, by="me") == 1
        assert (await kinds_of(store, second.id))[-1] == "event.requeued"
        assert (await kinds_of(store, first.id))[-1] == "event.claimed"
        assert first.id in repo.state.claims and second.id not in repo.state.claims
        # once it is no longer in flight, it is taken over like any other
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set(), by="me") == 1
        (requeued,) = await read_all(store, kinds=("event.requeued",), stream=first.id)
        assert requeued.data == EventRequeued(
            reason="lease_expired", previous_owner="old", attempt=1, by="me"
        )


async def test_an_outcome_after_its_lease_was_taken_over_is_dropped_and_the_rest_recorded(
    open_store: Any, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_store(run="r", clock=clock) as store:
        repo, first, second, versions = await _claim_two(store, clock)
        clock.advance(11.0)
        assert await repo.reclaim_expired(max_attempts=3, in_flight={second.id}) == 1
        (taken,) = await repo.claim(
            [first.id], [], owner="new", lease_seconds=10.0, cycle=2, backoff=lambda n: 0.0
        )
        assert taken[1] == 2  # the new owner runs attempt 2
        with caplog.at_level("WARNING", logger="lionstore.executor"):
            recorded = await asyncio.wait_for(
                repo.finish([_outcome(first, 1, versions[0]), _outcome(second, 1, versions[1])]),
                timeout=30,
            )
        assert recorded == [second.id]  # the stale outcome is dropped, its batch-mate kept
        assert f"outcome of event {first.id} (attempt 1) dropped: its claim was taken over" in (
            caplog.text
        )
        assert (await kinds_of(store, first.id))[-1] == "event.claimed"
        assert repo.state.status(first.id) is EventStatus.PROCESSING
        assert repo.state.status(second.id) is EventStatus.COMPLETED
        # the current owner's outcome is recorded as usual
        assert await repo.finish([_outcome(first, 2, taken[2])]) == [first.id]
        finished = await read_all(store, kinds=("event.finished",), stream=first.id)
        assert [r.data.attempt for r in finished] == [2]  # type: ignore[union-attr]


async def test_a_lease_is_over_at_the_microsecond_it_expires(open_store: Any, clock: Any) -> None:
    async with open_store(run="r", clock=clock) as store:
        repo, *_ = await _claim_two(store, clock)
        clock.advance(9.999999)
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set()) == 0
        clock.advance(0.000001)  # exactly lease_expires_us
        assert await repo.reclaim_expired(max_attempts=3, in_flight=set()) == 2


async def test_the_last_attempt_is_abandoned_with_its_reason_and_taker(
    open_store: Any, clock: Any
) -> None:
    async with open_store(run="r", clock=clock) as store:
        repo, first, _second, _ = await _claim_two(store, clock)
        clock.advance(11.0)
        assert await repo.reclaim_expired(max_attempts=1, in_flight=set(), by="sweeper") == 2
        (abandoned,) = await read_all(store, kinds=("event.abandoned",), stream=first.id)
        assert abandoned.data == EventAbandoned(
            reason="abandoned", previous_owner="old", attempt=1, by="sweeper"
        )


async def test_queue_moves_only_the_events_named(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        repo = executor._repo
        named, other, enqueued = Job(n=1), Job(n=2), Job(n=3)
        await executor.extend([named, other])
        assert await repo.queue([named.id]) == [named.id]
        assert list(repo.state.queue) == [named.id]
        assert list(repo.state.pending) == [other.id]
        assert executor.processor is not None
        await executor.processor.enqueue(enqueued)  # queues that event alone
        assert list(repo.state.queue) == [named.id, enqueued.id]
        assert list(repo.state.pending) == [other.id]
        assert await repo.queue() == [other.id]  # no names: every pending event


async def test_retry_of_an_unknown_event_names_it(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        stranger = Job(n=1)
        with pytest.raises(ItemNotFoundError, match=f"event {stranger.id} is not in this executor"):
            await executor._repo.retry([stranger.id])


class Chatty(Event):
    size: int = 0

    async def invoke(self) -> None:
        self.response = "x" * self.size


async def test_an_outcome_over_the_store_record_limit_is_recorded_as_failed(
    open_store: Any,
) -> None:
    async with open_store(run="r", max_record_bytes=2048) as store:
        executor = make_executor(store)
        await executor.start()
        big = Chatty(size=4000)  # small fields, a response over the limit
        await executor.extend([big])
        await executor.forward()
        assert big.status is EventStatus.FAILED
        assert "the outcome could not be recorded" in (big.execution.error or "")
        (finished,) = await read_all(store, kinds=("event.finished",), stream=big.id)
        assert isinstance(finished.data, EventFinished)
        assert finished.data.duration_us is not None  # the run's time is kept


async def test_fields_invoke_changed_are_recorded_and_come_back_on_reopen(
    open_store: Any,
) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        job = Job(n=3, payload={"k": 1})
        await executor.extend([job])
        await executor.forward()
        (finished,) = await read_all(store, kinds=("event.finished",), stream=job.id)
        assert isinstance(finished.data, EventFinished)
        assert finished.data.fields == {"note": "done-3"}  # only what invoke() changed
    async with open_store(run="r") as store:
        again = make_executor(store)
        await again.load()
        back = again.pile[job.id]
        assert isinstance(back, Job)
        assert (back.note, back.payload) == ("done-3", {"k": 1})


async def test_a_forward_claims_queued_and_pending_events_in_one_cycle_on_what_it_saw(
    open_store: Any,
) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store, queue_capacity=10)
        await executor.start()
        assert executor.processor is not None
        assert await executor._repo.reclaim_expired(max_attempts=3, in_flight=set()) == 0
        queued, pending = Job(n=1), Job(n=2)
        await executor.processor.enqueue(queued)
        await executor.extend([pending])
        seen = await store.head()
        await executor.forward()
        claims = await read_all(store, kinds=("event.claimed",))
        assert [c.stream_id for c in claims] == [queued.id, pending.id]
        assert {c.data.cycle for c in claims} == {1}  # type: ignore[union-attr]
        assert {c.data.seen for c in claims} == {seen}  # type: ignore[union-attr]


async def test_an_append_records_the_event_own_fields_once_per_event(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        first, second = Job(n=1, payload={"k": 2}), Job(n=2)
        await executor.extend([first, first, second])  # a repeat is skipped, not the rest
        assert [e.id for e in executor.pile] == [first.id, second.id]
        appended = await read_all(store, kinds=("event.appended",))
        assert [r.stream_id for r in appended] == [first.id, second.id]
        assert appended[0].data.fields == {  # type: ignore[union-attr]
            "n": 1,
            "payload": {"k": 2},
            "note": "",
            "fail": False,
        }


async def test_append_hands_back_the_new_events_and_refuses_fields_over_the_store_limit(
    open_store: Any,
) -> None:
    async with open_store(run="r", max_record_bytes=2048) as store:
        executor = make_executor(store)
        await executor.start()
        repo = executor._repo
        known, fresh = Job(n=1), Job(n=2)
        assert await repo.append([known]) == [known]
        assert await repo.append([known, fresh]) == [fresh]  # the known one is left alone
        head = await store.head()
        with pytest.raises(RecordTooLargeError):
            await repo.append([Job(n=3, payload={"text": "x" * 4000})])
        assert await store.head() == head  # refused before anything was written


async def test_an_event_metadata_is_recorded_and_comes_back(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        job = Job(n=1, metadata={"origin": "test", "tags": ["a"]})
        await executor.extend([job])
        (appended,) = await read_all(store, kinds=("event.appended",), stream=job.id)
        assert appended.data.metadata == {"origin": "test", "tags": ["a"]}  # type: ignore[union-attr]
    async with open_store(run="r") as store:
        again = make_executor(store)
        await again.load()
        assert again.pile[job.id].metadata == {"origin": "test", "tags": ["a"]}
