"""A real Chromium for the ``lionstore ui`` tests (Debian's chromium + chromium-driver,
driven with selenium), and a ``lionstore ui`` server in a child process."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium with a fresh profile, quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "chromium"
    profile = tempfile.mkdtemp(prefix="lionstore-ui-chromium-")
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or "chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


_ANNOUNCE = re.compile(r"serving .* at (http://\S+)")


@contextmanager
def ui_server(target: str, *extra: str, timeout: float = 30.0) -> Iterator[str]:
    """``lionstore ui TARGET --port 0`` in a child process; yields the address it
    prints (with its token, if any) once it is serving."""
    cmd = [sys.executable, "-c", "import sys; from lionstore.cli import main; sys.exit(main())"]
    proc = subprocess.Popen(
        [*cmd, "ui", target, "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        address = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = _ANNOUNCE.search(line)
            if found:
                address = found.group(1)
                break
        if address is None:
            proc.kill()
            out = proc.stdout.read()
            raise AssertionError(f"lionstore ui did not start: {out}")
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
