"""The mail repository's commands (lionstore/repositories/mail.py), on real SQLite files:
what each record holds, which object the projection keeps, what a failed command leaves
behind, and the branches the router's own checks rarely reach (a lost race, a log whose
recipient was deleted without its buffer being emptied). Written from mutmut's survivors
(docs/mutation.md)."""

from __future__ import annotations

from typing import Any

import pytest

import lionstore
from lionstore import Exchange, MailError, RecordError, Source
from lionstore.domain.mail_records import MailDeadLettered, SourceAdded, SourceDeleted
from lionstore.domain.records import NewRecord, Recorded
from lionstore.projections.mail import element_source_materializer
from lionstore.repositories.mail import MailRepository


class Labelled(Source):
    """A source with a field of its own, rebuilt as its class on reopen."""

    label: str = ""


async def log_records(
    store: lionstore.Store, *, kinds: list[str] | None = None, after: int = 0
) -> list[Recorded]:
    """This run's records after ``after``, in position order."""
    return [r async for r in await store.read(kinds=kinds, after=after)]


def _repo(ex: Exchange) -> MailRepository:
    repo: MailRepository = ex._repo
    return repo


async def test_a_source_subclass_is_recorded_with_its_fields_and_rebuilt_as_its_class(
    open_store: Any,
) -> None:
    a = Labelled(label="first")
    b = Source()
    async with open_store(run="r") as store:
        ex = Exchange([a, b], store=store, name="ex")
        await ex.load()
        (added, _) = await log_records(store, kinds=["source.added"])
        assert isinstance(added.data, SourceAdded)
        assert added.stream_id == a.id
        assert added.data.source_class == f"{Labelled.__module__}.Labelled"
        # the id is the stream's: the fields are the rest, as JSON
        assert added.data.fields == {
            "label": "first",
            "created_at": a.created_at,
            "metadata": {},
        }
        # the projection holds the caller's objects, not copies rebuilt from the record
        assert ex.sources[a.id] is a and ex.sources[b.id] is b
    async with open_store(run="r") as store:
        ex = Exchange(store=store, name="ex")
        await ex.load()
        rebuilt = ex.sources[a.id]
        assert type(rebuilt) is Labelled
        assert (rebuilt.label, rebuilt.created_at) == ("first", a.created_at)


async def test_a_mail_keeps_its_request_source_in_the_record_and_on_reopen(
    open_store: Any,
) -> None:
    a, b = Source(), Source()
    async with open_store(run="r") as store:
        ex = Exchange([a, b], store=store, name="ex")
        mail = ex.create_mail(a, b, "message", "hi", request_source=b)
        await a.send(mail)
        # the sent mail in the outbox is the caller's object
        assert a.mailbox.pile_[mail.id] is mail
        (sent,) = await log_records(store, kinds=["mail.sent"])
        assert sent.data.package.request_source == b.id  # type: ignore[union-attr]
    async with open_store(run="r") as store:
        ex = Exchange(store=store, name="ex")
        await ex.load()
        rebuilt = ex.mailboxes[a.id].pile_[mail.id]
        assert rebuilt is not mail
        assert rebuilt.package.request_source == b.id


async def test_a_mail_over_the_stores_record_limit_is_refused_before_the_write_starts(
    open_store: Any,
) -> None:
    a, b = Source(), Source()
    async with open_store(run="r", max_record_bytes=2048) as store:
        ex = Exchange([a, b], store=store, name="ex")
        await ex.load()
        head = await store.head()
        big = ex.create_mail(a, b, "message", "x" * 4000)  # under 1 MiB, over 2 KiB
        with pytest.raises(RecordError, match=r"mail\.sent: .* over the 2048-byte limit"):
            a.mailbox.append_out(big)  # raised here, not by the queued write
        with pytest.raises(RecordError, match=r"mail\.received: .* over the 2048-byte limit"):
            b.mailbox.append_in(big)
        with pytest.raises(RecordError, match=r"mail\.sent"):
            await a.send(big)
        assert await store.head() == head
        assert big.id not in a.mailbox


async def test_a_mailbox_refusing_another_sources_mail_names_the_mail_and_both_sources(
    store: lionstore.Store,
) -> None:
    a, b = Source(), Source()
    ex = Exchange([a, b], store=store, name="ex")
    await ex.load()
    mail = ex.create_mail(a, b, "message", 1)
    with pytest.raises(MailError) as caught:
        b.mailbox.append_out(mail)
    assert str(caught.value) == (f"mail {mail.id} is from {a.id}, not from this mailbox's {b.id}")
    with pytest.raises(MailError) as caught:
        a.mailbox.append_in(mail)
    assert str(caught.value) == (f"mail {mail.id} is for {b.id}, not for this mailbox's {a.id}")


