"""Every member seeds/mail-system.txt lists exists and behaves (issue 4, "API")."""

from __future__ import annotations

import asyncio
import inspect
import math
import uuid
from collections import deque
from typing import Any

import pytest
from pydantic import BaseModel

import lionstore
from lionstore import (
    Communicatable,
    Exchange,
    IDError,
    IDType,
    Mail,
    Mailbox,
    MailError,
    MailManager,
    Package,
    PackageCategory,
    ReadOnlyProjectionError,
    Source,
    SourceError,
    UnknownSourceError,
)
from lionstore.domain.mail_records import SourceAdded

from .mailtools import log_records, wait_for

CATEGORIES = {
    "MESSAGE": "message",
    "TOOL": "tool",
    "IMODEL": "imodel",
    "NODE": "node",
    "NODE_LIST": "node_list",
    "NODE_ID": "node_id",
    "START": "start",
    "END": "end",
    "CONDITION": "condition",
    "SIGNAL": "signal",
}


class Point(BaseModel):
    """A pydantic payload; defined at module level so it is found again on reopen."""

    x: int
    label: str = ""


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


async def _exchange(store: lionstore.Store, n: int = 2, **kw: Any) -> tuple[Exchange, list[Source]]:
    sources = [Source() for _ in range(n)]
    ex = Exchange(sources, store=store, **kw)
    await ex.load()
    return ex, sources


# -- PackageCategory and Package ------------------------------------------------------------


def test_package_category_has_the_ten_members_with_lowercase_values() -> None:
    assert {m.name: m.value for m in PackageCategory} == CATEGORIES
    assert issubclass(PackageCategory, str)
    for name, value in CATEGORIES.items():
        assert PackageCategory(value) is PackageCategory[name]
        assert PackageCategory[name] == value


@pytest.mark.parametrize("value", [*CATEGORIES.values(), *PackageCategory])
def test_package_accepts_members_and_lowercase_values(value: Any) -> None:
    package = Package(value, "payload")
    assert package.category is PackageCategory(value)


@pytest.mark.parametrize("value", ["MESSAGE", "Message", None, "", "mail", 1, PackageCategory])
def test_package_rejects_other_categories_with_mail_error(value: Any) -> None:
    with pytest.raises(MailError) as caught:
        Package(value, "payload")
    assert isinstance(caught.value, ValueError)
    assert issubclass(lionstore.MailError, ValueError)


def test_package_has_id_created_at_and_optional_request_source() -> None:
    before = lionstore.Element().created_at
    first = Package(PackageCategory.TOOL, {"k": 1})
    second = Package("tool", {"k": 1})
    assert isinstance(first.id, IDType)
    assert first.id != second.id
    assert before <= first.created_at <= lionstore.Element().created_at
    assert first.request_source is None
    assert first.item == {"k": 1}
    requester = Source()
    for ref in (requester, requester.id, uuid.UUID(requester.id), requester.id.upper()):
        assert Package("signal", None, ref).request_source == requester.id
        assert Package("signal", None, request_source=ref).request_source == requester.id
    with pytest.raises(IDError):
        Package("signal", None, request_source="not-an-id")


JSON_ITEMS = [
    None,
    True,
    0,
    -7,
    2.5,
    "",
    "text with ünïcode",
    [],
    {},
    [1, "two", None, [3.5, {"four": False}]],
    {"a": {"b": {"c": [1, 2, 3]}}, "": "empty key"},
    _nested(99),
]


@pytest.mark.parametrize("item", JSON_ITEMS)
def test_package_item_may_be_any_json_value(item: Any) -> None:
    package = Package("message", item)
    assert package.item == item
    again = Package.model_validate_json(package.model_dump_json())
    assert again.item == item
    assert (again.id, again.created_at, again.category) == (
        package.id,
        package.created_at,
        package.category,
    )


def test_package_item_may_be_a_pydantic_model() -> None:
    point = Point(x=3, label="p")
    package = Package("node", point)
    assert package.item is point


