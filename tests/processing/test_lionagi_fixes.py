"""What lionagi 0.8.7 gets wrong, and lionstore does not (shared/reference/
lionagi-0.8.7-behaviour.md sections 2.7, 2.8 and 5). Each test's docstring says
what lionagi did; each would fail against that behaviour."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from bounds import bounded
from proc_helpers import kinds_of, make_executor, read_all, status_of, wait_until
from processing_events import Job

from lionstore.domain.event import Event, EventStatus
from lionstore.errors import ItemNotFoundError, ProcessorNotStartedError
from lionstore.processing.executor import Executor
from lionstore.processing.processor import Processor


class Counted(Event):
    """Counts its invocations per event id."""

    calls: ClassVar[dict[str, int]] = {}
    fail: bool = False

    async def invoke(self) -> None:
        Counted.calls[self.id] = Counted.calls.get(self.id, 0) + 1
        await asyncio.sleep(0)
        if self.fail:
            raise ValueError("no luck")
        self.response = Counted.calls[self.id]


class Yielding(Event):
    """Yields to the loop a few times, so concurrent forwards interleave."""

    tag: str = ""

    async def invoke(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        self.response = self.tag


class SlowFail(Event):
    async def invoke(self) -> None:
        await asyncio.sleep(0.02)  # the workload: something measurable before failing
        raise KeyError("missing thing")


# -- join ----------------------------------------------------------------------------------


async def test_join_returns_once_the_queue_is_drained(open_store: Any) -> None:
    """lionagi's join() awaited ``queue.join()`` and nothing ever called
    ``task_done()``: once anything had been enqueued, join() hung forever."""
    async with open_store(run="r") as store:
        executor = make_executor(store, queue_capacity=2)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        events = [Job(n=i) for i in range(5)]
        for event in events:
            await processor.enqueue(event)
        await asyncio.wait_for(processor.join(), timeout=5)
        assert all(e.status is EventStatus.COMPLETED for e in events)
        assert processor.queue.empty()


async def test_join_with_an_execute_loop_running(open_store: Any) -> None:
    """join() while execute() runs the cycles: it returns when every event is terminal."""
    async with open_store(run="r") as store:
        executor = make_executor(store, queue_capacity=2)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        loop = asyncio.create_task(processor.execute())
        try:
            events = [Job(n=i) for i in range(6)]
            for event in events:
                await processor.enqueue(event)
            await asyncio.wait_for(processor.join(), timeout=5)
            assert all(e.status is EventStatus.COMPLETED for e in events)
        finally:
            await processor.stop()
            await asyncio.wait_for(loop, timeout=5)


# -- failures ------------------------------------------------------------------------------


async def test_invoke_raising_is_failed_with_error_and_duration(open_store: Any) -> None:
    """lionagi launched ``invoke()`` as a bare task: its exception was never
    retrieved, the status stayed PROCESSING and no error was recorded."""
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        bad, good = SlowFail(), Job(n=1)
        await executor.extend([bad, good])
        await executor.forward()
        assert bad.status is EventStatus.FAILED
        assert bad.execution.error == "KeyError: 'missing thing'"
        assert bad.execution.duration is not None and bad.execution.duration >= 0.02
        assert good.status is EventStatus.COMPLETED  # the batch goes on
        assert list(executor.failed_events) == [bad]
        finished = (await read_all(store, stream=bad.id))[-1]
        assert finished.kind == "event.finished"
        assert finished.data.status == "failed"  # type: ignore[union-attr]
        assert finished.data.error == "KeyError: 'missing thing'"  # type: ignore[union-attr]
        duration = bad.execution.duration

    async with open_store(run="r") as store:  # durable: a fresh open shows the same
        again = make_executor(store)
        await again.load()
        back = again.pile[bad.id]
        assert type(back) is SlowFail
        assert back.status is EventStatus.FAILED
        assert back.execution.error == "KeyError: 'missing thing'"
        assert back.execution.duration == duration


# -- permission denial ---------------------------------------------------------------------


class DenyFirst(Processor):
    """Denies the first ``deny`` permission requests."""

    deny: ClassVar[int] = 3
    asked: ClassVar[int] = 0

    async def request_permission(self, **kwargs: Any) -> bool:
        DenyFirst.asked += 1
        return DenyFirst.asked > DenyFirst.deny


class DenyExecutor(Executor):
    processor_type: ClassVar[type[Processor]] = DenyFirst


async def test_denial_never_drops_an_event_nor_wedges_capacity(open_store: Any, clock: Any) -> None:
    """lionagi decremented capacity on a denial and restored it only if a task ran:
    an all-denied batch left capacity at 0 and every later process() did nothing.
    A denied event was dequeued and never re-enqueued: dropped while PENDING."""
    DenyFirst.asked = 0
    async with open_store(run="r", clock=clock) as store:
        executor = make_executor(
            store, cls=DenyExecutor, queue_capacity=2, capacity_refresh_time=1.0
        )
        await executor.start()
        processor = executor.processor
        assert processor is not None
        event = Counted()
        await executor.append(event)
        await asyncio.wait_for(executor.forward(), timeout=5)  # denied: returns, deferred
        backoffs = [1.0, 2.0, 4.0]
        for denial, wait in enumerate(backoffs, start=1):
            assert DenyFirst.asked == denial
            assert processor.available_capacity == 2
            assert event.status is EventStatus.PENDING
            assert list(processor.queue) == [event.id]  # still queued, in place
            asked = DenyFirst.asked
            await processor.process()  # the back-off has not passed: not asked again
            assert DenyFirst.asked == asked
            assert processor.available_capacity == 2
            clock.advance(wait)
            await processor.process()
            assert processor.available_capacity == 2
        assert DenyFirst.asked == 4
        assert event.status is EventStatus.COMPLETED
        assert Counted.calls[event.id] == 1
        deferred = await read_all(store, kinds=("event.deferred",))
        assert [r.stream_id for r in deferred] == [event.id] * 3
        assert [r.data.denials for r in deferred] == [1, 2, 3]  # type: ignore[union-attr]
        assert [r.data.reason for r in deferred] == ["permission_denied"] * 3  # type: ignore[union-attr]
        gaps = [
            (r.data.retry_at_us - r.recorded_at_us) / 1e6  # type: ignore[union-attr]
            for r in deferred
        ]
        assert gaps == backoffs
        assert (await kinds_of(store, event.id))[-2:] == ["event.claimed", "event.finished"]


async def test_a_denied_event_does_not_block_the_others(open_store: Any, clock: Any) -> None:
    DenyFirst.asked = 0
    DenyFirst.deny = 1
    try:
        async with open_store(run="r", clock=clock) as store:
            executor = make_executor(store, cls=DenyExecutor, queue_capacity=2)
            await executor.start()
            first, second = Counted(), Counted()
            await executor.extend([first, second])
            await executor.forward()
            assert first.status is EventStatus.PENDING
            assert second.status is EventStatus.COMPLETED
            assert executor.processor is not None
            assert executor.processor.available_capacity == 2
            clock.advance(60)
            await bounded(executor.join(), "executor.join()")
            assert status_of(first) is EventStatus.COMPLETED
    finally:
        DenyFirst.deny = 3


# -- no re-execution -----------------------------------------------------------------------


async def test_finished_events_appended_again_are_not_invoked_again(open_store: Any) -> None:
    """lionagi's append put a forwarded event back in ``pending`` and forward()
    invoked it again, even when it was COMPLETED."""
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        done, failed = Counted(), Counted(fail=True)
        await executor.extend([done, failed])
        await executor.forward()
        assert done.status is EventStatus.COMPLETED
        assert failed.status is EventStatus.FAILED
        head = await store.head()
        for _ in range(2):
            await executor.append(done)
            await executor.append(failed)
            await executor.extend([done, failed])
            assert executor.processor is not None
            await executor.processor.enqueue(done)
            await executor.forward()
            await bounded(executor.join(), "executor.join()")
        assert Counted.calls[done.id] == 1
        assert Counted.calls[failed.id] == 1
        assert done.status is EventStatus.COMPLETED
        assert failed.status is EventStatus.FAILED
        assert len(executor.pending) == 0
        assert await store.head() == head  # nothing was recorded


async def test_retry_reruns_a_finished_event_as_a_new_attempt(open_store: Any) -> None:
    """lionagi had no explicit retry; re-running meant the accidental re-append above."""
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        event = Counted(fail=True)
        await executor.append(event)
        await executor.forward()
        assert event.status is EventStatus.FAILED
        assert executor.attempts(event) == 1

        await executor.retry(event)
        assert status_of(event) is EventStatus.PENDING
        assert list(executor.pending) == [event.id]
        await executor.forward()
        assert Counted.calls[event.id] == 2
        assert event.status is EventStatus.FAILED
        assert executor.attempts(event) == 2
        claims = await read_all(store, kinds=("event.claimed",), stream=event.id)
        assert [c.data.attempt for c in claims] == [1, 2]  # type: ignore[union-attr]
        retried = await read_all(store, kinds=("event.retried",), stream=event.id)
        assert [r.data.attempt for r in retried] == [2]  # type: ignore[union-attr]
        finished = await read_all(store, kinds=("event.finished",), stream=event.id)
        assert [f.data.attempt for f in finished] == [1, 2]  # type: ignore[union-attr]

        waiting = Counted()
        await executor.append(waiting)
        head = await store.head()
        await executor.retry([waiting])  # not finished: nothing to retry
        assert await store.head() == head
        with pytest.raises(ItemNotFoundError):
            await executor.retry(Counted())


# -- stop, start, forward ------------------------------------------------------------------


async def test_stop_before_execute_is_honoured(open_store: Any) -> None:
    """lionagi's execute() began with ``start()``, which cleared the stop flag: a
    stop() issued before the loop's first step was lost and the loop ran on."""
    async with open_store(run="r") as store:
        executor = make_executor(store, capacity_refresh_time=30.0)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        event = Job()
        await processor.enqueue(event)
        await processor.stop()
        await asyncio.wait_for(processor.execute(), timeout=2)
        assert processor.execution_mode is False
        assert processor.is_stopped()
        assert event.status is EventStatus.PENDING  # no cycle ran
        assert list(processor.queue) == [event.id]

        await processor.start()
        loop = asyncio.create_task(processor.execute())
        await wait_until(lambda: event.status is EventStatus.COMPLETED, what="the event")
        await processor.stop()
        await asyncio.wait_for(loop, timeout=2)


