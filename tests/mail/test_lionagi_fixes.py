"""One test per data-losing lionagi 0.8.7 mail bug (behaviour reference, section 5) that
applies to lionstore. Each docstring says what lionagi did."""

from __future__ import annotations

import uuid
from collections import deque
from typing import Any

import pytest
from dbtools import write_lock_held

import lionstore
from lionstore import Exchange, MailManager, Package, PackageCategory, Pile, Source

from .mailtools import assert_one_commit, kinds_by_mail, log_records


def _inbox(source: Source) -> dict[str, list[str]]:
    return {s: list(p) for s, p in source.mailbox.pending_ins.items()}


async def test_exchange_collect_moves_the_outbox_to_the_buffer(store: lionstore.Store) -> None:
    """lionagi: ``Exchange.collect`` raised ``AttributeError: 'Pile' object has no
    attribute 'popleft'`` whenever the sender had outbound mail, so nothing was ever
    collected (and ``collect_all``/``execute`` died with it). Section 5, item 1."""
    a, b = Source(), Source()
    ex = Exchange([a, b], store=store)
    mails = [ex.create_mail(a, b, "message", i) for i in range(3)]
    for mail in mails:
        await a.send(mail)
    head = await store.head()
    assert await ex.collect(a) == 3
    assert list(a.mailbox.pending_outs) == [] and len(a.mailbox) == 0
    assert [m.id for m in ex.buffer[b.id]] == [m.id for m in mails]  # FIFO
    records = await log_records(store, after=head)
    assert [(r.kind, r.stream_id) for r in records] == [("mail.collected", m.id) for m in mails]
    assert_one_commit(records)
    assert await ex.deliver(b) == 3
    assert _inbox(b) == {a.id: [m.id for m in mails]}


async def test_a_bad_mail_at_deliver_is_dead_lettered_not_lost_and_blocks_nothing(
    store: lionstore.Store,
) -> None:
    """lionagi: ``deliver`` popped each mail *before* checking that its sender was still
    registered; a failing mail raised ValueError and was lost, the mail behind it stayed
    stuck in the buffer, and ``deliver_all``/``execute`` aborted. Section 5, item 2."""
    c, a, b = Source(), Source(), Source()
    ex = Exchange([c, a, b], store=store)
    await ex.delete_source(c)
    bad = ex.create_mail(c, b, "message", "from a deleted sender")
    await c.send(bad)  # c's mailbox still records: the mail must not vanish
    good = [ex.create_mail(a, b, "message", i) for i in range(2)]
    for mail in good:
        await a.send(mail)
    # collecting it (mail sent after its source was deleted) dead-letters it
    assert await ex.collect_all() == 3  # no exception; every mail handled
    assert [m.id for m in ex.buffer[b.id]] == [m.id for m in good]
    assert await ex.deliver_all() == 2
    assert _inbox(b) == {a.id: [m.id for m in good]}
    (dead,) = ex.dead_letters
    assert (dead.mail.id, dead.reason, dead.stage) == (bad.id, "sender_deleted", "outbox")
    assert dead.mail.package.item == "from a deleted sender"  # kept, with its payload
    assert ex.buffer == {}
    history = await kinds_by_mail(store)
    assert history[bad.id] == ["mail.sent", "mail.dead_lettered"]


async def test_delete_source_leaves_no_poisoned_buffer_and_drops_nothing_silently(
    store: lionstore.Store,
) -> None:
    """lionagi: ``delete_source`` popped the deleted source's buffer, dropping mail *to*
    it without a trace, and left mail *from* it in the other buffers, where it later made
    ``deliver`` raise and was lost (with the mail behind it stuck). Section 5, item 3."""
    a, b, c = Source(), Source(), Source()
    ex = Exchange([a, b, c], store=store)
    from_c = ex.create_mail(c, b, "message", "from c")
    to_c = ex.create_mail(a, c, "message", "to c")
    behind = ex.create_mail(a, b, "message", "behind")
    await c.send(from_c)
    await a.send(to_c)
    await a.send(behind)
    await ex.collect_all()
    assert {r: len(q) for r, q in ex.buffer.items()} == {b.id: 2, c.id: 1}
    await ex.delete_source([c])
    # c's mail collected before the deletion is still delivered (lionagi's intent:
    # deleting a source clears the mail to it and its own unsent outbox), and it
    # makes nothing raise; the mail to c is dead-lettered, not dropped
    assert {m.id for m in ex.buffer[b.id]} == {from_c.id, behind.id}
    assert c.id not in ex.buffer
    assert {d.mail.id: d.reason for d in ex.dead_letters} == {to_c.id: "recipient_deleted"}
    assert await ex.deliver_all() == 2
    assert _inbox(b) == {c.id: [from_c.id], a.id: [behind.id]}
    kinds = [r.kind for r in await log_records(store, kinds=["source.deleted"])]
    assert kinds == ["source.deleted"]  # the deletion itself is recorded


