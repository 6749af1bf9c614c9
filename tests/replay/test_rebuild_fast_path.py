"""rebuild's fast path (page-at-a-time fold of SQLite rows, repeated JSON decoded once,
replay objects built from already-validated record data, GC paused) gives exactly the
state a record-by-record fold of ``store.read`` gives, and objects equal to what
pydantic validation builds."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from typing import Any

import pytest
from pydantic import BaseModel
from replay_scenarios import Recording

import lionstore
from lionstore.domain.event import Event
from lionstore.domain.event_records import EventAppended
from lionstore.domain.ids import IDType
from lionstore.domain.mail import Mail, Package
from lionstore.domain.mail_records import MailReceived, MailSent
from lionstore.domain.records import UnknownRecord
from lionstore.projections.executor import ExecutorState, RecordedEvent
from lionstore.projections.mail import MailState
from lionstore.replay import RunProjection, rebuild


def _validated_event(event_id: IDType, data: EventAppended) -> Event:
    return RecordedEvent(
        id=event_id,
        created_at=data.created_at,
        metadata=data.metadata,
        event_class=data.event_class,
        fields=data.fields,
    )


def _validated_mail(mail_id: IDType, data: MailSent | MailReceived) -> Mail:
    p = data.package
    package = Package(
        p.category,
        p.item,
        p.request_source,
        id=p.id,
        created_at=p.created_at,
        metadata={"item_class": p.item_class} if p.item_class else {},
    )
    return Mail(
        id=mail_id,
        created_at=data.created_at,
        metadata=data.metadata,
        sender=data.sender,
        recipient=data.recipient,
        package=package,
    )


class ValidatingProjection(RunProjection):
    """Builds every event and mail through pydantic validation."""

    def executor(self, name: str) -> ExecutorState:
        if name not in self.executors:
            super().executor(name).materialize = _validated_event
        return self.executors[name]

    def router(self, name: str) -> MailState:
        if name not in self.routers:
            super().router(name).materialize_mail = _validated_mail
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
    if "://" in str(recording.path):
        pytest.skip("edits the SQLite file directly; the fast path is SQLite's")
    conn = sqlite3.connect(recording.path)
    with conn:
        (position,) = conn.execute(
            "SELECT position FROM lionstore_records WHERE kind = 'event.queued'"
            " ORDER BY position LIMIT 1"
        ).fetchone()
        conn.execute(
            "UPDATE lionstore_records SET data = '{\"owner\": 7}' WHERE position = ?",
            (position,),
        )
    conn.close()
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
            await asyncio.gather(*(rebuild(store, run=recording.label) for _ in range(3)))

    asyncio.run(two_at_once())
    assert gc.isenabled()
