"""Migration 0002 over a populated file written at schema 0001: every record survives
byte for byte, runs verify the same, the data step fills ``parent_run_id``, and the
way down and up again works."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from evo_helpers import FIXTURE, stored_rows

import lionstore
from lionstore.log import migrate
from lionstore.replay import verify

# What lionstore 0.1 reported for the fixture's runs (records, processor cycles).
EXPECTED = {"fixture": (43, 4), "fixture-fork": (16, 2)}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def verify_all(path: Path) -> dict[str, dict[str, Any]]:
    async with lionstore.open(path, readonly=True) as store:
        reports = {run: (await verify(store, run=run)).to_dict() for run in EXPECTED}
    for run, report in reports.items():
        assert report["ok"], report["divergence"]
        assert (report["records"], report["cycles"]) == EXPECTED[run]
    return reports


async def test_upgrade_keeps_every_record_and_down_and_up_again(v1_copy: Path) -> None:
    before = stored_rows(v1_copy)
    assert len(before) == 59
    await migrate.upgrade(v1_copy)
    assert await migrate.current_revision(v1_copy) == migrate.head_revision() == "0003"
    assert stored_rows(v1_copy) == before
    first = await verify_all(v1_copy)
    # the data step: the fork knows its parent by id
    runs = dict(query(v1_copy, "SELECT label, run_id FROM lionstore_runs"))
    parents = dict(query(v1_copy, "SELECT label, parent_run_id FROM lionstore_runs"))
    assert parents == {"fixture": None, "fixture-fork": runs["fixture"]}
    assert query(v1_copy, "SELECT count(*) FROM lionstore_checkpoints") == [(0,)]

    await migrate.downgrade(v1_copy, "0001")
    assert await migrate.current_revision(v1_copy) == "0001"
    tables = {r[0] for r in query(v1_copy, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "lionstore_checkpoints" not in tables
    columns = {r[1] for r in query(v1_copy, "PRAGMA table_info(lionstore_runs)")}
    assert "parent_run_id" not in columns
    assert stored_rows(v1_copy) == before

    await migrate.upgrade(v1_copy)
    assert stored_rows(v1_copy) == before
    assert await verify_all(v1_copy) == first


async def test_upgrade_through_open_then_the_run_carries_on(v1_copy: Path) -> None:
    async with lionstore.open(v1_copy, run="fixture-fork", upgrade=True) as store:
        runs = {r.label: r for r in await store.runs()}
        assert runs["fixture-fork"].parent_run_id == runs["fixture"].run_id
        await store.fork(store.position, label="grandchild")
    async with lionstore.open(v1_copy, readonly=True) as store:
        runs = {r.label: r for r in await store.runs()}
        assert runs["grandchild"].parent_run_id == runs["fixture-fork"].run_id
    assert query(v1_copy, "SELECT parent_run_id FROM lionstore_runs WHERE label='grandchild'") == [
        (runs["fixture-fork"].run_id,)
    ]


@pytest.mark.parametrize("readonly", [True, False])
async def test_an_old_file_is_refused_without_upgrade_and_left_byte_identical(
    v1_copy: Path, readonly: bool
) -> None:
    digest = sha(v1_copy)
    with pytest.raises(lionstore.SchemaOutdatedError, match="lionstore db upgrade"):
        async with lionstore.open(v1_copy, run="fixture", readonly=readonly):
            pass
    assert sha(v1_copy) == digest
    assert sorted(p.name for p in v1_copy.parent.iterdir()) == ["v1.db"]


def test_the_kept_fixture_is_at_schema_0001_and_in_rollback_journal_mode() -> None:
    assert query(FIXTURE, "SELECT version_num FROM lionstore_alembic_version") == [("0001",)]
    assert query(FIXTURE, "PRAGMA journal_mode") == [("delete",)]
    assert FIXTURE.stat().st_size < 200_000