async def test_failed_commands_leave_no_object_for_a_later_record_to_adopt(
    open_store: Any,
) -> None:
    """A command that cannot be written (here: a read-only store) must not leave the
    caller's object behind: the next record of that id would show it instead of what
    the log says."""
    a, b = Source(), Source()
    async with open_store(run="r") as store:
        ex = Exchange([a, b], store=store, name="ex")
        await ex.load()
    async with open_store(run="r", readonly=True) as reader:
        repo = MailRepository(
            reader, "ex", element_source_materializer(lionstore.Element, lambda i: Source(id=i))
        )
        await repo.load()
        newcomer = Source()
        with pytest.raises(lionstore.LionstoreError):
            await repo.add_sources([newcomer])
        assert repo.state.live_sources == {}
        mail = Exchange.create_mail(a, b, "message", "hi")
        with pytest.raises(lionstore.LionstoreError):
            await repo.put(mail, outbound=True)
        assert repo.state.live_mail == {}
        assert newcomer.id not in repo.state.sources and mail.id not in repo.state.where


async def test_deleting_two_sources_dead_letters_every_mail_to_them_in_that_commit(
    store: lionstore.Store,
) -> None:
    """A mail from one deleted source to the other is dead-lettered once (as its
    sender's); the mail after it to the second source is dead-lettered too."""
    a, b, c = Source(), Source(), Source()
    ex = Exchange([a, b, c], store=store, name="ex")
    a_to_b = ex.create_mail(a, b, "message", "a->b")
    c_to_b = ex.create_mail(c, b, "message", "c->b")
    await a.send(a_to_b)
    await c.send(c_to_b)
    head = await store.head()
    assert await ex.delete_source([a, b]) == [a.id, b.id]
    records = await log_records(store, after=head)
    assert [(r.kind, r.stream_id) for r in records] == [
        ("source.deleted", a.id),
        ("mail.dead_lettered", a_to_b.id),
        ("source.deleted", b.id),
        ("mail.dead_lettered", c_to_b.id),
    ]
    assert {d.mail.id: (d.reason, d.stage) for d in ex.dead_letters} == {
        a_to_b.id: ("sender_deleted", "outbox"),
        c_to_b.id: ("recipient_deleted", "outbox"),
    }
    assert list(c.mailbox.pending_outs) == []


async def test_a_delete_that_lost_a_race_still_deletes_the_sources_left(
    open_store: Any,
) -> None:
    """Two stores on one file: the second deletes ``a`` first; the first, deciding on
    its stale view, loses the race, syncs, and deletes ``b`` alone."""
    a, b = Source(), Source()
    async with open_store(run="r") as first, open_store(run="r") as second:
        ex1 = Exchange([a, b], store=first, name="ex")
        await ex1.load()
        ex2 = Exchange(store=second, name="ex")
        await ex2.sync()
        assert await ex2.delete_source(a.id) == [a.id]
        assert await ex1.delete_source([a, b]) == [b.id]
        deleted = await log_records(first, kinds=["source.deleted"])
        assert [r.stream_id for r in deleted] == [a.id, b.id]
        assert list(ex1.sources) == []


async def test_a_buffered_mail_whose_recipient_the_log_shows_deleted_is_dead_lettered(
    store: lionstore.Store,
) -> None:
    """A ``source.deleted`` written without emptying the buffer (another writer): deliver
    dead-letters the buffered mail instead of putting it into a deleted inbox."""
    a, b = Source(), Source()
    ex = Exchange([a, b], store=store, name="ex")
    mail = ex.create_mail(a, b, "message", "late")
    await a.send(mail)
    assert await ex.collect_all() == 1
    await store.append_records([NewRecord(b.id, SourceDeleted(router="ex"))])
    head = await store.head()
    assert await ex.deliver_all() == 1
    (record,) = await log_records(store, after=head)
    assert record.stream_id == mail.id
    assert isinstance(record.data, MailDeadLettered)
    assert (record.data.reason, record.data.stage) == ("recipient_deleted", "buffer")
    assert [(d.mail.id, d.reason, d.stage) for d in ex.dead_letters] == [
        (mail.id, "recipient_deleted", "buffer")
    ]
    assert ex.buffer == {}


async def test_a_buffered_mail_can_be_excluded(store: lionstore.Store) -> None:
    a, b = Source(), Source()
    ex = Exchange([a, b], store=store, name="ex")
    mail = ex.create_mail(a, b, "message", "withdrawn")
    await a.send(mail)
    assert await ex.collect_all() == 1
    head = await store.head()
    assert await _repo(ex).exclude([mail.id]) == 1
    assert [(r.kind, r.stream_id) for r in await log_records(store, after=head)] == [
        ("mail.excluded", mail.id)
    ]
    assert ex.buffer == {}
    assert await ex.deliver_all() == 0
    assert mail.id not in b.mailbox