BAD_ITEMS = {
    "object": object(),
    "set": {1, 2},
    "bytes": b"raw",
    "nan": math.nan,
    "inf": math.inf,
    "nested nan": {"values": [1.0, math.nan]},
    "non-str key": {1: "one"},
    "nested non-str key": [{"ok": {(1, 2): "tuple key"}}],
    "200 deep": _nested(200),
    "function": len,
}


@pytest.mark.parametrize("name", BAD_ITEMS)
async def test_bad_package_items_raise_before_anything_is_written(
    name: str, store: lionstore.Store
) -> None:
    item = BAD_ITEMS[name]
    ex, (a, b) = await _exchange(store)
    head = await store.head()
    with pytest.raises(MailError):
        Package("message", item)
    with pytest.raises(MailError):
        ex.create_mail(a, b, "message", item)
    with pytest.raises(MailError):
        MailManager.create_mail(a, b, "message", item)
    assert await store.head() == head
    assert not a.mailbox and not b.mailbox


async def test_an_item_made_bad_after_the_package_is_refused_at_send(
    store: lionstore.Store,
) -> None:
    """Package.item can be reassigned; a bad one is still refused before writing."""
    ex, (a, b) = await _exchange(store)
    mail = ex.create_mail(a, b, "message", "fine")
    mail.package.item = {"bad": object()}
    head = await store.head()
    with pytest.raises((MailError, lionstore.RecordError)):
        await a.send(mail)
    assert await store.head() == head
    assert mail.id not in a.mailbox


# -- Mail ------------------------------------------------------------------------------


def test_mail_fields_and_category() -> None:
    a, b = Source(), Source()
    package = Package("tool", {"name": "search"})
    for mail in (
        Mail(a, b, package),
        Mail(sender=a, recipient=b, package=package),
    ):
        assert (mail.sender, mail.recipient) == (a.id, b.id)
        assert isinstance(mail.sender, IDType) and isinstance(mail.recipient, IDType)
        assert mail.package is package
        assert mail.category is PackageCategory.TOOL
        assert isinstance(mail, lionstore.Element)
        assert isinstance(mail.id, IDType) and mail.id != package.id


@pytest.mark.parametrize(
    "ref",
    [
        lambda s: s,
        lambda s: s.id,
        lambda s: str(s.id),
        lambda s: s.id.upper(),
        lambda s: uuid.UUID(s.id),
        lambda s: "{" + s.id + "}",
    ],
    ids=["source", "IDType", "str", "upper-case str", "UUID", "braced str"],
)
def test_mail_sender_and_recipient_accept_ids_uuids_and_sources(ref: Any) -> None:
    a, b = Source(), Source()
    mail = Mail(sender=ref(a), recipient=ref(b), package=Package("message", 1))
    assert (mail.sender, mail.recipient) == (a.id, b.id)
    made = Exchange.create_mail(ref(a), ref(b), "message", 1)
    assert (made.sender, made.recipient) == (a.id, b.id)
    managed = MailManager.create_mail(ref(a), ref(b), "message", 1)
    assert (managed.sender, managed.recipient) == (a.id, b.id)


GARBAGE_IDS = ["not-a-uuid", "", 42, 4.2, None, True, b"bytes", object(), ["x"], "x" * 500]


def _garbage_id(value: Any) -> str:
    # an object()'s repr holds its address: a test id that changed from run to run
    return "object()" if type(value) is object else repr(value)


@pytest.mark.parametrize("garbage", GARBAGE_IDS, ids=_garbage_id)
def test_mail_with_a_garbage_sender_or_recipient_raises_id_error(garbage: Any) -> None:
    ok = Source()
    package = Package("message", 1)
    with pytest.raises(IDError):
        Mail(sender=garbage, recipient=ok, package=package)
    with pytest.raises(IDError):
        Mail(ok, garbage, package)
    with pytest.raises(IDError):
        Exchange.create_mail(garbage, ok, "message", 1)
    with pytest.raises(IDError):
        MailManager.create_mail(ok, garbage, "message", 1)