async def test_forward_before_start_raises_and_loses_nothing(open_store: Any) -> None:
    """lionagi's forward() popped the first pending id and then hit AttributeError
    (no processor): that event was orphaned, no longer pending and never queued."""
    async with open_store(run="r") as store:
        executor = make_executor(store)
        events = [Job(n=1), Job(n=2)]
        await executor.extend(events)
        head = await store.head()
        with pytest.raises(ProcessorNotStartedError, match="start"):
            await executor.forward()
        assert await store.head() == head  # the log is unchanged
        assert list(executor.pending) == [e.id for e in events]
        assert all(e.status is EventStatus.PENDING for e in events)
        await executor.start()
        await executor.forward()
        assert all(e.status is EventStatus.COMPLETED for e in events)


async def test_two_concurrent_forwards_both_see_their_events_run(open_store: Any) -> None:
    """lionagi: concurrent process() calls shared the capacity counter; a second
    forward() made while the first batch held the capacity returned without running
    its event (iModel then returned None)."""
    async with open_store(run="r") as store:
        executor = make_executor(store, queue_capacity=1)
        await executor.start()
        seen: dict[str, list[EventStatus]] = {}

        async def caller(tag: str, count: int) -> None:
            events = [Yielding(tag=f"{tag}{i}") for i in range(count)]
            for event in events:
                await executor.append(event)
            await executor.forward()
            seen[tag] = [e.status for e in events]

        await asyncio.wait_for(asyncio.gather(caller("a", 3), caller("b", 2)), timeout=10)
        assert seen == {"a": [EventStatus.COMPLETED] * 3, "b": [EventStatus.COMPLETED] * 2}


