"""Read-only commands on a database one may not write: a read-only directory, or a
file of another user. They read it, and leave no ``-wal``/``-shm`` file behind that
would break the owner's next write.

"Another user" is real: the commands run as ``nobody`` through ``setpriv``, which
needs root (the suite runs as root under CI); elsewhere these tests skip, saying so.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cli_scenarios import write_work_run

import lionstore
from lionstore.log import migrate

if TYPE_CHECKING:
    from conftest import Cli, CliNote

ROOT = Path(__file__).resolve().parents[2]
READ_COMMANDS = [
    ("runs",),
    ("show",),
    ("log",),
    ("verify",),
    ("export",),
    ("timeline",),
    ("db", "check"),
]
CLI = "import sys; from lionstore.cli import main; sys.exit(main(sys.argv[1:]))"


def _nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: to run the commands as another user (nobody) and chown files")
    if shutil.which("setpriv") is None:
        message = "setpriv (util-linux) is not installed: cannot run a command as nobody"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def as_nobody(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lionstore ARGS`` run as the user nobody (group nogroup, no other groups)."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["HOME"] = str(cwd)
    return subprocess.run(
        [
            *("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"),
            *(sys.executable, "-c", CLI, *map(str, args)),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory everyone may enter (pytest's own tmp_path is root's alone)."""
    _require_root()
    path = Path(tempfile.mkdtemp(prefix="lionstore-ro-", dir="/tmp"))
    path.chmod(0o755)
    try:
        probe = as_nobody("--version", cwd=path)
        if probe.returncode != 0:
            pytest.fail(f"nobody cannot run this Python ({sys.executable}): {probe.stderr}")
        yield path
    finally:
        path.chmod(0o755)
        shutil.rmtree(path)


def side_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(("-wal", "-shm")))


def test_read_commands_in_a_read_only_directory(shared_dir: Path) -> None:
    work = asyncio.run(write_work_run(shared_dir / "work.db"))
    assert side_files(shared_dir) == []
    shared_dir.chmod(0o555)
    for command in READ_COMMANDS:
        done = as_nobody(*command, work.path, cwd=shared_dir)
        assert done.returncode == 0, (command, done.stderr)
        assert done.stderr == ""
    # what they printed is the run
    shown = json.loads(as_nobody("show", work.path, "--json", cwd=shared_dir).stdout)
    assert (shown["label"], shown["records"]) == ("work", work.end)
    verified = as_nobody("verify", work.path, cwd=shared_dir).stdout
    assert verified.startswith(f"OK: run work ({work.run_id}) verified: {work.end} records")
    assert len(as_nobody("export", work.path, cwd=shared_dir).stdout.splitlines()) == work.end
    assert side_files(shared_dir) == []


def _give_to_nobody(directory: Path) -> None:
    uid, gid = _nobody()
    for path in [directory, *directory.iterdir()]:
        os.chown(path, uid, gid)


async def _append_as_owner(path: Path, note: type[CliNote]) -> None:
    async with lionstore.open(path, run="owner") as store:
        await store.append([(lionstore.IDType.create(), note(text="mine"))])


def test_root_reading_another_users_file_leaves_nothing_that_breaks_its_writes(
    cli: Cli, shared_dir: Path
) -> None:
    work = asyncio.run(write_work_run(shared_dir / "work.db"))
    _give_to_nobody(shared_dir)
    for command in READ_COMMANDS:  # as root, in this process
        done = cli(*command, work.path)
        assert done.code == 0, (command, done.err)
        assert side_files(shared_dir) == [], command
    # the owner writes to it afterwards, as usual
    write = as_nobody(
        "fork", work.path, "--run", "work", "--at", "5", "--label", "mine", cwd=shared_dir
    )
    assert write.returncode == 0, write.stderr
    runs = [
        json.loads(line)
        for line in as_nobody("runs", work.path, "--json", cwd=shared_dir).stdout.splitlines()
    ]
    assert [r["label"] for r in runs] == ["work", "mine"]
    for name in side_files(shared_dir):
        assert (shared_dir / name).stat().st_uid == _nobody()[0]


