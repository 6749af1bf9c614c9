"""``lionstore resume``: finish an interrupted run, with the event classes imported."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Cli

HERE = Path(__file__).resolve().parent


def in_child(directory: Path, code: str, *args: str, env: dict[str, str] | None = None) -> None:
    """Run ``code`` in a fresh interpreter that can import modules from ``directory``
    (so this process never defines the classes the child records)."""
    subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(directory), **(env or {})},
    )


def show(cli: Cli, path: Path, run: str) -> dict[str, Any]:
    result = cli("show", path, "--run", run, "--json")
    assert result.code == 0, result.err
    state: dict[str, Any] = json.loads(result.out)
    return state


def test_resume_finishes_a_run_left_with_pending_events(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pending.db"
    in_child(
        HERE,
        "import sys, resume_events; resume_events.main(sys.argv[1:])",
        "pending",
        str(path),
        "left",
    )
    before = show(cli, path, "left")["executors"]["doubling"]
    assert [e["status"] for e in before["events"]] == ["pending"] * 3
    assert [e["class"] for e in before["events"]] == ["resume_events.Doubler"] * 3

    monkeypatch.syspath_prepend(str(HERE))
    result = cli("resume", path, "--run", "left", "--import", "resume_events")
    assert result.code == 0, result.err
    assert result.out.startswith("resumed run left (")
    assert result.out.rstrip().endswith("events completed 3; mail -")

    after = show(cli, path, "left")["executors"]["doubling"]
    assert [(e["status"], e["response"], e["attempts"]) for e in after["events"]] == [
        ("completed", 2, 1),
        ("completed", 4, 1),
        ("completed", 6, 1),
    ]
    assert after["pending"] == [] and after["queue"] == []
    assert cli("verify", path, "--run", "left").code == 0

    again = cli("resume", path, "--run", "left", "--import", "resume_events", "--json")
    assert again.code == 0
    assert json.loads(again.out)["events"] == {"completed": 3}  # nothing runs twice


def test_resume_without_the_class_fails_with_one_line_naming_it(cli: Cli, tmp_path: Path) -> None:
    module = f"ghost_events_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{module}.py").write_text((HERE / "resume_events.py").read_text())
    path = tmp_path / "ghost.db"
    in_child(
        tmp_path,
        f"import sys, {module}; {module}.main(sys.argv[1:])",
        "pending",
        str(path),
        "ghost",
    )
    size = path.stat().st_size
    result = cli("resume", path, "--run", "ghost")
    assert result.code == 1
    assert result.out == ""
    (line,) = result.err.splitlines()
    assert line == (
        f"lionstore: error: event class {module}.Doubler is not defined in this process; "
        f"name the module that defines it with --import (e.g. --import {module})"
    )
    assert module not in sys.modules  # nothing was imported because the file named it
    with sqlite3.connect(path) as conn:
        (records,) = conn.execute("SELECT count(*) FROM lionstore_records").fetchone()
    assert records == 4  # run.started and three appends: nothing was written
    assert path.stat().st_size == size

    debug = cli("--debug", "resume", path, "--run", "ghost")
    assert debug.code == 1
    assert "Traceback" in debug.err and "EventClassNotFoundError" in debug.err


def test_resume_with_a_module_that_does_not_import(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    assert cli("db", "upgrade", path).code == 0
    result = cli("resume", path, "--run", "r", "--import", "no_such_module_here")
    assert result.code == 1
    assert result.err == (
        "lionstore: error: cannot import module 'no_such_module_here' (from --import): "
        "No module named 'no_such_module_here'\n"
    )


def test_resume_never_starts_a_run(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    assert cli("db", "upgrade", path).code == 0
    result = cli("resume", path, "--run", "new-label")
    assert result.code == 1
    assert result.err == "lionstore: error: no run with id or label 'new-label'\n"
    assert cli("runs", path).out.splitlines()[1:] == []
    assert cli("resume", path).code == 2  # --run is required


def test_resume_takes_over_the_claims_of_a_killed_process(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process claims two events and is killed while invoking them; resume sees that
    the owner's process is gone (same host, its pid and start time no longer run),
    says so, takes the claims over at once and runs them again as attempt 2."""
    path = tmp_path / "crashed.db"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, resume_events; resume_events.main(sys.argv[1:])",
            "crashed",
            str(path),
            "crashed",
        ],
        env={**os.environ, "PYTHONPATH": str(HERE), "LIONSTORE_TEST_HANG": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None, "the child ended before it claimed anything"
            if path.exists():
                try:
                    with sqlite3.connect(path) as conn:
                        (claims,) = conn.execute(
                            "SELECT count(*) FROM lionstore_records WHERE kind = 'event.claimed'"
                        ).fetchone()
                except sqlite3.Error:
                    claims = 0
                if claims == 2:
                    break
            assert time.monotonic() < deadline, "the child never claimed its events"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(timeout=30)

    state = show(cli, path, "crashed")["executors"]["doubling"]
    assert [e["status"] for e in state["events"]] == ["processing", "processing"]

    monkeypatch.syspath_prepend(str(HERE))
    result = cli("resume", path, "--run", "crashed", "--import", "resume_events")
    assert result.code == 0, result.err
    assert "2 events were claimed by" in result.err
    assert "whose process is gone: taking them over now" in result.err
    after = show(cli, path, "crashed")["executors"]["doubling"]
    assert [(e["status"], e["response"], e["attempts"]) for e in after["events"]] == [
        ("completed", 20, 2),
        ("completed", 40, 2),
    ]
    log = [json.loads(line) for line in cli("log", path, "--json").out.splitlines()]
    requeued = [r for r in log if r["kind"] == "event.requeued"]
    assert [r["data"]["reason"] for r in requeued] == ["owner_gone"] * 2
    assert cli("verify", path, "--run", "crashed").code == 0