async def test_forward_sees_its_event_run_when_another_forward_queued_it(
    open_store: Any,
) -> None:
    """The interleaving behind the race: B appends, A's forward queues B's event with
    its own and is busy with its first batch when B calls forward(). B's forward
    must still return with B's event run (lionagi's returned at once)."""
    release = asyncio.Event()

    class Gate(Event):
        async def invoke(self) -> None:
            await release.wait()

    async with open_store(run="r") as store:
        executor = make_executor(store, queue_capacity=1)
        await executor.start()
        mine = Yielding(tag="b")
        appended = asyncio.Event()
        result: dict[str, Any] = {}

        async def first() -> None:
            events = [Gate(), Yielding(tag="a1"), Yielding(tag="a2")]
            await executor.extend(events)
            await appended.wait()
            await executor.forward()
            result["a"] = [e.status for e in events]

        async def second() -> None:
            await executor.append(mine)
            appended.set()
            await wait_until(lambda: mine.id not in executor.pending, what="A to queue it")
            assert mine.id in executor.processor.queue  # type: ignore[union-attr]
            forward = asyncio.create_task(executor.forward())
            for _ in range(5):  # let B's forward start and wait for A's batch
                await asyncio.sleep(0)
            assert not forward.done()
            release.set()
            await forward
            result["b"] = mine.status

        await asyncio.wait_for(asyncio.gather(first(), second()), timeout=10)
        assert result["b"] is EventStatus.COMPLETED
        assert result["a"] == [EventStatus.COMPLETED] * 3


