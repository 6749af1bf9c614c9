"""The guarantees of issue 4, each tested on real files: once-only collect and deliver,
per-sender order, reopen, dead letters, the delete_source policy, idempotent and atomic
add_source, one commit per sweep; through Exchange and through MailManager."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from bounds import bounded

import lionstore
from lionstore import Exchange, Mail, MailManager, Source, UnknownSourceError
from lionstore.domain.mail_records import MailDeadLettered

from .mailtools import CommitCounter, assert_one_commit, kinds_by_mail, log_records

ONCE = ["mail.sent", "mail.collected", "mail.delivered"]


def _waiting(router: Any) -> dict[Any, list[Mail]]:
    """Collected, undelivered mail by recipient: Exchange.buffer or MailManager.mails."""
    if isinstance(router, Exchange):
        return router.buffer
    return {r: [m for q in by.values() for m in q] for r, by in router.mails.items()}


def snapshot(router: Any) -> dict[str, Any]:
    """Everything a router shows, as ids in order (lists, so order is compared too)."""
    boxes = []
    for sid, box in router.mailboxes.items():
        boxes.append(
            (
                sid,
                [(m.id, m.sender, m.recipient, m.package.item, m.created_at) for m in box.pile_],
                list(box.pending_outs),
                [(s, list(p)) for s, p in box.pending_ins.items()],
                list(box.senders),
                len(box),
            )
        )
    return {
        "sources": [s.id for s in router.sources],
        "buffer": [(r, [m.id for m in q]) for r, q in _waiting(router).items()],
        "mailboxes": boxes,
        "dead": [(d.mail.id, d.reason, d.stage) for d in router.dead_letters],
    }


async def _send_round_robin(
    ex: Exchange | MailManager, senders: list[Source], recipient: Any, per_sender: int, tag: str
) -> dict[str, list[str]]:
    """Interleave sends from several senders; return each sender's mail ids in order."""
    order: dict[str, list[str]] = {s.id: [] for s in senders}
    for i in range(per_sender):
        for s in senders:
            mail = ex.create_mail(s, recipient, "message", f"{tag}-{i}")
            await s.send(mail)
            order[s.id].append(mail.id)
    return order


def _inbox(source: Source) -> dict[str, list[str]]:
    return {s: list(p) for s, p in source.mailbox.pending_ins.items()}


# -- once, in order --------------------------------------------------------------------


async def test_each_mail_is_collected_once_and_delivered_once_in_sender_order(
    store: lionstore.Store,
) -> None:
    senders = [Source() for _ in range(3)]
    inbox = Source()
    ex = Exchange([*senders, inbox], store=store)
    expected: dict[str, list[str]] = {s.id: [] for s in senders}
    for batch in range(5):
        sent = await _send_round_robin(ex, senders, inbox, 8, f"b{batch}")
        for sid, ids in sent.items():
            expected[sid].extend(ids)
        await ex.collect_all()
        if batch % 2:
            await ex.deliver_all()
    await ex.deliver_all()
    assert _inbox(inbox) == expected
    assert inbox.mailbox.senders == [s.id for s in senders]
    history = await kinds_by_mail(store)
    assert len(history) == 3 * 5 * 8
    assert all(kinds == ONCE for kinds in history.values()), history
    head = await store.head()
    assert await ex.collect_all() == 0 and await ex.deliver_all() == 0
    assert await store.head() == head


async def test_two_exchanges_racing_on_one_store_move_each_mail_once(
    store: lionstore.Store,
) -> None:
    senders = [Source() for _ in range(3)]
    inbox = Source()
    first = Exchange([*senders, inbox], store=store, name="shared")
    second = Exchange([*senders, inbox], store=store, name="shared")
    await bounded(asyncio.gather(first.load(), second.load()), "the loads")
    expected = await _send_round_robin(first, senders, inbox, 20, "race")
    moved = await bounded(
        asyncio.gather(
            first.collect_all(), second.collect_all(), first.collect_all(), second.collect_all()
        ),
        "the collects",
    )
    assert sum(moved) == 60
    moved = await bounded(
        asyncio.gather(
            first.deliver_all(), second.deliver_all(), first.deliver_all(), second.deliver_all()
        ),
        "the deliveries",
    )
    assert sum(moved) == 60
    assert _inbox(inbox) == expected
    assert {s: list(p) for s, p in second.mailboxes[inbox.id].pending_ins.items()} == expected
    assert all(k == ONCE for k in (await kinds_by_mail(store)).values())
    added = [r.stream_id for r in await log_records(store, kinds=["source.added"])]
    assert sorted(added) == sorted(s.id for s in [*senders, inbox])


