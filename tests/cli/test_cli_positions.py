"""Which run a command is about, and which positions belong to it.

``verify``, ``export`` and ``timeline`` choose the run as ``show`` does (the newest
when ``--run`` is not given); ``--at`` must be one of the run's positions (a fork's
records have positions of their own); numbers too large for the database are one
clear line, not an ``OverflowError``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import lionstore
from lionstore.cli._common import MAX_POSITION, run_range
from lionstore.domain.ids import IDType

if TYPE_CHECKING:
    from cli_scenarios import WorkDb
    from conftest import Cli, CliNote, SampleDb


def test_verify_export_and_timeline_take_the_newest_run(cli: Cli, sample_db: SampleDb) -> None:
    verified = cli("verify", sample_db.path)
    assert verified.code == 0, verified.err
    assert verified.out.startswith(f"OK: run beta ({sample_db.beta}) verified: 3 records")

    exported = cli("export", sample_db.path)
    assert exported.code == 0, exported.err
    lines = [json.loads(line) for line in exported.out.splitlines()]
    assert [r["position"] for r in lines] == [6, 7, 8]
    assert {r["run_id"] for r in lines} == {sample_db.beta}
    assert exported.out == cli("export", sample_db.path, "--run", "beta").out

    drawn = cli("timeline", sample_db.path)
    assert drawn.code == 0, drawn.err
    assert sample_db.beta in drawn.out and sample_db.alpha not in drawn.out
    assert drawn.out == cli("timeline", sample_db.path, "--run", "beta").out

    # and a named run still wins
    alpha = [json.loads(line) for line in cli("export", sample_db.path, "--run", "alpha").lines]
    assert [r["position"] for r in alpha] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("command", ["show", "fork"])
def test_a_position_after_the_runs_end_is_refused_with_its_range(
    cli: Cli, work_db: WorkDb, command: str
) -> None:
    before = work_db.path.read_bytes()
    extra = ("--run", "work") if command == "fork" else ()
    result = cli(command, work_db.path, *extra, "--at", work_db.end + 1)
    assert result.code == 1
    assert result.err == (
        f"lionstore: error: --at {work_db.end + 1}: not a position of this run; "
        f"run work holds positions 1 to {work_db.end}\n"
    )
    assert result.out == ""
    assert cli("fork", work_db.path, "--run", "work", "--at", 999).code == 1
    runs = cli("runs", work_db.path, "--json").lines
    assert len(runs) == 1  # no fork was made
    if command == "show":
        assert work_db.path.read_bytes() == before
    # the last position itself is fine
    assert cli(command, work_db.path, *extra, "--at", work_db.end).code == 0


@pytest.mark.parametrize(
    "args",
    [
        ("show", "--at", str(2**63)),
        ("fork", "--run", "work", "--at", "99999999999999999999999"),
        ("log", "--since", str(2**64)),
        ("log", "--limit", str(2**63)),
    ],
)
def test_numbers_too_large_for_the_database_are_one_line(
    cli: Cli, work_db: WorkDb, args: tuple[str, ...]
) -> None:
    command, *rest = args
    result = cli(command, work_db.path, *rest)
    assert result.code == 2
    assert len(result.err.splitlines()) == 1
    assert f"too large: {rest[-1]} (positions and counts go up to {MAX_POSITION})" in result.err
    assert "OverflowError" not in result.err and "unexpected" not in result.err
    assert cli("log", work_db.path, "--since", str(MAX_POSITION)).code == 0  # the largest


def test_show_after_a_fork_uses_the_forks_own_positions(cli: Cli, work_db: WorkDb) -> None:
    at = 10
    assert cli("fork", work_db.path, "--run", "work", "--at", at, "--label", "retry").code == 0
    # The fork's run.started and its copies of positions 2..10 come after the source.
    first, last = work_db.end + 1, work_db.end + at

    shown = cli("show", work_db.path)  # the newest run: the fork, and it says so
    assert shown.code == 0, shown.err
    head, note = shown.lines[:2]
    assert head.startswith("run retry (")
    assert f"), forked from work at position {at}, at its end: {at} records" in head
    assert note == "  (the newest of 2 runs; `lionstore runs` lists them, --run chooses another)"
    named = cli("show", work_db.path, "--run", "retry")
    assert "newest of" not in named.out  # the run was named: nothing to explain

    refused = cli("show", work_db.path, "--at", at)  # a position of the source, not the fork
    assert refused.code == 1
    assert refused.err == (
        f"lionstore: error: --at {at}: not a position of this run; run retry holds positions "
        f"{first} to {last} (forked from work at position {at}: its records were copied to "
        "new positions)\n"
    )

    # --at P of the fork shows the fork at P: the same state as the source at the
    # position P was copied from (fork position first + k holds source position 1 + k).
    fork_state = json.loads(cli("show", work_db.path, "--at", first + 4, "--json").out)
    source_state = json.loads(cli("show", work_db.path, "--run", "work", "--at", 5, "--json").out)
    assert fork_state["label"] == "retry" and fork_state["at"] == first + 4
    assert fork_state["parent_run_id"] == source_state["run_id"]
    assert fork_state["forked_at_position"] == at
    assert fork_state["records"] == source_state["records"] == 5
    assert fork_state["executors"] == source_state["executors"]


async def _interleaved(path: Path, note: type[CliNote]) -> dict[str, list[int]]:
    positions: dict[str, list[int]] = {"a": [], "b": []}
    async with (
        lionstore.open(path, run="a") as a,
        lionstore.open(path, run="b") as b,
    ):
        positions["a"].append(1)
        positions["b"].append(2)
        stream_a, stream_b = IDType.create(), IDType.create()
        for i in range(9):
            store, name, stream = (a, "a", stream_a) if i % 3 else (b, "b", stream_b)
            positions[name] += await store.append([(stream, note(text=str(i)))])
    return positions


def test_run_range_with_interleaved_runs(tmp_path: Path, note_kind: type[CliNote]) -> None:
    path = tmp_path / "mixed.db"
    positions = asyncio.run(_interleaved(path, note_kind))
    assert positions["b"][-1] < positions["a"][-1]  # b ends before the head: a wrote last

    async def ranges() -> dict[str, tuple[int, int]]:
        async with lionstore.open(path, readonly=True) as store:
            return {info.label or "": await run_range(store, info) for info in await store.runs()}

    assert asyncio.run(ranges()) == {
        name: (min(found), max(found)) for name, found in positions.items()
    }


def test_show_at_a_position_of_another_run_inside_the_range(
    cli: Cli, tmp_path: Path, note_kind: type[CliNote]
) -> None:
    """A position inside the run's range that holds another run's record is the state
    after the run's last record before it."""
    path = tmp_path / "mixed.db"
    positions = asyncio.run(_interleaved(path, note_kind))
    inside = next(p for p in positions["b"] if positions["a"][0] < p < positions["a"][-1])
    state: dict[str, Any] = json.loads(
        cli("show", path, "--run", "a", "--at", inside, "--json").out
    )
    assert state["records"] == len([p for p in positions["a"] if p <= inside])