# -- the execute loop ----------------------------------------------------------------------


async def test_execute_runs_events_enqueued_while_running_and_stops_promptly(
    open_store: Any,
) -> None:
    """lionagi's loop slept ``capacity_refresh_time`` between cycles whatever
    happened: with 30 s, a new event waited up to 30 s and stop() took up to 30 s
    to be noticed. lionstore's loop wakes on new records and on stop()."""
    async with open_store(run="r") as store:
        executor = make_executor(store, capacity_refresh_time=30.0)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        loop = asyncio.create_task(processor.execute())
        try:
            await wait_until(lambda: processor.execution_mode, what="the loop to start")
            for n in range(3):
                event = Job(n=n)
                await processor.enqueue(event)
                await wait_until(
                    lambda e=event: e.status is EventStatus.COMPLETED,  # type: ignore[misc]
                    what=f"event {n}",
                )
            late = Job(n=9)
            await executor.append(late)
            await asyncio.wait_for(executor.forward(), timeout=5)
            assert late.status is EventStatus.COMPLETED
        finally:
            await processor.stop()
        await asyncio.wait_for(loop, timeout=2)
        assert processor.execution_mode is False
        after = Job(n=10)
        await processor.enqueue(after)
        assert loop.done() and after.status is EventStatus.PENDING


class Exploding(Processor):
    explode: ClassVar[bool] = True

    async def request_permission(self, **kwargs: Any) -> bool:
        if Exploding.explode:
            raise RuntimeError("rate limiter is down")
        return True


class ExplodingExecutor(Executor):
    processor_type: ClassVar[type[Processor]] = Exploding


async def test_execution_mode_is_reset_when_request_permission_raises(open_store: Any) -> None:
    """lionagi: an exception from process()/request_permission escaped execute()
    and left ``execution_mode`` True."""
    Exploding.explode = True
    async with open_store(run="r") as store:
        executor = make_executor(store, cls=ExplodingExecutor, queue_capacity=2)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        event = Job()
        await processor.enqueue(event)
        with pytest.raises(RuntimeError, match="rate limiter is down"):
            await asyncio.wait_for(processor.execute(), timeout=5)
        assert processor.execution_mode is False
        assert processor.available_capacity == 2
        assert event.status is EventStatus.PENDING  # nothing lost, nothing claimed
        assert list(processor.queue) == [event.id]
        assert await kinds_of(store, event.id) == ["event.appended", "event.queued"]

        Exploding.explode = False
        await asyncio.wait_for(processor.join(), timeout=5)
        assert status_of(event) is EventStatus.COMPLETED