def test_mail_and_package_round_trip_through_json() -> None:
    a, b, requester = Source(), Source(), Source()
    item = {"text": "hi", "n": [1, 2.5, None], "nested": {"ok": True}}
    mail = Mail(a, b, Package("condition", item, requester), metadata={"trace": "t1"})
    text = mail.model_dump_json()
    again = Mail.model_validate_json(text)
    assert again == mail
    assert again.model_dump() == mail.model_dump()
    assert (again.sender, again.recipient, again.created_at, again.metadata) == (
        mail.sender,
        mail.recipient,
        mail.created_at,
        mail.metadata,
    )
    assert again.package.model_dump() == mail.package.model_dump()
    assert again.package.request_source == requester.id
    assert again.category is PackageCategory.CONDITION
    via_dict = Mail.from_dict(mail.to_dict())
    assert via_dict.model_dump() == mail.model_dump()
    package = Package.model_validate_json(mail.package.model_dump_json())
    assert package.model_dump() == mail.package.model_dump()


async def test_a_pydantic_item_is_rebuilt_as_its_class_on_reopen(open_store: Any) -> None:
    a, b = Source(), Source()
    async with open_store(run="r") as store:
        ex = Exchange([a, b], store=store, name="ex")
        await a.send(ex.create_mail(a, b, "node", Point(x=7, label="seven")))
        await ex.collect_all()
        await ex.deliver_all()
    async with open_store(run="r") as store:
        ex = Exchange(store=store, name="ex")
        await ex.load()
        (mail,) = list(ex.mailboxes[b.id].pile_)
        assert type(mail.package.item) is Point
        assert mail.package.item == Point(x=7, label="seven")


# -- Mailbox ---------------------------------------------------------------------------


async def test_mailbox_views_and_writes(store: lionstore.Store) -> None:
    ex, (a, b, c) = await _exchange(store, 3)
    box = b.mailbox
    assert isinstance(box, Mailbox)
    assert not box and len(box) == 0
    assert box.pending_ins == {} and list(box.pending_outs) == [] and box.senders == []
    assert len(box.pile_) == 0

    out = ex.create_mail(b, a, "message", "from b")
    await box.append_out(out)
    assert list(box.pending_outs) == [out.id]
    assert out in box and out.id in box and str(out.id) in box and uuid.UUID(out.id) in box
    assert box and len(box) == 1 and list(box.pile_) == [out]
    assert "garbage" not in box and Source() not in box

    from_a = [ex.create_mail(a, b, "message", i) for i in range(3)]
    from_c = ex.create_mail(c, b, "message", "c")
    for mail in (from_a[0], from_c, from_a[1]):
        await box.append_in(mail)
    await box.append_in(from_a[2])
    assert box.senders == [a.id, c.id]
    assert {s: list(p) for s, p in box.pending_ins.items()} == {
        a.id: [m.id for m in from_a],
        c.id: [from_c.id],
    }
    assert len(box) == 5
    expected_pile = [out.id, from_a[0].id, from_c.id, from_a[1].id, from_a[2].id]
    assert [m.id for m in box.pile_] == expected_pile

    await box.exclude(from_c)
    assert box.senders == [a.id]
    assert from_c not in box and len(box) == 4
    await box.exclude(out.id)
    assert list(box.pending_outs) == [] and out not in box
    await box.exclude(out)  # already gone: silent, writes nothing
    head = await store.head()
    await box.exclude(Source())
    assert await store.head() == head
    # the log holds what happened
    kinds = [r.kind for r in await log_records(store, kinds=["mail.received", "mail.excluded"])]
    assert kinds.count("mail.received") == 4 and kinds.count("mail.excluded") == 2


async def test_appending_the_same_mail_twice_records_it_once(store: lionstore.Store) -> None:
    ex, (a, b) = await _exchange(store)
    mail = ex.create_mail(a, b, "message", 1)
    await a.send(mail)
    head = await store.head()
    await a.send(mail)
    await a.mailbox.append_out(mail)
    assert await store.head() == head
    assert list(a.mailbox.pending_outs) == [mail.id]


