"""Alembic migrations: one head, upgrade from empty, downgrade and upgrade again, tables
equal to the metadata, and the ``alembic`` command from the checkout."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

import lionstore
from lionstore.errors import StoreError
from lionstore.log import migrate
from lionstore.log.schema import TABLE_NAMES, VERSION_TABLE, metadata

from ._kinds import Ping
from .logtools import ROOT, new_id, records, subprocess_env


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    finally:
        conn.close()


def version_rows(path: Path) -> list[tuple[str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
    finally:
        conn.close()


def test_one_head_and_a_linear_history() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    heads = script.get_heads()
    assert len(heads) == 1
    assert migrate.head_revision() == heads[0]
    revisions = list(script.walk_revisions())  # head first, down to the base
    assert {r.revision for r in revisions} == migrate.known_revisions()
    assert revisions[-1].down_revision is None
    for newer, older in itertools.pairwise(revisions):
        assert newer.down_revision == older.revision
    assert len(script.get_bases()) == 1


async def test_upgrade_from_empty_creates_every_table(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    conn = sqlite3.connect(path)  # a valid SQLite database without a single table
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")
    conn.close()
    assert await migrate.current_revision(path) is None
    await migrate.upgrade(path)
    assert tables(path) == {*TABLE_NAMES, VERSION_TABLE}
    assert version_rows(path) == [(migrate.head_revision(),)]
    assert await migrate.current_revision(path) == migrate.head_revision()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute(
            "SELECT last_position, last_stream_no, last_run_no FROM lionstore_head"
        ).fetchall() == [(0, 0, 0)]
    finally:
        conn.close()


async def test_upgrade_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    await migrate.upgrade(path)
    assert tables(path) == {*TABLE_NAMES, VERSION_TABLE}


async def test_upgrade_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    async with lionstore.open(path, run="r") as store:
        await store.append([(new_id(), Ping(n=1))])
    await migrate.upgrade(path)
    async with lionstore.open(path, run="r") as store:
        assert [r.data for r in await records(store, kinds=["logtest.ping"])] == [Ping(n=1)]


async def test_downgrade_to_base_and_upgrade_again(tmp_path: Path) -> None:
    path = tmp_path / "cycle.db"
    await migrate.upgrade(path)
    await migrate.downgrade(path, "base")
    assert not tables(path) & TABLE_NAMES
    assert version_rows(path) == []
    assert await migrate.current_revision(path) is None

    await migrate.upgrade(path)
    assert tables(path) == {*TABLE_NAMES, VERSION_TABLE}
    assert version_rows(path) == [(migrate.head_revision(),)]
    async with lionstore.open(path, run="after") as store:
        assert await store.append([(new_id(), Ping(n=1))]) == [2]


def _schema_diff(path: Path) -> list[object]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


async def test_tables_after_upgrade_equal_the_metadata(tmp_path: Path) -> None:
    path = tmp_path / "compare.db"
    await migrate.upgrade(path)
    assert _schema_diff(path) == []


async def test_the_comparison_sees_a_difference(tmp_path: Path) -> None:
    """The check above can fail: a database missing an index is reported."""
    path = tmp_path / "drift.db"
    await migrate.upgrade(path)
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX ix_lionstore_records_run_position")
    conn.commit()
    conn.close()
    diff = _schema_diff(path)
    assert diff
    assert "ix_lionstore_records_run_position" in repr(diff)


def _alembic(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=timeout,
    )


async def test_alembic_command_from_the_checkout(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    url = f"sqlite+aiosqlite:///{path}"
    done = await asyncio.to_thread(_alembic, "-x", f"url={url}", "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert tables(path) == {*TABLE_NAMES, VERSION_TABLE}
    assert version_rows(path) == [(migrate.head_revision(),)]
    assert _schema_diff(path) == []

    async with lionstore.open(path, run="from-alembic") as store:
        assert await store.append([(new_id(), Ping(n=1))]) == [2]

    down = await asyncio.to_thread(_alembic, "-x", f"url={url}", "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert not tables(path) & TABLE_NAMES


async def test_alembic_offline_sql(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'never-created.db'}"
    done = await asyncio.to_thread(_alembic, "-x", f"url={url}", "upgrade", "head", "--sql")
    assert done.returncode == 0, done.stderr
    for table in TABLE_NAMES:
        assert f"CREATE TABLE {table}" in done.stdout
    assert not (tmp_path / "never-created.db").exists()


def _foreign_file(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        conn.commit()
    finally:
        conn.close()
    return path.read_bytes()


async def test_alembic_command_refuses_another_applications_file(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    before = _foreign_file(path)
    url = f"sqlite+aiosqlite:///{path}"
    done = await asyncio.to_thread(_alembic, "-x", f"url={url}", "upgrade", "head")
    assert done.returncode != 0  # the alembic command prints FAILED lines on stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last == f"FAILED: {path}: a SQLite database that lionstore did not create"
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == before  # not a byte written
    assert tables(path) == {"users"}


async def test_alembic_command_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    await migrate.upgrade(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'")
        conn.commit()
    finally:
        conn.close()
    url = f"sqlite+aiosqlite:///{path}"
    done = await asyncio.to_thread(_alembic, "-x", f"url={url}", "upgrade", "head")
    assert done.returncode != 0
    assert "written by a newer lionstore" in done.stdout.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert version_rows(path) == [("ffff",)]


async def test_alembic_command_gives_one_line_for_a_sync_url(tmp_path: Path) -> None:
    path = tmp_path / "sync.db"
    done = await asyncio.to_thread(_alembic, "-x", f"url=sqlite:///{path}", "upgrade", "head")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stdout.strip().splitlines()[-1] == (
        "FAILED: sqlite:// uses a synchronous driver; lionstore migrates through asyncio "
        f"drivers: use sqlite+aiosqlite:///{path}"
    )
    assert not path.exists()


def test_a_sync_postgres_url_is_refused_without_its_password() -> None:
    with pytest.raises(StoreError, match="use postgresql\\+asyncpg://u:\\*\\*\\*@h/db") as info:
        migrate.require_async_url("postgresql://u:secret@h/db")
    assert "secret" not in str(info.value)
    migrate.require_async_url("postgresql+asyncpg://u:secret@h/db")  # accepted


def test_the_scripts_live_in_the_top_level_migrations_folder() -> None:
    location = Path(migrate.script_location())
    assert location == ROOT / "migrations"
    assert (location / "env.py").is_file()
    assert not (ROOT / "lionstore" / "migrations").exists()
    assert "script_location = %(here)s/migrations" in (ROOT / "alembic.ini").read_text()