async def test_collect_in_one_open_deliver_after_reopening(open_store: Any) -> None:
    senders = [Source() for _ in range(3)]
    inbox, bystander = Source(), Source()
    ghost = uuid.uuid4()
    async with open_store(run="mail") as store:
        ex = Exchange([*senders, inbox, bystander], store=store, name="ex")
        expected = await _send_round_robin(ex, senders, inbox, 10, "first")
        await senders[0].send(ex.create_mail(senders[0], ghost, "message", "to nobody"))
        assert await ex.collect_all() == 31
        # leave something in every place: an outbox, an inbox, an excluded mail
        await bystander.send(ex.create_mail(bystander, senders[1], "signal", {"k": [1, 2]}))
        direct = ex.create_mail(bystander, senders[2], "tool", "direct")
        await senders[2].mailbox.append_in(direct)
        gone = ex.create_mail(bystander, senders[2], "tool", "gone")
        await senders[2].mailbox.append_in(gone)
        await senders[2].mailbox.exclude(gone)
        before = snapshot(ex)
        ((recipient, buffered),) = before["buffer"]
        assert recipient == inbox.id
        by_sender = {s.id: [m.id for m in ex.buffer[inbox.id] if m.sender == s.id] for s in senders}
        assert by_sender == expected and len(buffered) == 30
    async with open_store(run="mail") as store:
        ex = Exchange(store=store, name="ex")
        await ex.load()
        assert snapshot(ex) == before
        assert [type(s) for s in ex.sources] == [Source] * 5
        assert await ex.deliver_all() == 30
        assert {s: list(p) for s, p in ex.mailboxes[inbox.id].pending_ins.items()} == expected
        after_deliver = snapshot(ex)
    async with open_store(run="mail") as store:
        ex = Exchange(store=store, name="ex")
        await ex.load()
        assert snapshot(ex) == after_deliver
        # continue: the same sources (rebuilt from the file) send more
        rebuilt = {s.id: s for s in ex.sources}
        more = await _send_round_robin(ex, [rebuilt[s.id] for s in senders], inbox.id, 4, "more")
        for sid, ids in more.items():
            expected[sid].extend(ids)
        assert await ex.collect_all() == 12 + 1  # and the bystander's outbox
        assert await ex.deliver_all() == 13
        box = ex.mailboxes[inbox.id]
        assert {s: list(p) for s, p in box.pending_ins.items()} == expected
        history = await kinds_by_mail(store)
        assert sum(k == ONCE for k in history.values()) == 30 + 12 + 1
        assert ["mail.sent", "mail.dead_lettered"] in history.values()
        assert ["mail.received"] in history.values()
        assert ["mail.received", "mail.excluded"] in history.values()
        assert len(history) == 30 + 12 + 1 + 1 + 2


async def test_reopened_exchange_keeps_deleted_sources_and_dead_letters(open_store: Any) -> None:
    a, b, c = Source(), Source(), Source()
    async with open_store(run="r") as store:
        ex = Exchange([a, b, c], store=store, name="ex")
        await a.send(ex.create_mail(a, c, "message", "to c"))
        await ex.collect_all()
        await ex.delete_source(c)
        before = snapshot(ex)
        assert before["sources"] == [a.id, b.id]
        assert before["dead"][0][1:] == ("recipient_deleted", "buffer")
    async with open_store(run="r") as store:
        ex = Exchange(store=store, name="ex")
        await ex.load()
        assert snapshot(ex) == before
        with pytest.raises(UnknownSourceError):
            await ex.deliver(c)


