"""``lionstore verify``: exit 0 when the log is what the code decides, else the first
divergence (position, reason, expected and actual records) and exit 1."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import lionstore.repositories.executor as decisions

if TYPE_CHECKING:
    from cli_scenarios import WorkDb
    from conftest import Cli


def record_at(path: Path, position: int) -> tuple[str, str]:
    with sqlite3.connect(path) as conn:
        kind, data = conn.execute(
            "SELECT kind, data FROM lionstore_records WHERE position = ?", (position,)
        ).fetchone()
    return kind, data


def positions_of(path: Path, kind: str) -> list[int]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT position FROM lionstore_records WHERE kind = ? ORDER BY position", (kind,)
        ).fetchall()
    return [p for (p,) in rows]


def edit(path: Path, sql: str, *params: Any) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute(sql, params).rowcount == 1
    conn.close()


def test_an_untouched_run_verifies(cli: Cli, work_db: WorkDb) -> None:
    result = cli("verify", work_db.path, "--run", "work")
    assert result.code == 0, result.out + result.err
    assert result.err == ""
    (line,) = result.out.splitlines()
    assert line.startswith(f"OK: run work ({work_db.run_id}) verified: {work_db.end} records, ")
    assert "2 processor cycles" in line

    as_json = cli("verify", work_db.path, "--run", work_db.run_id, "--json")
    assert as_json.code == 0
    report = json.loads(as_json.out)
    assert report["ok"] is True
    assert report["divergence"] is None
    assert (report["records"], report["cycles"]) == (work_db.end, 2)
    assert report["counts"] == {
        "events": {"completed": 2, "failed": 1},
        "mail": {"inbox": 3, "dead": 1},
    }
    assert report["label"] == "work"


def test_an_edited_outcome_fails_at_its_position(cli: Cli, work_db: WorkDb) -> None:
    finished = positions_of(work_db.path, "event.finished")[0]
    kind, data = record_at(work_db.path, finished)
    assert json.loads(data)["response"] == 4
    edit(
        work_db.path,
        "UPDATE lionstore_records SET data = json_set(data, '$.response', 5) WHERE position = ?",
        finished,
    )
    result = cli("verify", work_db.path, "--run", "work")
    assert result.code == 1
    assert result.err == ""
    lines = result.out.splitlines()
    assert lines[0].startswith(
        f"DIVERGENCE in run work ({work_db.run_id}) at position {finished}: "
    )
    assert "digest mismatch" in lines[0]
    assert "expected record:" in lines and "actual record:" in lines
    actual = json.loads("\n".join(lines[lines.index("actual record:") + 1 :]))
    assert actual["position"] == finished
    assert actual["kind"] == kind
    assert actual["data"]["response"] == 5

    report = json.loads(cli("verify", work_db.path, "--run", "work", "--json").out)
    assert report["ok"] is False
    assert report["divergence"]["position"] == finished
    assert report["records"] == finished - 1  # every record before it was checked


def test_an_edited_status_fails_at_its_position(cli: Cli, work_db: WorkDb) -> None:
    failed = positions_of(work_db.path, "event.finished")[-1]
    edit(
        work_db.path,
        "UPDATE lionstore_records SET data = json_set(data, '$.status', 'completed') "
        "WHERE position = ? AND data LIKE '%\"failed\"%'",
        failed,
    )
    result = cli("verify", work_db.path, "--run", "work")
    assert result.code == 1
    assert f"at position {failed}:" in result.out.splitlines()[0]


def test_a_deleted_record_fails_at_or_before_the_next_record(cli: Cli, work_db: WorkDb) -> None:
    deleted = positions_of(work_db.path, "event.claimed")[1]
    edit(work_db.path, "DELETE FROM lionstore_records WHERE position = ?", deleted)
    result = cli("verify", work_db.path, "--run", "work")
    assert result.code == 1
    match = re.match(r"DIVERGENCE in run work \(.*\) at position (\d+): (.*)$", result.out, re.M)
    assert match, result.out
    assert int(match.group(1)) <= deleted + 1
    report = json.loads(cli("verify", work_db.path, "--run", "work", "--json").out)
    assert report["divergence"]["position"] == deleted + 1
    assert "changed or deleted" in report["divergence"]["reason"]


def test_a_changed_capacity_rule_is_caught(
    cli: Cli, work_db: WorkDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = decisions.cycle_candidates
    monkeypatch.setattr(
        decisions,
        "cycle_candidates",
        lambda state, capacity, now_us, forward: original(state, 1, now_us, forward),
    )
    result = cli("verify", work_db.path, "--run", "work")
    assert result.code == 1
    second_claim = positions_of(work_db.path, "event.claimed")[1]
    assert f"at position {second_claim}: processor cycle 1 of " in result.out
    assert "decided differently" in result.out
    lines = result.out.splitlines()
    expected = lines[lines.index("expected record:") + 1 : lines.index("actual record:")]
    assert expected == ["  (none: no record like the one below belongs here)"]
    actual = json.loads("\n".join(lines[lines.index("actual record:") + 1 :]))
    assert actual["kind"] == "event.claimed"  # capacity 1 would have claimed one event only
    assert actual["stream_id"] == work_db.events[1]


def test_verify_without_run_verifies_the_newest(cli: Cli, work_db: WorkDb) -> None:
    result = cli("verify", work_db.path)  # as `show` does: the newest run
    assert result.code == 0, result.err
    assert result.out.startswith(f"OK: run work ({work_db.run_id}) verified: ")
    missing = cli("verify", work_db.path, "--run", "nope")
    assert missing.code == 1
    assert missing.err == "lionstore: error: no run with id or label 'nope'\n"
