"""WAL checkpoints at durability "normal" run on a thread of their own, and the WAL still
starts over (lionstore.log.sqlite_checkpoint).

Observed through the files and SQLite itself: the main database file grows only when a
checkpoint copies pages into it, and the WAL file's size is its high-water mark, so a
WAL that was never started over is as large as everything committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from bounds import bounded

import lionstore
from lionstore.log import sqlite_checkpoint
from lionstore.log.sqlite_checkpoint import SAFETY_FRAMES
from lionstore.replay import verify

from ._kinds import Ping
from .logtools import ROOT, new_id, subprocess_env

PAGE = 4096 + 24  # a WAL frame: its header and one page


def _wal_restarts(path: Path) -> int:
    """How many times the WAL was started over: the checkpoint sequence number in its
    header (bytes 12-15, big-endian), which SQLite counts up at each restart."""
    with open(f"{path}-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def _writer_pragma(store: lionstore.Store, name: str) -> int:
    conn = store._backend._writer.connection()  # type: ignore[attr-defined]
    value: int = conn.execute(f"PRAGMA {name}").fetchone()[0]
    return value


async def _grown(path: Path, size: int) -> None:
    while path.stat().st_size <= size:
        await asyncio.sleep(0.01)


def _checkpointer_threads() -> set[threading.Thread]:
    """The checkpointer threads alive now (compare with those alive before a test's
    store: a store another test left open would have one of its own)."""
    return {t for t in threading.enumerate() if t.name == "lionstore-checkpointer"}


async def test_checkpoints_copy_pages_off_the_event_loop_at_normal(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    others = _checkpointer_threads()
    async with lionstore.open(path, run="r", durability="normal") as store:
        # SQLite's own checkpoint is pushed far out: it would run inside a COMMIT
        assert _writer_pragma(store, "wal_autocheckpoint") == SAFETY_FRAMES
        before = path.stat().st_size
        # ~3 WAL frames a commit: far below SAFETY_FRAMES and RESTART_FRAMES, so only
        # a background checkpoint can have copied pages into the main file
        for i in range(300):
            await store.append([(new_id(), Ping(n=i))])
        await bounded(
            _grown(path, before), "a background checkpoint to copy pages into the file", 20
        )
        assert _checkpointer_threads() - others
    assert not _checkpointer_threads() - others  # stopped at close


async def test_no_background_checkpoints_at_full(tmp_path: Path) -> None:
    others = _checkpointer_threads()
    async with lionstore.open(tmp_path / "log.db", run="r", durability="full") as store:
        assert store._backend._checkpointer is None  # type: ignore[attr-defined]
        assert _writer_pragma(store, "wal_autocheckpoint") == 1000  # SQLite's default
        for i in range(150):
            await store.append([(new_id(), Ping(n=i))])
        assert not _checkpointer_threads() - others


async def test_the_wal_starts_over_while_commits_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PASSIVE checkpoint in the background never catches up with commits that land
    while it copies; without the writer's own checkpoint before a commit
    (Checkpointer.before_commit) the WAL grew for ever."""
    restart = 200
    monkeypatch.setattr(sqlite_checkpoint, "RESTART_FRAMES", restart)
    monkeypatch.setattr(sqlite_checkpoint, "_WEIGHT_PER_CHECKPOINT", 10)
    path = tmp_path / "log.db"
    commits = 2000
    async with lionstore.open(path, run="r", durability="normal") as store:
        for i in range(commits):
            await store.append([(new_id(), Ping(n=i))])
        restarts = _wal_restarts(path)
        wal = Path(f"{path}-wal").stat().st_size
        assert [r async for r in await store.read()][-1].data == Ping(n=commits - 1)
    # at least three pages a commit: 6,000 frames, 30 times the restart mark (how far past
    # the mark each restart comes depends on how fast the thread copies)
    assert restarts >= 3, f"the WAL started over {restarts} times"
    assert wal < commits * 3 * PAGE / 2


_KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path[:0] = [sys.argv[2]]
    import lionstore
    from lionstore.log import sqlite_checkpoint
    from tests.log._kinds import Ping
    from lionstore import IDType
    sqlite_checkpoint.RESTART_FRAMES = 60
    sqlite_checkpoint._WEIGHT_PER_CHECKPOINT = 5

    async def main():
        async with lionstore.open(sys.argv[1], run="r", durability="normal") as store:
            i = 0
            while True:
                await store.append([(IDType.create(), Ping(n=i))])
                i += 1
                if i == 400:
                    print("going", flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_a_process_killed_among_background_checkpoints_leaves_a_sound_log(
    tmp_path: Path,
) -> None:
    """SIGKILL while checkpoints copy in the background and before commits: the file
    opens, every committed record is there in order, and its digest chain holds."""
    path = tmp_path / "log.db"
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, str(path), str(ROOT)],
            stdout=subprocess.PIPE,
            env=subprocess_env(),
        )
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        assert line.strip() == b"going"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        async with lionstore.open(path, run="r", durability="normal") as store:
            records = [r async for r in await store.read()]
            report = await verify(store)
        assert report.ok, report
        positions = [r.position for r in records]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert len(records) > 400


async def test_a_failing_checkpointer_is_reported_and_the_writer_checkpoints_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The checkpointer's connection cannot be opened: one warning, and the writer gets
    SQLite's own checkpoints back, so the WAL is still started over."""
    from lionstore.log.sqlite_commit import SQLiteCommits

    def refuse(self: SQLiteCommits) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(SQLiteCommits, "_connect_checkpointer", refuse)
    monkeypatch.setattr(sqlite_checkpoint, "_WEIGHT_PER_CHECKPOINT", 10)
    path = tmp_path / "log.db"
    commits = 2000
    with caplog.at_level("WARNING", logger="lionstore.sqlite"):
        async with lionstore.open(path, run="r", durability="normal") as store:
            for i in range(commits):
                await store.append([(new_id(), Ping(n=i))])
            restarts = _wal_restarts(path)
            assert _writer_pragma(store, "wal_autocheckpoint") == 1000
    warnings = [r for r in caplog.records if "background WAL checkpoint failed" in r.message]
    assert len(warnings) == 1, caplog.text
    assert restarts >= 3, f"the WAL started over {restarts} times"