# -- dead letters ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["collect_all", "collect"])
async def test_mail_to_an_unknown_recipient_is_dead_lettered_and_does_not_block(
    how: str, store: lionstore.Store
) -> None:
    a, b = Source(), Source()
    ex = Exchange([a, b], store=store)
    ghost = uuid.uuid4()
    first = ex.create_mail(a, b, "message", "before")
    lost = ex.create_mail(a, ghost, "message", "to nobody")
    behind = ex.create_mail(a, b, "message", "behind")
    for mail in (first, lost, behind):
        await a.send(mail)
    await (ex.collect_all() if how == "collect_all" else ex.collect(a))
    await ex.deliver_all()
    assert _inbox(b) == {a.id: [first.id, behind.id]}
    (dead,) = ex.dead_letters
    assert (dead.mail.id, dead.reason, dead.stage) == (lost.id, "recipient_unknown", "outbox")
    assert dead.mail.package.item == "to nobody"
    (record,) = await log_records(store, kinds=["mail.dead_lettered"])
    assert record.stream_id == lost.id
    assert isinstance(record.data, MailDeadLettered)
    assert record.data.reason == "recipient_unknown"
    assert lost not in a.mailbox


async def test_mail_to_a_deleted_recipient_is_dead_lettered_and_does_not_block(
    store: lionstore.Store,
) -> None:
    a, b, c = Source(), Source(), Source()
    ex = Exchange([a, b, c], store=store)
    await ex.delete_source(c)
    lost = ex.create_mail(a, c, "message", "to a deleted source")
    behind = ex.create_mail(a, b, "message", "behind")
    await a.send(lost)
    await a.send(behind)
    assert await ex.collect_all() == 2
    assert await ex.deliver_all() == 1
    assert _inbox(b) == {a.id: [behind.id]}
    assert [(d.mail.id, d.reason) for d in ex.dead_letters] == [(lost.id, "recipient_deleted")]
    (record,) = await log_records(store, kinds=["mail.dead_lettered"])
    assert isinstance(record.data, MailDeadLettered)
    assert (record.stream_id, record.data.reason) == (lost.id, "recipient_deleted")


# -- delete_source policy --------------------------------------------------------------


async def test_delete_source_dead_letters_mail_to_it_and_its_outbox_in_one_commit(
    open_store: Any, ticking: Any
) -> None:
    a, b, c = Source(), Source(), Source()
    async with open_store(run="r", clock=ticking) as store:
        ex = Exchange([a, b, c], store=store, name="ex")
        delivered_to_c = ex.create_mail(a, c, "message", "delivered to c")
        delivered_from_c = ex.create_mail(c, b, "message", "delivered from c")
        buffered_to_c = ex.create_mail(b, c, "message", "buffered to c")
        buffered_from_c = ex.create_mail(c, b, "message", "buffered from c")
        await a.send(delivered_to_c)
        await c.send(delivered_from_c)
        await ex.collect_all()
        await ex.deliver_all()
        await b.send(buffered_to_c)
        await c.send(buffered_from_c)
        await ex.collect_all()
        outbox_to_c = ex.create_mail(a, c, "message", "outbox to c")
        outbox_from_c = ex.create_mail(c, a, "message", "outbox from c")
        unrelated = ex.create_mail(a, b, "message", "unrelated")
        await a.send(outbox_to_c)
        await c.send(outbox_from_c)
        await a.send(unrelated)
        head = await store.head()

        assert await ex.delete_source(c) == [c.id]

        records = await log_records(store, after=head)
        assert_one_commit(records)
        assert (records[0].kind, records[0].stream_id) == ("source.deleted", c.id)
        assert all(isinstance(r.data, MailDeadLettered) for r in records[1:])
        dead = {
            r.stream_id: (r.data.reason, r.data.stage)  # type: ignore[union-attr]
            for r in records[1:]
        }
        assert all(r.kind == "mail.dead_lettered" for r in records[1:])
        assert dead == {
            outbox_from_c.id: ("sender_deleted", "outbox"),
            buffered_to_c.id: ("recipient_deleted", "buffer"),
            outbox_to_c.id: ("recipient_deleted", "outbox"),
        }
        assert {d.mail.id: (d.reason, d.stage) for d in ex.dead_letters} == dead
        # delivered mail stays delivered; mail c sent that was collected before its
        # deletion is still delivered; unrelated mail goes on
        assert _inbox(b) == {c.id: [delivered_from_c.id]}
        assert delivered_to_c.id in c.mailbox
        assert [m.id for m in ex.buffer[b.id]] == [buffered_from_c.id]
        assert list(a.mailbox.pending_outs) == [unrelated.id]
        assert await ex.collect_all() == 1 and await ex.deliver_all() == 2
        assert _inbox(b) == {c.id: [delivered_from_c.id, buffered_from_c.id], a.id: [unrelated.id]}
        history = await kinds_by_mail(store)
        assert history[delivered_to_c.id] == ONCE
        assert history[delivered_from_c.id] == ONCE
        assert history[buffered_from_c.id] == ONCE
        before = snapshot(ex)
    async with open_store(run="r") as store:
        ex = Exchange(store=store, name="ex")
        await ex.load()
        assert snapshot(ex) == before