MUTATIONS = {
    "pile_.include": lambda box, mail: box.pile_.include(mail),
    "pile_.pop": lambda box, mail: box.pile_.pop(),
    "pile_.clear": lambda box, mail: box.pile_.clear(),
    "pile_.exclude": lambda box, mail: box.pile_.exclude(mail),
    "pending_outs.append": lambda box, mail: box.pending_outs.append(mail.id),
    "pending_outs.popleft": lambda box, mail: box.pending_outs.popleft(),
    "pending_outs.clear": lambda box, mail: box.pending_outs.clear(),
    "pending_ins[s].append": lambda box, mail: box.pending_ins[mail.sender].append(mail.id),
    "pending_ins[s].popleft": lambda box, mail: box.pending_ins[mail.sender].popleft(),
    "pending_ins[s].remove": lambda box, mail: box.pending_ins[mail.sender].remove(mail.id),
}


@pytest.mark.parametrize("name", MUTATIONS)
async def test_mailbox_views_are_read_only(name: str, store: lionstore.Store) -> None:
    ex, (a, b) = await _exchange(store)
    inbound = ex.create_mail(a, b, "message", "in")
    await b.mailbox.append_in(inbound)
    await b.send(ex.create_mail(b, a, "message", "out"))
    before = (list(b.mailbox.pile_), list(b.mailbox.pending_outs), b.mailbox.senders)
    head = await store.head()
    with pytest.raises(ReadOnlyProjectionError) as caught:
        MUTATIONS[name](b.mailbox, inbound)
    assert isinstance(caught.value, TypeError)
    assert (list(b.mailbox.pile_), list(b.mailbox.pending_outs), b.mailbox.senders) == before
    assert await store.head() == head


async def test_mailbox_refuses_mail_of_another_source(store: lionstore.Store) -> None:
    ex, (a, b) = await _exchange(store)
    a_to_b = ex.create_mail(a, b, "message", 1)
    head = await store.head()
    with pytest.raises(MailError):
        await b.mailbox.append_out(a_to_b)  # b is not its sender
    with pytest.raises(MailError):
        await b.send(a_to_b)
    with pytest.raises(MailError):
        await a.mailbox.append_in(a_to_b)  # a is not its recipient
    with pytest.raises(TypeError):
        await a.mailbox.append_out("not a mail")  # type: ignore[arg-type]
    assert await store.head() == head
    assert not a.mailbox and not b.mailbox


async def test_a_mailbox_of_an_unregistered_source_refuses_to_record(
    store: lionstore.Store,
) -> None:
    lone, other = Source(), Source()
    mail = Exchange.create_mail(lone, other, "message", 1)
    head = await store.head()
    with pytest.raises(SourceError):
        await lone.mailbox.append_out(mail)
    with pytest.raises(SourceError):
        await lone.send(mail)
    with pytest.raises(SourceError):
        await Mailbox().append_out(mail)
    with pytest.raises(SourceError):
        await other.mailbox.append_in(mail)
    assert await store.head() == head
    assert not lone.mailbox and mail not in lone.mailbox


# -- Exchange --------------------------------------------------------------------------


async def test_exchange_construction(store: lionstore.Store) -> None:
    empty = Exchange(store=store)
    assert len(empty.sources) == 0 and empty.buffer == {} and empty.mailboxes == {}
    assert empty.name == "lionstore.mail.exchange.Exchange"
    with pytest.raises(TypeError):
        Exchange(store="file.db")  # type: ignore[arg-type]
    ambient = Exchange([Source()], name="ambient")
    assert ambient.store is store  # no store=: the ambient store of the fixture
    with pytest.raises(ValueError):
        Exchange(store=store, name="")

    a, b = Source(), Source()
    ex = Exchange([a, b], store=store, name="named")
    assert ex.name == "named"
    # the given sources show at once; the constructor started the write recording them
    assert [s.id for s in ex.sources] == [a.id, b.id]
    assert list(ex.mailboxes) == [a.id, b.id]
    await ex.load()
    assert [s.id for s in ex.sources] == [a.id, b.id]
    assert list(ex.mailboxes) == [a.id, b.id]
    assert ex.mailboxes[a.id] is a.mailbox
    assert ex.buffer == {}
    records = await log_records(store, kinds=["source.added"])
    assert all(isinstance(r.data, SourceAdded) for r in records)
    named = [r for r in records if isinstance(r.data, SourceAdded) and r.data.router == "named"]
    assert [r.stream_id for r in named] == [a.id, b.id]


