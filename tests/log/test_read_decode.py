"""Reads decode what was written, field by field, and refuse a malformed row.

``Store.read`` and the chained read under every projection load decode record rows in
one loop (lionstore/log/rows.py) that calls each kind's validator directly and checks
the columns' types itself. Here: every field of every record read back equals what
the append returned, on both backends, across pages, runs, streams, kinds, an
upcast old version, an unknown kind and data that does not fit its kind; and a SQLite
file whose record columns hold values of the wrong type (SQLite keeps any type in any
column) gives CorruptDatabaseError naming the position, after the good records before
it, never a record with a field of the wrong type.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest

import lionstore
from lionstore import CorruptDatabaseError, LionstoreError, Recorded, UnknownRecord
from lionstore.domain.ids import IDType
from lionstore.domain.records import RecordData, register_upcaster

from ._kinds import Note, Ping, Reading
from .logtools import new_id

RUN = "reads"


class Shaped(RecordData):
    """A kind at version 2, whose version 1 ("size" was "n") an upcaster converts."""

    kind: ClassVar[str] = "logtest.shaped"
    kind_version: ClassVar[int] = 2
    size: int


register_upcaster("logtest.shaped", 1, lambda old: {"size": old["n"]})


def _same(read: Recorded, written: Recorded) -> None:
    """Every field equal, and of the same type (an IDType is an IDType, an int an int)."""
    for name in Recorded._fields:
        got, want = getattr(read, name), getattr(written, name)
        assert got == want, (name, got, want)
        assert type(got) is type(want), (name, type(got), type(want))


async def _all(store: lionstore.Store, **kwargs: Any) -> list[Recorded]:
    return [r async for r in await store.read(**kwargs)]


async def test_records_read_back_equal_the_appended_ones_field_by_field(
    open_store: Any,
) -> None:
    async with open_store(run=RUN) as store:
        streams = [new_id() for _ in range(7)]
        written: list[Recorded] = []
        for batch in range(5):
            rows = [
                (
                    streams[(batch * 3 + i) % len(streams)],
                    [Ping(n=i), Note(text=f"b{batch} é \u2603", tags=("x",)), Reading(value=0.5)][
                        i % 3
                    ],
                )
                for i in range(11)
            ]
            written += await store.append_records(rows)
        for page_size in (1, 4, 1000):  # pages end inside streams and batches
            read = await _all(store, page_size=page_size)
            assert [r.position for r in read[1:]] == [w.position for w in written]
            for got, want in zip(read[1:], written, strict=True):
                _same(got, want)
                assert type(got.data) is type(want.data)
        one = streams[2]
        mine = [w for w in written if w.stream_id == one]
        for got, want in zip(await _all(store, stream=one, page_size=2), mine, strict=True):
            _same(got, want)
        notes = [w for w in written if w.kind == "logtest.note"]
        got_notes = await _all(store, kinds=["logtest.note"], page_size=3)
        assert len(got_notes) == len(notes)
        for got, want in zip(got_notes, notes, strict=True):
            _same(got, want)
        # a second run: reading every run names each record's own run
        other = await store.fork(0, label="other")
    async with open_store(run="other") as forked:
        assert forked.run.run_id == other.run_id
        [extra] = await forked.append_records([(new_id(), Ping(n=99))])
        everything = await _all(forked, run=None, page_size=5)
        assert {r.run_id for r in everything} == {store.run.run_id, other.run_id}
        _same(everything[-1], extra)
        assert [r.position for r in everything] == sorted(r.position for r in everything)


def _rewrite(path: Path, sql: str, *params: Any) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute(sql, params).rowcount >= 1, sql
        conn.commit()
    finally:
        conn.close()


async def _file(tmp_path: Path) -> tuple[Path, list[Recorded]]:
    path = tmp_path / "r.db"
    async with lionstore.open(path, run=RUN) as store:
        sid = new_id()
        written = await store.append_records(
            [(sid, Ping(n=1)), (new_id(), Note(text="two")), (sid, Ping(n=3))]
        )
    return path, written


async def test_old_versions_unknown_kinds_and_misfit_data_decode_as_before(
    tmp_path: Path,
) -> None:
    path, written = await _file(tmp_path)
    async with lionstore.open(path, run=RUN) as store:
        [old] = await store.append_records([(new_id(), Shaped(size=5))])
    first, second, third = (w.position for w in written)
    _rewrite(
        path,
        "UPDATE lionstore_records SET kind_version = 1, data = '{\"n\": 7}' WHERE position = ?",
        old.position,
    )
    _rewrite(path, "UPDATE lionstore_records SET kind = 'logtest.nobody' WHERE position = ?", first)
    _rewrite(path, 'UPDATE lionstore_records SET data = \'{"n": "x"}\' WHERE position = ?', third)
    async with lionstore.open(path, run=RUN, readonly=True) as store:
        by_position = {r.position: r for r in await _all(store)}
    upcast = by_position[old.position]
    assert upcast.data == Shaped(size=7) and upcast.kind_version == 1 and upcast.upcast
    assert upcast.raw == '{"n": 7}'
    unknown = by_position[first]
    assert isinstance(unknown.data, UnknownRecord)
    assert (unknown.data.kind, unknown.data.raw) == ("logtest.nobody", {"n": 1})
    misfit = by_position[third]
    assert isinstance(misfit.data, UnknownRecord) and misfit.data.raw == {"n": "x"}
    _same(by_position[second], written[1])


MALFORMED = {
    "data stored as a blob": (
        "UPDATE lionstore_records SET data = CAST(data AS BLOB) WHERE position = ?",
        "data",
    ),
    "kind_version a text": (
        "UPDATE lionstore_records SET kind_version = 'one' WHERE position = ?",
        "kind_version",
    ),
    "kind_version a real": (
        "UPDATE lionstore_records SET kind_version = 1.5 WHERE position = ?",
        "kind_version",
    ),
    "stream_version a text": (
        "UPDATE lionstore_records SET stream_version = 'two' WHERE position = ?",
        "stream_version",
    ),
    "recorded_at_us a text": (
        "UPDATE lionstore_records SET recorded_at_us = 'noon' WHERE position = ?",
        "recorded_at_us",
    ),
    "stream id not an id": (
        "UPDATE lionstore_streams SET stream_id = 'not-an-id' WHERE stream_no ="
        " (SELECT stream_no FROM lionstore_records WHERE position = ?)",
        "not an id",
    ),
    "stream id spelled another way": (
        "UPDATE lionstore_streams SET stream_id = upper(stream_id) WHERE stream_no ="
        " (SELECT stream_no FROM lionstore_records WHERE position = ?)",
        "not an id",
    ),
    "stream id a blob": (
        "UPDATE lionstore_streams SET stream_id = CAST(stream_id AS BLOB) WHERE stream_no ="
        " (SELECT stream_no FROM lionstore_records WHERE position = ?)",
        "stream_id",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_row_is_a_clear_error_after_the_good_records(
    tmp_path: Path, case: str
) -> None:
    path, written = await _file(tmp_path)
    bad = written[1]  # the Note, on a stream of its own
    sql, says = MALFORMED[case]
    _rewrite(path, sql, bad.position)
    async with lionstore.open(path, run=RUN, readonly=True) as store:
        for page_size in (1, 2, 1000):
            got: list[Recorded] = []
            with pytest.raises(CorruptDatabaseError) as caught:
                async for record in await store.read(page_size=page_size):
                    got.append(record)
            assert f"position {bad.position}" in str(caught.value)
            assert says in str(caught.value)
            # the records before the bad one came first, as they were written
            assert [r.position for r in got] == list(range(1, bad.position))
            _same(got[-1], written[0])
        # the chained read (what a projection load reads) refuses it too
        with pytest.raises(LionstoreError):
            async for _ in await store.read_chained():
                pass


async def test_the_chained_read_decodes_what_it_checked(tmp_path: Path) -> None:
    path, written = await _file(tmp_path)
    async with lionstore.open(path, run=RUN, readonly=True) as store:
        chained = [r async for r in await store.read_chained(page_size=2)]
        for got, want in zip(chained[1:], written, strict=True):
            _same(got, want)
        pings = [r async for r in await store.read_chained(kinds=["logtest.ping"], page_size=1)]
        assert [r.position for r in pings] == [written[0].position, written[2].position]
        assert all(type(r.stream_id) is IDType for r in pings)
    # a changed record breaks the chain at its position; the records before it come
    _rewrite(
        path,
        "UPDATE lionstore_records SET data = '{\"n\": 2}' WHERE position = ?",
        written[2].position,
    )
    async with lionstore.open(path, run=RUN, readonly=True) as store:
        seen: list[Recorded] = []
        with pytest.raises(CorruptDatabaseError, match=f"position {written[2].position}"):
            async for record in await store.read_chained(page_size=1000):
                seen.append(record)
        assert [r.position for r in seen] == [1, written[0].position, written[1].position]


@pytest.mark.parametrize("catch_up", ["sync", "append"])
async def test_a_malformed_row_another_writer_committed_is_refused_by_the_catch_up(
    tmp_path: Path, catch_up: str
) -> None:
    """Records another writer of the file committed reach a store through its catch-up
    (``sync``, or the next commit), not a read: they are checked the same way. Before,
    a blob in ``data`` came through as a record whose text was bytes."""
    path, _ = await _file(tmp_path)
    async with lionstore.open(path, run=RUN) as mine, lionstore.open(path, run=RUN) as other:
        await mine.sync()
        [theirs] = await other.append_records([(new_id(), Note(text="theirs"))])
        sql, says = MALFORMED["data stored as a blob"]
        _rewrite(path, sql, theirs.position)
        with pytest.raises(CorruptDatabaseError) as caught:
            if catch_up == "sync":
                await mine.sync()
            else:
                await mine.append([(new_id(), Ping(n=4))])
        assert f"position {theirs.position}" in str(caught.value)
        assert says in str(caught.value)


async def test_records_of_one_text_share_a_value_only_when_nothing_in_it_can_change(
    tmp_path: Path,
) -> None:
    """Pings (one int field, frozen) of the same text in one page read back as one value:
    a cycle's claimed records all carry one text, and validating it once per page is the
    saving. Notes (a dict field) of the same text stay separate values, so changing one's
    dict changes no other record; so do misfit data (an UnknownRecord holds a dict).
    Every record still equals what was written."""
    path = tmp_path / "s.db"
    async with lionstore.open(path, run=RUN) as store:
        written = await store.append_records(
            [(new_id(), Ping(n=7)) for _ in range(5)]
            + [(new_id(), Note(text="same")) for _ in range(2)]
        )
    for record in written[3:5]:  # two pings that no longer fit their kind, alike
        _rewrite(path, "UPDATE lionstore_records SET data = '{\"n\": \"x\"}' WHERE position = ?",
                 record.position)  # fmt: skip
    async with lionstore.open(path, run=RUN, readonly=True) as store:
        one_page = [r.data for r in (await _all(store, page_size=1000))[1:]]
        by_record = [r.data for r in (await _all(store, page_size=1))[1:]]
    pings, misfits, notes = one_page[:3], one_page[3:5], one_page[5:]
    assert pings[0] is pings[1] is pings[2] and pings[0] == Ping(n=7)
    assert isinstance(misfits[0], UnknownRecord) and misfits[0] is not misfits[1]
    assert notes[0] == notes[1] == Note(text="same") and notes[0] is not notes[1]
    assert by_record[0] is not by_record[1]  # shared within a page only
    assert by_record[:3] == pings and by_record[5:] == notes
