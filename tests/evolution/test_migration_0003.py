"""Migration 0003: on SQLite the head row becomes a high-water mark that commits leave
alone. A 0002 file is read as it is, written only once upgraded (which changes no
byte of data), and downgrading makes the row exact again for a lionstore that knows
only 0002."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from evo_helpers import stored_rows

import lionstore
from lionstore.log import migrate
from lionstore.replay import verify


class _Note(lionstore.RecordData):
    kind = "test.migration_0003.note"
    text: str


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def head_row(path: Path) -> tuple[Any, ...]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row: tuple[Any, ...] = conn.execute(
            "SELECT last_position, last_stream_no, last_run_no FROM lionstore_head"
        ).fetchone()
        return row
    finally:
        conn.close()


def last_numbers(path: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        row: tuple[int, int, int] = conn.execute(
            "SELECT (SELECT max(position) FROM lionstore_records),"
            " (SELECT max(stream_no) FROM lionstore_streams),"
            " (SELECT max(run_no) FROM lionstore_runs)"
        ).fetchone()
        return row
    finally:
        conn.close()


@pytest.fixture
def at_0002(v1_copy: Path) -> Path:
    """The schema-0001 fixture brought to 0002 only: a file as lionstore wrote it
    before this revision, its head row exact."""
    import asyncio

    asyncio.run(migrate.upgrade(v1_copy, "0002"))
    return v1_copy


async def test_a_0002_file_is_read_as_it_is_and_written_only_once_upgraded(
    at_0002: Path,
) -> None:
    assert await migrate.current_revision(at_0002) == "0002"
    assert head_row(at_0002) == last_numbers(at_0002)
    digest = sha(at_0002)
    async with lionstore.open(at_0002, readonly=True) as store:
        head = await store.head()
        assert head == last_numbers(at_0002)[0]
        assert (await verify(store, run="fixture")).ok
    assert sha(at_0002) == digest  # reading wrote nothing, not even the revision
    with pytest.raises(lionstore.SchemaOutdatedError, match="lionstore db upgrade"):
        async with lionstore.open(at_0002, run="fixture"):
            pass
    assert sha(at_0002) == digest
    rows = stored_rows(at_0002)
    async with lionstore.open(at_0002, run="later", upgrade=True) as store:
        assert await store.head() == head + 1  # after its own run.started
    assert await migrate.current_revision(at_0002) == migrate.head_revision() == "0003"
    assert stored_rows(at_0002)[: len(rows)] == rows


async def test_commits_leave_the_head_row_and_reads_go_by_the_records(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with lionstore.open(path, run="r") as store:
        created = head_row(path)
        assert created == last_numbers(path)  # the run's creation writes it
        positions = await store.append(
            [(lionstore.IDType.create(), _Note(text=str(i))) for i in range(5)]
        )
        assert head_row(path) == created  # no commit wrote it
        assert await store.head() == positions[-1] == last_numbers(path)[0]
    async with lionstore.open(path, readonly=True) as reader:
        assert await reader.head() == positions[-1]
        assert [r.position async for r in await reader.read(run="r")][-5:] == positions
    async with lionstore.open(path, run="r") as store:  # a writer starting afresh
        [nxt] = await store.append([(lionstore.IDType.create(), _Note(text="x"))])
        assert nxt == positions[-1] + 1


async def test_downgrading_makes_the_head_row_exact_again(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with lionstore.open(path, run="r") as store:
        await store.append([(lionstore.IDType.create(), _Note(text=str(i))) for i in range(7)])
    assert head_row(path) != last_numbers(path)
    await migrate.downgrade(path, "0002")
    assert await migrate.current_revision(path) == "0002"
    assert head_row(path) == last_numbers(path)  # what a 0002 lionstore numbers from
    await migrate.upgrade(path)
    async with lionstore.open(path, run="r") as store:
        assert (await verify(store)).ok


async def test_a_head_row_behind_the_last_run_is_still_refused(tmp_path: Path) -> None:
    """Runs are the one number the row holds exactly (a run's creation writes it)."""
    path = tmp_path / "store.db"
    async with lionstore.open(path, run="a"):
        pass
    async with lionstore.open(path, run="b"):
        pass
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE lionstore_head SET last_run_no = last_run_no - 1")
    conn.close()
    digest = sha(path)
    for readonly in (True, False):
        with pytest.raises(lionstore.CorruptDatabaseError, match="last run is 1, but"):
            async with lionstore.open(path, run="b", readonly=readonly):
                pass
    assert sha(path) == digest
