"""How the SQLite backend writes: its connections, and the commit path.

Why not aiosqlite or SQLAlchemy's async engine on the hot path: each statement
through them is an event-loop -> thread -> event-loop hop, about 100 µs here,
and a write transaction is five statements (BEGIN IMMEDIATE, read the head,
resolve streams, insert, COMMIT). Here the whole transaction is one function run
on the writer thread: one hop per group commit. Alembic and the schema check at
open still go through SQLAlchemy (``migrate.py``).

Small transactions do not even pay that hop: when the write lock is free they
run inline on the event loop (the connection's busy timeout is zero, so
``BEGIN IMMEDIATE`` never waits there; a WAL commit at ``synchronous=NORMAL``
takes tens of microseconds). Only when another process holds the lock, or for
large batches or ``durability="full"`` (an fsync per commit), does the
transaction go to the writer thread, which retries ``BEGIN IMMEDIATE`` with
back-off until ``lock_timeout`` and then raises StoreLockedError.

Transactions are explicit: the connection runs with ``isolation_level=None`` and
writers issue ``BEGIN IMMEDIATE``, so the write lock is taken before anything is
read. A deferred transaction that reads and then writes fails with "database is
locked" at once under contention, busy timeout or not
(shared/reference/ecosystem-notes.md section 1.2). Readers use plain autocommit
statements, which under WAL never wait for the writer.

The head row is a high-water mark here, not a counter moved by every commit
(schema revision 0003). A commit writes its records and new streams and nothing
else: the log's last position is the greater of ``lionstore_head.last_position``
and the last record's position (``max(position)`` on the rowid, a look-up at the
end of the table), and the same for stream numbers. The row is written only where
the tables alone could make a number go back: when a run is created (its number
lives nowhere else) and just before a run is deleted (its records may hold the
highest positions, which must never be handed out again). Updating the row on
every commit cost one more page in the WAL per commit and an UPDATE statement:
5-10% of a single-event commit at durability "normal", 3-7% at "full", where each
page written is also a page the fsync waits for. PostgreSQL keeps the row exact:
its row lock is what serializes commits there (``postgres_commit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from itertools import count, repeat
from pathlib import Path
from typing import Any, TypeVar

from lionstore._gcpause import gc_paused
from lionstore._loop import others_ready
from lionstore.domain.ids import IDType
from lionstore.domain.records import Recorded
from lionstore.errors import CorruptDatabaseError, StoreError
from lionstore.log.backend import AppendRequest, CommitOutcome, LogBackend, RunInfo
from lionstore.log.digest import chain_start
from lionstore.log.migrate import file_state, readonly_uri
from lionstore.log.plan import Head, Plan
from lionstore.log.rows import RowDecoder
from lionstore.log.sqlite_checkpoint import SAFETY_FRAMES, Checkpointer
from lionstore.log.sqlite_threads import BusyError, ConnectionThread, translate_sqlite_error

__all__ = ["INSERT_RECORD", "INSERT_STREAM", "SELECT_HEAD", "SYNCHRONOUS", "SQLiteCommits"]

T = TypeVar("T")

SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}

INSERT_RECORD = (
    "INSERT INTO lionstore_records (position, run_no, stream_no, stream_version, kind,"
    " kind_version, data, recorded_at_us, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_STREAM = "INSERT INTO lionstore_streams (stream_no, run_no, stream_id) VALUES (?, ?, ?)"
#: The log's last position and last stream number: the head row's high-water mark or
#: the tables' last numbers, whichever is greater (see the module's docstring). One
#: statement, so one snapshot.
SELECT_HEAD = (
    "SELECT max(h.last_position, coalesce((SELECT max(position) FROM lionstore_records), 0)),"
    " max(h.last_stream_no, coalesce((SELECT max(stream_no) FROM lionstore_streams), 0)),"
    " h.last_run_no FROM lionstore_head h WHERE h.id = 1"
)
_CHUNK = 500  # SQLite's default host-parameter limit is far above this
_CACHE_SIZE = 100_000
_INLINE_MAX_ROWS = 256  # larger batches commit on the writer thread, off the event loop


def _row_count(requests: Sequence[AppendRequest]) -> int:
    """The rows of a group commit (the one request's, without a generator, alone)."""
    return len(requests[0].rows) if len(requests) == 1 else sum(len(r.rows) for r in requests)


class _StreamExistsError(Exception):
    """A stream the plan took for new is in the table: plan again, looking it up."""


class SQLiteCommits(LogBackend):
    """The connections to one SQLite file (WAL) and the commit path. The rest of the
    backend is :class:`lionstore.log.sqlite.SQLiteBackend`, built on this."""

    def __init__(
        self,
        path: Path,
        *,
        durability: str = "normal",
        lock_timeout: float = 30.0,
        readonly: bool = False,
    ) -> None:
        self.path = path
        self._label = str(path)
        self._synchronous = SYNCHRONOUS[durability]
        self._timeout = lock_timeout
        self._readonly = readonly
        self._immutable = False  # read without locks or -shm (see migrate.readonly_uri)
        self._file_state: tuple[bool, int, int, int] | None = None
        self._writer = ConnectionThread("lionstore-writer", self._connect_writer)
        self._inline = durability == "normal"
        # At "normal", WAL checkpoints run on a thread of their own (sqlite_checkpoint)
        self._checkpointer = (
            Checkpointer(self._connect_checkpointer, self._label)
            if durability == "normal" and not readonly
            else None
        )
        # PRAGMA data_version changes only when *another* connection commits; while it
        # stays put, nothing foreign can have been written and a tail read is skipped.
        self._data_version: int | None = None
        self._head: tuple[int, int] | None = None  # (last_position, last_stream_no) we wrote
        self._last_digest: dict[int, str] = {}  # run_no -> digest of its last record
        self._write_lock: asyncio.Lock | None = None
        self._reader = ConnectionThread("lionstore-reader", self._connect_reader)
        # stream head cache of the writer thread, for one run (_streams_run) at a time:
        # stream_id -> (stream_no, version). Valid because every write to this file
        # either goes through this writer or is seen in the tail this writer reads at
        # the start of each transaction. Two generations of plain dicts make it an
        # approximate LRU at dict speed: streams used go to _streams; once that holds
        # half of _CACHE_SIZE it becomes _streams_old, the previous _streams_old is
        # dropped, and a fresh _streams starts. An entry in _streams shadows one in
        # _streams_old.
        self._streams: dict[str, tuple[int, int]] = {}
        self._streams_old: dict[str, tuple[int, int]] = {}
        self._streams_run: int | None = None
        self._run_ids: dict[int, IDType] = {}
        self._rows = RowDecoder(self._label)

    # -- connections -----------------------------------------------------------------

    @property
    def readonly(self) -> bool:
        return self._readonly

    def _connect_writer(self) -> sqlite3.Connection:
        if self._readonly:
            raise StoreError(f"{self._label}: the store was opened read-only")
        # Zero busy timeout: waiting for the lock is done by _begin_immediate, in the
        # writer thread only. The connection is used by the event loop thread (inline
        # commits) and the writer thread, never at once (self._lock).
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if self._checkpointer is not None and self._checkpointer.active:
            conn.execute(f"PRAGMA wal_autocheckpoint={SAFETY_FRAMES}")
        return conn

    def _connect_checkpointer(self) -> sqlite3.Connection:
        # Zero busy timeout: a PASSIVE checkpoint never waits, and nothing else runs here.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")  # what a checkpoint syncs
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        if self._readonly:  # may be a directory or a file we must not write: see there
            uri, self._immutable = readonly_uri(self.path)
            self._file_state = file_state(self.path) if self._immutable else None
        conn = sqlite3.connect(uri, uri=True, timeout=self._timeout, isolation_level=None)
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _lock(self) -> asyncio.Lock:
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return self._write_lock

    def _may_inline(self) -> bool:
        """Whether a small write may run on the event loop's thread. At durability
        "normal" a commit does not fsync, so it always may. At "full" its fsync takes a
        millisecond or more: the writer thread lets other tasks run meanwhile, but when
        none is ready to run, the hop to it (two thread switches and a loop wake-up)
        would buy nothing, and the commit is made inline too."""
        return self._inline or not others_ready(asyncio.get_running_loop())

    async def _write(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> T:
        """Run ``fn(conn, *args, wait=...)`` on the writer connection: inline when
        allowed and the lock is free, otherwise on the writer thread."""
        async with self._lock():
            try:
                if inline and self._may_inline():
                    try:
                        return fn(self._writer.connection(), *args, wait=False)
                    except BusyError:
                        pass
                return await self._writer.run(functools.partial(fn, wait=True), *args)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self._label) from exc

    def _write_now(self, fn: Callable[..., T], *args: Any, commits: bool = True) -> T | None:
        """``fn(conn, *args, wait=False)`` at once, without awaiting: when the write
        lock is free (nothing can take it before this returns, as nothing here
        awaits), inlining is allowed (always for what does not ``commit`` records,
        as it does not fsync) and the file is not locked by another process. None
        otherwise: the caller then goes through :meth:`_write`."""
        lock = self._write_lock
        if (lock is not None and lock.locked()) or (commits and not self._may_inline()):
            return None
        try:
            return fn(self._writer.connection(), *args, wait=False)
        except BusyError:
            return None
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self._label) from exc

    def _begin_immediate(self, conn: sqlite3.Connection, wait: bool) -> None:
        """Take the write lock; in the writer thread, wait up to lock_timeout for it."""
        deadline: float | None = None  # set at the first refusal: the lock is usually free
        delay = 0.0005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                message = str(exc)
                if "locked" not in message and "busy" not in message:
                    raise
                if not wait:
                    raise BusyError from None
                if deadline is None:
                    deadline = time.monotonic() + self._timeout
                elif time.monotonic() >= deadline:
                    raise
            time.sleep(delay)  # back-off while another process holds the lock
            delay = min(delay * 2, 0.05)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._immutable and file_state(self.path) != self._file_state:
            # A writer started (or came and went): an immutable connection would not
            # see its records, or see them torn. Open again, through its -wal if any.
            stale = self._reader
            self._reader = ConnectionThread("lionstore-reader", self._connect_reader)
            self._immutable = False
            await stale.close()
        try:
            return await self._reader.run(fn, *args)
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self._label) from exc

    # -- writes ----------------------------------------------------------------------

    async def commit(
        self, run: RunInfo, requests: Sequence[AppendRequest], now_us: int, seen: int
    ) -> CommitOutcome:
        rows = _row_count(requests)
        outcome = await self._write(
            self._commit, run, requests, now_us, seen, inline=rows <= _INLINE_MAX_ROWS
        )
        if self._checkpointer is not None:
            self._checkpointer.committed(rows)
        return outcome

    def commit_now(
        self, run: RunInfo, requests: Sequence[AppendRequest], now_us: int, seen: int
    ) -> CommitOutcome | None:
        rows = _row_count(requests)
        if rows > _INLINE_MAX_ROWS:
            return None
        outcome = self._write_now(self._commit, run, requests, now_us, seen)
        if outcome is not None and self._checkpointer is not None:
            self._checkpointer.committed(rows)
        return outcome

    def _restore_synchronous(self, conn: sqlite3.Connection) -> None:
        """Set the writer back to the store's level after an unsynced commit; if that
        fails, drop the connection (the next write opens one at the store's level)."""
        try:
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            self._writer.conn = None  # the next write opens a connection at the set level
            self._forget_written()
            self._data_version = None  # a new connection counts data_version afresh

    def _commit(
        self,
        conn: sqlite3.Connection,
        run: RunInfo,
        requests: Sequence[AppendRequest],
        now_us: int,
        seen: int,
        *,
        wait: bool,
    ) -> CommitOutcome:
        # A group that no request needs synced on its own (AppendRequest.sync) commits
        # at NORMAL under durability "full": the WAL is synced as a whole by the next
        # FULL commit. The level can only change outside a transaction; it is set back
        # at once, and a connection that cannot be set back is dropped, never reused at
        # the weaker level.
        lazy = self._synchronous == "FULL" and not any(r.sync for r in requests)
        if self._checkpointer is not None and self._checkpointer.restart_due:
            self._checkpointer.before_commit(conn)  # outside the transaction, as it must be
        if lazy:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with gc_paused(_row_count(requests)):
                self._begin_immediate(conn, wait)
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version == self._data_version and self._head is not None:
                        last_position, last_stream_no = self._head  # nobody else wrote since
                    else:
                        self._last_digest.clear()
                        last_position, last_stream_no, _ = self._read_head(conn)
                    foreign = self._catch_up(conn, run, seen, last_position)
                    outcome = self._plan(conn, run, requests, now_us, last_position, last_stream_no)
                    conn.execute("COMMIT")
                    self._data_version = version
                    self._head = (outcome.head, outcome.last_stream_no)
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    self._forget_written()  # tentative heads may have leaked in; start afresh
                    raise
                outcome.foreign = foreign
                return outcome
        finally:
            if lazy:
                self._restore_synchronous(conn)

    def _read_head(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        """(last position, last stream number, last run number) of the log."""
        row = conn.execute(SELECT_HEAD).fetchone()
        if row is None:
            raise CorruptDatabaseError(f"{self._label}: the head row of the log is missing")
        return row  # type: ignore[no-any-return]

    def _catch_up(
        self, conn: sqlite3.Connection, run: RunInfo, seen: int, last_position: int
    ) -> list[Recorded]:
        """This run's records that other writers committed after position ``seen``.

        They go to the feed first (so projections apply records in position order)
        and refresh the stream head cache.
        """
        if last_position == seen:
            return []
        rows = conn.execute(
            "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version, r.data,"
            " r.recorded_at_us, r.run_no, r.digest, r.stream_no FROM lionstore_records r"
            " JOIN lionstore_streams s ON s.stream_no = r.stream_no"
            " WHERE r.run_no = ? AND r.position > ? ORDER BY r.position",
            (run.run_no, seen),
        ).fetchall()
        cache, old = self._streams, self._streams_old
        if self._streams_run == run.run_no:
            for row in rows:
                if row[1] in cache or row[1] in old:
                    cache[row[1]] = (row[9], row[2])
        # Checked as any read is: another process wrote these rows into a file
        # that is untrusted input, so each column's type is checked here too.
        return list(self._rows.records([r[:9] for r in rows], {run.run_no: run.run_id}))

    def _run_digest(self, conn: sqlite3.Connection, run: RunInfo) -> str:
        """Digest of the run's last record (the chain's tip)."""
        tip = self._last_digest.get(run.run_no)
        if tip is None:
            row = conn.execute(
                "SELECT digest FROM lionstore_records WHERE run_no = ?"
                " ORDER BY position DESC LIMIT 1",
                (run.run_no,),
            ).fetchone()
            tip = row[0] if row else chain_start(run.run_id)
        return tip

    def _look_up_streams(
        self, conn: sqlite3.Connection, run_no: int, stream_ids: Collection[str]
    ) -> dict[str, tuple[int, int]]:
        """stream_id -> (stream_no, version) for those of ``stream_ids`` that exist."""
        found: dict[str, tuple[int, int]] = {}
        missing = list(stream_ids)
        for i in range(0, len(missing), _CHUNK):
            chunk = missing[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for sid, stream_no, version in conn.execute(
                "SELECT s.stream_id, s.stream_no,"
                " (SELECT max(r.stream_version) FROM lionstore_records r"
                "  WHERE r.stream_no = s.stream_no)"
                f" FROM lionstore_streams s WHERE s.run_no = ? AND s.stream_id IN ({marks})",
                (run_no, *chunk),
            ):
                found[sid] = (stream_no, version or 0)
        return found

    def _plan(
        self,
        conn: sqlite3.Connection,
        run: RunInfo,
        requests: Sequence[AppendRequest],
        now_us: int,
        last_position: int,
        last_stream_no: int,
    ) -> CommitOutcome:
        """Check, number and insert the requests' records.

        A stream the head cache does not hold is, nearly always, a new one. So the
        first attempt looks up only the uncached streams whose expected version is
        checked, takes the other uncached streams for new, and lets the insert of
        the new stream rows tell: if one of them exists after all (written before
        this writer cached it, by another process, or evicted from the cache), the
        insert is undone and the plan is made again with every uncached stream
        looked up, which is what it is then sure to need.
        """
        try:
            return self._plan_once(
                conn, run, requests, now_us, last_position, last_stream_no, look_up_all=False
            )
        except _StreamExistsError:
            return self._plan_once(
                conn, run, requests, now_us, last_position, last_stream_no, look_up_all=True
            )

    def _plan_once(
        self,
        conn: sqlite3.Connection,
        run: RunInfo,
        requests: Sequence[AppendRequest],
        now_us: int,
        last_position: int,
        last_stream_no: int,
        *,
        look_up_all: bool,
    ) -> CommitOutcome:
        run_no = run.run_no
        if self._streams_run != run_no:
            self._forget_streams()
            self._streams_run = run_no
        cache, old = self._streams, self._streams_old
        unknown = self._streams_to_look_up(requests, look_up_all)
        found = self._look_up_streams(conn, run_no, unknown) if unknown else {}

        def known(sid: str) -> Head | None:
            return cache.get(sid) or old.get(sid) or found.get(sid)

        plan = Plan(last_position, last_stream_no, known)
        plan.add_all(requests)
        tip = self._run_digest(conn, run)
        digests = plan.digests(tip, now_us)
        outcome = plan.outcome(run.run_id, now_us, digests)
        self._write_plan(conn, run_no, plan, now_us, digests, checked=look_up_all)
        self._last_digest[run_no] = digests[-1] if digests else tip
        cache.update(plan.heads)
        if len(cache) >= _CACHE_SIZE // 2:  # next generation
            self._streams_old, self._streams = cache, {}
        return outcome

    def _streams_to_look_up(self, requests: Sequence[AppendRequest], look_up_all: bool) -> set[str]:
        """The uncached streams whose head the plan needs from the file: those with an
        expected version (or, with ``look_up_all``, every uncached stream written)."""
        cache, old = self._streams, self._streams_old
        unknown: set[str] = set()
        for req in requests:
            if look_up_all:
                unknown.update(
                    row[0] for row in req.rows if row[0] not in cache and row[0] not in old
                )
            if not req.expected:
                continue
            # A stream expected to be new (version 0) that this request writes to needs
            # no look-up either: inserting its stream row tells.
            rows_to: set[str] | None = None
            for sid, expected in req.expected.items():
                if sid in cache or sid in old:
                    continue
                if expected == 0 and not look_up_all:
                    if rows_to is None:
                        rows_to = {row[0] for row in req.rows}
                    if sid in rows_to:
                        continue
                unknown.add(sid)
        return unknown

    def _write_plan(
        self,
        conn: sqlite3.Connection,
        run_no: int,
        plan: Plan,
        now_us: int,
        digests: list[str],
        *,
        checked: bool,
    ) -> None:
        """Insert the plan's new streams and records (the head row stays as it is:
        see the module's docstring)."""
        if plan.new_streams:
            self._insert_streams(
                conn, run_no, plan.last_stream_no + 1, plan.new_streams, checked=checked
            )
        if not plan.numbers:
            return
        conn.executemany(
            INSERT_RECORD,
            zip(
                range(plan.last_position + 1, plan.position + 1),
                repeat(run_no),
                plan.numbers,
                plan.versions,
                plan.kinds,
                plan.kind_versions,
                plan.texts,
                repeat(now_us),
                digests,
            ),
        )

    def _forget_streams(self) -> None:
        self._streams = {}
        self._streams_old = {}

    def _forget_written(self) -> None:
        """Forget what this writer cached of its own writes (stream heads, the log's
        head, the runs' last digests): the next commit reads them from the file."""
        self._forget_streams()
        self._head = None
        self._last_digest.clear()

    @staticmethod
    def _insert_streams(
        conn: sqlite3.Connection,
        run_no: int,
        first_no: int,
        stream_ids: list[str],
        *,
        checked: bool,
    ) -> None:
        """Insert new streams, numbered from ``first_no`` on. Unless every one was
        ``checked`` to be absent, a failed insert is undone and raises
        _StreamExistsError (the plan is made again, and an error that was not about an
        existing stream comes back from there)."""
        rows = zip(count(first_no), repeat(run_no), stream_ids)
        if checked:
            conn.executemany(INSERT_STREAM, rows)
            return
        before = conn.total_changes
        try:
            conn.executemany(INSERT_STREAM, rows)
        except sqlite3.IntegrityError:
            # executemany stopped at the failing row: the rows before it are in, and
            # they hold exactly the stream numbers first_no, first_no + 1, ... (each
            # took its number, so no other row has it).
            inserted = conn.total_changes - before
            if inserted:
                conn.execute(
                    "DELETE FROM lionstore_streams WHERE stream_no BETWEEN ? AND ?",
                    (first_no, first_no + inserted - 1),
                )
            raise _StreamExistsError from None

    async def tail(
        self, run: RunInfo, seen: int, upto: int | None = None
    ) -> tuple[list[Recorded], int] | None:
        # ``upto`` is not needed: the head is one PRAGMA away on the writer connection
        return await self._write(self._tail, run, seen, inline=True)

    def tail_now(self, run: RunInfo, seen: int) -> tuple[list[Recorded], int] | None:
        def tail(conn: sqlite3.Connection, *, wait: bool) -> tuple[list[Recorded], int]:
            # (None from _tail, "nothing new", must not read as "could not")
            return self._tail(conn, run, seen, wait=wait) or ([], seen)

        return self._write_now(tail, commits=False)

    def _tail(
        self, conn: sqlite3.Connection, run: RunInfo, seen: int, *, wait: bool
    ) -> tuple[list[Recorded], int] | None:
        """Foreign records after ``seen`` (None: certainly none since the last look)."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return None
        try:
            conn.execute("BEGIN")
        except sqlite3.OperationalError:
            if not wait:
                raise BusyError from None
            raise
        try:
            last_position = self._read_head(conn)[0]
            foreign = self._catch_up(conn, run, seen, last_position)
        finally:
            conn.execute("COMMIT")
        # Someone else wrote: what this writer cached about the head is stale.
        self._data_version = version
        self._head = None
        self._last_digest.clear()
        return foreign, last_position
