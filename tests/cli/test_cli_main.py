"""The ``lionstore`` entry point: version, usage, errors, --debug, Ctrl-C, closed pipes."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import lionstore
import lionstore.cli.runs
from lionstore.cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, build_parser, main

if TYPE_CHECKING:
    from conftest import Cli, SampleDb


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"lionstore {lionstore.__version__}"


def test_no_command_prints_help_and_exits_2(cli: Cli) -> None:
    result = cli()
    assert result.code == EXIT_USAGE
    assert "usage: lionstore" in result.err
    assert "demo" in result.err and "log" in result.err and "db" in result.err


def test_db_without_subcommand_prints_db_help(cli: Cli) -> None:
    result = cli("db")
    assert result.code == EXIT_USAGE
    assert "upgrade" in result.err and "check" in result.err and "current" in result.err


def test_help_exits_0(cli: Cli) -> None:
    result = cli("log", "--help")
    assert result.code == 0
    assert "--since" in result.out and "--json" in result.out


@pytest.mark.parametrize(
    "args",
    [
        ["nonsense"],
        ["log"],
        ["log", "x.db", "--limit", "-1"],
        ["log", "x.db", "--since", "abc"],
        ["log", "x.db", "--run", " "],
        ["db", "check"],
        ["runs", "a.db", "--bogus"],
    ],
)
def test_usage_errors_are_one_line_with_exit_2(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.code == EXIT_USAGE
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("lionstore: error: ")
    assert "--help" in lines[0]


def test_lionstore_error_is_one_line_with_exit_1(cli: Cli, tmp_path: Path) -> None:
    result = cli("log", tmp_path / "missing.db")
    assert result.code == EXIT_ERROR
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith("lionstore: error: ")
    assert "missing.db" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(cli: Cli, tmp_path: Path, where: str) -> None:
    target = str(tmp_path / "missing.db")
    args = ["--debug", "log", target] if where == "before" else ["log", target, "--debug"]
    result = cli(*args)
    assert result.code == EXIT_ERROR
    assert "Traceback (most recent call last)" in result.err
    assert "StorePathError" in result.err


def test_unexpected_error_is_one_line(
    cli: Cli, sample_db: SampleDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(path: object, **kwargs: object) -> None:
        raise RuntimeError("something broke\nover two lines")

    monkeypatch.setattr(lionstore.cli.runs, "summarize_runs", broken)
    result = cli("runs", sample_db.path)
    assert result.code == EXIT_ERROR
    assert result.err.splitlines() == [
        "lionstore: error: RuntimeError: something broke over two lines "
        "(unexpected; run with --debug for the traceback)"
    ]


def test_keyboard_interrupt_exits_130_quietly(
    cli: Cli, sample_db: SampleDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def interrupted(path: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lionstore.cli.runs, "summarize_runs", interrupted)
    result = cli("runs", sample_db.path)
    assert result.code == EXIT_INTERRUPTED
    assert result.out == ""
    assert result.err == ""


class _ClosedPipe(io.StringIO):
    """A stdout whose reader went away after the first write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes > 1:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_closed_pipe_ends_quietly(
    sample_db: SampleDb, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = _ClosedPipe()
    monkeypatch.setattr(sys, "stdout", pipe)
    code = main(["log", str(sample_db.path), "--json"])
    assert code == 0
    assert pipe.writes >= 2
    assert capsys.readouterr().err == ""


def test_every_command_has_a_handler() -> None:
    parser = build_parser()
    for argv in (
        ["log", "x"],
        ["runs", "x"],
        ["demo"],
        ["db", "upgrade", "x"],
        ["db", "check", "x"],
        ["db", "current", "x"],
        ["show", "x"],
        ["verify", "x", "--run", "r"],
        ["resume", "x", "--run", "r"],
        ["fork", "x", "--run", "r", "--at", "1"],
        ["export", "x", "--run", "r"],
        ["timeline", "x", "--run", "r"],
    ):
        assert callable(parser.parse_args(argv).handler), argv