def test_reading_beside_a_live_writer_sees_its_committed_records(
    shared_dir: Path, note_kind: type[CliNote]
) -> None:
    """The owner (root) has the file open, so -wal and -shm exist (root's, 0644):
    nobody reads through them, committed records still in the -wal included."""
    path = shared_dir / "live.db"

    async def scenario() -> list[str]:
        async with lionstore.open(path, run="live") as store:
            await store.append(
                [(lionstore.IDType.create(), note_kind(text=str(i))) for i in range(3)]
            )
            assert side_files(shared_dir) == ["live.db-shm", "live.db-wal"]
            shared_dir.chmod(0o555)
            done = await asyncio.to_thread(as_nobody, "log", path, "--json", cwd=shared_dir)
            assert done.returncode == 0, done.stderr
            return done.stdout.splitlines()

    lines = asyncio.run(scenario())
    assert [json.loads(line)["kind"] for line in lines] == ["run.started", *["test.cli.note"] * 3]


def test_a_wal_of_committed_records_without_its_index_is_refused_clearly(
    shared_dir: Path,
) -> None:
    """A -wal holding committed records but no -shm, in a directory the reader cannot
    write: SQLite could not read the -wal without creating the -shm, and reading the
    main file alone would silently miss records. One line says so."""
    source = shared_dir / "source"
    source.mkdir()
    asyncio.run(write_work_run(source / "work.db"))
    conn = sqlite3.connect(source / "work.db")
    try:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("UPDATE lionstore_runs SET label = 'renamed'")  # committed, in the -wal
        conn.commit()
        shutil.copy(source / "work.db", shared_dir / "copy.db")
        shutil.copy(source / "work.db-wal", shared_dir / "copy.db-wal")
    finally:
        conn.close()
    assert (shared_dir / "copy.db-wal").stat().st_size > 0
    shared_dir.chmod(0o555)
    done = as_nobody("runs", "copy.db", cwd=shared_dir)
    assert done.returncode == 1
    assert done.stderr.startswith("lionstore: error: copy.db: its write-ahead log copy.db-wal ")
    assert "may hold committed records" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (shared_dir / "copy.db-shm").exists()
    # its owner (root here) may create the index and reads the renamed run
    shared_dir.chmod(0o755)
    owner = subprocess.run(
        [sys.executable, "-c", CLI, "runs", "copy.db", "--json"],
        cwd=shared_dir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert owner.returncode == 0, owner.stderr
    assert json.loads(owner.stdout)["label"] == "renamed"


def test_an_immutable_reader_sees_a_writer_that_starts_later(
    shared_dir: Path, note_kind: type[CliNote]
) -> None:
    """Read without a -shm (another user's file), nothing tells SQLite about a writer:
    before each read the reader looks at the file and, once a writer has started,
    opens again through the writer's -wal, so its committed records are read."""
    path = shared_dir / "other.db"
    asyncio.run(_append_as_owner(path, note_kind))
    _give_to_nobody(shared_dir)
    uri, immutable = migrate.readonly_uri(path)
    assert immutable and uri.endswith("?mode=ro&immutable=1")

    async def texts(store: lionstore.Store) -> list[str]:
        records = await store.read(run="owner", kinds=["test.cli.note"])
        found = []
        async for record in records:
            assert isinstance(record.data, note_kind)
            found.append(record.data.text)
        return found

    async def scenario() -> None:
        async with lionstore.open(path, readonly=True) as reader:
            assert await texts(reader) == ["mine"]
            # a writer comes and goes between two reads: no -wal left, the file changed
            async with lionstore.open(path, run="owner") as writer:
                await writer.append([(lionstore.IDType.create(), note_kind(text="early"))])
            assert side_files(shared_dir) == []
            assert await texts(reader) == ["mine", "early"]
            async with lionstore.open(path, run="owner") as writer:  # a writer stays
                await writer.append([(lionstore.IDType.create(), note_kind(text="late"))])
                assert side_files(shared_dir) == ["other.db-shm", "other.db-wal"]
                assert await texts(reader) == ["mine", "early", "late"]  # from the -wal
            async with lionstore.open(path, run="owner") as writer:  # and another
                await writer.append([(lionstore.IDType.create(), note_kind(text="later"))])
            assert await texts(reader) == ["mine", "early", "late", "later"]
        # the writer's side files, which SQLite gives the file's owner: nothing of root's
        for name in side_files(shared_dir):
            assert (shared_dir / name).stat().st_uid == _nobody()[0], name

    asyncio.run(scenario())


def test_readonly_uri_of_ones_own_file_is_plain_read_only(tmp_path: Path) -> None:
    """Our own file in a directory we may write: ``mode=ro``, which sees writers."""
    path = tmp_path / "mine.db"
    asyncio.run(write_work_run(path))
    assert migrate.readonly_uri(path) == (f"{path.resolve().as_uri()}?mode=ro", False)
