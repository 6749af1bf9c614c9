"""How a repository loads (lionstore/repositories/base.py), on real SQLite files: why
a checkpoint is ignored (each reason logged as such), a restored projection not
checkpointed again for nothing, the fold's count against CHECKPOINT_EVERY, and the
message of a record that cannot be applied. Written from mutmut's survivors
(docs/mutation.md)."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_checkpoints as tc
from bounds import bounded
from fixture_kinds import FixtureExecutor
from pydantic import BaseModel, field_validator

import lionstore
from lionstore import Exchange, RecordError, Source
from lionstore.domain.element import class_path
from lionstore.domain.mail_records import MailSent, PackageData, SourceAdded
from lionstore.domain.records import NewRecord
from lionstore.projections import snapshot
from lionstore.repositories import base

NAME = "executor:worker"
HEAD_SQL = "SELECT max(position) FROM lionstore_records"  # the log's head

# Why each tampered checkpoint of test_checkpoints.BAD is ignored, as the log says it.
REASONS = {
    "older format": f"format {snapshot.FORMAT_VERSION - 1}, this code reads"
    f" {snapshot.FORMAT_VERSION}",
    "newer format": f"format {snapshot.FORMAT_VERSION + 1}, this code reads"
    f" {snapshot.FORMAT_VERSION}",
    "tampered header": "its checksum does not match",
    "tampered event line": "its checksum does not match",
    "truncated json": "its checksum does not match",
    "truncated header, resealed": "it does not restore (",
    "digest of another log": "the log it was made from is not the log in the file",
    "position before the run": "the log it was made from is not the log in the file",
    "position past the head": "covers position {past}, past the log's {head}",
    "inconsistent, resealed": "it does not restore (",
    "not a list, resealed": "it does not restore (",
}


def _ignored(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "lionstore.checkpoints" and "ignored and rebuilt" in r.getMessage()
    ]


@pytest.mark.parametrize("case", sorted(tc.BAD))
async def test_an_ignored_checkpoint_logs_why(
    tc_checkpointed: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    pos = tc.checkpoint_rows(tc_checkpointed)[NAME][0]
    ((head,),) = tc.rows(tc_checkpointed, HEAD_SQL)
    tc.tamper(tc_checkpointed, NAME, tc.BAD[case])
    with caplog.at_level(logging.INFO, logger="lionstore.checkpoints"):
        opened = await tc.open_state(tc_checkpointed)
    assert opened[2] is None
    (message,) = _ignored(caplog)
    prefix = f"checkpoint {NAME} ignored and rebuilt: "
    assert message.startswith(prefix), message
    reason = message[len(prefix) :]
    expected = REASONS[case].format(past=pos + 1000, head=head)
    if expected.endswith("("):
        # the exception's class and message, e.g. "(ValueError: ...)"
        assert re.fullmatch(re.escape(expected) + r"[A-Z]\w*(Error|Exception): .+\)", reason), (
            reason
        )
    else:
        assert reason == expected


@pytest.fixture
async def tc_checkpointed(upgraded: Path) -> Path:
    await tc.open_state(upgraded)
    assert set(tc.checkpoint_rows(upgraded)) == {"executor:worker", "mail:post"}
    return upgraded


async def test_a_restored_projection_is_not_checkpointed_again_until_it_moves(
    tc_checkpointed: Path,
) -> None:
    async with lionstore.open(tc_checkpointed, run="fixture") as store:
        executor = FixtureExecutor(tc.CONFIG, store=store, name="worker")
        await executor.load()
        assert executor._repo.restored_from is not None
        assert await executor._repo.checkpoint() is False  # it holds what is stored


# -- the fold's count against CHECKPOINT_EVERY --------------------------------------


def _checkpoint_names(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {n for (n,) in conn.execute("SELECT name FROM lionstore_checkpoints")}
    finally:
        conn.close()


async def _file_with_sources(path: Path, n: int) -> None:
    """Router ``post`` with ``n`` sources: ``n`` records of the mail repository's kinds."""
    async with lionstore.open(path, run="r", checkpoints=False) as store:
        ex = Exchange([Source() for _ in range(n)], store=store, name="post")
        await ex.load()


