"""A rebuild keeps finished events and delivered mail compact until something reads them.

What reading returns is checked against a validated fold in test_rebuild_fast_path;
these tests check that the compact form is used, that reads build it once (one
object per event or mail, whichever dict it is read from), and that statuses and
counts do not build anything.
"""

from __future__ import annotations

import asyncio

import pytest
from replay_scenarios import EXECUTOR, ROUTER, Recording

import lionstore
from lionstore.domain.event import EventStatus
from lionstore.domain.ids import IDType
from lionstore.domain.lazy import LazyDict
from lionstore.projections.executor import (
    ExecutorState,
    RecordedEvent,
    class_materializer,
    compact_finished,
    raw_materializer,
)
from lionstore.projections.mail import MailState, compact_delivered
from lionstore.projections.snapshot import dump_state
from lionstore.replay import RunProjection, rebuild


def _rebuilt(recording: Recording) -> RunProjection:
    async def go() -> RunProjection:
        async with lionstore.open(recording.path, readonly=True) as store:
            return await rebuild(store, run=recording.label)

    return asyncio.run(go())


def test_finished_events_stay_compact_until_read(recording: Recording) -> None:
    projection = _rebuilt(recording)
    state = projection.executors[EXECUTOR]
    items = state.pile._items
    assert isinstance(items, LazyDict)
    terminal = (EventStatus.COMPLETED, EventStatus.FAILED)
    finished = [i for i in items if items.tag(i) in terminal]
    assert finished
    assert items.unbuilt() == len(finished)
    statuses = {i: state.status(i) for i in items}
    counts = projection.counts()["events"]
    assert sum(counts.values()) == len(items)
    assert counts["completed"] == sum(s is EventStatus.COMPLETED for s in statuses.values())
    assert items.unbuilt() == len(finished)  # statuses and counts built nothing

    first = state.pile[finished[0]]
    assert isinstance(first, RecordedEvent)
    assert first.id is next(k for k in items if k == finished[0])  # the key object
    assert state.pile[finished[0]] is first  # built once
    assert {i: e.status for i, e in state.pile.items()} == statuses
    assert items.unbuilt() == 0


def test_delivered_mail_is_one_object_from_either_dict(recording: Recording) -> None:
    router = _rebuilt(recording).routers[ROUTER]
    mails = router.mails
    assert isinstance(mails, LazyDict)
    inbox = [m for m, place in router.where.items() if place == "inbox"]
    assert inbox
    assert all(not mails.is_built(m) for m in inbox)
    for mail_id in inbox:
        box = next(b for b in router.boxes.values() if mail_id in b.mails)
        from_box = box.mails[mail_id]  # built through the box first
        assert from_box is mails[mail_id]
        assert from_box.id == mail_id
        assert mail_id in box.ins[from_box.sender]


def test_a_compact_state_snapshots_like_a_built_one(recording: Recording) -> None:
    projection = _rebuilt(recording)
    built = _rebuilt(recording)
    for state in (built.executors[EXECUTOR], built.routers[ROUTER]):
        state_items = state.pile._items if isinstance(state, ExecutorState) else state.mails
        state_items.values()  # everything built
    assert dump_state(projection.executors[EXECUTOR]) == dump_state(built.executors[EXECUTOR])
    # Sources are made afresh (with their own created_at) by each rebuild: share them.
    built.routers[ROUTER].sources = projection.routers[ROUTER].sources
    assert dump_state(projection.routers[ROUTER]) == dump_state(built.routers[ROUTER])


def test_compacting_needs_an_empty_replay_state() -> None:
    state = ExecutorState("x", raw_materializer)
    state.versions[IDType.create()] = 1
    with pytest.raises(ValueError, match="empty state"):
        compact_finished(state)
    with pytest.raises(ValueError, match="raw_materializer"):
        compact_finished(ExecutorState("y", class_materializer(RecordedEvent)))
    mail = MailState("r", lambda i, d: None)
    mail.versions[IDType.create()] = 1
    with pytest.raises(ValueError, match="empty state"):
        compact_delivered(mail)
