"""Current lionagi's Processor protocol (reference/lionagi-current.md), grown on top of
the seed's: concurrency_limit, max_queue_size / try_enqueue / queue_full, the
invoke() template, CANCELLED / ABORTED / SKIPPED, handle_denied, streaming events,
the Executor helpers, cancellation, and a Processor used on its own inside the
ambient store. Everything it does is recorded, rebuilt on reopen and verified."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import pytest
from proc_helpers import read_all, status_of, wait_until

import lionstore
from lionstore.domain.event import TERMINAL_STATUSES, Event, EventStatus
from lionstore.domain.event_records import EventDeferred, EventFinished, ProcessorStarted
from lionstore.errors import ProcessorNotStartedError
from lionstore.processing.executor import Executor
from lionstore.processing.processor import Processor
from lionstore.replay import verify


class Ok(Event):
    """Current lionagi's way: ``_invoke`` returns the response."""

    n: int = 0

    async def _invoke(self) -> Any:
        return {"n": self.n}


class Boom(Event):
    async def _invoke(self) -> Any:
        raise ValueError("boom")


class Gated(Event):
    """Waits on a gate shared by the class, counting how many run at once."""

    running: ClassVar[int] = 0
    most: ClassVar[int] = 0
    gate: ClassVar[asyncio.Event | None] = None

    async def _invoke(self) -> Any:
        Gated.running += 1
        Gated.most = max(Gated.most, Gated.running)
        try:
            assert Gated.gate is not None
            await Gated.gate.wait()
        finally:
            Gated.running -= 1
        return "through"


class Chunks(Event):
    streaming: bool = True
    words: list[str] = []

    async def _stream(self) -> AsyncGenerator[Any, None]:
        for word in self.words:
            if word == "!":
                raise RuntimeError("stream broke")
            yield word


class SeedStyle(Event):
    """The seed's way: override invoke() itself."""

    async def invoke(self) -> None:
        self.response = "seed"


class Labelled(Event):
    label: str = ""

    @property
    def request(self) -> dict[str, Any]:
        return {"label": self.label}

    async def _invoke(self) -> Any:
        return self.label


class SkipDenied(Processor):
    """Denies ``no`` and ends it (lionagi's default for a denial)."""

    event_type: ClassVar[type[Event]] = Labelled

    async def request_permission(self, **kwargs: Any) -> bool:
        return kwargs.get("label") != "no"

    async def handle_denied(self, event: Event) -> bool:
        return True


class DeferOnceAtOnce(Processor):
    """Denies each ``later`` once; the override defers it (due again next cycle)."""

    event_type: ClassVar[type[Event]] = Labelled

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.denied: set[str] = set()

    async def request_permission(self, **kwargs: Any) -> bool:
        label = kwargs.get("label", "")
        if label.startswith("later") and label not in self.denied:
            self.denied.add(label)
            return False
        return True

    async def handle_denied(self, event: Event) -> bool:
        return False


class DenyAll(Processor):
    """Denies everything and keeps lionstore's default hook (defer with back-off)."""

    event_type: ClassVar[type[Event]] = Labelled

    async def request_permission(self, **kwargs: Any) -> bool:
        return False


class SkipExecutor(Executor):
    processor_type: ClassVar[type[Processor]] = SkipDenied


CURRENT: dict[str, Any] = {
    "queue_capacity": 10,
    "capacity_refresh_time": 0.01,
    "concurrency_limit": 2,
}


async def _finished(store: lionstore.Store) -> dict[Any, EventFinished]:
    records = await read_all(store, kinds=("event.finished",))
    return {r.stream_id: r.data for r in records}  # type: ignore[misc]


# -- construction -------------------------------------------------------------------------


