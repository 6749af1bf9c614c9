"""rebuild's fast path (a page-at-a-time fold of the backend's scan rows, repeated JSON
decoded once, replay objects built from already-validated record data, GC paused) gives
exactly the state a record-by-record fold of ``store.read`` gives, and objects equal to
what pydantic validation builds."""

from __future__ import annotations

import asyncio
import gc
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bounds import bounded
from dbtools import execute, query, rechain
from mailtools import validated_mail
from pydantic import BaseModel
from replay_scenarios import JobExecutor, Recording, ReplayJob

import lionstore
from lionstore.domain.event import Event
from lionstore.domain.event_records import EventAppended
from lionstore.domain.ids import IDType
from lionstore.domain.records import RecordData, UnknownRecord, record_kinds
from lionstore.log.backend import ReadQuery
from lionstore.log.sqlite import SQLiteBackend
from lionstore.projections.executor import ExecutorState, RecordedEvent
from lionstore.projections.mail import MailState
from lionstore.replay import RunProjection, rebuild, state


def _validated_event(event_id: IDType, data: EventAppended) -> Event:
    return RecordedEvent(
        id=event_id,
        created_at=data.created_at,
        metadata=data.metadata,
        event_class=data.event_class,
        fields=data.fields,
    )


class ValidatingProjection(RunProjection):
    """Builds every event and mail through pydantic validation."""

    def executor(self, name: str) -> ExecutorState:
        if name not in self.executors:
            super().executor(name).materialize = _validated_event
        return self.executors[name]

    def router(self, name: str) -> MailState:
        if name not in self.routers:
            state = super().router(name)
            state.materialize_mail = validated_mail
            state.compact_parts = None  # every mail built (and validated) at once
        return self.routers[name]


async def _both(recording: Recording, **bounds: Any) -> tuple[RunProjection, RunProjection]:
    """(rebuild's projection, a fold of store.read's records one by one, every object
    validated)."""
    async with lionstore.open(recording.path, readonly=True) as store:
        fast = await rebuild(store, run=recording.label, page_size=5, **bounds)
        slow = ValidatingProjection()
        async for record in await store.read(
            run=recording.label, upto=bounds.get("at"), page_size=1
        ):
            slow.apply(record)
    return fast, slow


def _model(obj: BaseModel) -> tuple[Any, ...]:
    """Everything observable about a pydantic object, nested models included."""
    return (
        type(obj),
        obj.model_dump(),
        obj.model_fields_set,
        repr(obj),
        {k: _model(v) if isinstance(v, BaseModel) else v for k, v in obj.__dict__.items()},
    )


def _executor(state: ExecutorState) -> dict[str, Any]:
    return {
        "pile": [(i, _model(e)) for i, e in state.pile.items()],
        "pending": list(state.pending),
        "queue": list(state.queue),
        "not_before_us": state.not_before_us,
        "denials": state.denials,
        "claims": state.claims,
        "attempts": state.attempts,
        "versions": state.versions,
        "position": state.position,
        "processors": state.processors,
        "key types": {type(k) for k in [*state.versions, *state.attempts, *state.pile.keys()]},
    }


def _router(state: MailState) -> dict[str, Any]:
    return {
        "sources": list(state.sources),
        "deleted": state.deleted,
        "boxes": {
            s: (b.ins, list(b.outs), [(i, _model(m)) for i, m in b.mails.items()])
            for s, b in state.boxes.items()
        },
        "buffer": state.buffer,
        "where": list(state.where.items()),
        "mails": [(i, _model(m)) for i, m in state.mails.items()],
        "dead": [(i, _model(d.mail), d.reason, d.stage, d.position) for i, d in state.dead.items()],
        "versions": state.versions,
        "position": state.position,
    }


def _everything(p: RunProjection) -> dict[str, Any]:
    return {
        "counters": (p.position, p.records, p.unknown),
        "owner_of": list(p.owner_of.items()),
        "executors": {n: _executor(s) for n, s in p.executors.items()},
        "routers": {n: _router(s) for n, s in p.routers.items()},
        "summary": p.summary(),
    }


def test_the_fast_rebuild_equals_a_record_by_record_fold(recording: Recording) -> None:
    for at in (None, *recording.snapshots):
        fast, slow = asyncio.run(_both(recording, at=at))
        assert _everything(fast) == _everything(slow), f"at {at}"