async def test_exchange_records_its_sources_before_the_first_mail(store: lionstore.Store) -> None:
    """``Exchange([a, b]); await a.send(mail)``: the registration is durable first."""
    a, b = Source(), Source()
    ex = Exchange([a, b], store=store)
    await a.send(ex.create_mail(a, b, "message", "first call"))
    kinds = [(r.kind, r.stream_id) for r in await log_records(store, after=1)]
    assert kinds[:2] == [("source.added", a.id), ("source.added", b.id)]
    assert kinds[2][0] == "mail.sent"


async def test_exchange_add_source_accepts_one_a_list_or_a_pile(store: lionstore.Store) -> None:
    ex, (a,) = await _exchange(store, 1)
    b, c, d = Source(), Source(), Source()
    assert await ex.add_source(b) == [b.id]
    assert await ex.add_source([c]) == [c.id]
    assert await ex.add_source(lionstore.Pile([d])) == [d.id]
    assert await ex.add_source((a, b)) == []
    assert [s.id for s in ex.sources] == [a.id, b.id, c.id, d.id]
    assert set(ex.mailboxes) == {a.id, b.id, c.id, d.id}
    with pytest.raises(ReadOnlyProjectionError):
        ex.sources.include(Source())
    with pytest.raises(TypeError):
        await ex.add_source(object())
    with pytest.raises(TypeError):
        await ex.add_source([Source(), "not a source"])
    assert len(ex.sources) == 4


async def test_exchange_delete_source(store: lionstore.Store) -> None:
    ex, (a, b, c) = await _exchange(store, 3)
    assert await ex.delete_source(b) == [b.id]
    assert await ex.delete_source([str(c.id)]) == [c.id]
    assert [s.id for s in ex.sources] == [a.id]
    assert list(ex.mailboxes) == [a.id]
    head = await store.head()
    with pytest.raises(UnknownSourceError):
        await ex.delete_source(b)
    with pytest.raises(UnknownSourceError):
        await ex.delete_source([a, Source()])  # all or nothing
    assert await store.head() == head
    assert [s.id for s in ex.sources] == [a.id]
    deleted = [r.stream_id for r in await log_records(store, kinds=["source.deleted"])]
    assert deleted == [b.id, c.id]


async def test_exchange_create_collect_deliver(store: lionstore.Store) -> None:
    ex, (a, b) = await _exchange(store)
    mail = Exchange.create_mail(a, b, PackageCategory.MESSAGE, "hi", request_source=a)
    assert ex.create_mail(a.id, b.id, "message", "x").category is PackageCategory.MESSAGE
    assert (mail.sender, mail.recipient, mail.package.item) == (a.id, b.id, "hi")
    assert mail.package.request_source == a.id
    assert mail not in a.mailbox  # nothing recorded until sent
    await a.send(mail)
    assert await ex.collect(a) == 1
    assert list(a.mailbox.pending_outs) == [] and mail not in a.mailbox
    assert {r: [m.id for m in q] for r, q in ex.buffer.items()} == {b.id: [mail.id]}
    ex.buffer.clear()  # a copy: clearing it changes nothing
    assert b.id in ex.buffer
    assert await ex.collect(a) == 0
    assert await ex.deliver(b.id) == 1
    assert ex.buffer == {}
    assert {s: list(p) for s, p in b.mailbox.pending_ins.items()} == {a.id: [mail.id]}
    assert b.mailbox.pile_[mail.id].package.item == "hi"
    assert await ex.deliver(b) == 0


