"""Shared fixtures. Every store test runs over the ``backend`` fixture, so that a new
backend (PostgreSQL) joins the whole suite by adding one parameter here."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import lionstore

BACKENDS = ["sqlite"]


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


@pytest.fixture
def db_target(backend: str, tmp_path: Path) -> str:
    """A fresh database for this test: a SQLite file path (or a server URL)."""
    if backend == "sqlite":
        return str(tmp_path / "store.db")
    raise pytest.UsageError(f"unknown backend {backend}")


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
    return f"lionstore backends: {', '.join(BACKENDS)}; CI={os.environ.get('CI', '')}"
