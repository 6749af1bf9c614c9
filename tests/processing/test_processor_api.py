"""Every member of the seed's Processor and Executor exists and does what the seed
documents (shared/seeds/processor-executor.txt), on a real SQLite file."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

import pytest
from bounds import bounded
from proc_helpers import FAST, kinds_of, make_executor, read_all, wait_until
from processing_events import Job, OtherJob

import lionstore
from lionstore.domain.event import Event, EventStatus
from lionstore.domain.pile import Pile
from lionstore.domain.progression import Progression
from lionstore.errors import ProcessorNotStartedError, ReadOnlyProjectionError, RecordError
from lionstore.processing.executor import Executor
from lionstore.processing.processor import Processor, QueueView


class Ordered(Event):
    """Records the order in which invocations start."""

    tag: str = ""
    started: ClassVar[list[str]] = []

    async def invoke(self) -> None:
        Ordered.started.append(self.tag)
        await asyncio.sleep(0)
        self.response = self.tag


# -- Processor: construction ---------------------------------------------------------------


def test_processor_init_and_seed_validation_messages() -> None:
    processor = Processor(3, 0.5)
    assert processor.queue_capacity == 3
    assert processor.capacity_refresh_time == 0.5
    assert Processor(queue_capacity=2, capacity_refresh_time=1).queue_capacity == 2
    with pytest.raises(ValueError, match=r"^Queue capacity must be greater than 0\.$"):
        Processor(0, 1.0)
    with pytest.raises(ValueError, match=r"^Queue capacity must be greater than 0\.$"):
        Processor(-5, 1.0)
    with pytest.raises(ValueError, match=r"^Capacity refresh time must be larger than 0\.$"):
        Processor(1, 0)
    with pytest.raises(ValueError, match=r"^Capacity refresh time must be larger than 0\.$"):
        Processor(1, -0.1)
    for bad in ("3", None, True):
        with pytest.raises(TypeError):
            Processor(bad, 1.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Processor(1, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Processor(1, 1.0, concurrency_limit="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Processor(1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Processor(1, 1.0, max_attempts=0)
    with pytest.raises(ValueError):
        Processor(1, 1.0, lease_seconds=0)


def test_processor_initial_state() -> None:
    processor = Processor(4, 1.0)
    assert processor.event_type is Event
    assert processor.available_capacity == 4
    assert processor.execution_mode is False
    assert processor.is_stopped() is False
    queue = processor.queue
    assert isinstance(queue, QueueView)
    assert queue.empty() and queue.qsize() == 0 and len(queue) == 0 and list(queue) == []
    processor.available_capacity = 2
    processor.execution_mode = True
    assert processor.available_capacity == 2
    assert processor.execution_mode is True


async def test_create_forwards_kwargs_and_keeps_the_subclass() -> None:
    class Custom(Processor):
        pass

    made = await Custom.create(queue_capacity=7, capacity_refresh_time=2.0)
    assert type(made) is Custom
    assert made.queue_capacity == 7
    assert made.capacity_refresh_time == 2.0
    with pytest.raises(TypeError):
        await Processor.create(queue_capacity=1, capacity_refresh_time=1, bogus=1)


async def test_unattached_processor_refuses_queue_work() -> None:
    processor = Processor(1, 1.0)
    with pytest.raises(ProcessorNotStartedError):
        await processor.enqueue(Job())
    with pytest.raises(ProcessorNotStartedError):
        await processor.process()
    assert await processor.request_permission() is True
    assert await processor.request_permission(anything=1) is True


async def test_stop_start_is_stopped() -> None:
    processor = Processor(1, 1.0)
    await processor.stop()
    assert processor.is_stopped() is True
    await processor.stop()
    assert processor.is_stopped() is True
    await processor.start()
    assert processor.is_stopped() is False


# -- Executor: construction and views ------------------------------------------------------


async def test_executor_init_and_properties(open_store: Any) -> None:
    async with open_store(run="r") as store:
        config = {"queue_capacity": 2, "capacity_refresh_time": 0.25}
        executor = Executor(config, store=store)
        assert Executor.processor_type is Processor
        assert executor.processor_config == config
        assert executor.processor_config is not config
        assert executor.processor is None
        assert executor.event_type is Event
        assert executor.strict_event_type is False
        assert executor.name == "lionstore.processing.executor.Executor"
        assert isinstance(executor.pile, Pile) and len(executor.pile) == 0
        assert isinstance(executor.pending, Progression) and len(executor.pending) == 0
        assert Executor(store=store, name="b").processor_config == {}
        assert Executor(None, True, store=store, name="c").strict_event_type is True

        await executor.start()
        processor = executor.processor
        assert isinstance(processor, Processor)
        assert processor.queue_capacity == 2
        assert processor.capacity_refresh_time == 0.25
        await executor.start()
        assert executor.processor is processor  # created once
        assert "processor.started" in [r.kind for r in await read_all(store)]


async def test_executor_argument_errors(open_store: Any) -> None:
    async with open_store(run="r") as store:
        with pytest.raises(TypeError):
            Executor(store="not a store")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Executor([("queue_capacity", 1)], store=store)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            Executor(store=store, name="")
        bad = Executor({"queue_capacity": 1, "capacity_refresh_time": 1, "nope": 1}, store=store)
        with pytest.raises(TypeError):
            await bad.start()
        assert bad.processor is None
        with pytest.raises(ValueError, match="Queue capacity"):
            await Executor({"queue_capacity": 0, "capacity_refresh_time": 1}, store=store).start()


async def test_executor_event_type_follows_processor_type(open_store: Any) -> None:
    class JobProcessor(Processor):
        event_type: ClassVar[type[Event]] = Job

    class JobExecutor(Executor):
        processor_type: ClassVar[type[Processor]] = JobProcessor

    async with open_store(run="r") as store:
        loose = make_executor(store, cls=JobExecutor, name="loose")
        assert loose.event_type is Job
        assert loose.name == "loose"
        await loose.append(Job())
        await loose.append(OtherJob())  # subclasses are fine unless strict
        with pytest.raises(TypeError):
            await loose.append(Ordered())
        assert len(loose.pile) == 2

        strict = make_executor(store, cls=JobExecutor, name="strict", strict=True)
        assert strict.strict_event_type is True
        await strict.append(Job())
        with pytest.raises(TypeError):
            await strict.append(OtherJob())
        assert len(strict.pile) == 1
        default_name = JobExecutor({**FAST}, store=store)
        assert default_name.name.endswith("JobExecutor")


async def test_append_extend_pile_pending(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        first, second, third = Job(n=1), Job(n=2), OtherJob(n=3)
        await executor.append(first)
        await executor.extend([second, third])
        assert list(executor.pile) == [first, second, third]
        assert executor.pile[first.id] is first  # the very objects appended
        assert list(executor.pending) == [first.id, second.id, third.id]
        await executor.append(first)  # already there: nothing changes
        await executor.extend([second, second])
        assert len(executor.pile) == 3
        assert list(executor.pending) == [first.id, second.id, third.id]
        assert await kinds_of(store, first.id) == ["event.appended"]
        assert all(e.status is EventStatus.PENDING for e in executor.pile)


async def test_extend_is_all_or_nothing(open_store: Any) -> None:
    class Holder(Event):
        value: Any = None

    async with open_store(run="r") as store:
        executor = make_executor(store)
        good, bad = Holder(value=1), Holder(value=object())
        before = await store.head()
        with pytest.raises(RecordError):
            await executor.extend([good, bad])
        with pytest.raises(TypeError):
            await executor.extend([Job(), "not an event"])  # type: ignore[list-item]
        assert await store.head() == before
        assert len(executor.pile) == 0
        assert good not in executor


async def test_pile_and_pending_are_read_only(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        event = Job()
        await executor.append(event)
        with pytest.raises(ReadOnlyProjectionError):
            executor.pile.include(Job())
        with pytest.raises(ReadOnlyProjectionError):
            executor.pile.pop()
        with pytest.raises(ReadOnlyProjectionError):
            executor.pending.include(Job())
        with pytest.raises(ReadOnlyProjectionError):
            executor.pending.popleft()
        assert list(executor.pending) == [event.id]
        assert list(executor.pile) == [event]


async def test_contains_with_event_id_str_uuid(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        event = Job()
        await executor.append(event)
        assert event in executor
        assert event.id in executor
        assert str(event.id) in executor
        assert str(event.id).upper() in executor
        assert uuid.UUID(event.id) in executor
        assert Job() not in executor
        assert str(uuid.uuid4()) not in executor
        assert "garbage" not in executor
        assert None not in executor


async def test_forward_start_stop(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.stop()  # no processor yet: a no-op
        await executor.start()
        events = [Job(n=i) for i in range(5)]
        await executor.extend(events)
        await executor.forward()
        assert len(executor.pending) == 0
        assert [e.status for e in events] == [EventStatus.COMPLETED] * 5
        assert [e.response["double"] for e in events] == [0, 2, 4, 6, 8]
        assert executor.processor is not None
        await executor.stop()
        assert executor.processor.is_stopped()
        await executor.start()
        assert not executor.processor.is_stopped()


async def test_completed_pending_failed_events(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        ok, bad = Job(n=1), Job(n=2, fail=True)
        await executor.extend([ok, bad])
        await executor.forward()
        waiting = Job(n=3)
        await executor.append(waiting)
        completed = executor.completed_events
        failed = executor.failed_events
        pending = executor.pending_events
        for view in (completed, failed, pending):
            assert isinstance(view, Pile)
            assert view.item_type == frozenset({Event})
        assert list(completed) == [ok]
        assert list(failed) == [bad]
        assert list(pending) == [waiting]
        assert completed is not executor.completed_events  # a new pile each time
        completed.include(Job())  # a copy: changing it leaves the executor alone
        assert list(executor.completed_events) == [ok]
        assert list(executor.processing_events) == []


# -- Processor on an executor: queue, enqueue, dequeue, process, join, execute -------------


async def test_enqueue_appends_and_queues(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        first, second = Job(n=1), Job(n=2)
        await processor.enqueue(first)
        await executor.append(second)
        await processor.enqueue(second)
        await processor.enqueue(first)  # already queued: not duplicated
        assert list(processor.queue) == [first.id, second.id]
        assert processor.queue.qsize() == 2 and not processor.queue.empty()
        assert first in executor and len(executor.pending) == 0
        assert first.status is EventStatus.PENDING
        assert await kinds_of(store, first.id) == ["event.appended", "event.queued"]


async def test_dequeue_claims_the_head_and_waits_for_one(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        first, second = Job(n=1), Job(n=2)
        await processor.enqueue(first)
        await processor.enqueue(second)
        got = await asyncio.wait_for(processor.dequeue(), timeout=5)
        assert got is first
        assert first.status is EventStatus.PROCESSING
        assert list(processor.queue) == [second.id]
        claim = (await read_all(store, stream=first.id))[-1]
        assert claim.kind == "event.claimed"
        assert claim.data.owner == processor.owner  # type: ignore[union-attr]
        assert claim.data.attempt == 1  # type: ignore[union-attr]
        assert await asyncio.wait_for(processor.dequeue(), timeout=5) is second

        waiter = asyncio.create_task(processor.dequeue())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiter.done()  # the queue is empty: dequeue waits
        third = Job(n=3)
        await processor.enqueue(third)
        assert await asyncio.wait_for(waiter, timeout=5) is third


async def test_process_runs_one_capacity_limited_batch_in_fifo_order(open_store: Any) -> None:
    Ordered.started.clear()
    async with open_store(run="r") as store:
        executor = make_executor(store, queue_capacity=3)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        events = [Ordered(tag=str(i)) for i in range(7)]
        for event in events:
            await processor.enqueue(event)
        done_after = []
        for _ in range(3):
            await processor.process()
            assert processor.available_capacity == 3
            done_after.append(sum(e.status is EventStatus.COMPLETED for e in events))
        assert done_after == [3, 6, 7]
        assert Ordered.started == [str(i) for i in range(7)]
        await processor.process()  # empty queue: nothing happens
        assert processor.available_capacity == 3
        claims = await read_all(store, kinds=("event.claimed",))
        assert [c.data.cycle for c in claims] == [1, 1, 1, 2, 2, 2, 3]  # type: ignore[union-attr]


async def test_capacity_is_used_during_a_cycle(open_store: Any) -> None:
    seen: list[int] = []
    holder: dict[str, Processor] = {}

    class Peek(Event):
        async def invoke(self) -> None:
            seen.append(holder["p"].available_capacity)

    async with open_store(run="r") as store:
        executor = make_executor(store, queue_capacity=5)
        await executor.start()
        assert executor.processor is not None
        holder["p"] = executor.processor
        await executor.extend([Peek(), Peek()])
        await executor.forward()
        assert seen == [3, 3]
        assert executor.processor.available_capacity == 5


class Priced(Job):
    """A job whose request (what request_permission is given) is its size."""

    @property
    def request(self) -> dict[str, Any]:
        return {"tokens": self.n}


async def test_request_permission_gets_the_event_request(open_store: Any) -> None:
    calls: list[dict[str, Any]] = []

    class Gate(Processor):
        async def request_permission(self, **kwargs: Any) -> bool:
            calls.append(kwargs)
            return True

    class GateExecutor(Executor):
        processor_type: ClassVar[type[Processor]] = Gate

    async with open_store(run="r") as store:
        executor = make_executor(store, cls=GateExecutor)
        await executor.start()
        await executor.extend([Priced(n=5), Priced(n=9)])
        await executor.forward()
        assert calls == [{"tokens": 5}, {"tokens": 9}]
        assert len(executor.completed_events) == 2


async def test_request_permission_set_on_the_instance_is_asked(open_store: Any) -> None:
    # A processor left with the default grants without asking; one whose
    # request_permission is replaced on the instance (as a test double would be) must
    # still be asked, and its refusals deferred.
    calls: list[dict[str, Any]] = []

    async def only_small(**kwargs: Any) -> bool:
        calls.append(kwargs)
        return bool(kwargs["tokens"] < 7)

    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        assert executor.processor is not None
        executor.processor.request_permission = only_small  # type: ignore[method-assign]
        small, large = Priced(n=5), Priced(n=9)
        await executor.extend([small, large])
        await executor.processor._cycle_with(forward=True)
        assert calls == [{"tokens": 5}, {"tokens": 9}]
        assert small.status is EventStatus.COMPLETED
        assert large.status is EventStatus.PENDING
        assert "event.deferred" in await kinds_of(store, large.id)


async def test_request_permission_patched_on_the_class_is_asked(
    open_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shortcut compares with the default as defined, not with whatever the class
    # attribute holds now: patching Processor itself must not make the patch skipped.
    calls: list[dict[str, Any]] = []

    async def only_small(self: Processor, **kwargs: Any) -> bool:
        calls.append(kwargs)
        return bool(kwargs["tokens"] < 7)

    monkeypatch.setattr(Processor, "request_permission", only_small)
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        assert executor.processor is not None
        small, large = Priced(n=5), Priced(n=9)
        await executor.extend([small, large])
        await executor.processor._cycle_with(forward=True)
        assert calls == [{"tokens": 5}, {"tokens": 9}]
        assert small.status is EventStatus.COMPLETED
        assert "event.deferred" in await kinds_of(store, large.id)


async def test_join_waits_for_the_queue_to_drain(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store, queue_capacity=2)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        await asyncio.wait_for(processor.join(), timeout=5)  # nothing queued: at once
        events = [Job(n=i) for i in range(5)]
        for event in events:
            await processor.enqueue(event)
        await asyncio.wait_for(processor.join(), timeout=5)
        assert all(e.status is EventStatus.COMPLETED for e in events)
        assert processor.queue.empty()
        await asyncio.wait_for(executor.join(), timeout=5)


async def test_execute_runs_until_stopped(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        await executor.start()
        processor = executor.processor
        assert processor is not None
        event = Job(n=4)
        await processor.enqueue(event)
        loop = asyncio.create_task(processor.execute())
        await wait_until(lambda: event.status is EventStatus.COMPLETED, what="the event to run")
        assert processor.execution_mode is True
        assert not loop.done()
        await processor.stop()
        await asyncio.wait_for(loop, timeout=5)
        assert processor.execution_mode is False
        assert event.response == {"double": 8, "payload": {}}


async def test_executor_join_and_forward_need_start(open_store: Any) -> None:
    async with open_store(run="r") as store:
        executor = make_executor(store)
        with pytest.raises(ProcessorNotStartedError):
            await bounded(executor.join(), "executor.join()")
        with pytest.raises(lionstore.ProcessorNotStartedError):
            await executor.forward()
