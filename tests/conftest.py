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
from pg_cluster import ENV_URL, Cluster, UnavailableError

import lionstore

BACKENDS = ["sqlite", "postgres"]

# Why the PostgreSQL tests were skipped (for the summary), None when they ran.
_PG_SKIPPED: list[str] = []


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


@pytest.fixture
def pg_database(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh PostgreSQL database holding the lionstore schema at head, dropped after."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


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


@pytest.fixture(autouse=True)
def _collector_left_on() -> Iterator[None]:
    """lionstore pauses Python's cyclic GC around bulk work; a test after which the
    collector is still off found a pause that was never given back."""
    was_enabled = gc.isenabled()
    yield
    if was_enabled and not gc.isenabled():
        gc.enable()
        pytest.fail("the cyclic garbage collector was left disabled")