# -- add_source ------------------------------------------------------------------------


async def test_add_source_is_idempotent(store: lionstore.Store) -> None:
    a, b, c = Source(), Source(), Source()
    ex = Exchange([a, b], store=store)
    await ex.load()
    await a.send(ex.create_mail(a, b, "message", "queued"))
    await ex.collect_all()
    head = await store.head()
    assert await ex.add_source([a, b]) == []
    assert await ex.add_source(a) == []
    assert await ex.add_source(Source(id=a.id)) == []  # same id, another object
    assert await store.head() == head
    assert await ex.add_source([b, c, a]) == [c.id]
    added = await log_records(store, after=head)
    assert [(r.kind, r.stream_id) for r in added] == [("source.added", c.id)]
    assert [s.id for s in ex.sources] == [a.id, b.id, c.id]
    assert [len(q) for q in ex.buffer.values()] == [1]  # nothing reset


async def test_add_source_is_atomic(store: lionstore.Store) -> None:
    a = Source()
    ex = Exchange([a], store=store)
    await ex.load()
    head = await store.head()
    fresh = [Source(), Source()]
    for bad_list in (
        [*fresh, object()],
        [fresh[0], "not a source", fresh[1]],
        [fresh[0], Source.model_construct(id="not-an-id")],  # type: ignore[arg-type]
    ):
        with pytest.raises((TypeError, lionstore.IDError)):
            await ex.add_source(bad_list)
        assert [s.id for s in ex.sources] == [a.id]
        assert await store.head() == head
    for source in fresh:
        with pytest.raises(lionstore.SourceError):  # never registered, cannot record
            await source.send(ex.create_mail(source, a, "message", "x"))
    assert await store.head() == head
    with pytest.raises(TypeError):
        await ex.add_source(object())
    assert await ex.add_source(fresh) == [s.id for s in fresh]


async def test_concurrent_add_source_registers_once(store: lionstore.Store) -> None:
    sources = [Source() for _ in range(4)]
    routers = [Exchange(store=store, name="same") for _ in range(3)]
    results = await bounded(asyncio.gather(*(r.add_source(sources) for r in routers)), "add_source")
    assert sorted(i for res in results for i in res) == sorted(s.id for s in sources)
    added = [r.stream_id for r in await log_records(store, kinds=["source.added"])]
    assert sorted(added) == sorted(s.id for s in sources)
    for router in routers:
        await router.sync()
        assert {s.id for s in router.sources} == {s.id for s in sources}


# -- one commit per sweep --------------------------------------------------------------


async def test_collect_all_and_deliver_all_commit_once_per_sweep(
    open_store: Any, clock: Any, ticking: Any
) -> None:
    async with open_store(run="sweeps", clock=ticking) as store:
        sources = [Source() for _ in range(4)]
        ex = Exchange(sources, store=store)
        await ex.load()
        for s in sources:
            for r in sources:
                if r is not s:
                    await s.send(ex.create_mail(s, r, "message", "x"))
        await sources[0].send(ex.create_mail(sources[0], uuid.uuid4(), "message", "dead"))
        commits = CommitCounter(store)
        for sweep, expected_kinds in (
            (ex.collect_all, {"mail.collected": 12, "mail.dead_lettered": 1}),
            (ex.deliver_all, {"mail.delivered": 12}),
        ):
            clock.advance(60)
            head = await store.head()
            commits.reset()
            await sweep()
            assert commits.count == 1
            records = await log_records(store, after=head)
            assert_one_commit(records)
            kinds: dict[str, int] = {}
            for rec in records:
                kinds[rec.kind] = kinds.get(rec.kind, 0) + 1
            assert kinds == expected_kinds
            assert records[0].recorded_at == clock()  # the ticking FakeClock's reading
        commits.close()
        # the two sweeps were two commits a minute apart
        moves = await log_records(store, kinds=["mail.collected", "mail.delivered"])
        stamps = sorted({r.recorded_at_us for r in moves})
        assert len(stamps) == 2 and stamps[1] - stamps[0] >= 60_000_000


