"""``lionstore export``: a run's records as JSON lines, with their digests."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cli_scenarios import write_work_run

from lionstore.cli.export import export_run

if TYPE_CHECKING:
    from cli_scenarios import WorkDb
    from conftest import Cli, SampleDb


def test_export_writes_one_line_per_record(cli: Cli, work_db: WorkDb) -> None:
    result = cli("export", work_db.path, "--run", "work")
    assert result.code == 0, result.err
    assert result.err == ""
    lines = [json.loads(line) for line in result.out.splitlines()]
    runs = [json.loads(line) for line in cli("runs", work_db.path, "--json").out.splitlines()]
    assert len(lines) == runs[0]["records"] == work_db.end
    assert [r["position"] for r in lines] == list(range(1, work_db.end + 1))
    assert {r["run_id"] for r in lines} == {work_db.run_id}
    logged = [json.loads(line) for line in cli("log", work_db.path, "--json").out.splitlines()]
    assert [{k: v for k, v in r.items() if k != "digest"} for r in lines] == logged
    assert all(len(r["digest"]) == 32 for r in lines)
    assert len({r["digest"] for r in lines}) == len(lines)


def test_export_one_run_of_several(cli: Cli, sample_db: SampleDb) -> None:
    beta = [json.loads(line) for line in cli("export", sample_db.path, "--run", "beta").out.split()]
    assert [r["kind"] for r in beta] == ["run.started", "test.cli.tick", "test.cli.tick"]


def test_export_to_a_file(cli: Cli, work_db: WorkDb, tmp_path: Path) -> None:
    target = tmp_path / "work.jsonl"
    result = cli("export", work_db.path, "--run", "work", "--output", target)
    assert result.code == 0, result.err
    assert (
        result.out == f"exported {work_db.end} records of run work ({work_db.run_id}) to {target}\n"
    )
    assert len(target.read_text().splitlines()) == work_db.end
    assert cli("export", work_db.path, "--run", "work", "-o", "-").out == target.read_text()


def test_export_errors_leave_no_file(cli: Cli, work_db: WorkDb, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    result = cli("export", work_db.path, "--run", "nope", "--output", target)
    assert result.code == 1
    assert len(result.err.splitlines()) == 1
    assert not target.exists()
    assert list(tmp_path.glob("*.partial")) == []
    into_missing_dir = cli("export", work_db.path, "--run", "work", "-o", tmp_path / "no" / "x")
    assert into_missing_dir.code == 1
    assert "cannot write the file" in into_missing_dir.err
    assert "unexpected" not in into_missing_dir.err


def test_export_run_counts(tmp_path: Path) -> None:
    db = asyncio.run(write_work_run(tmp_path / "w.db"))
    out = io.StringIO()
    info, count = asyncio.run(export_run(db.path, out, run="work"))
    assert count == db.end == len(out.getvalue().splitlines())
    assert info.label == "work"
