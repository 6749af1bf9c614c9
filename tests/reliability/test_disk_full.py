"""A disk that fills in the middle of an append (simulated with RLIMIT_FSIZE in a child
process, so SQLite's writes past the limit fail as on a full disk): the append fails
with a LionstoreError and writes nothing, earlier records are intact, and the same
store appends again once there is room."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lionstore
from lionstore.replay import verify

from .test_crash_loop import ROOT

CHILD = Path(__file__).with_name("_disk_full.py")


async def test_a_full_disk_fails_the_append_cleanly_and_the_store_recovers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "full.db"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, str(CHILD), str(path), "400000"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])

    _name, message, is_lionstore = out["error"]
    assert is_lionstore, out["error"]  # a StoreError naming the file and the cause
    assert str(path) in message
    # the failed batch of 50 left nothing: the head is at a batch boundary
    blobs = out["read_when_full"]
    assert len(blobs) >= 20 and (len(blobs) - 20) % 50 == 0
    assert [n for _, n in blobs] == list(range(len(blobs)))
    assert out["head_when_full"] == blobs[-1][0]
    # room again: the same store appends at the next position
    assert out["after"] == [out["head_when_full"] + 1]
    assert out["reopened"] == [*blobs, [out["head_when_full"] + 1, -1]]
    assert out["stream_versions"] == list(range(1, len(blobs) + 2))
    async with lionstore.open(path, run="full", readonly=True) as store:
        report = await verify(store)
        assert report.ok, report.to_dict()
