"""The installed ``lionstore`` console script, run as a real process."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lionstore


def lionstore_script() -> str:
    beside = Path(sys.executable).parent / "lionstore"
    if beside.exists():
        return str(beside)
    found = shutil.which("lionstore")
    if found is None:
        pytest.fail("the `lionstore` console script is not installed (pip install -e .)")
    return found


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [lionstore_script(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120"},
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lionstore {lionstore.__version__}"


def test_check_on_a_bad_file_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00not sqlite at all\n" * 10)
    result = run("db", "check", bad)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"lionstore: error: {bad}: ")
    assert "SQLite" in line
    debug = run("--debug", "log", bad)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr


def test_upgrade_then_check_then_demo(tmp_path: Path) -> None:
    assert run("db", "upgrade", "x.db", cwd=tmp_path).returncode == 0
    check = run("db", "check", "x.db", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    demo = run("demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "demo-1" in demo.stdout
    assert (tmp_path / "lionstore-demo.db").exists()


def test_usage_error_exit_2() -> None:
    result = run("log")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1


def test_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`lionstore log big.db | head -1`: no traceback, no 'Exception ignored'."""
    path = tmp_path / "big.db"

    async def write() -> None:
        from lionstore.cli.demo import DemoNote

        async with lionstore.open(path, run="big") as store:
            stream = lionstore.IDType.create()
            await store.append([(stream, DemoNote(number=i, text="x" * 80)) for i in range(5000)])

    asyncio.run(write())
    proc = subprocess.Popen(
        [lionstore_script(), "log", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # far more than a pipe buffer is still to come
    err = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert first.split()[0] == "1"
    assert err == ""
    assert code == 0
