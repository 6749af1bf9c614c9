"""``lionstore demo``: writes a run to a SQLite file and tells what happened."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import lionstore
from lionstore.cli.demo import DEMO_STEPS, DemoContext, DemoNote, run_demo

if TYPE_CHECKING:
    from conftest import Cli


def test_demo_writes_a_run_and_tells_the_story(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    result = cli("demo", path)
    assert result.code == 0, result.err
    assert result.err == ""
    out = result.out
    assert "writing run demo-1 " in out and "(a new file)" in out
    for number, (title, _step) in enumerate(DEMO_STEPS, 1):
        assert f"{number}. {title}" in out
    assert "refused a write expecting an empty stream: " in out
    assert "nothing was written" in out
    for command in ("show", "verify", "timeline", "log"):
        assert f"lionstore {command} {path} --run demo-1" in out
    records = [json.loads(line) for line in cli("log", path, "--json").out.splitlines()]
    assert records[0]["kind"] == "run.started"
    notes = [r for r in records if r["kind"] == "demo.note"]
    assert [r["data"]["number"] for r in notes] == [1, 2, 3, 4]
    assert [r["stream_version"] for r in notes] == [1, 2, 3, 4]
    assert [r["position"] for r in notes] == [2, 3, 4, 5]
    assert cli("db", "check", path).code == 0


def test_demo_runs_events_and_mail_and_verifies(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    result = cli("demo", path)
    assert result.code == 0, result.err
    out = result.out
    # the executor step: each event's status and response or error
    assert re.search(r"split the bill +completed +attempts 1 +response: 30", out)
    assert re.search(r"rate-limited +completed +attempts 1 +response: 3", out)
    assert re.search(r"divide by zero +failed +attempts 1 +error: ZeroDivisionError", out)
    assert "was denied by request_permission and deferred" in out
    # the mail step: inboxes and the dead letter with its reason
    assert 'alice\'s inbox: from carol: "ack"' in out
    assert 'bob\'s inbox: from alice: "hello bob"' in out
    assert 'carol\'s inbox: from bob: {"lunch":"at noon?"}' in out
    assert re.search(r"dead letter \w{8} from alice to a stranger: reason recipient_unknown", out)
    # the verify step
    assert re.search(r"   OK: run demo-1 \(.*\) verified: \d+ records, 2 processor cycles", out)

    state = json.loads(cli("show", path, "--run", "demo-1", "--json").out)
    (demo,) = state["executors"].values()
    assert [e["status"] for e in demo["events"]] == ["completed", "completed", "failed"]
    deferred = [e for e in demo["events"] if e["fields"]["name"] == "rate-limited"]
    assert deferred[0]["attempts"] == 1  # a denial is not an attempt
    (exchange,) = state["routers"].values()
    assert [d["reason"] for d in exchange["dead_letters"]] == ["recipient_unknown"]
    log = [json.loads(line) for line in cli("log", path, "--json").out.splitlines()]
    assert [r["kind"] for r in log].count("event.deferred") == 1
    assert cli("verify", path, "--run", "demo-1").code == 0
    assert "sequenceDiagram" in cli("timeline", path, "--run", "demo-1").out


def test_demo_again_adds_a_new_run(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    assert cli("demo", path).code == 0
    second = cli("demo", path)
    assert second.code == 0
    assert "writing run demo-2 " in second.out and "next to its other runs" in second.out
    runs = [json.loads(line) for line in cli("runs", path, "--json").out.splitlines()]
    assert [r["label"] for r in runs] == ["demo-1", "demo-2"]
    assert runs[0]["records"] == runs[1]["records"] > 5
    assert runs[0]["events"] == runs[1]["events"] == {"completed": 2, "failed": 1}
    assert cli("verify", path, "--run", "demo-2").code == 0


def test_demo_default_path_is_in_the_current_directory(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("demo").code == 0
    assert (tmp_path / "lionstore-demo.db").exists()


def test_demo_refuses_a_file_that_is_not_lionstore(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("do not touch")
    result = cli("demo", path)
    assert result.code == 1
    assert len(result.err.splitlines()) == 1
    assert path.read_text() == "do not touch"


def test_steps_are_pluggable(tmp_path: Path) -> None:
    async def shout(ctx: DemoContext) -> None:
        await ctx.store.append([(ctx.notebook, DemoNote(number=99, text="extra step"))])
        ctx.say("an extra step ran")

    out = io.StringIO()
    result = asyncio.run(run_demo(tmp_path / "steps.db", out=out, steps=[("An extra step", shout)]))
    assert "1. An extra step" in out.getvalue()
    assert "   an extra step ran" in out.getvalue()
    assert result.label == "demo-1"
    assert result.records == 2
    assert result.new_file

    async def count() -> int:
        async with lionstore.open(result.path, readonly=True) as store:
            return len([r async for r in await store.read(run=result.run_id)])

    assert asyncio.run(count()) == 2