async def test_add_source_with_an_overlapping_list_keeps_the_buffers(
    store: lionstore.Store,
) -> None:
    """lionagi: ``add_source`` set ``buffer[id] = []`` for every listed source, wiping
    mail already buffered for sources that were registered before; a single source
    object half-registered (in the Pile, without a buffer). Section 5, item 4."""
    a, b = Source(), Source()
    ex = Exchange([a, b], store=store)
    mail = ex.create_mail(a, b, "message", "buffered")
    await a.send(mail)
    await ex.collect_all()
    c, d = Source(), Source()
    assert await ex.add_source([b, c, a]) == [c.id]
    assert [m.id for m in ex.buffer[b.id]] == [mail.id]
    assert await ex.add_source(d) == [d.id]  # one object, not in a list: fully registered
    assert d.id in ex.mailboxes and d in ex.sources
    await d.send(ex.create_mail(d, b, "message", "from d"))
    assert await ex.collect(d) == 1
    assert await ex.deliver(b) == 2
    assert list(_inbox(b)) == [a.id, d.id]


async def test_mail_manager_create_mail_collect_and_send_work(store: lionstore.Store) -> None:
    """lionagi: ``MailManager.create_mail`` always raised ``TypeError: Package.__init__()
    got an unexpected keyword argument 'package'``, ``collect`` raised ``AttributeError:
    'Progression' object has no attribute 'size'`` even with no mail, and ``send``
    raised ``AttributeError`` from ``mailbox.include``. Section 5, item 5."""
    a, b = Source(), Source()
    manager = MailManager([a, b], store=store)
    mail = manager.create_mail(a, b, PackageCategory.MESSAGE, package={"text": "hi"})
    assert isinstance(mail.package, Package) and mail.package.item == {"text": "hi"}
    assert await manager.collect(a) == 0  # no mail: a no-op, not an error
    await a.send(mail)
    assert await manager.collect(a) == 1
    assert manager.mails == {b.id: {a.id: deque([mail])}}
    assert await manager.send(b) == 1
    assert manager.mails == {}
    assert _inbox(b) == {a.id: [mail.id]}
    assert b.mailbox.pile_[mail.id].package.item == {"text": "hi"}


async def test_mail_manager_send_failure_loses_no_mail(open_store: Any, db_target: str) -> None:
    """lionagi: ``MailManager.send`` popped a sender's whole queue out of ``mails``
    *before* delivering, so when delivery raised, every mail in it was gone.
    Section 5, item 5. Here the write lock is held by someone else, so send fails."""
    a, b = Source(), Source()
    async with open_store(run="r", lock_timeout=0.3) as store:
        manager = MailManager([a, b], store=store, name="mm")
        mails = [manager.create_mail(a, b, "message", i) for i in range(3)]
        for mail in mails:
            await a.send(mail)
        await manager.collect_all()
        with write_lock_held(db_target):
            head = await store.head()
            with pytest.raises(lionstore.StoreLockedError):
                await manager.send(b)
            with pytest.raises(lionstore.StoreLockedError):
                await manager.send_all()
            assert [m.id for m in manager.mails[b.id][a.id]] == [m.id for m in mails]
            assert _inbox(b) == {}
            assert await store.head() == head
    # the queue survives the failed process too
    async with open_store(run="r") as store:
        manager = MailManager(store=store, name="mm")
        await manager.load()
        assert [m.id for m in manager.mails[b.id][a.id]] == [m.id for m in mails]
        assert await manager.send(b) == 3
        box = manager.mailboxes[b.id]
        assert {s: list(p) for s, p in box.pending_ins.items()} == {a.id: [m.id for m in mails]}


