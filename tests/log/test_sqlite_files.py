"""SQLite files: paths, damaged and foreign files, schema versions, locks, WAL and PRAGMAs.

These tests are about the file itself, so they use SQLite directly (stdlib ``sqlite3``
and real OS processes) next to lionstore.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore import (
    CorruptDatabaseError,
    NotALionstoreDatabaseError,
    SchemaOutdatedError,
    SchemaTooNewError,
    StoreError,
    StoreLockedError,
    StorePathError,
    UnknownRecord,
)
from lionstore.log import migrate
from lionstore.log.schema import TABLE_NAMES, VERSION_TABLE

from ._kinds import Note, Ping
from .logtools import ROOT, file_fingerprint, log_state, new_id, read_line, records, subprocess_env

SQLITE_HEADER = b"SQLite format 3\x00"


async def make_store_file(path: Path, *, batches: int = 30) -> None:
    """A lionstore file with some history, checkpointed so the main file holds it all."""
    async with lionstore.open(path, run="history") as store:
        for i in range(batches):
            await store.append([(new_id(), Ping(n=i * 20 + j)) for j in range(20)])
    checkpoint(path)


def checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()  # the last connection: the -wal and -shm files go away
    assert not Path(f"{path}-wal").exists()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- paths ----------------------------------------------------------------------------------


async def test_missing_directory(tmp_path: Path) -> None:
    for target in (tmp_path / "nope" / "store.db", tmp_path / "a" / "b" / "c" / "store.db"):
        with pytest.raises(StorePathError, match="does not exist"):
            async with lionstore.open(target):
                pass
    assert listing(tmp_path) == []  # no directory was made on the way


async def test_a_regular_file_used_as_directory(tmp_path: Path) -> None:
    plain = tmp_path / "notes.txt"
    plain.write_text("not a directory\n")
    fingerprint = file_fingerprint(plain)
    with pytest.raises(StorePathError):
        async with lionstore.open(plain / "store.db"):
            pass
    assert file_fingerprint(plain) == fingerprint
    assert listing(tmp_path) == ["notes.txt"]


async def test_a_directory_used_as_database(tmp_path: Path) -> None:
    with pytest.raises(StorePathError, match="directory"):
        async with lionstore.open(tmp_path):
            pass
    assert listing(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux procfs")
async def test_a_directory_where_no_one_can_create_files() -> None:
    """procfs refuses new files even to root (permission bits would not stop root)."""
    with pytest.raises(StorePathError):
        async with lionstore.open("/proc/lionstore-test.db"):
            pass
    assert not Path("/proc/lionstore-test.db").exists()


_OPEN_AS_NOBODY = textwrap.dedent(
    """
    import asyncio, json, os, sys, tempfile
    import lionstore

    async def attempt(target):
        try:
            async with lionstore.open(target, run="x") as store:
                await store.head()
        except Exception as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
        return {"error": None}

    # Load every module an open needs while still allowed to read them all ...
    with tempfile.TemporaryDirectory() as scratch:
        assert asyncio.run(attempt(os.path.join(scratch, "warm.db"))) == {"error": None}
    # The migration scripts are read once and cached; read them while still allowed to
    # (a checkout in a private directory is not readable by nobody).
    from lionstore.log import migrate
    migrate.head_revision(), migrate.known_revisions()
    # ... then, if root (whom permission bits do not bind), become nobody for good.
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    print(json.dumps({"uid": os.getuid(), **asyncio.run(attempt(sys.argv[1]))}))
    """
)


@pytest.fixture
def unprivileged_dir(tmp_path: Path) -> Iterator[tuple[Path, Any]]:
    """A directory, and a function that opens a path in it from a child process that
    permission bits bind: as root (which they do not bind) the child drops to ``nobody``."""
    if os.geteuid() == 0:
        # tmp_path's parents are private to root: use a directory nobody can reach
        base = Path(tempfile.mkdtemp(prefix="lionstore-perm-"))
        base.chmod(0o755)
    else:
        base = tmp_path

    def open_in_child(target: Path) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", _OPEN_AS_NOBODY, str(target)],
            capture_output=True,
            text=True,
            cwd="/",
            env=subprocess_env(),
            timeout=60,
        )
        if os.geteuid() == 0 and "Operation not permitted" in done.stderr:
            pytest.skip("running as root without the right to become another user")
        assert done.returncode == 0, done.stderr
        result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
        assert result.pop("uid") != 0
        return result

    try:
        yield base, open_in_child
    finally:
        for p in base.rglob("*"):
            if p.is_dir():
                p.chmod(0o755)
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


async def test_read_only_directory_for_a_new_file(unprivileged_dir: tuple[Path, Any]) -> None:
    base, open_as_user = unprivileged_dir
    ro = base / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        result = await asyncio.to_thread(open_as_user, ro / "store.db")
        assert result["error"] == "StorePathError", result
        assert "writable" in result["message"] or "cannot create" in result["message"]
        assert listing(ro) == []
    finally:
        ro.chmod(0o755)


async def test_read_only_file(unprivileged_dir: tuple[Path, Any]) -> None:
    base, open_as_user = unprivileged_dir
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # the directory is writable; only the file is not
    path = shared / "store.db"
    await make_store_file(path, batches=2)
    path.chmod(0o444)
    fingerprint = file_fingerprint(path)
    result = await asyncio.to_thread(open_as_user, path)
    assert result["error"] == "StorePathError", result
    assert "read-only" in result["message"]
    assert file_fingerprint(path) == fingerprint


# -- files that are not lionstore databases -------------------------------------------------


def _foreign_sqlite(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")
    conn.commit()
    conn.close()


async def _truncated(path: Path, keep: float, aligned: bool) -> None:
    await make_store_file(path)
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    size = int(len(data) * keep)
    size = size - size % page if aligned else size + 100
    path.write_bytes(data[: max(size, page)])


async def _damaged_page(path: Path, page_no: int) -> None:
    await make_store_file(path)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page * (page_no - 1) : page * page_no] = os.urandom(page)
    path.write_bytes(bytes(data))


BAD_FILES: dict[str, tuple[Any, type[StoreError]]] = {
    "zero-bytes": (lambda p: p.write_bytes(b""), NotALionstoreDatabaseError),
    "random-bytes": (
        lambda p: p.write_bytes(b"\x00" + os.urandom(8191)),
        NotALionstoreDatabaseError,
    ),
    "text": (lambda p: p.write_text("name,value\nx,1\n"), NotALionstoreDatabaseError),
    "short-header": (lambda p: p.write_bytes(SQLITE_HEADER[:10]), NotALionstoreDatabaseError),
    "sqlite-header-then-garbage": (
        lambda p: p.write_bytes(SQLITE_HEADER + os.urandom(8192)),
        CorruptDatabaseError,
    ),
    "foreign-app": (lambda p: _foreign_sqlite(p, "delete"), NotALionstoreDatabaseError),
    "foreign-app-wal": (lambda p: _foreign_sqlite(p, "wal"), NotALionstoreDatabaseError),
    "truncated-half-page-aligned": (lambda p: _truncated(p, 0.5, True), CorruptDatabaseError),
    "truncated-mid-page": (lambda p: _truncated(p, 0.7, False), CorruptDatabaseError),
    "truncated-to-one-page": (lambda p: _truncated(p, 0.0, True), CorruptDatabaseError),
    "damaged-page-2": (lambda p: _damaged_page(p, 2), CorruptDatabaseError),
    "damaged-page-6": (lambda p: _damaged_page(p, 6), CorruptDatabaseError),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("how", ["default", "upgrade", "readonly"])
async def test_bad_files_are_refused_and_left_unchanged(
    tmp_path: Path, kind: str, how: str
) -> None:
    make, expected = BAD_FILES[kind]
    path = tmp_path / "target.db"
    made = make(path)
    if asyncio.iscoroutine(made):
        await made
    fingerprint = file_fingerprint(path)
    before = listing(tmp_path)
    options: dict[str, Any] = {
        "default": {},
        "upgrade": {"upgrade": True},
        "readonly": {"readonly": True},
    }[how]

    with pytest.raises(expected) as caught:
        async with lionstore.open(path, **options):
            pass
    assert str(path) in str(caught.value)
    assert file_fingerprint(path) == fingerprint
    # no new files next to it (a WAL-mode file may gain the empty -wal/-shm files SQLite
    # makes for any reader)
    sidecars = {f"{path.name}-wal", f"{path.name}-shm"}
    assert set(listing(tmp_path)) - sidecars == set(before)
    if kind == "foreign-app":  # the other application's data is all still there
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT name FROM users ORDER BY id").fetchall() == [
            ("ada",),
            ("grace",),
        ]
        conn.close()


# -- schema versions ------------------------------------------------------------------------


def _set_revision(path: Path, revision: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = ?", (revision,))
    conn.commit()
    conn.close()
    checkpoint(path)


@pytest.mark.parametrize("how", ["default", "upgrade", "readonly"])
async def test_a_file_from_a_newer_lionstore(tmp_path: Path, how: str) -> None:
    path = tmp_path / "newer.db"
    await make_store_file(path, batches=2)
    _set_revision(path, "9999")
    fingerprint = file_fingerprint(path)
    options: dict[str, Any] = {
        "default": {},
        "upgrade": {"upgrade": True},
        "readonly": {"readonly": True},
    }[how]
    with pytest.raises(SchemaTooNewError, match="9999"):
        async with lionstore.open(path, run="history", **options):
            pass
    assert file_fingerprint(path) == fingerprint


async def test_an_unknown_version_table_without_lionstore_tables_is_foreign(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other-alembic.db"
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL)")
    conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES ('abc123')")
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    fingerprint = file_fingerprint(path)
    with pytest.raises(NotALionstoreDatabaseError):
        async with lionstore.open(path):
            pass
    assert file_fingerprint(path) == fingerprint


@pytest.fixture
def older_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A lionstore file at the current head, then lionstore pretends to have a second
    migration, which makes the file outdated."""

    async def make() -> tuple[Path, str]:
        path = tmp_path / "older.db"
        await make_store_file(path, batches=2)
        current = migrate.head_revision()
        known = migrate.known_revisions()
        monkeypatch.setattr(migrate, "head_revision", lambda: "future-head")
        monkeypatch.setattr(migrate, "known_revisions", lambda: {*known, "future-head"})
        return path, current

    return make