def test_rebuilt_objects_equal_what_validation_builds(recording: Recording) -> None:
    fast, _ = asyncio.run(_both(recording))
    objects: list[BaseModel] = [e for s in fast.executors.values() for e in s.pile]
    objects += [m for r in fast.routers.values() for m in r.mails.values()]
    assert len(objects) >= 8
    for obj in objects:
        validated = type(obj).model_validate(obj.model_dump())
        assert _model(obj)[:4] == _model(validated)[:4]
    # ... and each holds its own mutable parts
    events = [e for s in fast.executors.values() for e in s.pile]
    assert len({id(e.execution) for e in events}) == len(events)
    assert len({id(e.metadata) for e in events}) == len(events)


def test_a_record_edited_into_garbage_is_unknown_on_both_paths(recording: Recording) -> None:
    """The decode cache never lets a record skip validation: an event.queued whose
    JSON repeats nothing valid is an UnknownRecord, as on the record-by-record path."""
    [(position,)] = query(
        recording.path,
        "SELECT position FROM lionstore_records WHERE kind = 'event.queued'"
        " ORDER BY position LIMIT 1",
    )
    execute(
        recording.path,
        "UPDATE lionstore_records SET data = '{\"owner\": 7}' WHERE position = ?",
        position,
    )
    rechain(recording.path, recording.run_id)  # past the digest check rebuild makes
    fast, slow = asyncio.run(_both(recording))
    assert fast.unknown == slow.unknown == 1
    assert _everything(fast) == _everything(slow)

    async def read_it() -> Any:
        async with lionstore.open(recording.path, readonly=True) as store:
            return [r async for r in await store.read(run=recording.label, upto=position)][-1]

    assert isinstance(asyncio.run(read_it()).data, UnknownRecord)


def test_rebuild_gives_the_garbage_collector_back(recording: Recording) -> None:
    assert gc.isenabled()
    asyncio.run(_both(recording))
    assert gc.isenabled()
    gc.disable()
    try:
        asyncio.run(_both(recording))
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()

    async def two_at_once() -> None:
        async with lionstore.open(recording.path, readonly=True) as store:
            await bounded(
                asyncio.gather(*(rebuild(store, run=recording.label) for _ in range(3))),
                "three rebuilds",
            )

    asyncio.run(two_at_once())
    assert gc.isenabled()


def test_a_stream_missing_its_first_record_is_found_by_number(recording: Recording) -> None:
    """Rows name their stream by number and bring its id only with version 1; a stream
    whose version 1 record is gone (deleted with SQL) is looked up, not misread."""
    [(position,)] = query(
        recording.path,
        "SELECT r.position FROM lionstore_records r WHERE r.kind = 'event.appended'"
        " AND r.stream_version = 1 ORDER BY r.position LIMIT 1",
    )
    execute(recording.path, "DELETE FROM lionstore_records WHERE position = ?", position)
    rechain(recording.path, recording.run_id)  # past the digest check rebuild makes
    fast, slow = asyncio.run(_both(recording))
    assert _everything(fast) == _everything(slow)
    assert fast.records == slow.records == _count(recording)


def _count(recording: Recording) -> int:
    [(n,)] = query(
        recording.path,
        "SELECT COUNT(*) FROM lionstore_records r JOIN lionstore_runs u"
        " ON u.run_no = r.run_no WHERE u.label = ?",
        recording.label,
    )
    return int(n)


class _Ping(RecordData):
    kind: ClassVar[str] = "rebuildtest.ping"
    n: int


def test_a_rebuild_reads_the_run_as_it_was_when_it_began(recording: Recording) -> None:
    """A rebuild is one read of one snapshot: records committed while it folds (here
    by another thread, between its first and second page) are not in it."""

    async def append_more() -> None:
        async with lionstore.open(recording.path, run=recording.label) as store:
            await store.append([(IDType.create(), _Ping(n=n)) for n in range(5)])

    class AppendAfterFirstPage(RunProjection):
        pages = 0

        def _fold_page(self, rows: list[Any], *args: Any) -> None:
            super()._fold_page(rows, *args)
            self.pages += 1
            if self.pages == 1:
                writer = threading.Thread(target=asyncio.run, args=(append_more(),))
                writer.start()
                writer.join(60)
                assert not writer.is_alive(), "the writer thread did not finish within 60 s"

    async def go() -> tuple[RunProjection, RunProjection]:
        async with lionstore.open(recording.path, readonly=True) as store:
            projection = AppendAfterFirstPage()
            await state._fold_rows(store, projection, recording.label, None, None, None, 3)
            assert projection.pages > 1
            return projection, await rebuild(store, run=recording.label)

    before = _count(recording)
    during, after = asyncio.run(go())
    assert during.records == before
    assert after.records == _count(recording) == before + 5


