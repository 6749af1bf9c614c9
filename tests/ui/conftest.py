"""Fixtures of the ``lionstore ui`` tests: a recorded run that was SIGKILLed and
resumed (real processes), a ``lionstore ui`` server on it, and a real Chromium."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from ui_browser import chromium, ui_server  # noqa: E402
from ui_helpers import SHOTS, missing, record_crashed_run  # noqa: E402


@pytest.fixture(scope="session")
def _browser_available() -> None:
    absent = missing()
    if absent is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI: the browser tests must run, but {absent}")
    pytest.skip(absent)


@pytest.fixture(scope="session")
def crashed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "nightly.db"
    record_crashed_run(path)
    return path


@pytest.fixture(scope="session")
def server(crashed_db: Path, _browser_available: None) -> Iterator[str]:
    with ui_server(str(crashed_db)) as url:
        yield url


@pytest.fixture(scope="session")
def browser(_browser_available: None) -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
