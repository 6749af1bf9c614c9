"""``lionstore demo``: writes a run to a SQLite file and tells what happened."""

from __future__ import annotations

import asyncio
import io
import json
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
    assert f"lionstore log {path} --run demo-1" in out
    records = [json.loads(line) for line in cli("log", path, "--json").out.splitlines()]
    assert [r["kind"] for r in records] == ["run.started"] + ["demo.note"] * 4
    assert [r["data"]["number"] for r in records[1:]] == [1, 2, 3, 4]
    assert [r["stream_version"] for r in records[1:]] == [1, 2, 3, 4]
    assert cli("db", "check", path).code == 0


def test_demo_again_adds_a_new_run(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    assert cli("demo", path).code == 0
    second = cli("demo", path)
    assert second.code == 0
    assert "writing run demo-2 " in second.out and "next to its other runs" in second.out
    runs = [json.loads(line) for line in cli("runs", path, "--json").out.splitlines()]
    assert [(r["label"], r["records"]) for r in runs] == [("demo-1", 5), ("demo-2", 5)]


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
