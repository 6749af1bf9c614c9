"""Checkpoints keep finished events and delivered or dead mail as text, built on first
read: a restored state is the folded one item by item, only live work is built at
restore, and a damaged lazy item fails loudly when read, never as a wrong object."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from bounds import bounded
from fixture_kinds import FixtureExecutor, FixtureTask
from pydantic import BaseModel

import lionstore
from lionstore.domain.event import EventStatus
from lionstore.domain.lazy import LazyDict
from lionstore.projections import snapshot
from lionstore.projections.executor import ExecutorState
from lionstore.projections.mail import MailState

CONFIG = {"queue_capacity": 10, "capacity_refresh_time": 0.01, "max_backoff": 0.05}
RUN = "lazy"


class Note(BaseModel):
    """A pydantic package item (its class is named in the snapshot's mail lines)."""

    text: str
    stars: int = 0


async def build_run(path: Path) -> dict[str, Any]:
    """A run with events completed, failed, retried (pending again), deferred, queued and
    pending, and mail delivered, dead-lettered, excluded, buffered and in an outbox."""
    async with lionstore.open(path, run=RUN) as store:
        executor = FixtureExecutor(CONFIG, store=store, name="worker")
        await executor.start()
        tasks = [
            FixtureTask(name=f"ok{i}", numerator=7 * i, denominator=2) for i in range(1, 6)
        ] + [FixtureTask(name=f"bad{i}", numerator=1, denominator=0) for i in range(3)]
        limited = FixtureTask(name="rate-limited", numerator=9, denominator=3)
        await executor.extend([*tasks, limited])
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        await executor.retry(tasks[-1])  # failed, then pending again
        await executor.stop()
        pending = [FixtureTask(name=f"later{i}", numerator=i, denominator=1) for i in range(3)]
        await executor.extend(pending)
        await executor._repo.queue([pending[1].id])

        alice, bob, carol = lionstore.Source(), lionstore.Source(), lionstore.Source()
        exchange = lionstore.Exchange(store=store, name="post")
        await exchange.add_source([alice, bob, carol])
        hi = exchange.create_mail(alice, bob, "message", "hi bob")
        note = exchange.create_mail(bob, alice, "message", Note(text="reply", stars=3))
        gone = exchange.create_mail(alice, bob, "message", {"drop": "me"})
        await alice.send(hi)
        await bob.send(note)
        await alice.send(gone)
        await alice.send(exchange.create_mail(alice, lionstore.IDType.create(), "message", "?"))
        await exchange.collect_all()
        await exchange.deliver_all()
        await bob.mailbox.exclude(gone)
        await alice.send(exchange.create_mail(alice, carol, "message", Note(text="buffered")))
        await exchange.collect_all()
        await carol.send(exchange.create_mail(carol, bob, "message", "in the outbox"))
        executor.close()
        exchange._repo.close()
        return {"tasks": [t.id for t in tasks], "hi": hi.id, "note": note.id, "gone": gone.id}


@pytest.fixture
async def lazy_run(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "lazy.db"
    ids = await build_run(path)
    async with opened(path) as (executor, _exchange):  # folds, writes the checkpoints
        assert executor._repo.restored_from is None
    return path, ids


@asynccontextmanager
async def opened(
    path: Path, checkpoints: bool = True
) -> AsyncIterator[tuple[FixtureExecutor, lionstore.Exchange]]:
    async with lionstore.open(path, run=RUN, checkpoints=checkpoints) as store:
        executor = FixtureExecutor(CONFIG, store=store, name="worker")
        exchange = lionstore.Exchange(store=store, name="post")
        await executor.load()
        await exchange.load()
        yield executor, exchange


def event_facts(event: lionstore.Event) -> tuple[Any, ...]:
    return (type(event), event.model_dump())


def mail_facts(mail: lionstore.Mail) -> tuple[Any, ...]:
    item = mail.package.item
    return (type(mail), mail.model_dump(), type(item), item)


def executor_facts(executor: FixtureExecutor) -> dict[str, Any]:
    state = executor._repo.state
    pile = executor.pile
    ids = pile.keys()
    # statuses and the filtered piles first: they are read from unbuilt lines
    return {
        "ids": ids,
        "len": len(pile),
        "statuses": [state.status(i) for i in ids],
        "terminal": [executor.is_terminal(i) for i in ids],
        "attempts": [executor.attempts(i) for i in ids],
        "pending": executor.pending_events.keys(),
        "processing": executor.processing_events.keys(),
        "failed": executor.failed_events.keys(),
        "first": event_facts(pile[0]),
        "last": event_facts(pile[-1]),
        "slice": [event_facts(e) for e in pile[2:5]],
        "completed": executor.completed_events.keys(),
        "events": [event_facts(e) for e in pile],
        "progression": list(executor.pending),
        "state": {
            k: getattr(state, k)
            for k in ("pending", "queue", "not_before_us", "denials", "claims", "attempts")
        }
        | {"versions": state.versions, "position": state.position},
    }


def router_facts(exchange: lionstore.Exchange) -> dict[str, Any]:
    state = exchange._repo.state
    return {
        "mails": {i: mail_facts(m) for i, m in state.mails.items()},
        "order": list(state.mails),
        "where": list(state.where.items()),
        "versions": state.versions,
        "boxes": {
            sid: (list(box.outs), {s: list(q) for s, q in box.ins.items()}, list(box.mails))
            for sid, box in state.boxes.items()
        },
        "buffer": {r: list(q) for r, q in state.buffer.items()},
        "mailboxes": {
            sid: ([mail_facts(m) for m in box.pile_], len(box), list(box.pending_outs))
            for sid, box in exchange.mailboxes.items()
        },
        "exchange buffer": {r: [m.id for m in q] for r, q in exchange.buffer.items()},
        "dead": [(d.mail.id, d.reason, d.stage, d.position) for d in exchange.dead_letters],
        "sources": sorted(state.sources),
        "deleted": state.deleted,
        "position": state.position,
    }


async def test_a_lazily_restored_state_is_the_folded_one_item_by_item(
    lazy_run: tuple[Path, dict[str, Any]],
) -> None:
    path, ids = lazy_run
    async with opened(path, checkpoints=False) as (executor, exchange):
        folded = executor_facts(executor), router_facts(exchange)
    async with opened(path) as (executor, exchange):
        assert executor._repo.restored_from is not None
        assert exchange._repo.restored_from is not None
        items = executor._repo.state.pile._items
        mails = exchange._repo.state.mails
        assert isinstance(items, LazyDict) and isinstance(mails, LazyDict)
        # only live work (and one sample per class) was built at restore
        live = {i for i in items if items.tag(i) not in (EventStatus.COMPLETED, "failed")}
        assert {i for i in items if items.is_built(i)} == live | {ids["tasks"][0]}
        assert items.unbuilt() == len(items) - len(live) - 1 > 0
        assert mails.unbuilt() > 0 and not mails.is_built(ids["hi"])
        # statuses, `in` and len are read without building
        assert executor._repo.state.status(ids["tasks"][1]) == EventStatus.COMPLETED
        assert ids["tasks"][1] in executor and len(executor.pile) == len(folded[0]["ids"])
        assert not items.is_built(ids["tasks"][1])
        assert len(executor.failed_events) == 2 and not items.is_built(ids["tasks"][1])
        restored = executor_facts(executor), router_facts(exchange)
        assert items.unbuilt() == 0 and mails.unbuilt() == 0
        # one object per mail, whichever projection dict it is read from
        state = exchange._repo.state
        for box in state.boxes.values():
            assert all(box.mails[i] is state.mails[i] for i in box.mails)
        assert all(d.mail is state.mails[i] for i, d in state.dead.items())
    assert restored[0] == folded[0]
    assert restored[1] == folded[1]


async def test_work_after_a_lazy_restore_matches_the_fold(
    lazy_run: tuple[Path, dict[str, Any]],
) -> None:
    """A retried finished event and an excluded delivered mail are built from their
    lines and changed by the fold like any other; the next checkpoint holds them."""
    path, ids = lazy_run
    async with opened(path) as (executor, exchange):
        assert executor._repo.restored_from is not None
        await executor.start()
        await executor.retry(ids["tasks"][2])
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        await executor.stop()
        bob = exchange._repo.state.mails[ids["hi"]].recipient
        await exchange.mailboxes[bob].exclude(ids["hi"])
    async with opened(path, checkpoints=False) as (executor, exchange):
        folded = executor_facts(executor), router_facts(exchange)
        assert executor.attempts(ids["tasks"][2]) == 2
    async with opened(path) as (executor, exchange):
        assert executor._repo.restored_from is not None
        assert (executor_facts(executor), router_facts(exchange)) == folded


def checkpoint(path: Path, name: str) -> tuple[dict[str, Any], list[str]]:
    conn = sqlite3.connect(path)
    try:
        ((stored,),) = conn.execute(
            "SELECT snapshot FROM lionstore_checkpoints WHERE name = ?", (name,)
        ).fetchall()
    finally:
        conn.close()
    first, _, rest = (snapshot.verified_text(stored) or "").partition("\n")
    return json.loads(first), rest.split("\n")


def store_checkpoint(path: Path, name: str, header: dict[str, Any], lines: list[str]) -> None:
    """Write a snapshot back, sealed (as a writer with a bug would)."""
    conn = sqlite3.connect(path)
    try:
        text = snapshot.sealed("\n".join([json.dumps(header), *lines]))
        conn.execute("UPDATE lionstore_checkpoints SET snapshot = ? WHERE name = ?", (text, name))
        conn.commit()
    finally:
        conn.close()


def _other_id(line: str) -> str:
    """The line with its event id's first hex digit changed (always a change)."""
    at = line.index('["') + 2
    return line[:at] + ("1" if line[at] == "0" else "0") + line[at + 1 :]


DAMAGE: dict[str, Callable[[str], str]] = {
    "a field its class refuses": lambda line: line.replace('"numerator":21', '"numerator":"x"'),
    "not JSON": lambda line: line[:-3],
    "another event's id": lambda line: _other_id(line),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
async def test_a_damaged_lazy_event_fails_loudly_when_read(
    lazy_run: tuple[Path, dict[str, Any]], case: str
) -> None:
    path, ids = lazy_run
    header, lines = checkpoint(path, "executor:worker")
    victim = ids["tasks"][2]  # ok3: completed, not the class's sample
    at = header["ids"].index(victim)
    assert victim not in header["samples"] and lines[at].startswith("C")
    lines[at] = DAMAGE[case](lines[at])
    store_checkpoint(path, "executor:worker", header, lines)
    async with opened(path) as (executor, _exchange):
        assert executor._repo.restored_from is not None  # the damage is not looked at yet
        assert victim in executor and len(executor.pile) == len(header["ids"])
        assert executor.pile[ids["tasks"][1]].response == 7  # the others still read
        for read in (
            lambda: executor.pile[victim],
            lambda: list(executor.pile),
            lambda: executor.completed_events,
        ):
            with pytest.raises(snapshot.SnapshotError, match=f"event {victim} of executor"):
                read()
        assert isinstance(snapshot.SnapshotError("x"), lionstore.LionstoreError)
        # a state holding a damaged line is never written to a checkpoint again
        assert not snapshot.snapshot_ready(executor._repo.state)
        assert await executor._repo.checkpoint() is False
    async with opened(path, checkpoints=False) as (executor, _exchange):
        assert executor.pile[victim].response == 10  # the log is fine


async def test_a_damaged_lazy_mail_fails_loudly_when_read(
    lazy_run: tuple[Path, dict[str, Any]],
) -> None:
    path, ids = lazy_run
    header, lines = checkpoint(path, "mail:post")
    at = header["ids"].index(ids["hi"])
    assert header["where"][at] == "i"
    lines[at] = lines[at].replace('"message"', '"no-such-category"')
    store_checkpoint(path, "mail:post", header, lines)
    async with opened(path) as (_executor, exchange):
        assert exchange._repo.restored_from is not None
        bob = next(s for s, box in exchange.mailboxes.items() if ids["hi"] in box)
        with pytest.raises(snapshot.SnapshotError, match=f"mail {ids['hi']} of router 'post'"):
            _ = exchange.mailboxes[bob].pile_
        assert exchange._repo.state.mails[ids["note"]].package.item == Note(text="reply", stars=3)
        assert await exchange._repo.checkpoint() is False


async def test_a_class_the_lazy_part_names_must_be_defined_at_restore(
    lazy_run: tuple[Path, dict[str, Any]],
) -> None:
    """Its sample is built at restore, so the snapshot is ignored then (and the fold
    says which class is missing), not at some later read."""
    path, _ = lazy_run
    for name, old in (("executor:worker", "lionstore_fixture.FixtureTask"), ("mail:post", None)):
        header, lines = checkpoint(path, name)
        if old is None:  # mail: the item class of the Note mails
            old = next(line.split("\t")[0] for line in lines if line.split("\t")[0])
        lines = [line.replace(old, "nowhere.Missing", 1) for line in lines]
        store_checkpoint(path, name, header, lines)
    async with opened(path, checkpoints=False) as (executor, exchange):
        folded = executor_facts(executor), router_facts(exchange)
    async with opened(path) as (executor, exchange):
        assert executor._repo.restored_from is None and exchange._repo.restored_from is None
        assert (executor_facts(executor), router_facts(exchange)) == folded


async def test_statuses_are_checked_at_restore(lazy_run: tuple[Path, dict[str, Any]]) -> None:
    """Statuses are read from unbuilt lines, so a line without a known status code
    makes the whole snapshot unusable."""
    path, ids = lazy_run
    header, lines = checkpoint(path, "executor:worker")
    at = header["ids"].index(ids["tasks"][2])
    lines[at] = "Z" + lines[at][1:]
    store_checkpoint(path, "executor:worker", header, lines)
    async with opened(path) as (executor, _):
        assert executor._repo.restored_from is None
        assert executor._repo.state.status(ids["tasks"][2]) == EventStatus.COMPLETED


async def test_restoring_builds_no_finished_item_but_the_samples(
    lazy_run: tuple[Path, dict[str, Any]],
) -> None:
    path, _ = lazy_run
    async with opened(path) as (executor, exchange):
        state = executor._repo.state
        mail_state = exchange._repo.state
        assert isinstance(state, ExecutorState) and isinstance(mail_state, MailState)
        header, _ = checkpoint(path, "executor:worker")
        items = state.pile._items
        assert isinstance(items, LazyDict)
        assert {i for i in items if items.is_built(i)} == set(header["live"]) | set(
            header["samples"]
        )
        mails = mail_state.mails
        assert isinstance(mails, LazyDict)
        mail_header, _ = checkpoint(path, "mail:post")
        undelivered = {
            i
            for i, code in zip(mail_header["ids"], mail_header["where"], strict=True)
            if code in "ob"
        }
        assert {i for i in mails if mails.is_built(i)} == undelivered | set(mail_header["samples"])