@pytest.mark.parametrize(("sources", "written"), [(3, False), (4, True)])
async def test_a_load_folding_more_than_checkpoint_every_records_writes_one_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: int, written: bool
) -> None:
    monkeypatch.setattr(base, "CHECKPOINT_EVERY", 3)
    path = tmp_path / "f.db"
    await _file_with_sources(path, sources)
    async with lionstore.open(path, run="r") as store:
        ex = Exchange(store=store, name="post")
        await ex.load()
        # written right after the load (not only at close), when over the limit
        assert ("mail:post" in _checkpoint_names(path)) is written
        assert len(ex.sources) == sources


@pytest.mark.parametrize(("sources", "written"), [(3, False), (4, True)])
async def test_a_synchronous_first_read_folding_more_than_checkpoint_every_writes_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sources: int, written: bool
) -> None:
    monkeypatch.setattr(base, "CHECKPOINT_EVERY", 3)
    path = tmp_path / "f.db"
    await _file_with_sources(path, sources)
    async with lionstore.open(path, run="r") as store:
        ex = Exchange(store=store, name="post")
        assert len(ex.sources) == sources  # a view read first: load_now
        # the checkpoint load_now started is a write the store tracks
        pending = list(store._in_flight)
        assert len(pending) == int(written)
        await bounded(asyncio.gather(*pending), "the checkpoint write")
        assert ("mail:post" in _checkpoint_names(path)) is written


# -- a record that cannot be applied ------------------------------------------------


class Labelled(Source):
    label: str = ""


class Note(BaseModel):
    text: str


async def test_a_record_that_does_not_validate_names_its_kind_position_and_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.db"
    async with lionstore.open(path, run="r") as store:
        ex = Exchange([Source()], store=store, name="post")
        await ex.load()
        bad = Source()
        data = SourceAdded(router="post", source_class=class_path(Labelled), fields={"label": 5})
        (recorded,) = await store.append_records([NewRecord(bad.id, data)])
        store_position = recorded.position
    async with lionstore.open(path, run="r") as store:
        ex = Exchange(store=store, name="post")
        with pytest.raises(RecordError) as caught:
            await ex.load()
    message = str(caught.value)
    assert message.startswith(
        f"the source.added record at position {store_position} cannot be applied: ValidationError: "
    ), message
    assert "label" in message


async def test_a_package_item_that_does_not_fit_its_class_names_its_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.db"
    a, b = Source(), Source()
    async with lionstore.open(path, run="r") as store:
        ex = Exchange([a, b], store=store, name="post")
        await ex.load()
        mail = ex.create_mail(a, b, "message", "x")
        data = MailSent(
            router="post",
            sender=a.id,
            recipient=b.id,
            created_at=mail.created_at,
            package=PackageData(
                id=mail.package.id,
                created_at=mail.package.created_at,
                category="message",
                item={"not_text": 1},
                item_class=class_path(Note),
            ),
        )
        (recorded,) = await store.append_records([NewRecord(mail.id, data)])
    async with lionstore.open(path, run="r") as store:
        ex = Exchange(store=store, name="post")
        with pytest.raises(RecordError) as caught:
            await ex.load()
    assert str(caught.value).startswith(
        f"the mail.sent record at position {recorded.position}: a package item does not"
        f" validate as the {class_path(Note)} it names"
    ), str(caught.value)


