"""Fixtures for the ``lionstore`` command tests: an in-process runner and real files."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from cli_scenarios import WorkDb, write_work_run

import lionstore
from lionstore.cli import main
from lionstore.domain.ids import IDType
from lionstore.domain.records import RecordData


class CliNote(RecordData):
    """A record kind the CLI tests write."""

    kind: ClassVar[str] = "test.cli.note"
    text: str


class CliTick(RecordData):
    """A second record kind, to filter on."""

    kind: ClassVar[str] = "test.cli.tick"
    n: int


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


Cli = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli("log", path)`` runs ``lionstore.cli.main`` in-process and captures its output."""

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@dataclass(frozen=True)
class SampleDb:
    """A database with two runs: ``alpha`` (3 notes, 1 tick) and ``beta`` (2 ticks)."""

    path: Path
    alpha: IDType
    beta: IDType
    notes_stream: IDType
    ticks_stream: IDType


async def _write_sample(path: Path, clock: Any) -> SampleDb:
    notes, ticks = IDType.create(), IDType.create()
    async with lionstore.open(path, run="alpha", clock=clock) as store:
        alpha = store.run_id
        clock.advance(1)
        await store.append([(notes, CliNote(text=f"note {i}")) for i in (1, 2, 3)])
        clock.advance(1)
        await store.append([(ticks, CliTick(n=1))])
    clock.advance(60)
    async with lionstore.open(path, run="beta", clock=clock) as store:
        beta = store.run_id
        clock.advance(1)
        await store.append([(ticks, CliTick(n=1)), (ticks, CliTick(n=2))])
    return SampleDb(path, alpha, beta, notes, ticks)


@pytest.fixture
def sample_db(tmp_path: Path, clock: Any) -> SampleDb:
    """Positions: 1 alpha run.started, 2-4 notes, 5 tick; 6 beta run.started, 7-8 ticks."""
    return asyncio.run(_write_sample(tmp_path / "sample.db", clock))


@pytest.fixture
def note_kind() -> type[CliNote]:
    return CliNote


@pytest.fixture
def tick_kind() -> type[CliTick]:
    return CliTick


@pytest.fixture
def work_db(tmp_path: Path) -> WorkDb:
    """A run ``work`` with an executor and a mail exchange (see cli_scenarios.WorkDb)."""
    return asyncio.run(write_work_run(tmp_path / "work.db"))