async def test_mail_manager_send_on_a_closed_store_loses_no_mail(open_store: Any) -> None:
    """lionagi: see above (``send`` pops the queue first). A send that cannot run at
    all must leave the queue exactly as it was."""
    a, b = Source(), Source()
    async with open_store(run="r") as store:
        manager = MailManager([a, b], store=store, name="mm")
        mail = manager.create_mail(a, b, "message", "queued")
        await a.send(mail)
        await manager.collect_all()
    with pytest.raises(lionstore.StoreClosedError):
        await manager.send(b)
    assert [m.id for m in manager.mails[b.id][a.id]] == [mail.id]
    async with open_store(run="r") as store:
        manager = MailManager(store=store, name="mm")
        assert await manager.send_all() == 1


async def test_mail_manager_collect_dead_letters_mail_to_an_unknown_recipient(
    store: lionstore.Store,
) -> None:
    """lionagi (intended code, read): ``collect`` removed a mail from the sender first and
    then raised ItemNotFoundError for an unregistered recipient: the mail was lost, and
    the mail behind it was never collected. Section 5, item 5."""
    a, b = Source(), Source()
    manager = MailManager([a, b], store=store)
    lost = manager.create_mail(a, uuid.uuid4(), "message", "to nobody")
    behind = manager.create_mail(a, b, "message", "behind")
    await a.send(lost)
    await a.send(behind)
    assert await manager.collect(a) == 2
    assert [(d.mail.id, d.reason) for d in manager.dead_letters] == [(lost.id, "recipient_unknown")]
    assert await manager.send_all() == 1
    assert _inbox(b) == {a.id: [behind.id]}


async def test_mail_manager_add_sources_does_not_reset_queues(store: lionstore.Store) -> None:
    """lionagi: ``add_sources`` set ``mails[id] = {}`` for every source it was given,
    discarding the queued mail of sources already registered. Section 5, item 5."""
    a, b = Source(), Source()
    manager = MailManager([a, b], store=store)
    mail = manager.create_mail(a, b, "message", "queued")
    await a.send(mail)
    await manager.collect_all()
    head = await store.head()
    assert await manager.add_sources([a, b]) == []
    assert await manager.add_sources(b) == []
    assert await store.head() == head
    assert manager.mails == {b.id: {a.id: deque([mail])}}
    assert await manager.send_all() == 1


@pytest.mark.parametrize("ref", ["str", "source", "IDType"])
async def test_mail_manager_delete_source_is_consistent_for_any_id_form(
    ref: str, store: lionstore.Store
) -> None:
    """lionagi: ``delete_source`` with a str id or a source object removed the source and
    then raised KeyError on ``mails.pop``, leaving the state half-updated; mail from the
    deleted source stayed queued for others. Section 5, item 5."""
    a, b, c = Source(), Source(), Source()
    manager = MailManager([a, b, c], store=store)
    from_c = manager.create_mail(c, b, "message", "from c")
    await c.send(from_c)
    await manager.collect_all()
    arg = {"str": str(c.id), "source": c, "IDType": c.id}[ref]
    assert await manager.delete_source(arg) == [c.id]
    assert [s.id for s in manager.sources] == [a.id, b.id]
    # c's mail collected before the deletion stays queued for b, and is sent
    assert list(manager.mails) == [b.id] and list(manager.mails[b.id]) == [c.id]
    assert manager.dead_letters == []
    assert await manager.send_all() == 1
    assert _inbox(b) == {c.id: [from_c.id]}


async def test_mail_manager_registers_the_members_of_a_pile(store: lionstore.Store) -> None:
    """lionagi: ``add_sources(pile)`` registered the Pile itself as one "source" (what
    ``Session`` did with its branches), after which ``collect`` raised AttributeError.
    Section 5, item 5."""
    a, b = Source(), Source()
    manager = MailManager(store=store)
    assert await manager.add_sources(Pile([a, b])) == [a.id, b.id]
    assert [s.id for s in manager.sources] == [a.id, b.id]
    mail = manager.create_mail(a, b, "message", "through a pile")
    await a.send(mail)
    assert await manager.collect_all() == 1
    assert await manager.send_all() == 1
    assert _inbox(b) == {a.id: [mail.id]}