def test_a_scan_reads_one_whole_run_from_its_start(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "x.db", readonly=True)
    for query_ in (ReadQuery(), ReadQuery(run_no=1, after=3), ReadQuery(run_no=1, kinds=("a",))):
        with pytest.raises(ValueError, match="one whole run"):
            backend.scan_run(query_, 10)
    with pytest.raises(ValueError, match="page_size"):
        backend.scan_run(ReadQuery(run_no=1), 0)


class SkipLabelled(lionstore.Processor):
    """Denies the jobs labelled ``skip`` and ends them (lionagi's SKIPPED)."""

    event_type: ClassVar[type[lionstore.Event]] = ReplayJob

    async def request_permission(self, **kwargs: Any) -> bool:
        return kwargs.get("label") != "skip"

    async def handle_denied(self, event: lionstore.Event) -> bool:
        return True


class SkipExecutor(lionstore.Executor):
    processor_type: ClassVar[type[lionstore.Processor]] = SkipLabelled


async def _every_kind(path: str, clock: Any) -> None:
    """A run with what the replay scenario lacks: a lease renewed, claims requeued and
    abandoned after their leases expired, mail received straight into a mailbox and
    excluded from it, dead letters and buffered mail, all between events and mail in
    every other place."""
    async with lionstore.open(path, run="kinds", clock=clock) as store:
        config = {"queue_capacity": 10, "capacity_refresh_time": 0.01}
        executor = JobExecutor(
            {**config, "lease_seconds": 5.0, "max_attempts": 2}, store=store, name="kinds"
        )
        await executor.start()
        processor = executor.processor
        assert processor is not None
        lost, requeued, done = ReplayJob(value=1), ReplayJob(value=2), ReplayJob(value=3)
        for event in (lost, requeued, done):
            await processor.enqueue(event)
        for _ in range(2):
            await asyncio.wait_for(processor.dequeue(), timeout=5)  # never finished
        clock.advance(1)  # a heartbeat's renewal (lionstore.processing.heartbeat)
        renewed = await executor._repo.renew_leases(
            [(lost.id, 1)], owner=processor.owner, lease_seconds=5.0
        )
        assert renewed == [lost.id]
        clock.advance(6)
        await asyncio.wait_for(processor.dequeue(), timeout=5)
        await asyncio.wait_for(processor.dequeue(), timeout=5)
        clock.advance(6)
        await processor.process()
        await bounded(processor.join(), "processor.join()")
        await executor.retry(lost)  # abandoned, then pending again
        await processor.enqueue(ReplayJob(value=4, label="slow"))  # denied once: deferred
        await processor.process()
        clock.advance(60)
        await bounded(processor.join(), "processor.join()")
        await executor.extend([ReplayJob(value=5), ReplayJob(value=-6)])
        # current lionagi's records: a denial handle_denied ends (event.skipped) and a
        # finished event released from the working pile (event.released)
        skipper = SkipExecutor(config, store=store, name="skips")
        await skipper.start()
        kept = ReplayJob(value=8)
        await skipper.extend([ReplayJob(value=7, label="skip"), kept])
        await skipper.forward()
        assert await skipper.release(kept) == [kept.id]
        skipper.close()

        exchange = lionstore.Exchange(store=store, name="post")
        a, b, c = lionstore.Source(), lionstore.Source(), lionstore.Source()
        await exchange.add_source([a, b, c])
        received = [exchange.create_mail(a, b, "message", {"n": i}) for i in range(3)]
        for mail in received:
            await b.mailbox.append_in(mail)
        await b.mailbox.exclude(received[1])
        await a.send(exchange.create_mail(a, b, "message", "delivered"))
        await a.send(exchange.create_mail(a, lionstore.IDType.create(), "message", "dead"))
        await exchange.collect_all()
        await exchange.deliver_all()
        await a.send(exchange.create_mail(a, c, "message", "buffered"))
        await exchange.collect_all()
        await c.send(exchange.create_mail(c, a, "message", "outbox"))
        await exchange.delete_source(c)
        executor.close()
        exchange._repo.close()


def test_the_fast_rebuild_equals_a_fold_over_every_record_kind(db_target: str, clock: Any) -> None:
    asyncio.run(_every_kind(db_target, clock))
    kinds = {k for (k,) in query(db_target, "SELECT DISTINCT kind FROM lionstore_records")}
    ours = {k for k, cls in record_kinds().items() if cls.__module__.startswith("lionstore.domain")}
    assert kinds >= ours - {"run.forked"}, ours - kinds
    recording = Recording(db_target, IDType.create(), "kinds")
    [(end,)] = query(db_target, "SELECT MAX(position) FROM lionstore_records")
    for at in range(1, end + 1):
        fast, slow = asyncio.run(_both(recording, at=at))
        assert _everything(fast) == _everything(slow), f"at {at}"