async def test_a_sweep_with_nothing_to_do_writes_nothing(store: lionstore.Store) -> None:
    ex = Exchange([Source(), Source()], store=store)
    await ex.load()
    head = await store.head()
    commits = CommitCounter(store)
    assert await ex.collect_all() == 0 and await ex.deliver_all() == 0
    assert commits.count == 0 and await store.head() == head


# -- MailManager -----------------------------------------------------------------------


async def test_mail_manager_keeps_order_once_only_and_survives_reopen(open_store: Any) -> None:
    senders = [Source() for _ in range(3)]
    inbox = Source()
    async with open_store(run="mm") as store:
        manager = MailManager([*senders, inbox], store=store, name="mm")
        expected = await _send_round_robin(manager, senders, inbox, 6, "mm")
        assert await manager.collect_all() == 18
        mails = manager.mails
        assert {s: [m.id for m in q] for s, q in mails[inbox.id].items()} == expected
        before = snapshot(manager)
    async with open_store(run="mm") as store:
        manager = MailManager(store=store, name="mm")
        await manager.load()
        assert snapshot(manager) == before
        reopened = manager.mails
        assert list(reopened) == [inbox.id]
        assert [(s, [m.id for m in q]) for s, q in reopened[inbox.id].items()] == [
            (s, [m.id for m in q]) for s, q in mails[inbox.id].items()
        ]
        assert all(isinstance(m, Mail) for q in reopened[inbox.id].values() for m in q)
        assert await manager.send_all() == 18
        assert manager.mails == {}
        box = manager.mailboxes[inbox.id]
        assert {s: list(p) for s, p in box.pending_ins.items()} == expected
        assert all(k == ONCE for k in (await kinds_by_mail(store)).values())


async def test_mail_manager_delete_source_and_add_sources(open_store: Any, ticking: Any) -> None:
    a, b, c = Source(), Source(), Source()
    async with open_store(run="mm", clock=ticking) as store:
        manager = MailManager([a, b, c], store=store)
        to_c = manager.create_mail(a, c, "message", "to c")
        from_c = manager.create_mail(c, b, "message", "from c")
        queued = manager.create_mail(c, a, "message", "still in c's outbox")
        keep = manager.create_mail(a, b, "message", "keep")
        await a.send(to_c)
        await c.send(from_c)
        await manager.collect_all()
        await c.send(queued)
        await a.send(keep)
        head = await store.head()
        assert await manager.add_sources([a, b, c]) == []
        assert await store.head() == head
        assert await manager.delete_source(str(c.id)) == [c.id]
        records = await log_records(store, after=head)
        assert_one_commit(records)
        assert [r.kind for r in records] == ["source.deleted"] + ["mail.dead_lettered"] * 2
        assert {d.mail.id: d.reason for d in manager.dead_letters} == {
            to_c.id: "recipient_deleted",
            queued.id: "sender_deleted",
        }
        # c's mail collected before its deletion is still sent
        queued_mail = manager.mails
        assert list(queued_mail) == [b.id] and list(queued_mail[b.id]) == [c.id]
        assert [m.id for m in queued_mail[b.id][c.id]] == [from_c.id]
        assert await manager.collect_all() == 1 and await manager.send_all() == 2
        assert _inbox(b) == {c.id: [from_c.id], a.id: [keep.id]}
        with pytest.raises(TypeError):
            await manager.add_sources([Source(), object()])
        assert [s.id for s in manager.sources] == [a.id, b.id]