async def test_exchange_collect_all_and_deliver_all(store: lionstore.Store) -> None:
    ex, sources = await _exchange(store, 4)
    sent = []
    for s in sources:
        for r in sources:
            if r is not s:
                mail = ex.create_mail(s, r, "message", f"{s.id}->{r.id}")
                await s.send(mail)
                sent.append(mail)
    assert await ex.collect_all() == len(sent)
    assert sum(len(q) for q in ex.buffer.values()) == len(sent)
    assert await ex.deliver_all() == len(sent)
    for r in sources:
        assert sorted(r.mailbox.senders) == sorted(s.id for s in sources if s is not r)
    assert await ex.collect_all() == 0 and await ex.deliver_all() == 0


@pytest.mark.parametrize("op", ["collect", "deliver"])
async def test_exchange_unknown_sender_or_recipient(op: str, store: lionstore.Store) -> None:
    ex, (a, _b) = await _exchange(store)
    stranger = Source()
    head = await store.head()
    for ref in (stranger, stranger.id, uuid.UUID(stranger.id)):
        with pytest.raises(UnknownSourceError) as caught:
            await getattr(ex, op)(ref)
        assert isinstance(caught.value, LookupError)
        assert isinstance(caught.value, SourceError)
    with pytest.raises(IDError):
        await getattr(ex, op)("garbage")
    await ex.delete_source(a)
    with pytest.raises(UnknownSourceError):
        await getattr(ex, op)(a)
    assert [r.kind for r in await log_records(store, after=head)] == ["source.deleted"]


async def test_exchange_execute_runs_until_stopped(store: lionstore.Store) -> None:
    ex, (a, b) = await _exchange(store)
    with pytest.raises(ValueError):
        await ex.execute(refresh_time=0)
    with pytest.raises(TypeError):
        await ex.execute(refresh_time="1")  # type: ignore[arg-type]
    task = asyncio.create_task(ex.execute(refresh_time=1))
    await wait_for(lambda: ex.execution_mode, what="the loop to start")
    mails = [ex.create_mail(a, b, "message", i) for i in range(3)]
    for mail in mails:
        await a.send(mail)
    await wait_for(
        lambda: [list(p) for p in b.mailbox.pending_ins.values()] == [[m.id for m in mails]],
        what="delivery by the loop",
    )
    await ex.stop()
    await asyncio.wait_for(task, timeout=5)
    assert not ex.execution_mode
    assert ex.is_stopped()


async def test_exchange_stop_before_execute_is_sticky(store: lionstore.Store) -> None:
    ex, (a, b) = await _exchange(store)
    await a.send(ex.create_mail(a, b, "message", 1))
    await ex.stop()
    await asyncio.wait_for(ex.execute(refresh_time=1), timeout=5)
    assert list(a.mailbox.pending_outs) != []  # the loop never ran


async def test_exchange_dead_letters_are_listed_with_reasons(store: lionstore.Store) -> None:
    ex, (a, _b) = await _exchange(store)
    nowhere = uuid.uuid4()
    mail = ex.create_mail(a, nowhere, "message", "lost?")
    await a.send(mail)
    await ex.collect_all()
    (dead,) = ex.dead_letters
    assert dead.mail.id == mail.id and dead.mail.package.item == "lost?"
    assert dead.reason == "recipient_unknown"


# -- MailManager -----------------------------------------------------------------------