async def test_a_failed_load_is_tried_again_by_the_next_load(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    async with lionstore.open(path, run="r") as store:
        ex = Exchange([Source()], store=store, name="post")
        await ex.load()
        data = SourceAdded(router="post", source_class=class_path(Labelled), fields={"label": 5})
        await store.append_records([NewRecord(Source().id, data)])
    async with lionstore.open(path, run="r") as store:
        ex = Exchange(store=store, name="post")
        for _ in range(2):  # the second load folds again, and fails the same way
            with pytest.raises(RecordError, match="cannot be applied: ValidationError"):
                await ex.load()


# -- checkpoints written ------------------------------------------------------------


async def test_a_checkpoint_is_written_once_per_position_and_never_after_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f.db"
    async with lionstore.open(path, run="r") as store:
        a, b = Source(), Source()
        ex = Exchange([a], store=store, name="post")
        await ex.load()
        repo = ex._repo
        assert await repo.checkpoint() is True
        assert await repo.checkpoint() is False  # nothing new since
        await ex.add_source(b)
        assert await repo.checkpoint() is True
        repo.close()
        await ex.delete_source(b)  # the log moves on; the closed repository does not
        with caplog.at_level(logging.WARNING, logger="lionstore.checkpoints"):
            assert await repo.checkpoint() is False
        assert caplog.records == []  # not tried (and refused): not asked for at all
    found = tc.rows(path, "SELECT name, position FROM lionstore_checkpoints")
    assert [name for name, _ in found] == ["mail:post"]
    ((position,),) = [(p,) for _, p in found]
    # the last one written is the one before close, at the source.added of b
    ((added_b,),) = tc.rows(
        path, "SELECT max(position) FROM lionstore_records WHERE kind = 'source.added'"
    )
    assert position == added_b


async def test_a_command_that_keeps_losing_races_gives_up_with_a_message(
    store: lionstore.Store,
) -> None:
    ex = Exchange([Source()], store=store, name="post")
    await ex.load()
    target = Source()
    head = await store.head()
    decisions = 0

    def always_stale() -> base.Decision:
        nonlocal decisions
        decisions += 1
        return [NewRecord(target.id, SourceAdded(router="post", source_class="x"))], {
            target.id: 7  # the stream does not exist: every append is refused
        }

    with pytest.raises(lionstore.ConcurrencyError, match=r"^gave up after 20 lost races$"):
        await ex._repo.decide_and_append(always_stale)
    assert decisions == 20
    assert await store.head() == head


async def test_a_checkpoint_that_cannot_be_written_is_logged_and_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f.db"
    await _file_with_sources(path, 2)  # no checkpoint stored
    async with lionstore.open(path, run="r", lock_timeout=0.2) as store:
        ex = Exchange(store=store, name="post")
        await ex.load()
        assert ex._repo.restored_from is None
        other = sqlite3.connect(path, isolation_level=None)  # another process writing
        try:
            other.execute("BEGIN IMMEDIATE")
            with caplog.at_level(logging.WARNING, logger="lionstore.checkpoints"):
                assert await ex._repo.checkpoint() is False
            other.execute("ROLLBACK")
        finally:
            other.close()
        ex._repo.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "lionstore.checkpoints"]
    assert len(messages) == 1, messages
    assert messages[0].startswith("checkpoint mail:post not written: "), messages
    assert "lock" in messages[0], messages
    assert _checkpoint_names(path) == set()


