"""Shared fixtures. Every store test runs over the ``backend`` fixture, so that a new
backend (PostgreSQL) joins the whole suite by adding one parameter here."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pg_cluster import ENV_URL, Cluster, UnavailableError, run_async

import lionstore
from lionstore.log.schema import VERSION_TABLE

BACKENDS = ["sqlite", "postgres"]

# Why the PostgreSQL tests were skipped (for the summary), None when they ran.
_PG_SKIPPED: list[str] = []
# The session's reused PostgreSQL database (for the summary).
_PG_REUSED: list[ReusedDatabase] = []


class FakeClock:
    """A deterministic clock: each call returns the current time; ``advance`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The PostgreSQL server of this session ($LIONSTORE_TEST_PG_URL or a throwaway
    cluster). Without one the test skips, or fails under CI=true."""
    try:
        cluster = Cluster.start()
    except UnavailableError as exc:
        reason = f"PostgreSQL tests skipped: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs a PostgreSQL server: {exc}", pytrace=False)
        _PG_SKIPPED.append(reason)
        pytest.skip(reason)
    try:
        yield cluster
    finally:
        try:
            cluster.drop_template()
        finally:
            cluster.stop()


class ReusedDatabase:
    """One PostgreSQL database holding the lionstore schema for a whole session (each
    xdist worker has its own session), emptied between tests: creating a database per
    test cost most of the PostgreSQL tests' time.

    ``reset`` truncates every table but the schema revision's, puts back the rows the schema starts
    with, and checks the schema is still the one it was (tables, columns, indexes, the
    revision). A test that changed the schema, or left a connection holding a lock, gets
    the database dropped and made afresh, so the next test never sees what it left.
    """

    _FINGERPRINT = (
        "SELECT string_agg(x, ';' ORDER BY x) FROM ("
        " SELECT table_name || '.' || column_name || ':' || data_type || ':' || is_nullable"
        "  || ':' || coalesce(column_default, '') AS x"
        "  FROM information_schema.columns WHERE table_schema = 'public'"
        " UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'"
        f" UNION ALL SELECT 'rev:' || version_num FROM {VERSION_TABLE}"
        " UNION ALL SELECT 'trigger:' || tgname FROM pg_trigger WHERE NOT tgisinternal"
        ") AS parts"
    )

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.url = cluster.create_database()
        self.fingerprint, self.tables, self.rows = run_async(self._survey())
        self.resets = 0
        self.recreated = 0
        _PG_REUSED.append(self)

    async def _connect(self) -> Any:
        import asyncpg

        from lionstore.log.postgres import asyncpg_dsn

        return await asyncpg.connect(asyncpg_dsn(self.url))

    async def _survey(self) -> tuple[str, list[str], dict[str, list[Any]]]:
        conn = await self._connect()
        try:
            fingerprint = await conn.fetchval(self._FINGERPRINT)
            tables = [
                r[0]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    f" AND tablename <> '{VERSION_TABLE}' ORDER BY tablename"
                )
            ]
            rows = {t: list(await conn.fetch(f'SELECT * FROM "{t}"')) for t in tables}
            return fingerprint, tables, rows
        finally:
            await conn.close()

    async def _reset(self) -> bool:
        """Empty the tables; False when the database has to be made afresh."""
        conn = await self._connect()
        try:
            if await conn.fetchval(self._FINGERPRINT) != self.fingerprint:
                return False
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '5s'")
                listed = ", ".join(f'"{t}"' for t in self.tables)
                await conn.execute(f"TRUNCATE {listed} RESTART IDENTITY CASCADE")
                for table, rows in self.rows.items():
                    if rows:
                        columns = list(rows[0].keys())
                        await conn.copy_records_to_table(
                            table, records=[tuple(r) for r in rows], columns=columns
                        )
            return True
        except Exception:  # a lock held by a connection the test left open, ...
            return False
        finally:
            await conn.close()

    def reset(self) -> None:
        self.resets += 1
        if not run_async(self._reset()):
            self.cluster.drop_database(self.url)
            self.url = self.cluster.create_database()
            self.recreated += 1

    def drop(self) -> None:
        self.cluster.drop_database(self.url)


@pytest.fixture(scope="session")
def pg_reused(pg_cluster: Cluster) -> Iterator[ReusedDatabase]:
    database = ReusedDatabase(pg_cluster)
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture
def pg_database(pg_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL database holding the lionstore schema at head, empty: the session's
    reused one, emptied after the test, or, for a test marked ``fresh_database``, a new
    one dropped after it."""
    if request.node.get_closest_marker("fresh_database") is not None:
        url = pg_cluster.create_database()
        yield url
        pg_cluster.drop_database(url)
        return
    reused: ReusedDatabase = request.getfixturevalue("pg_reused")
    yield reused.url
    reused.reset()


@pytest.fixture
def db_target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database for this test: a SQLite file path or a PostgreSQL URL."""
    if backend == "sqlite":
        return str(tmp_path / "store.db")
    if backend == "postgres":
        return str(request.getfixturevalue("pg_database"))
    raise pytest.UsageError(f"unknown backend {backend}")


@pytest.fixture
def new_db_target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database without the lionstore schema: a SQLite path where no file is yet, or
    an empty PostgreSQL database."""
    if backend == "sqlite":
        yield str(tmp_path / "new.db")
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database(schema=False)
    yield url
    cluster.drop_database(url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_store(db_target: str) -> Callable[..., Any]:
    """``async with open_store(run="x") as store`` on this test's database."""

    def _open(**kwargs: Any) -> lionstore.open:
        return lionstore.open(db_target, **kwargs)

    return _open


@pytest_asyncio.fixture
async def store(db_target: str) -> AsyncIterator[lionstore.Store]:
    async with lionstore.open(db_target, run="test") as opened:
        yield opened


def pytest_report_header(config: pytest.Config) -> str:
    server = f"${ENV_URL}" if os.environ.get(ENV_URL) else "a throwaway cluster if installed"
    return (
        f"lionstore backends: {', '.join(BACKENDS)} (PostgreSQL: {server});"
        f" CI={os.environ.get('CI', '')}"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _PG_SKIPPED:
        terminalreporter.write_line(_PG_SKIPPED[0], yellow=True, bold=True)
    for reused in _PG_REUSED:
        terminalreporter.write_line(
            f"PostgreSQL: one database emptied between {reused.resets} tests"
            f" (made afresh {reused.recreated} times, after a test changed its schema)"
        )


@pytest.fixture(autouse=True)
def _collector_left_on() -> Iterator[None]:
    """lionstore pauses Python's cyclic GC around bulk work; a test after which the
    collector is still off found a pause that was never given back."""
    was_enabled = gc.isenabled()
    yield
    if was_enabled and not gc.isenabled():
        gc.enable()
        pytest.fail("the cyclic garbage collector was left disabled")