async def test_mail_manager_api(store: lionstore.Store) -> None:
    a, b, c = Source(), Source(), Source()
    manager = MailManager([a], store=store, name="manager")
    assert await manager.add_sources(b) == [b.id]
    assert await manager.add_sources([b, c]) == [c.id]
    assert [s.id for s in manager.sources] == [a.id, b.id, c.id]

    mail = manager.create_mail(a, b, "message", {"text": "hi"}, request_source=c)
    assert isinstance(mail, Mail)
    assert mail.package.item == {"text": "hi"} and mail.package.request_source == c.id
    by_kw = manager.create_mail(
        sender=a.id, recipient=c.id, category=PackageCategory.SIGNAL, package="go"
    )
    assert by_kw.category is PackageCategory.SIGNAL and by_kw.package.item == "go"
    assert isinstance(by_kw.package, Package)

    second = manager.create_mail(a, b, "message", 2)
    from_c = manager.create_mail(c, b, "message", 3)
    for m in (mail, by_kw, second):
        await a.send(m)
    await c.send(from_c)
    assert await manager.collect(a) == 3
    assert manager.mails == {
        b.id: {a.id: deque([mail, second])},
        c.id: {a.id: deque([by_kw])},
    }
    assert all(isinstance(q, deque) for by in manager.mails.values() for q in by.values())
    assert await manager.collect_all() == 1
    assert [m.id for m in manager.mails[b.id][c.id]] == [from_c.id]
    assert await manager.send(b) == 3
    assert b.id not in manager.mails
    assert {s: list(p) for s, p in b.mailbox.pending_ins.items()} == {
        a.id: [mail.id, second.id],
        c.id: [from_c.id],
    }
    assert await manager.send_all() == 1
    assert manager.mails == {}
    assert list(c.mailbox.pending_ins[a.id]) == [by_kw.id]

    for op in (manager.collect, manager.send):
        with pytest.raises(UnknownSourceError):
            await op(Source())
    assert await manager.delete_source(c.id) == [c.id]
    assert [s.id for s in manager.sources] == [a.id, b.id]
    with pytest.raises(UnknownSourceError):
        await manager.delete_source(c)


async def test_mail_manager_execute_and_stop(store: lionstore.Store) -> None:
    a, b = Source(), Source()
    manager = MailManager([a, b], store=store)
    await manager.load()
    task = asyncio.create_task(manager.execute(refresh_time=1))
    mail = manager.create_mail(a, b, "message", "looped")
    await a.send(mail)
    await wait_for(lambda: mail.id in b.mailbox, what="the manager loop to deliver")
    await manager.stop()
    await asyncio.wait_for(task, timeout=5)
    assert list(b.mailbox.pending_ins[a.id]) == [mail.id]


REQUIRED = object()


@pytest.mark.parametrize(
    ("member", "params"),
    [
        (Package.__init__, {"category": None, "item": None, "request_source": None}),
        (Exchange.__init__, {"sources": None, "store": "KW-None", "name": None}),
        (MailManager.__init__, {"sources": None, "store": "KW-None", "name": None}),
        (
            Exchange.create_mail,
            dict.fromkeys(["sender", "recipient", "category", "item"], REQUIRED)
            | {"request_source": None},
        ),
        (
            MailManager.create_mail,
            dict.fromkeys(["sender", "recipient", "category", "package"], REQUIRED)
            | {"request_source": None},
        ),
        (Exchange.execute, {"refresh_time": 1}),
        (MailManager.execute, {"refresh_time": 1}),
    ],
    ids=lambda v: getattr(v, "__qualname__", ""),
)
def test_signatures_follow_the_seed(member: Any, params: dict[str, Any]) -> None:
    found = inspect.signature(member).parameters
    for name, default in params.items():
        assert name in found, name
        param = found[name]
        if default == "KW-None":  # keyword-only, defaulting to the ambient store
            assert param.kind is inspect.Parameter.KEYWORD_ONLY
            assert param.default is None
        elif default is REQUIRED:
            assert param.default is inspect.Parameter.empty, name
        else:
            assert param.default == default, name


def test_every_seed_member_exists() -> None:
    for cls, names in (
        (Exchange, "sources buffer mailboxes add_source delete_source create_mail collect"),
        (Exchange, "deliver collect_all deliver_all execute stop"),
        (MailManager, "sources mails add_sources delete_source create_mail collect send"),
        (MailManager, "collect_all send_all execute stop"),
        (Mailbox, "pile_ pending_ins pending_outs senders append_in append_out exclude"),
        (Mailbox, "__contains__ __bool__ __len__"),
        (Mail, "sender recipient package category"),
        (Package, "id created_at category item request_source"),
    ):
        for name in names.split():
            fields = getattr(cls, "model_fields", {})
            assert hasattr(cls, name) or name in fields, f"{cls.__name__}.{name}"


# -- Communicatable and Source ---------------------------------------------------------


