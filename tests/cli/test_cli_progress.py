"""Long work shows a progress line on stderr when it is a terminal, nothing when piped."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest

import lionstore
from lionstore.cli import main
from lionstore.cli._output import Progress
from lionstore.cli.demo import DemoNote


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_and_clears_on_a_terminal() -> None:
    stream = FakeTerminal()
    with Progress("verifying", stream=stream) as progress:
        progress(10_000)
        drawn = stream.getvalue()
        assert drawn.startswith("\rlionstore: verifying: 10,000 records (")
        assert "\n" not in drawn
    cleared = stream.getvalue()[len(drawn) :]
    assert cleared == "\r" + " " * (len(drawn) - 1) + "\r"


def test_progress_is_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("verifying", stream=stream) as progress:
        progress(10_000)
        progress(20_000)
    assert stream.getvalue() == ""
    assert progress.count == 20_000


@pytest.fixture
def big_db(tmp_path: Path) -> Path:
    path = tmp_path / "big.db"

    async def write() -> None:
        async with lionstore.open(path, run="big") as store:
            stream = lionstore.IDType.create()
            await store.append([(stream, DemoNote(number=i, text="note")) for i in range(10_500)])

    asyncio.run(write())
    return path


@pytest.mark.parametrize(
    ("argv", "label"),
    [
        (["show"], "rebuilding"),
        (["verify", "--run", "big"], "verifying"),
        (["export", "--run", "big"], "exporting"),
        (["runs"], "counting"),
        (["timeline", "--run", "big", "--format", "html"], "drawing"),
    ],
)
def test_commands_show_progress_on_a_terminal_only(
    big_db: Path,
    argv: list[str],
    label: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command, *options = argv
    assert main([command, str(big_db), *options]) == 0
    assert capsys.readouterr().err == ""  # piped (captured): quiet

    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main([command, str(big_db), *options]) == 0
    shown = terminal.getvalue()
    assert f"\rlionstore: {label}: 10,000 records" in shown
    assert shown.endswith("\r")  # the line is cleared at the end
    assert "\n" not in shown