def test_current_constructor_is_a_superset_of_the_seeds() -> None:
    processor = Processor(5, 0.1, 3, 4)
    assert processor.concurrency_limit == 3 and processor.max_queue_size == 4
    assert processor._concurrency_sem is not None
    assert processor.queue.maxsize == 4 and processor.queue_full is False
    assert Processor(5, 0.1, concurrency_limit=0)._concurrency_sem is None
    assert Processor(5, 0.1)._concurrency_sem is None  # the seed's call: no bound
    with pytest.raises(ValueError, match="Queue size must be non-negative"):
        Processor(5, 0.1, 2, -1)
    with pytest.raises(ValueError, match="concurrency_limit"):
        Processor(5, 0.1, -1)
    with pytest.raises(TypeError):
        Processor(5, 0.1, concurrency_limit=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Processor(5, 0.1, max_queue_size="3")  # type: ignore[arg-type]


async def test_a_processor_on_its_own_needs_an_open_store() -> None:
    processor = Processor(**CURRENT)
    with pytest.raises(ProcessorNotStartedError, match=r"lionstore\.open"):
        await processor.enqueue(Ok())
    assert processor.try_enqueue(Ok()) is True  # kept in memory, recorded later
    assert processor.queue.qsize() == 1


# -- a Processor on its own ------------------------------------------------------------------


async def test_a_processor_on_its_own_records_under_an_executor_of_its_own(
    open_store: Any,
) -> None:
    async with open_store(run="alone") as store:
        processor = Processor(**CURRENT)
        events = [Ok(n=1), Boom(), SeedStyle()]  # another class than event_type: accepted
        for event in events:
            await processor.enqueue(event)
        assert processor.queue.qsize() == 3
        await asyncio.wait_for(processor.join(), timeout=10)
        assert [e.status for e in events] == [
            EventStatus.COMPLETED,
            EventStatus.FAILED,
            EventStatus.COMPLETED,
        ]
        assert events[0].response == {"n": 1} and events[2].response == "seed"
        assert events[1].execution.error == "ValueError: boom"
        assert events[0].execution.duration is not None
        name = processor._require_repo().state.name
        assert name == f"lionstore.processing.processor.Processor@{processor.owner}"
        started = await read_all(store, kinds=("processor.started",))
        started_data = [r.data for r in started if isinstance(r.data, ProcessorStarted)]
        assert len(started_data) == len(started)
        assert [d.executor for d in started_data] == [name]
        assert started_data[0].concurrency_limit == 2
        finished = await _finished(store)
        assert finished[events[1].id].error == "ValueError: boom"
        assert (await verify(store)).divergence is None
    async with open_store(run="alone") as store:
        again = Executor(store=store, name=name)
        await again.load()
        assert again.status_counts() == {"completed": 2, "failed": 1}
        assert again.pile[events[0].id].response == {"n": 1}
        again.close()


async def test_a_processor_on_its_own_records_under_the_name_given(open_store: Any) -> None:
    async with open_store(run="named") as store:
        processor = Processor(**CURRENT, name="model-calls")
        await processor.enqueue(Ok(n=1))
        await asyncio.wait_for(processor.join(), timeout=10)
        started = await read_all(store, kinds=("processor.started",))
        started_data = [r.data for r in started if isinstance(r.data, ProcessorStarted)]
        assert len(started_data) == len(started)
        assert [d.executor for d in started_data] == ["model-calls"]


async def test_try_enqueue_is_recorded_and_enqueue_waits_for_room(open_store: Any) -> None:
    async with open_store(run="room") as store:
        processor = Processor(10, 0.01, 2, 2)
        first, second, third = Ok(n=1), Ok(n=2), Ok(n=3)
        assert processor.try_enqueue(first) is True
        assert processor.try_enqueue(second) is True
        assert processor.queue_full and processor.try_enqueue(third) is False
        flush = processor._flush_task
        assert flush is not None
        await asyncio.wait_for(flush, timeout=5)
        queued = await read_all(store, kinds=("event.queued",))
        assert [r.stream_id for r in queued] == [first.id, second.id]

        waiting = asyncio.create_task(processor.enqueue(third))
        await wait_until(lambda: processor._wakeup is not None, what="enqueue to wait")
        assert not waiting.done()  # full: enqueue waits
        claimed = await asyncio.wait_for(processor.dequeue(), timeout=5)
        assert claimed is first
        await asyncio.wait_for(waiting, timeout=5)
        assert list(processor.queue) == [second.id, third.id]


# -- the invoke() template, statuses ---------------------------------------------------------


async def test_template_runs_only_pending_events_and_keeps_seed_overrides() -> None:
    event = Ok(n=4)
    await event.invoke()
    assert event.status == EventStatus.COMPLETED and event.response == {"n": 4}
    event.execution.response = None
    await event.invoke()  # not PENDING any more: not run again
    assert event.response is None
    failing = Boom()
    await failing.invoke()
    assert failing.status == EventStatus.FAILED and failing.execution.error == "ValueError: boom"
    with pytest.raises(NotImplementedError):
        await Event().invoke()
    seed = SeedStyle()
    await seed.invoke()
    assert seed.response == "seed"
    assert {EventStatus.CANCELLED, EventStatus.ABORTED, EventStatus.SKIPPED} <= TERMINAL_STATUSES


async def test_completion_event_is_set_when_the_event_ends(open_store: Any) -> None:
    async with open_store(run="done"):
        processor = Processor(**CURRENT)
        event = Ok(n=2)
        waiter = event.completion_event
        assert not waiter.is_set()
        await processor.enqueue(event)
        await asyncio.wait_for(processor.process(), timeout=5)
        await asyncio.wait_for(waiter.wait(), timeout=5)
        assert event.completion_event.is_set()


# -- concurrency_limit -----------------------------------------------------------------------


async def test_concurrency_limit_bounds_invocations_of_one_cycle(open_store: Any) -> None:
    async with open_store(run="limit") as store:
        Gated.running, Gated.most, Gated.gate = 0, 0, asyncio.Event()
        processor = Processor(10, 0.01, concurrency_limit=2)
        events = [Gated() for _ in range(6)]
        for event in events:
            await processor.enqueue(event)
        cycle = asyncio.create_task(processor.process())
        await wait_until(lambda: Gated.running == 2, what="two invocations")
        # all six were claimed in the cycle (PROCESSING), two of them run
        assert all(e.status == EventStatus.PROCESSING for e in events)
        assert Gated.running == 2
        Gated.gate.set()
        await asyncio.wait_for(cycle, timeout=10)
        assert Gated.most == 2
        assert all(e.response == "through" for e in events)
        assert len(await _finished(store)) == 6


# -- denials: handle_denied ------------------------------------------------------------------


async def test_handle_denied_true_records_skipped(open_store: Any) -> None:
    async with open_store(run="skip") as store:
        executor = SkipExecutor(CURRENT, store=store, name="skips")
        await executor.start()
        no, yes = Labelled(label="no"), Labelled(label="yes")
        await executor.extend([no, yes])
        await asyncio.wait_for(executor.forward(), timeout=10)
        assert no.status == EventStatus.SKIPPED and yes.status == EventStatus.COMPLETED
        assert list(executor.skipped_events) == [no]
        assert executor.status_counts() == {"skipped": 1, "completed": 1}
        assert executor.processor is not None and executor.processor.queue.empty()
        skipped = await read_all(store, kinds=("event.skipped",))
        assert [r.stream_id for r in skipped] == [no.id]
        assert no.id not in await _finished(store)  # never invoked
        assert (await verify(store)).divergence is None
        executor.close()
    async with open_store(run="skip") as store:
        again = SkipExecutor(CURRENT, store=store, name="skips")
        await again.load()
        assert again.pile[no.id].status == EventStatus.SKIPPED
        again.close()


async def test_an_overriding_deferral_is_due_at_the_next_cycle(open_store: Any) -> None:
    async with open_store(run="defer") as store:
        processor = DeferOnceAtOnce(**CURRENT)
        event = Labelled(label="later")
        await processor.enqueue(event)
        await asyncio.wait_for(processor.process(), timeout=5)
        assert event.status == EventStatus.PENDING and processor.queue.qsize() == 1
        [deferred] = await read_all(store, kinds=("event.deferred",))
        assert isinstance(deferred.data, EventDeferred)
        assert deferred.data.retry_at_us == deferred.data.at_us
        await asyncio.wait_for(processor.process(), timeout=5)
        assert status_of(event) == EventStatus.COMPLETED and processor.queue.empty()
        assert (await verify(store)).divergence is None


async def test_the_default_hook_keeps_the_seeds_back_off(open_store: Any) -> None:
    async with open_store(run="backoff") as store:
        processor = DenyAll(10, 0.5, 2)
        event = Labelled(label="x")
        await processor.enqueue(event)
        await asyncio.wait_for(processor.process(), timeout=5)
        [deferred] = await read_all(store, kinds=("event.deferred",))
        data: Any = deferred.data
        assert data.retry_at_us - data.at_us == 500_000  # capacity_refresh_time * 2**0
        await asyncio.wait_for(processor.process(), timeout=5)  # not due yet: untouched
        assert len(await read_all(store, kinds=("event.deferred",))) == 1
        assert event.status == EventStatus.PENDING


# -- streaming ---------------------------------------------------------------------------------


async def test_a_streaming_event_records_its_chunks_as_the_response(open_store: Any) -> None:
    async with open_store(run="stream") as store:
        processor = Processor(**CURRENT)
        good, broken = Chunks(words=["a", "b", "c"]), Chunks(words=["a", "!"])
        await processor.enqueue(good)
        await processor.enqueue(broken)
        await asyncio.wait_for(processor.join(), timeout=10)
        assert good.status == EventStatus.COMPLETED and good.response == ["a", "b", "c"]
        assert broken.status == EventStatus.FAILED
        finished = await _finished(store)
        assert finished[good.id].response == ["a", "b", "c"]
        assert finished[broken.id].status == "failed"
        assert finished[broken.id].error == "RuntimeError: stream broke"


# -- cancellation ------------------------------------------------------------------------------


async def test_a_cancelled_process_records_cancelled(open_store: Any) -> None:
    async with open_store(run="cancel") as store:
        Gated.running, Gated.most, Gated.gate = 0, 0, asyncio.Event()
        processor = Processor(**CURRENT)
        events = [Gated(), Gated()]
        for event in events:
            await processor.enqueue(event)
        cycle = asyncio.create_task(processor.process())
        await wait_until(lambda: Gated.running == 2, what="both invocations")
        cycle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(cycle, timeout=5)
        assert [e.status for e in events] == [EventStatus.CANCELLED] * 2
        finished = await _finished(store)
        assert {finished[e.id].status for e in events} == {"cancelled"}
        name = processor._require_repo().state.name
        assert (await verify(store)).divergence is None
    async with open_store(run="cancel") as store:
        again = Executor(store=store, name=name)
        await again.load()
        assert again.status_counts() == {"cancelled": 2}
        assert len(again.cancelled_events) == 2
        again.close()


# -- Executor helpers and releases ----------------------------------------------------------


async def test_executor_helpers_and_recorded_releases(open_store: Any) -> None:
    async with open_store(run="helpers") as store:
        executor = Executor(CURRENT, store=store, name="helpers")
        assert executor.inspect_state()["processor_stopped"] is True
        await executor.start()
        done, failed = Ok(n=1), Boom()
        await executor.extend([done, failed])
        state = executor.inspect_state()
        assert state["total_events"] == 2 and state["pending_queue"] == 2
        assert state["processor_running"] is False and state["processor_stopped"] is False
        await asyncio.wait_for(executor.forward(), timeout=10)
        assert executor.status_counts() == {"completed": 1, "failed": 1}
        assert executor.cleanup_completed() == 1
        assert done not in executor and failed in executor
        await asyncio.wait_for(executor.flush_released(), timeout=5)
        released = await read_all(store, kinds=("event.released",))
        assert [r.stream_id for r in released] == [done.id]
        await executor.append(done)  # known: not appended again
        assert done not in executor
        assert await executor.release([failed, Ok()]) == [failed.id]
        assert len(executor.pile) == 0
        assert (await verify(store)).divergence is None
        executor.close()
    async with open_store(run="helpers") as store:
        again = Executor(CURRENT, store=store, name="helpers")
        await again.load()
        assert len(again.pile) == 0 and again.status_counts() == {}
        # the log keeps both calls, outcome included
        finished = await _finished(store)
        assert finished[done.id].response == {"n": 1} and finished[failed.id].status == "failed"
        again.close()


async def test_finish_each_records_an_outcome_before_slower_ones_end(open_store: Any) -> None:
    async with open_store(run="each") as store:
        Gated.running, Gated.most, Gated.gate = 0, 0, asyncio.Event()
        processor = Processor(10, 0.01, finish_each=True)
        quick, slow = Ok(n=1), Gated()
        await processor.enqueue(quick)
        await processor.enqueue(slow)
        cycle = asyncio.create_task(processor.process())

        async def quick_recorded() -> bool:
            return quick.id in await _finished(store)

        await wait_until(quick_recorded, what="the quick outcome")
        assert slow.status == EventStatus.PROCESSING and not cycle.done()
        Gated.gate.set()
        await asyncio.wait_for(cycle, timeout=10)
        assert set(await _finished(store)) == {quick.id, slow.id}
        assert (await verify(store)).divergence is None


async def test_admitted_events_are_appended_queued_and_claimed_in_one_commit(
    open_store: Any,
) -> None:
    async with open_store(run="admit") as store:
        processor = Processor(2, 0.01)
        first, second, third = Ok(n=1), Ok(n=2), Ok(n=3)
        await processor.enqueue(Ok(n=0))  # one already queued: the cycle takes it first
        before = await store.head()
        ran = await asyncio.wait_for(
            processor._cycle_with(forward=False, admit=[first, second, third]), timeout=10
        )
        assert ran == 2  # capacity 2: the queued event and the first admitted one
        records = [r async for r in await store.read(after=before)]
        commits = sorted({r.recorded_at_us for r in records if r.kind != "event.finished"})
        kinds = [r.kind for r in records if r.recorded_at_us == commits[0]]
        assert kinds == [
            "event.appended",
            "event.appended",
            "event.appended",
            "event.queued",
            "event.queued",
            "event.queued",
            "event.claimed",
            "event.claimed",
        ]
        assert first.status == EventStatus.COMPLETED and second.status == EventStatus.PENDING
        assert list(processor.queue) == [second.id, third.id]
        await asyncio.wait_for(processor.join(), timeout=10)
        assert third.status == EventStatus.COMPLETED
        assert (await verify(store)).divergence is None