class PlainSource:
    """A Communicatable that is not an Element (like the seed's MySource)."""

    def __init__(self) -> None:
        self.id = IDType.create()
        self.mailbox = Mailbox()

    async def send(self, mail: Mail) -> None:
        await self.mailbox.append_out(mail)


def test_communicatable_protocol_and_source() -> None:
    source = Source()
    assert isinstance(source, Communicatable)
    assert isinstance(source, lionstore.Element)
    assert isinstance(source.mailbox, Mailbox)
    assert isinstance(PlainSource(), Communicatable)
    assert not isinstance(object(), Communicatable)
    assert Source(id=source.id).id == source.id


async def test_a_plain_communicatable_exchanges_mail(store: lionstore.Store) -> None:
    plain, element = PlainSource(), Source()
    ex = Exchange([plain, element], store=store)
    mail = ex.create_mail(plain, element, "message", "from a plain object")
    await plain.send(mail)
    await ex.collect_all()
    await ex.deliver_all()
    assert list(element.mailbox.pending_ins[plain.id]) == [mail.id]
    assert set(ex.mailboxes) == {plain.id, element.id}


async def test_the_seed_usage_example(store: lionstore.Store) -> None:
    """seeds/mail-system.txt's example, with Source for MySource, ``store=`` and awaits."""
    # Create two sources
    src_a, src_b = Source(), Source()

    # Approach 1: Use Exchange
    exchange = Exchange([src_a, src_b], store=store)
    mail = exchange.create_mail(
        sender=src_a,
        recipient=src_b,
        category=PackageCategory.MESSAGE,
        item="Hello from A!",
    )
    await src_a.send(mail)
    await exchange.collect_all()
    await exchange.deliver_all()

    # Approach 2: Use MailManager
    manager = MailManager([src_a, src_b], store=store)
    mail2 = manager.create_mail(
        sender=src_a.id,
        recipient=src_b.id,
        category=PackageCategory.MESSAGE,
        package="Another greeting",
    )

    # B's inbox in the Exchange holds A's mail
    assert exchange.mailboxes[src_b.id].senders == [src_a.id]
    assert [m.package.item for m in exchange.mailboxes[src_b.id].pile_] == ["Hello from A!"]
    assert list(exchange.mailboxes[src_b.id].pending_ins[src_a.id]) == [mail.id]

    # "Normally you'd place mail2 in srcA's mailbox, then manager.collect_all() -> send_all()".
    # src_a.mailbox is now the manager's (the router it joined last); the Exchange
    # keeps its own mailbox for each source.
    assert src_a.mailbox is manager.mailboxes[src_a.id]
    assert src_a.mailbox is not exchange.mailboxes[src_a.id]
    await src_a.send(mail2)
    assert await manager.collect_all() == 1
    assert await manager.send_all() == 1
    assert [m.package.item for m in src_b.mailbox.pile_] == ["Another greeting"]
    # each router keeps its own view, and routes only the mail sent through it
    assert [m.package.item for m in exchange.mailboxes[src_b.id].pile_] == ["Hello from A!"]
    assert await exchange.collect_all() == 0


async def test_views_on_a_reopened_file_show_the_history_at_once(open_store: Any) -> None:
    """Views are the log: the first read folds the history, never shows nothing."""
    a, b = Source(), Source()
    async with open_store(run="r") as store:
        ex = Exchange([a, b], store=store, name="ex")
        await a.send(ex.create_mail(a, b, "message", "queued"))
    async with open_store(run="r") as store:
        same_a = Source(id=a.id)
        ex = Exchange([same_a], store=store, name="ex")
        assert [s.id for s in ex.sources] == [a.id, b.id]
        assert list(ex.mailboxes) == [a.id, b.id]
        assert ex.buffer == {} and ex.dead_letters == []
        assert len(same_a.mailbox) == 1 and len(same_a.mailbox.pending_outs) == 1
        await ex.load()
        assert [s.id for s in ex.sources] == [a.id, b.id]
        assert len(same_a.mailbox) == 1 and len(same_a.mailbox.pending_outs) == 1
        assert ex.mailboxes[a.id] is same_a.mailbox