async def test_a_file_from_an_older_lionstore(older_file: Any) -> None:
    path, revision = await older_file()
    fingerprint = file_fingerprint(path)
    choices: tuple[dict[str, Any], ...] = ({}, {"readonly": True})
    for options in choices:
        with pytest.raises(SchemaOutdatedError) as caught:
            async with lionstore.open(path, run="history", **options):
                pass
        message = str(caught.value)
        assert f"lionstore db upgrade {path}" in message
        assert "upgrade=True" in message
        assert revision in message
        assert file_fingerprint(path) == fingerprint


async def test_an_older_file_opens_with_upgrade_true(older_file: Any) -> None:
    path, _ = await older_file()
    async with lionstore.open(path, run="history", upgrade=True) as store:
        head = await store.head()
        assert len(await records(store)) == 1 + 40
        assert await store.append([(new_id(), Ping(n=1))]) == [head + 1]


async def test_a_downgraded_file_is_rebuilt_on_open(tmp_path: Path) -> None:
    path = tmp_path / "down.db"
    await make_store_file(path, batches=1)
    await migrate.downgrade(path, "base")
    async with lionstore.open(path, run="again") as store:
        assert [r.kind for r in await records(store, run=None)] == ["run.started"]


# -- locks ----------------------------------------------------------------------------------


_HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    conn.close()
    print("released", flush=True)
    """
)


class LockHolder:
    """Another OS process holding the database's write lock until told to let go."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def __aenter__(self) -> LockHolder:
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(read_line, self.proc.stdout, self.proc, 30)
        assert line == "locked"
        return self

    async def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = await asyncio.to_thread(read_line, self.proc.stdout, self.proc, 30)
        assert line == "released"
        assert await asyncio.to_thread(self.proc.wait, 30) == 0

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


async def test_a_file_locked_past_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    sid = new_id()
    async with lionstore.open(path, run="locked") as store:
        await store.append([(sid, Ping(n=1))])

    async with (
        LockHolder(path) as holder,
        lionstore.open(path, run="locked", lock_timeout=0.5) as store,
    ):
        before = await log_state(store)
        started = time.monotonic()
        with pytest.raises(StoreLockedError, match="lock") as caught:
            await store.append([(sid, Ping(n=2)), (new_id(), Note(text="x"))])
        waited = time.monotonic() - started
        assert 0.4 <= waited < 15, waited  # it waited for the lock, then gave up
        assert "database is locked" not in type(caught.value).__name__
        # nothing was written, and readers were never blocked
        assert await log_state(store) == before
        assert [r.data for r in await records(store, stream=sid)] == [Ping(n=1)]

        # starting a run needs the write lock too
        with pytest.raises(StoreLockedError):
            async with lionstore.open(path, lock_timeout=0.5):
                pass
        assert await log_state(store) == before

        await holder.release()
        committed = await store.append_records([(sid, Ping(n=2))], expected_versions={sid: 1})
        assert [(r.position, r.stream_version) for r in committed] == [(before[0] + 1, 2)]