async def test_a_read_only_store_writes_no_checkpoint_and_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A read-only store has nothing to write a checkpoint with: closing one (as every
    inspection does) must not log a warning about it, which Python prints to stderr
    when logging is not configured."""
    path = tmp_path / "f.db"
    await _file_with_sources(path, 2)  # no checkpoint stored
    with caplog.at_level(logging.WARNING, logger="lionstore.checkpoints"):
        async with lionstore.open(path, run="r", readonly=True) as reader:
            assert reader.readonly
            ex = Exchange(store=reader, name="post")
            await ex.load()
            assert await ex._repo.checkpoint() is False
    assert [r for r in caplog.records if r.name == "lionstore.checkpoints"] == []
    assert _checkpoint_names(path) == set()


# -- records the feed brings while a load folds ---------------------------------------


def _source_ids(ex: Exchange) -> set[lionstore.IDType]:
    return {s.id for s in ex.sources}


async def _file_with(path: Path, *sources: Source) -> None:
    async with lionstore.open(path, run="r", checkpoints=False) as store:
        await Exchange(list(sources), store=store, name="post").load()


async def test_a_load_folds_up_to_the_feed_and_leaves_the_rest_to_sync(tmp_path: Path) -> None:
    """Records another process committed after this store's feed last looked are not
    in a load: the projection is the fold of the log up to the store's position, and
    they come in (once) by sync()."""
    path = tmp_path / "f.db"
    s1, s2 = Source(), Source()
    await _file_with(path, s1)
    async with (
        lionstore.open(path, run="r", checkpoints=False) as mine,
        lionstore.open(path, run="r", checkpoints=False) as other,
    ):
        ex = Exchange(store=mine, name="post")
        await Exchange([s2], store=other, name="post").load()  # another writer adds s2
        position = mine.position
        assert await mine.head() > position  # committed, not yet delivered to `mine`
        await ex.load()
        assert _source_ids(ex) == {s1.id}
        assert ex._repo.state.position <= position
        await ex.sync()
        assert _source_ids(ex) == {s1.id, s2.id}


async def test_records_delivered_before_the_load_are_folded_once(tmp_path: Path) -> None:
    """A record the feed delivered before the first load (held, as the projection had no
    history yet) is part of the history that load folds: the held copy is dropped."""
    path = tmp_path / "f.db"
    s1, s2 = Source(), Source()
    await _file_with(path, s1)
    async with (
        lionstore.open(path, run="r", checkpoints=False) as mine,
        lionstore.open(path, run="r", checkpoints=False) as other,
    ):
        ex = Exchange(store=mine, name="post")
        await Exchange([s2], store=other, name="post").load()
        await mine.sync()  # s2's source.added reaches the feed: held, not loaded yet
        assert not ex._repo.loaded
        await ex.load()
        assert _source_ids(ex) == {s1.id, s2.id}
        assert ex._repo.state.position == mine.position


async def test_a_view_read_while_the_feed_delivers_folds_history_then_the_delivery(
    tmp_path: Path,
) -> None:
    """A feed subscriber reads a view of a projection not loaded yet while a batch is
    being delivered: the synchronous load folds the history the store had delivered
    before the batch, and the batch (held meanwhile) is applied after it."""
    path = tmp_path / "f.db"
    s1, s2 = Source(), Source()
    await _file_with(path, s1)
    async with (
        lionstore.open(path, run="r", checkpoints=False) as mine,
        lionstore.open(path, run="r", checkpoints=False) as other,
    ):
        ex = Exchange(store=mine, name="post")  # subscribes first: it holds the batch
        seen: list[tuple[int, set[lionstore.IDType]]] = []
        mine.subscribe(lambda records: seen.append((mine.position, _source_ids(ex))))
        before = mine.position
        await Exchange([s2], store=other, name="post").load()
        await mine.sync()
        # the view was read with the store still at its position before the batch
        assert seen == [(before, {s1.id, s2.id})]
        assert _source_ids(ex) == {s1.id, s2.id}


# -- load() shared by its callers, and tried again after a failure ---------------------

# Called with each Counted event's ``n`` whenever the class validates one, which a load
# does for every event it folds (the live executor rebuilds the user's class): the
# point at which these tests act while a load is under way.
_while_folding: Callable[[int], None] | None = None


class Counted(lionstore.Event):
    n: int = 0

    @field_validator("n")
    @classmethod
    def _folded(cls, value: int) -> int:
        if _while_folding is not None:
            _while_folding(value)
        return value

    async def invoke(self) -> None:
        self.response = self.n


class CountedProcessor(lionstore.Processor):
    event_type = Counted


class CountedExecutor(lionstore.Executor):
    processor_type = CountedProcessor


@pytest.fixture
def while_folding() -> Iterator[Callable[[Callable[[int], None] | None], None]]:
    def install(hook: Callable[[int], None] | None) -> None:
        global _while_folding
        _while_folding = hook

    yield install
    install(None)


async def _file_with_events(path: Path, n: int) -> None:
    async with lionstore.open(path, run="r", checkpoints=False) as store:
        await CountedExecutor(store=store, name="w").extend([Counted(n=i) for i in range(n)])


async def test_a_caller_cancelled_during_a_load_leaves_the_fold_to_the_others(
    tmp_path: Path, while_folding: Callable[[Callable[[int], None] | None], None]
) -> None:
    """A load() whose caller is cancelled goes on for the callers still waiting: a
    load() called meanwhile shares that fold instead of starting another."""
    path = tmp_path / "f.db"
    await _file_with_events(path, 3)
    async with lionstore.open(path, run="r", checkpoints=False) as store:
        ex = CountedExecutor(store=store, name="w")
        folded: list[int] = []
        first = asyncio.ensure_future(ex.load())
        later: list[asyncio.Future[None]] = []

        def hook(n: int) -> None:
            folded.append(n)
            if not later:  # the fold is under way: its first caller gives up, another calls
                first.cancel()
                later.append(asyncio.ensure_future(ex.load()))

        while_folding(hook)
        with pytest.raises(asyncio.CancelledError):
            await bounded(first, "the cancelled load()")
        await bounded(later[0], "the load() called during the fold")
        while_folding(None)
        assert folded == [0, 1, 2]  # one fold: each event rebuilt once
        assert [e.n for e in ex.pile] == [0, 1, 2]  # type: ignore[attr-defined]


async def test_a_load_that_failed_is_folded_again_by_the_next(
    tmp_path: Path, while_folding: Callable[[Callable[[int], None] | None], None]
) -> None:
    """A failed load is not kept as the answer: once what made it fail is gone (here an
    event class that refused a value now accepts it), the next load succeeds."""
    path = tmp_path / "f.db"
    await _file_with_events(path, 2)

    def refuse(n: int) -> None:
        raise ValueError(f"n={n} refused")

    async with lionstore.open(path, run="r", checkpoints=False) as store:
        ex = CountedExecutor(store=store, name="w")
        while_folding(refuse)
        with pytest.raises(RecordError, match="cannot be applied: ValidationError"):
            await bounded(ex.load(), "the failing load()")
        while_folding(None)
        await bounded(ex.load(), "the second load()")
        assert [e.n for e in ex.pile] == [0, 1]  # type: ignore[attr-defined]


def test_a_view_read_with_no_event_loop_folds_over_checkpoint_every(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view read first from plain synchronous code (no event loop running) loads on the
    spot even when the fold is long enough to call for a checkpoint: there is no loop
    to write it on, so the store's close writes it."""
    monkeypatch.setattr(base, "CHECKPOINT_EVERY", 3)
    path = tmp_path / "f.db"
    asyncio.run(_file_with_sources(path, 4))

    async def opened() -> tuple[lionstore.Store, Exchange]:
        store = await lionstore.open(path, run="r")
        return store, Exchange(store=store, name="post")

    store, ex = asyncio.run(opened())
    try:
        assert len(ex.sources) == 4  # read outside any event loop
        assert "mail:post" not in _checkpoint_names(path)
    finally:
        asyncio.run(store.close())
    assert "mail:post" in _checkpoint_names(path)


async def test_an_executor_with_no_records_of_its_own_restores_from_its_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An executor that never recorded anything, on a run other repositories wrote to,
    is checkpointed at close like any other (an empty state at position 0) and
    restored from it on the next open, without folding the run again."""
    path = tmp_path / "f.db"
    async with lionstore.open(path, run="r") as store:
        await CountedExecutor(store=store, name="idle").load()
        await Exchange([Source()], store=store, name="post").load()
    assert "executor:idle" in _checkpoint_names(path)
    with caplog.at_level(logging.INFO, logger="lionstore.checkpoints"):
        async with lionstore.open(path, run="r") as store:
            ex = CountedExecutor(store=store, name="idle")
            await ex.load()
            assert ex._repo.restored_from is not None
            assert len(ex.pile) == 0
    assert _ignored(caplog) == []
