"""Helpers of the ``lionstore ui`` tests: child processes of ui_scenario, waiting on
the database, a run that was SIGKILLed and resumed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ui_browser import CHROMEDRIVER, CHROMIUM

import lionstore
from lionstore.replay.timeline import Timeline, collect_timeline

HERE = Path(__file__).parent
SHOTS = Path(os.environ.get("LIONSTORE_UI_SHOTS", "/tmp/ui-shots"))


def missing_server() -> str | None:
    """Why ``lionstore ui`` cannot run here (the ui extra is not installed), or None."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[test]')"
    return None


def missing() -> str | None:
    try:
        import selenium  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[test]')"
    if CHROMIUM is None or CHROMEDRIVER is None:
        return "chromium and chromedriver are not installed (bash .ci/install-browser)"
    return None


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


def timeline_of(path: Path, run: str) -> Timeline:
    """The timeline model of run ``run`` of the database at ``path`` (read-only)."""

    async def collect() -> Timeline:
        async with lionstore.open(path, readonly=True) as store:
            return await collect_timeline(store, run=run)

    return asyncio.run(collect())