async def test_an_append_waits_for_a_lock_released_within_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "waits.db"
    sid = new_id()
    async with lionstore.open(path, run="waits") as store:
        await store.append([(sid, Ping(n=1))])
    async with (
        LockHolder(path) as holder,
        lionstore.open(path, run="waits", lock_timeout=30) as store,
    ):
        pending = asyncio.ensure_future(store.append([(sid, Ping(n=2))]))
        done, _ = await asyncio.wait({pending}, timeout=0.3)
        assert not done  # still waiting for the other process, not failed
        await holder.release()
        positions = await asyncio.wait_for(pending, timeout=30)
        assert [r.position for r in await records(store, stream=sid)][-1] == positions[0]


# -- WAL and PRAGMAs ------------------------------------------------------------------------


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
async def test_wal_and_synchronous_follow_durability(
    tmp_path: Path, durability: str, synchronous: int
) -> None:
    path = tmp_path / "pragmas.db"
    async with lionstore.open(path, run="p", durability=durability) as store:
        await store.append([(new_id(), Ping(n=1))])
        writer = store._backend._writer  # type: ignore[attr-defined]

        def pragmas(conn: sqlite3.Connection) -> tuple[int, int, str]:
            return (
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA foreign_keys").fetchone()[0],
                conn.execute("PRAGMA journal_mode").fetchone()[0],
            )

        assert await writer.run(pragmas) == (synchronous, 1, "wal")
        other = sqlite3.connect(path)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            other.close()
    assert path.read_bytes()[18:20] == b"\x02\x02"  # WAL recorded in the file header


async def test_a_new_file_has_the_schema_at_head(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    async with lionstore.open(path):
        pass
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (revision,) = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
    finally:
        conn.close()
    assert tables == {*TABLE_NAMES, VERSION_TABLE}
    assert revision == migrate.head_revision()
    assert await migrate.current_revision(path) == revision


async def test_a_new_file_is_made_whole_with_ordinary_permissions(tmp_path: Path) -> None:
    path = tmp_path / "made.db"
    async with lionstore.open(path, run="made") as store:
        await store.append([(new_id(), Ping(n=1))])
    checkpoint(path)
    assert listing(tmp_path) == ["made.db"]  # nothing left over from making it
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# -- records written behind lionstore's back -----------------------------------------------


async def test_rows_lionstore_cannot_interpret_read_back_raw(tmp_path: Path) -> None:
    path = tmp_path / "edited.db"
    sid = new_id()
    async with lionstore.open(path, run="edited") as store:
        positions = await store.append([(sid, Ping(n=i)) for i in range(6)])

    edits = {
        positions[1]: ("alien.kind", 1, '{"colour": "green"}'),  # a kind nobody defined
        positions[2]: ("logtest.ping", 7, '{"n": 1, "unit": "s"}'),  # a newer kind_version
        positions[3]: ("logtest.ping", 1, '{"n": "not a number"}'),  # does not validate
        positions[4]: ("logtest.ping", 1, "this is not json {"),  # not JSON at all
    }
    conn = sqlite3.connect(path)
    for position, (kind, version, data) in edits.items():
        conn.execute(
            "UPDATE lionstore_records SET kind = ?, kind_version = ?, data = ? WHERE position = ?",
            (kind, version, data, position),
        )
    conn.commit()
    conn.close()

    async with lionstore.open(path, run="edited") as store:
        got = await records(store, stream=sid)
        assert [r.position for r in got] == positions  # none dropped, order kept
        assert got[0].data == Ping(n=0)
        assert got[5].data == Ping(n=5)
        assert got[1].data == UnknownRecord(
            kind="alien.kind", kind_version=1, raw={"colour": "green"}
        )
        assert got[2].data == UnknownRecord(
            kind="logtest.ping", kind_version=7, raw={"n": 1, "unit": "s"}
        )
        assert got[3].data == UnknownRecord(
            kind="logtest.ping", kind_version=1, raw={"n": "not a number"}
        )
        assert got[4].data == UnknownRecord(
            kind="logtest.ping", kind_version=1, raw="this is not json {"
        )
        assert got[4].raw == "this is not json {"
        for record in got:
            json.dumps(record.to_json_dict())
        # the log goes on after them
        [committed] = await store.append_records([(sid, Ping(n=6))], expected_versions={sid: 6})
        assert committed.stream_version == 7


async def test_subprocess_sees_the_checkout(tmp_path: Path) -> None:
    """The child processes these tests start import this checkout's lionstore."""
    done = subprocess.run(
        [sys.executable, "-c", "import lionstore, sys; print(lionstore.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=subprocess_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve().is_relative_to(ROOT)
