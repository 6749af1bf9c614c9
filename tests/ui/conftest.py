"""Fixtures of the ``lionstore ui`` tests: a recorded run that was SIGKILLed and
resumed (real processes), a ``lionstore ui`` server on it, and a real Chromium."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from browser import CHROMEDRIVER, CHROMIUM, chromium, ui_server  # noqa: E402

import lionstore  # noqa: E402

SHOTS = Path(os.environ.get("LIONSTORE_UI_SHOTS", "/tmp/ui-shots"))


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[test]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium and chromedriver are not installed (bash .ci/install-browser)"
    return None


@pytest.fixture(scope="session", autouse=True)
def _browser_available() -> None:
    missing = _missing()
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI: the browser tests must run, but {missing}")
    pytest.skip(missing)


def scenario(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    """``ui_scenario.main(args)`` in a child process (recorded class paths are
    ``ui_scenario.*``)."""
    code = "import sys, ui_scenario; ui_scenario.main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": str(HERE), **(env or {})},
        text=True,
        **kw,
    )


def count_records(path: Path, kind: str) -> int:
    async def count() -> int:
        async with lionstore.open(path, readonly=True) as store:
            return sum([1 async for _ in await store.read(run=None, kinds=[kind])])

    return asyncio.run(count())


def wait_for(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def record_crashed_run(path: Path) -> None:
    """Run ``nightly-report`` until its two slow jobs are claimed, SIGKILL the
    process, then resume the run in a fresh process."""
    child = scenario("crash", str(path), env={"LIONSTORE_UI_HANG": "1"}, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "HANGING"
        # 4 quick jobs (the denied one claimed after its back-off) + 2 slow ones
        wait_for(lambda: count_records(path, "event.claimed") >= 6, 30, "the slow jobs' claims")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    resumed = scenario("resume", str(path))
    assert resumed.wait(timeout=60) == 0


@pytest.fixture(scope="session")
def crashed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui") / "nightly.db"
    record_crashed_run(path)
    return path


@pytest.fixture(scope="session")
def server(crashed_db: Path) -> Iterator[str]:
    with ui_server(str(crashed_db)) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
