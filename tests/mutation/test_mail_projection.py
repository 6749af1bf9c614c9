"""The mail projection (lionstore/projections/mail.py) folding records: the Mail a
record describes (validated, raw, compact), a replay's compact state against the
validated one mail by mail, record subclasses, sources re-added and deleted, and the
source materializer's fallback. The fold is pure in-memory code (no database: the
records are the data a store decodes). Written from mutmut's survivors
(docs/mutation.md)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from foldlog import FoldLog
from mailtools import validated_mail

from lionstore.domain.element import class_path
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.mail import Mail, Package
from lionstore.domain.mail_records import (
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailExcluded,
    MailReceived,
    MailSent,
    PackageData,
    SourceAdded,
    SourceDeleted,
)
from lionstore.errors import MailError
from lionstore.projections.mail import (
    MailState,
    compact_delivered,
    element_source_materializer,
    mail_from_record,
    raw_mail_parts,
)

ROUTER = "ex"


def _id() -> IDType:
    return to_id(uuid.uuid4())


def _sent(sender: IDType, recipient: IDType, **over: Any) -> MailSent:
    package: dict[str, Any] = {
        "id": _id(),
        "created_at": 2.5,
        "category": "message",
        "item": {"text": "hi", "n": [1, 2]},
    }
    package.update(over.pop("package", {}))
    values: dict[str, Any] = {
        "router": ROUTER,
        "sender": sender,
        "recipient": recipient,
        "created_at": 1.5,
        "package": PackageData(**package),
    }
    values.update(over)
    return MailSent(**values)


def _same(mail: Mail, expected: Mail) -> None:
    assert type(mail) is Mail
    assert type(mail.package) is Package
    assert mail.model_dump() == expected.model_dump()


def _plain_source(sid: IDType, data: SourceAdded) -> Any:
    return ("source", sid)


def _raw(mail_id: IDType, data: MailSent | MailReceived) -> Mail:
    return mail_from_record(mail_id, data, raw=True)


# -- the Mail a record describes -------------------------------------------------------


def test_a_raw_mail_keeps_the_recorded_values_and_one_object_per_source_id() -> None:
    sender, recipient = _id(), _id()
    ids: dict[IDType, IDType] = {}
    first_id, second_id = _id(), _id()
    first = _sent(sender, recipient, metadata={"k": "v"}, package={"item_class": "no.such.Cls"})
    # the same ids, as other objects (a record decoded later)
    second = _sent(to_id(str(sender)), to_id(str(recipient)), metadata={"k": "w"})
    a = mail_from_record(first_id, first, raw=True, ids=ids)
    b = mail_from_record(second_id, second, raw=True, ids=ids)
    _same(a, validated_mail(first_id, first))
    _same(b, validated_mail(second_id, second))
    assert a.id == first_id and b.id == second_id
    assert a.metadata == {"k": "v"}
    assert a.package.metadata == {"item_class": "no.such.Cls"}
    assert a.package.item == {"text": "hi", "n": [1, 2]}  # not looked up
    assert b.sender is a.sender and b.recipient is a.recipient
    # without ids: still the recorded values
    c = mail_from_record(first_id, first, raw=True)
    _same(c, validated_mail(first_id, first))


def test_a_raw_mail_whose_metadata_names_its_class_is_validated() -> None:
    sender, recipient, mail_id = _id(), _id(), _id()
    named = {"lion_class": class_path(Mail), "k": "v"}
    data = _sent(sender, recipient, metadata=named, package={"item_class": "no.such.Cls"})
    assert raw_mail_parts(mail_id, data, {}) is None
    mail = mail_from_record(mail_id, data, raw=True)
    _same(mail, validated_mail(mail_id, data))
    assert mail.metadata == named
    assert mail.package.metadata == {"item_class": "no.such.Cls"}
    assert mail.package.item == {"text": "hi", "n": [1, 2]}
    plain = _sent(sender, recipient, metadata={"lion_class": class_path(Mail)})
    assert mail_from_record(mail_id, plain, raw=True).package.metadata == {}
    wrong = _sent(sender, recipient, metadata={"lion_class": "some.module.Other"})
    mismatch = r"some\.module\.Other is not lionstore\.domain\.mail\.Mail"
    with pytest.raises(ValueError, match=mismatch):
        mail_from_record(mail_id, wrong, raw=True)


def test_a_validated_mail_keeps_its_metadata_and_no_package_metadata() -> None:
    sender, recipient, mail_id = _id(), _id(), _id()
    data = _sent(sender, recipient, metadata={"k": "v"}, package={"item_class": None})
    mail = mail_from_record(mail_id, data)
    assert mail.metadata == {"k": "v"}
    assert mail.package.metadata == {}
    _same(mail, validated_mail(mail_id, data))


def test_raw_mail_parts_refuses_an_item_json_cannot_hold() -> None:
    data = _sent(_id(), _id(), package={"item": [1.0, float("inf")]})
    with pytest.raises(MailError, match="package item contains inf"):
        raw_mail_parts(_id(), data, {})
    with pytest.raises(MailError, match="package item contains inf"):
        mail_from_record(_id(), data, raw=True)


# -- a replay's compact state against the validated one ------------------------------


def _scenario(log: FoldLog) -> dict[str, Any]:
    """Three sources and mail in every place; returns what went where."""
    a, b, c = _id(), _id(), _id()
    for sid in (a, b, c):
        log.fold(sid, SourceAdded(router=ROUTER, source_class="lionstore.Source"))
    data: dict[IDType, MailSent | MailReceived] = {}

    def send(sender: IDType, recipient: IDType, **over: Any) -> IDType:
        mid = _id()
        data[mid] = _sent(sender, recipient, **over)
        log.fold(mid, data[mid])
        return mid

    def receive(sender: IDType, recipient: IDType) -> IDType:
        mid = _id()
        data[mid] = MailReceived(**{**_sent(sender, recipient).model_dump(), "router": ROUTER})
        log.fold(mid, data[mid])
        return mid

    out1 = send(a, b, metadata={"k": "v"}, package={"item_class": "no.such.Cls"})
    out2 = send(a, c, package={"request_source": b, "category": "signal", "item": None})
    inbox1 = send(a, b, package={"item_class": "no.such.Other"}, metadata={"n": 1})
    inbox2 = send(c, b)
    inbox3 = send(a, b)
    for mid in (inbox1, inbox2, inbox3):
        log.fold(mid, MailCollected())
    buffered = send(b, c)
    log.fold(buffered, MailCollected())
    for mid in (inbox2, inbox1, inbox3):  # delivered in another order than sent
        log.fold(mid, MailDelivered())
    received = receive(c, a)
    dead = send(c, a)
    log.fold(dead, MailCollected())
    log.fold(dead, MailDeadLettered(reason="recipient_deleted", stage="buffer"))
    dead_at = log.position
    gone = send(b, a)
    log.fold(gone, MailCollected())
    log.fold(gone, MailDelivered())
    log.fold(gone, MailExcluded())
    return {
        "sources": (a, b, c),
        "data": data,
        "outbox": {a: [out1, out2], b: [], c: []},
        "buffer": {a: [], b: [], c: [buffered]},
        "inbox": {b: {c: [inbox2], a: [inbox1, inbox3]}, a: {c: [received]}, c: {}},
        "dead": (dead, dead_at),
        "gone": gone,
    }


def _check(state: MailState, s: dict[str, Any]) -> None:
    data = s["data"]
    for source in s["sources"]:
        assert state.outbox(source) == s["outbox"][source]
        assert state.buffered_for(source) == s["buffer"][source]
        box = state.boxes[source]
        assert {k: list(v) for k, v in box.ins.items()} == s["inbox"][source]
        assert list(box.ins) == list(s["inbox"][source])
        held = list(box.outs) + [m for q in box.ins.values() for m in q]
        assert sorted(box.mails) == sorted(held)
        for mid in held:
            mail = box.mails[mid]
            assert mail is state.mails[mid]  # one object, whichever dict it is read from
            _same(mail, validated_mail(mid, data[mid]))
    dead, dead_at = s["dead"]
    letter = state.dead[dead]
    assert (letter.reason, letter.stage, letter.position) == (
        "recipient_deleted",
        "buffer",
        dead_at,
    )
    _same(letter.mail, validated_mail(dead, data[dead]))
    assert state.where[dead] == "dead" and state.where[s["gone"]] == "gone"
    for mid, d in data.items():
        _same(state.mails[mid], validated_mail(mid, d))


def test_the_validated_state_holds_every_mail_in_its_place() -> None:
    state = MailState(ROUTER, _plain_source, _raw)
    s = _scenario(FoldLog(state))
    _check(state, s)
    for mid in s["data"]:
        assert isinstance(dict.__getitem__(state.mails, mid), Mail)


def test_a_replays_compact_state_equals_the_validated_one_mail_by_mail() -> None:
    ids: dict[IDType, IDType] = {}

    def parts(mid: IDType, d: MailSent | MailReceived) -> tuple[Any, ...] | None:
        return raw_mail_parts(mid, d, ids)

    state = MailState(ROUTER, _plain_source, _raw)
    compact_delivered(state, parts)
    log = FoldLog(state)
    s = _scenario(log)
    # every mail kept as its values from its record on, until read (a dead letter
    # holds its Mail)
    for mid in s["data"]:
        kept = dict.__getitem__(state.mails, mid)
        assert isinstance(kept, Mail if mid == s["dead"][0] else tuple)
    _check(state, s)


def test_a_compact_state_without_parts_keeps_mail_in_an_inbox_as_its_values() -> None:
    state = MailState(ROUTER, _plain_source, _raw)
    compact_delivered(state)
    s = _scenario(FoldLog(state))
    a = s["sources"][0]
    for source in s["sources"]:
        box = state.boxes[source]
        for mid in [m for q in s["inbox"][source].values() for m in q]:
            assert isinstance(dict.__getitem__(state.mails, mid), tuple)
            assert isinstance(dict.__getitem__(box.mails, mid), tuple)
    for mid in s["outbox"][a]:
        assert isinstance(dict.__getitem__(state.mails, mid), Mail)
    _check(state, s)


def test_a_mail_whose_metadata_names_its_class_is_validated_in_a_compact_state() -> None:
    state = MailState(ROUTER, _plain_source, _raw)
    compact_delivered(state, lambda mid, d: raw_mail_parts(mid, d, {}))
    log = FoldLog(state)
    a, b = _id(), _id()
    for sid in (a, b):
        log.fold(sid, SourceAdded(router=ROUTER, source_class="lionstore.Source"))
    mid = _id()
    data = _sent(a, b, metadata={"lion_class": class_path(Mail)})
    log.fold(mid, data)
    log.fold(mid, MailCollected())
    log.fold(mid, MailDelivered())
    assert list(state.boxes[b].ins[a]) == [mid]
    _same(state.boxes[b].mails[mid], validated_mail(mid, data))


def test_compact_delivered_refuses_a_state_with_records() -> None:
    state = MailState(ROUTER, _plain_source, _raw)
    FoldLog(state).fold(_id(), SourceAdded(router=ROUTER, source_class="lionstore.Source"))
    with pytest.raises(ValueError, match=r"^compact_delivered needs an empty state$"):
        compact_delivered(state)


# -- the fold's other branches ---------------------------------------------------------


def test_a_record_for_another_router_leaves_the_position_where_it_was() -> None:
    state = MailState(ROUTER, _plain_source, _raw)
    assert state.position == 0
    a, b = _id(), _id()
    state.fold(_id(), 1, 7, _sent(a, b, router="other"))
    state.fold(a, 3, 8, SourceAdded(router="other", source_class="lionstore.Source"))
    assert state.position == 0
    assert state.versions == {a: 3}  # a shared source stream's version is followed
    assert state.where == {}


def test_a_subclass_of_a_record_class_folds_as_its_base() -> None:
    class Delivered(MailDelivered):
        pass

    class Sent(MailSent):
        pass

    state = MailState(ROUTER, _plain_source, _raw)
    log = FoldLog(state)
    a, b = _id(), _id()
    for sid in (a, b):
        log.fold(sid, SourceAdded(router=ROUTER, source_class="lionstore.Source"))
    mid = _id()
    log.fold(mid, Sent(**_sent(a, b).model_dump()))
    assert state.outbox(a) == [mid]
    log.fold(mid, MailCollected())
    log.fold(mid, Delivered())
    assert state.where[mid] == "inbox"
    assert list(state.boxes[b].ins[a]) == [mid]
    second = _id()
    log.fold(second, Sent(**_sent(a, b).model_dump()))
    log.fold(second, MailCollected())
    log.fold(second, Delivered())  # the class again: its step is remembered
    assert list(state.boxes[b].ins[a]) == [mid, second]


def test_a_source_added_again_keeps_its_object_and_leaves_the_deleted() -> None:
    made: list[IDType] = []

    def materialize(sid: IDType, data: SourceAdded) -> Any:
        made.append(sid)
        return object()

    state = MailState(ROUTER, materialize, _raw)
    log = FoldLog(state)
    a = _id()
    added = SourceAdded(router=ROUTER, source_class="lionstore.Source")
    log.fold(a, added)
    first = state.sources[a]
    log.fold(a, added)
    assert state.sources[a] is first and made == [a]
    log.fold(a, SourceDeleted(router=ROUTER))
    assert not state.is_active(a) and a in state.deleted
    log.fold(a, SourceDeleted(router=ROUTER))  # a delete of a source already gone
    assert a in state.deleted
    log.fold(a, added)
    assert state.is_active(a) and a not in state.deleted
    never = _id()
    log.fold(never, SourceDeleted(router=ROUTER))
    assert never in state.deleted and not state.is_active(never)


def test_the_outbox_of_a_source_without_a_mailbox_is_empty() -> None:
    state = MailState(ROUTER, _plain_source, _raw)
    unknown = _id()
    assert state.outbox(unknown) == []
    assert state.undelivered_involving(unknown) == []


def test_the_element_source_materializer_falls_back_with_the_source_id() -> None:
    seen: list[IDType] = []

    def fallback(sid: IDType) -> Any:
        seen.append(sid)
        return ("fallback", sid)

    from lionstore.domain.element import Element

    materialize = element_source_materializer(Element, fallback)
    a, b = _id(), _id()
    no_fields = SourceAdded(router=ROUTER, source_class="lionstore.Source")
    unknown = SourceAdded(router=ROUTER, source_class="no.such.Source", fields={"x": 1})
    assert materialize(a, no_fields) == ("fallback", a)
    assert materialize(b, unknown) == ("fallback", b)
    assert seen == [a, b]
