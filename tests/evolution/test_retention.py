"""Archive then delete finished runs; what is kept stays verifiable."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from evo_helpers import run_cli

import lionstore
from lionstore.cli import main
from lionstore.replay import verify
from lionstore.replay.retention import (
    RunNotFinishedError,
    archive_run,
    delete_run,
    verify_archive,
)


async def test_archive_is_self_contained_and_verifiable(upgraded: Path, tmp_path: Path) -> None:
    target = tmp_path / "fixture.jsonl"
    with target.open("w") as out:
        info, count = await archive_run(upgraded, "fixture", out)
    assert count == 43
    check = verify_archive(target)
    assert check.ok and check.records == 43 and check.run_id == info.run_id
    lines = target.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["run"]["label"] == "fixture"
    finished = [json.loads(x) for x in lines[1:] if '"event.finished"' in x]
    assert all("duration_us" in f["data"] and '"duration"' in f["raw"] for f in finished)
    # an edit, a deletion and a truncation are each caught at the line they affect
    edited = lines[:]
    record = json.loads(edited[5])
    record["raw"] = record["raw"].replace("worker", "w0rker")
    edited[5] = json.dumps(record)
    for bad, line in ((edited, 6), (lines[:3] + lines[4:], 4)):
        broken = tmp_path / "broken.jsonl"
        broken.write_text("\n".join(bad) + "\n")
        result = verify_archive(broken)
        assert not result.ok and result.line == line and "digest" in (result.reason or "")
    (tmp_path / "half.jsonl").write_text("\n".join(lines)[:-20])
    assert not verify_archive(tmp_path / "half.jsonl").ok


async def test_delete_refuses_unfinished_runs_unless_forced(upgraded: Path) -> None:
    before = upgraded.read_bytes()
    with pytest.raises(RunNotFinishedError, match="1 mail in outbox"):
        await delete_run(upgraded, "fixture")
    assert upgraded.read_bytes() == before
    _, removed = await delete_run(upgraded, "fixture", force=True)
    assert removed == 43


async def test_deleting_a_parent_keeps_its_fork_whole_and_verifiable(upgraded: Path) -> None:
    async with lionstore.open(upgraded, readonly=True) as store:
        parent = await store.find_run("fixture")
        before = (await verify(store, run="fixture-fork")).to_dict()
        head = await store.head()
    await delete_run(upgraded, "fixture", force=True)
    async with lionstore.open(upgraded, readonly=True) as store:
        runs = {r.label: r for r in await store.runs()}
        assert set(runs) == {"fixture-fork"}
        assert runs["fixture-fork"].parent_run_id == parent.run_id  # kept by id
        assert (await verify(store, run="fixture-fork")).to_dict() == before
        assert await store.head() == head  # positions are never reused
    # the file is whole: new appends get positions after the gap
    async with lionstore.open(upgraded, run="later") as store:
        assert store.position == head + 1  # its run.started
        (position,) = await store.append([(lionstore.IDType.create(), _Note(text="x"))])
        assert position == head + 2  # after run.started at head + 1
    conn = sqlite3.connect(upgraded)
    try:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT count(*) FROM lionstore_checkpoints").fetchone() == (0,)
    finally:
        conn.close()


async def test_delete_run_then_unfinished_fork_is_refused(upgraded: Path) -> None:
    """The fork's events all finished and it has no mail: it is finished."""
    info, removed = await delete_run(upgraded, "fixture-fork")
    assert removed == 16 and info.label == "fixture-fork"
    with pytest.raises(lionstore.RunNotFoundError):
        await delete_run(upgraded, "fixture-fork")


def test_the_commands(upgraded: Path, tmp_path: Path) -> None:
    archive = tmp_path / "fork.jsonl"
    out = run_cli("archive", str(upgraded), "--run", "fixture-fork", "--to", str(archive))
    assert "archived 16 records" in out
    assert run_cli("archive-verify", str(archive)).startswith("OK")
    assert json.loads(run_cli("archive-verify", str(archive), "--json"))["ok"] is True
    assert main(["delete-run", str(upgraded), "--run", "fixture"]) == 1  # unfinished
    assert "deleted run fixture-fork" in run_cli(
        "delete-run", str(upgraded), "--run", "fixture-fork"
    )
    assert "deleted run fixture " in run_cli(
        "delete-run", str(upgraded), "--run", "fixture", "--force"
    )
    archive.write_text(archive.read_text().replace('"stream_version":2', '"stream_version":3', 1))
    assert main(["archive-verify", str(archive)]) == 1


class _Note(lionstore.RecordData):
    kind = "test.evolution.note"
    text: str
