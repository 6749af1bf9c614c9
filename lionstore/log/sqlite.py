"""The SQLite backend: stdlib ``sqlite3`` connections, each owned by one thread.

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
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import queue
import shutil
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from itertools import count, repeat
from pathlib import Path
from typing import Any, TypeVar

from lionstore._gcpause import gc_paused
from lionstore._loop import others_ready
from lionstore.domain.ids import IDType, is_id, to_id
from lionstore.domain.records import Recorded, RunStarted, encode_data
from lionstore.errors import (
    CorruptDatabaseError,
    StoreError,
    StoreLockedError,
)
from lionstore.log.backend import (
    CHECKPOINT_DIGEST_SQL,
    READ_CHECKPOINT_SQL,
    AppendRequest,
    Checkpoint,
    CommitOutcome,
    LogBackend,
    ReadQuery,
    RunInfo,
    RunScan,
    check_scan,
    checkpoint_from_row,
)
from lionstore.log.chaincheck import ChainCheck, start_chain_check
from lionstore.log.digest import chain_start, record_digest
from lionstore.log.migrate import file_state, readonly_uri
from lionstore.log.plan import Head, Plan, decode_row
from lionstore.log.rows import RowDecoder

__all__ = ["SQLiteBackend", "SQLiteRunScan", "SYNCHRONOUS", "io_error", "translate_sqlite_error"]

T = TypeVar("T")

SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}

_SELECT_RECORDS = (
    "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version, r.data,"
    " r.recorded_at_us, r.run_no, r.digest FROM lionstore_records r"
    " JOIN lionstore_streams s ON s.stream_no = r.stream_no"
)
_INSERT_RECORD = (
    "INSERT INTO lionstore_records (position, run_no, stream_no, stream_version, kind,"
    " kind_version, data, recorded_at_us, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_STREAM = "INSERT INTO lionstore_streams (stream_no, run_no, stream_id) VALUES (?, ?, ?)"
_CHUNK = 500  # SQLite's default host-parameter limit is far above this
_CACHE_SIZE = 100_000
_INLINE_MAX_ROWS = 256  # larger batches commit on the writer thread, off the event loop
_FULL_BELOW = 1 << 20  # bytes free: a disk I/O error with less room than this is a full disk


def translate_sqlite_error(exc: sqlite3.Error, path: str) -> StoreError:
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in message or "busy" in message):
        return StoreLockedError(
            f"{path}: another process held the database lock past the timeout ({message})"
        )
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in message or "not a database" in message
    ):
        return CorruptDatabaseError(f"{path}: the database file is damaged ({message})")
    return io_error(path, message) or StoreError(f"{path}: {message}")


def io_error(path: str, message: str) -> StoreError | None:
    """The error for a SQLite failure to write or read at all (None for other failures).

    SQLite says "database or disk is full" when a write finds no room, but only
    "disk I/O error" when it cannot even create the ``-shm`` index of the WAL, which
    opening a healthy file on a full disk does: with (almost) no room left on the
    file's disk, that is the disk being full too. Neither says anything about the
    file, which is never called damaged for it.
    """
    if "database or disk is full" in message or ("disk I/O error" in message and _disk_full(path)):
        return StoreError(f"{path}: disk full, no room to write ({message})")
    if "disk I/O error" in message:
        return StoreError(f"{path}: input/output error from the operating system ({message})")
    return None


def _disk_full(path: str) -> bool:
    try:
        return shutil.disk_usage(Path(path).parent).free < _FULL_BELOW
    except (OSError, ValueError):
        return False


class _BusyError(Exception):
    """The write lock is held elsewhere and this attempt may not wait."""


class _StreamExistsError(Exception):
    """A stream the plan took for new is in the table: plan again, looking it up."""


# A call for a _Thread: the loop and future to answer, the _Thread, and what to run.
_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", "_Thread", Callable[..., Any], Any]
_Calls = queue.SimpleQueue[_Call | None]

_SERVING: set[tuple[threading.Thread, _Calls]] = set()


@atexit.register
def _finish_at_exit() -> None:
    """Let every _Thread run the calls it was given before the interpreter goes: its
    thread is a daemon, so nothing else waits for it (as concurrent.futures waits for
    its workers)."""
    serving = list(_SERVING)
    for _, calls in serving:
        calls.put(None)
    for thread, _ in serving:
        thread.join()


def _serve(calls: _Calls) -> None:
    """A _Thread's thread: run calls until told to stop (None)."""
    try:
        while (call := calls.get()) is not None:
            _run_call(*call)
            del call
    finally:
        for entry in list(_SERVING):
            if entry[1] is calls:
                _SERVING.discard(entry)


def _run_call(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    owner: _Thread,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    if future.cancelled():  # its caller stopped waiting before it began
        return
    result: Any = None
    error: BaseException | None = None
    try:
        result = fn(owner.connection(), *args)
    except BaseException as exc:
        error = exc
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Thread:
    """One thread running calls on one sqlite3 connection, one at a time, in order.

    A plain daemon thread fed through a SimpleQueue: a call costs the two thread
    wake-ups and little else. (run_in_executor adds a concurrent Future, its locks
    and callbacks and the executor's bookkeeping: some 25 µs more per call here,
    which a commit at durability="full" paid on top of its fsync.)
    """

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._name = name
        self._connect = connect
        self._calls: _Calls = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._shut = False
        self.conn: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = self._connect()
        return self.conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            thread = threading.Thread(
                target=_serve, args=(self._calls,), name=self._name, daemon=True
            )
            _SERVING.add((thread, self._calls))
            thread.start()
            self._thread = thread
            # A _Thread dropped without close() stops its thread.
            weakref.finalize(self, self._calls.put, None)
        self._calls.put((loop, future, self, fn, args))
        return await future

    async def close(self) -> None:
        def _close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self.conn is not None:
            await self.run(_close)
            self.conn = None
        self._shut = True
        if self._thread is not None:
            self._calls.put(None)
            self._thread.join()
            self._thread = None


def _record_filter(query: ReadQuery) -> tuple[str, list[Any]]:
    """The WHERE condition (records ``r`` joined to streams ``s``) and parameters of a
    read."""
    where = ["r.position > ?"]
    params: list[Any] = [query.after]
    if query.run_no is not None:
        where.append("r.run_no = ?")
        params.append(query.run_no)
    if query.upto is not None:
        where.append("r.position <= ?")
        params.append(query.upto)
    if query.until_us is not None:
        where.append("r.recorded_at_us <= ?")
        params.append(query.until_us)
    if query.stream_id is not None:
        where.append("s.stream_id = ?")
        params.append(query.stream_id)
    if query.kinds:
        where.append(f"r.kind IN ({','.join('?' * len(query.kinds))})")
        params.extend(query.kinds)
    return " AND ".join(where), params


class SQLiteBackend(LogBackend):
    """Appends and reads on one SQLite file (WAL)."""

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
        self._writer = _Thread("lionstore-writer", self._connect_writer)
        self._inline = durability == "normal"
        # PRAGMA data_version changes only when *another* connection commits; while it
        # stays put, nothing foreign can have been written and a tail read is skipped.
        self._data_version: int | None = None
        self._head: tuple[int, int] | None = None  # (last_position, last_stream_no) we wrote
        self._last_digest: dict[int, str] = {}  # run_no -> digest of its last record
        self._write_lock: asyncio.Lock | None = None
        self._reader = _Thread("lionstore-reader", self._connect_reader)
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
                    except _BusyError:
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
        except _BusyError:
            return None
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self._label) from exc

    def _begin_immediate(self, conn: sqlite3.Connection, wait: bool) -> None:
        """Take the write lock; in the writer thread, wait up to lock_timeout for it."""
        deadline = time.monotonic() + self._timeout
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
                    raise _BusyError from None
                if time.monotonic() >= deadline:
                    raise
            time.sleep(delay)  # back-off while another process holds the lock
            delay = min(delay * 2, 0.05)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self._immutable and file_state(self.path) != self._file_state:
            # A writer started (or came and went): an immutable connection would not
            # see its records, or see them torn. Open again, through its -wal if any.
            stale, self._reader = self._reader, _Thread("lionstore-reader", self._connect_reader)
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
        rows = sum(len(r.rows) for r in requests)
        return await self._write(
            self._commit, run, requests, now_us, seen, inline=rows <= _INLINE_MAX_ROWS
        )

    def commit_now(
        self, run: RunInfo, requests: Sequence[AppendRequest], now_us: int, seen: int
    ) -> CommitOutcome | None:
        rows = sum(len(r.rows) for r in requests) if len(requests) > 1 else len(requests[0].rows)
        if rows > _INLINE_MAX_ROWS:
            return None
        return self._write_now(self._commit, run, requests, now_us, seen)

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
        with gc_paused(sum(len(r.rows) for r in requests)):
            return self._commit_paused(conn, run, requests, now_us, seen, wait=wait)

    def _commit_paused(
        self,
        conn: sqlite3.Connection,
        run: RunInfo,
        requests: Sequence[AppendRequest],
        now_us: int,
        seen: int,
        *,
        wait: bool,
    ) -> CommitOutcome:
        self._begin_immediate(conn, wait)
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version and self._head is not None:
                last_position, last_stream_no = self._head  # nobody else wrote since
            else:
                self._last_digest.clear()
                last_position, last_stream_no = conn.execute(
                    "SELECT last_position, last_stream_no FROM lionstore_head WHERE id = 1"
                ).fetchone()
            foreign = self._catch_up(conn, run, seen, last_position)
            outcome = self._plan(conn, run, requests, now_us, last_position, last_stream_no)
            conn.execute("COMMIT")
            self._data_version = version
            self._head = (outcome.head, outcome.last_stream_no)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._forget_streams()  # tentative heads may have leaked in; start afresh
            self._head = None
            self._last_digest.clear()
            raise
        outcome.foreign = foreign
        return outcome

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
        foreign: list[Recorded] = []
        cache, old = self._streams, self._streams_old
        cached = self._streams_run == run.run_no
        for row in rows:
            if cached and (row[1] in cache or row[1] in old):
                cache[row[1]] = (row[9], row[2])
            foreign.append(decode_row(row[:9], run.run_id))
        return foreign

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
        """Insert the plan's new streams and records, and move the head row."""
        if plan.new_streams:
            self._insert_streams(
                conn, run_no, plan.last_stream_no + 1, plan.new_streams, checked=checked
            )
        if not plan.numbers:
            return
        position = plan.position
        conn.executemany(
            _INSERT_RECORD,
            zip(
                range(plan.last_position + 1, position + 1),
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
        conn.execute(
            "UPDATE lionstore_head SET last_position = ?, last_stream_no = ? WHERE id = 1",
            (position, plan.stream_no),
        )

    def _forget_streams(self) -> None:
        self._streams = {}
        self._streams_old = {}

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
            conn.executemany(_INSERT_STREAM, rows)
            return
        before = conn.total_changes
        try:
            conn.executemany(_INSERT_STREAM, rows)
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

    async def tail(self, run: RunInfo, seen: int) -> tuple[list[Recorded], int] | None:
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
                raise _BusyError from None
            raise
        try:
            (last_position,) = conn.execute(
                "SELECT last_position FROM lionstore_head WHERE id = 1"
            ).fetchone()
            foreign = self._catch_up(conn, run, seen, last_position)
        finally:
            conn.execute("COMMIT")
        # Someone else wrote: what this writer cached about the head is stale.
        self._data_version = version
        self._head = None
        self._last_digest.clear()
        return foreign, last_position

    # -- runs ------------------------------------------------------------------------

    async def create_run(
        self,
        label: str | None,
        now_us: int,
        run_id: IDType | None = None,
        parent: RunInfo | None = None,
        forked_at: int | None = None,
    ) -> RunInfo:
        return await self._write(self._create_run, label, now_us, run_id, parent, forked_at)

    def _create_run(
        self,
        conn: sqlite3.Connection,
        label: str | None,
        now_us: int,
        run_id: IDType | None,
        parent: RunInfo | None,
        forked_at: int | None,
        *,
        wait: bool,
    ) -> RunInfo:
        run_id = run_id or IDType.create()
        self._begin_immediate(conn, wait)
        try:
            last_position, last_stream_no, last_run_no = conn.execute(
                "SELECT last_position, last_stream_no, last_run_no FROM lionstore_head"
            ).fetchone()
            run_no = last_run_no + 1
            conn.execute(
                "INSERT INTO lionstore_runs (run_no, run_id, label, started_at_us,"
                " parent_run_no, forked_at_position, parent_run_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_no,
                    run_id,
                    label,
                    now_us,
                    parent.run_no if parent else None,
                    forked_at,
                    parent.run_id if parent else None,
                ),
            )
            # run.started is the first record of every run, a fork's too.
            stream_no = last_stream_no + 1
            position = last_position + 1
            text = encode_data(
                RunStarted(
                    label=label,
                    parent_run_id=parent.run_id if parent else None,
                    forked_at_position=forked_at,
                )
            )
            conn.execute(_INSERT_STREAM, (stream_no, run_no, run_id))
            digest = record_digest(
                chain_start(run_id), position, run_id, 1, RunStarted.kind, 1, now_us, text
            )
            conn.execute(
                _INSERT_RECORD,
                (position, run_no, stream_no, 1, RunStarted.kind, 1, text, now_us, digest),
            )
            if parent is not None and forked_at is not None:
                position, stream_no = self._copy_prefix(
                    conn, parent.run_no, run_no, forked_at, position, stream_no, digest
                )
            conn.execute(
                "UPDATE lionstore_head SET last_position = ?, last_stream_no = ?,"
                " last_run_no = ? WHERE id = 1",
                (position, stream_no, run_no),
            )
            conn.execute("COMMIT")
            self._head = None  # our own write: data_version will not tell
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._forget_streams()
            raise
        return RunInfo(
            run_no,
            run_id,
            label,
            now_us,
            parent.run_id if parent else None,
            forked_at,
        )

    def _copy_prefix(
        self,
        conn: sqlite3.Connection,
        from_run: int,
        to_run: int,
        upto: int,
        position: int,
        stream_no: int,
        digest: str,
    ) -> tuple[int, int]:
        """Copy ``from_run``'s records up to position ``upto`` into ``to_run`` (a fork).

        The run's own ``run.started`` record is not copied; the fork gets its own.
        The copies get new positions, so the fork's digest chain is its own.
        """
        mapping: dict[int, int] = {}
        rows = conn.execute(
            "SELECT r.stream_no, s.stream_id, r.stream_version, r.kind, r.kind_version,"
            " r.data, r.recorded_at_us FROM lionstore_records r"
            " JOIN lionstore_streams s ON s.stream_no = r.stream_no"
            " WHERE r.run_no = ? AND r.position <= ? AND r.kind != ? ORDER BY r.position",
            (from_run, upto, RunStarted.kind),
        )
        new_streams: list[tuple[int, int, str]] = []
        new_records: list[tuple[Any, ...]] = []
        for old_no, sid, version, kind, kind_version, data, at_us in rows:
            new_no = mapping.get(old_no)
            if new_no is None:
                stream_no += 1
                new_no = mapping[old_no] = stream_no
                new_streams.append((new_no, to_run, sid))
            position += 1
            digest = record_digest(digest, position, sid, version, kind, kind_version, at_us, data)
            new_records.append(
                (position, to_run, new_no, version, kind, kind_version, data, at_us, digest)
            )
        conn.executemany(_INSERT_STREAM, new_streams)
        conn.executemany(_INSERT_RECORD, new_records)
        return position, stream_no

    async def list_runs(self) -> list[RunInfo]:
        return await self._read(self._list_runs)

    def _list_runs(self, conn: sqlite3.Connection) -> list[RunInfo]:
        rows = conn.execute(
            "SELECT r.run_no, r.run_id, r.label, r.started_at_us,"
            " COALESCE(p.run_id, r.parent_run_id),"
            " r.forked_at_position FROM lionstore_runs r"
            " LEFT JOIN lionstore_runs p ON p.run_no = r.parent_run_no ORDER BY r.run_no"
        ).fetchall()
        return [
            RunInfo(no, to_id(rid), label, at, to_id(parent) if parent else None, forked)
            for no, rid, label, at, parent, forked in rows
        ]

    async def find_run(self, ref: str) -> RunInfo | None:
        run_id = to_id(ref) if is_id(ref) else None  # any spelling of the UUID
        for info in await self.list_runs():
            if info.run_id == run_id or info.label == ref:
                return info
        return None

    # -- reads -----------------------------------------------------------------------

    async def head_position(self) -> int:
        return await self._read(
            lambda conn: conn.execute(
                "SELECT last_position FROM lionstore_head WHERE id = 1"
            ).fetchone()[0]
        )

    async def last_position(
        self, run_no: int, upto: int, until_us: int | None = None
    ) -> int | None:
        # Backwards along the table's own b-tree (position is the rowid) from ``upto``:
        # one row for the run being written, a few more past other runs' records.
        sql = (
            "SELECT position FROM lionstore_records NOT INDEXED WHERE position <= ? AND run_no = ?"
        )
        params: list[Any] = [upto, run_no]
        if until_us is not None:
            sql += " AND recorded_at_us <= ?"
            params.append(until_us)
        row = await self._read(
            lambda conn: conn.execute(f"{sql} ORDER BY position DESC LIMIT 1", params).fetchone()
        )
        return 0 if row is None else int(row[0])

    async def check_head(self) -> None:
        await self._read(self._check_head)

    def _check_head(self, conn: sqlite3.Connection) -> None:
        # One statement, so one snapshot: another process's commit cannot land between
        # reading the head and reading the tables. Each max() is a look-up at the end of
        # a primary key (a rowid), not of an index.
        row = conn.execute(
            "SELECT h.last_position, h.last_stream_no, h.last_run_no,"
            " (SELECT max(position) FROM lionstore_records),"
            " (SELECT max(stream_no) FROM lionstore_streams),"
            " (SELECT max(run_no) FROM lionstore_runs)"
            " FROM lionstore_head h WHERE h.id = 1"
        ).fetchone()
        if row is None:
            raise CorruptDatabaseError(f"{self._label}: the head row of the log is missing")
        for what, head, last in zip(("position", "stream", "run"), row[:3], row[3:], strict=True):
            if (last or 0) > head:
                raise CorruptDatabaseError(
                    f"{self._label}: the head row says the last {what} is {head}, but the"
                    f" file holds {what} {last}: the file was edited or damaged"
                )

    async def read_rows(self, query: ReadQuery, limit: int) -> tuple[list[Any], dict[int, IDType]]:
        return await self._read(self._read_rows, query, limit)

    def decode_row(self, row: Any, run_ids: dict[int, IDType]) -> Recorded:
        return self._rows.decode(row, run_ids)

    def decode_rows(self, rows: Sequence[Any], run_ids: dict[int, IDType]) -> Iterator[Recorded]:
        return self._rows.records(rows, run_ids)

    def _read_rows(
        self, conn: sqlite3.Connection, query: ReadQuery, limit: int
    ) -> tuple[list[Any], dict[int, IDType]]:
        where, params = _record_filter(query)
        sql = f"{_SELECT_RECORDS} WHERE {where} ORDER BY r.position LIMIT ?"
        params.append(limit)
        rows = conn.execute(sql, params).fetchall()
        if not rows:
            return [], self._run_ids
        if query.run_no is not None:
            # The rows are of that run (the WHERE says so); decode_row(s) checks every
            # row's run all the same, so one that is not (read through a damaged
            # index) still gives CorruptDatabaseError. Only that run needs knowing.
            stale = query.run_no not in self._run_ids
        else:
            stale = not self._run_ids or any(row[7] not in self._run_ids for row in rows)
        if stale:
            self._run_ids = {
                no: to_id(rid)
                for no, rid in conn.execute("SELECT run_no, run_id FROM lionstore_runs")
            }
            for row in rows:
                if row[7] not in self._run_ids:
                    raise CorruptDatabaseError(
                        f"{self._label}: the record at position {row[0]} names run {row[7]},"
                        " which is not in the file: the file or one of its indexes is damaged"
                    )
        return rows, self._run_ids

    def scan_run(self, query: ReadQuery, page_size: int) -> SQLiteRunScan:
        check_scan(query, page_size)
        return SQLiteRunScan(self, query, page_size)

    async def start_chain_check(self, query: ReadQuery, tip: str) -> ChainCheck | None:
        # the child opens the file as the store's reader does (_connect_reader)
        if self._readonly:
            uri = readonly_uri(self.path)[0]
        else:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
        where, params = _record_filter(query)
        return await start_chain_check(uri, where, params, tip, self._label)

    # -- checkpoints -----------------------------------------------------------------

    async def read_checkpoint(self, run_no: int, name: str) -> Checkpoint | None:
        return await self._read(self._read_checkpoint, run_no, name)

    @staticmethod
    def _read_checkpoint(conn: sqlite3.Connection, run_no: int, name: str) -> Checkpoint | None:
        row = conn.execute(READ_CHECKPOINT_SQL.format("?", "?"), (run_no, name)).fetchone()
        return checkpoint_from_row(name, row)

    async def write_checkpoint(
        self,
        run_no: int,
        name: str,
        position: int,
        format_version: int,
        snapshot: str,
        now_us: int,
    ) -> bool:
        return await self._write(
            self._write_checkpoint, run_no, name, position, format_version, snapshot, now_us
        )

    def _write_checkpoint(
        self,
        conn: sqlite3.Connection,
        run_no: int,
        name: str,
        position: int,
        format_version: int,
        snapshot: str,
        now_us: int,
        *,
        wait: bool,
    ) -> bool:
        self._begin_immediate(conn, wait)
        try:
            row = conn.execute(
                CHECKPOINT_DIGEST_SQL.format("?", "?"), (run_no, position)
            ).fetchone()
            if row is not None:
                conn.execute(
                    "DELETE FROM lionstore_checkpoints WHERE run_no = ? AND name = ?",
                    (run_no, name),
                )
                conn.execute(
                    "INSERT INTO lionstore_checkpoints (run_no, name, position, digest,"
                    " format_version, snapshot, written_at_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run_no, name, position, row[0], format_version, snapshot, now_us),
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return row is not None

    # -- retention -------------------------------------------------------------------

    async def delete_run(self, run_no: int) -> int | None:
        """Delete run ``run_no`` whole (records, streams, checkpoints, the run) in one
        transaction; forks of it lose the parent link but keep its id. Returns the
        number of records removed (None: no such run). Positions are not reused."""
        return await self._write(self._delete_run, run_no)

    def _delete_run(self, conn: sqlite3.Connection, run_no: int, *, wait: bool) -> int | None:
        self._begin_immediate(conn, wait)
        try:
            if conn.execute("SELECT 1 FROM lionstore_runs WHERE run_no = ?", (run_no,)).fetchone():
                conn.execute(
                    "UPDATE lionstore_runs SET parent_run_no = NULL WHERE parent_run_no = ?",
                    (run_no,),
                )
                conn.execute("DELETE FROM lionstore_checkpoints WHERE run_no = ?", (run_no,))
                removed = conn.execute(
                    "DELETE FROM lionstore_records WHERE run_no = ?", (run_no,)
                ).rowcount
                conn.execute("DELETE FROM lionstore_streams WHERE run_no = ?", (run_no,))
                conn.execute("DELETE FROM lionstore_runs WHERE run_no = ?", (run_no,))
            else:
                removed = None
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._forget_streams()
        self._head = None
        self._last_digest.pop(run_no, None)
        return removed

    async def close(self) -> None:
        # The reader first: the last connection to close folds the WAL back into the
        # database file and removes the -wal and -shm files.
        await self._reader.close()
        await self._writer.close()


# A scan row: (position, stream_no, stream_version, kind, kind_version, data, stream_id
# or None, recorded_at_us, digest). The stream's text id comes only with its version 1
# record (every stream belongs to one run and starts there); RunScan.stream_id finds
# any other.
_SCAN_RECORDS = (
    "SELECT r.position, r.stream_no, r.stream_version, r.kind, r.kind_version, r.data,"
    " CASE WHEN r.stream_version = 1 THEN s.stream_id END, r.recorded_at_us, r.digest"
    " FROM lionstore_records r"
    " JOIN lionstore_streams s ON s.stream_no = r.stream_no"
)


class SQLiteRunScan(RunScan):
    """A :class:`RunScan` read on the calling thread through a connection of its own.

    This is the read under ``lionstore.replay.rebuild``, which folds a whole run and
    does nothing else meanwhile. Going through the reader thread cost it more than
    it saved: sqlite3 gives up the GIL for every row it steps, and a thread that
    wants it back while the event loop thread is folding waits out the interpreter's
    switch interval (5 ms), so a read ahead on the reader thread advanced a row per
    switch and the fold mostly waited for pages anyway, plus a thread hop per page.
    One statement, fetched in pages, reads one snapshot of the file (WAL): the scan
    sees the run as it was when it began, however long the fold takes.

    Rows bring the stream's text id only with its version 1 record (every stream
    belongs to one run and starts there), and none of the columns a fold never reads
    (time, run, digest): the fetch costs about 0.75 of the full record row's.
    """

    def __init__(self, backend: SQLiteBackend, query: ReadQuery, page_size: int) -> None:
        self._label = backend._label
        self._page_size = page_size
        where, self._params = _record_filter(query)
        self._sql = f"{_SCAN_RECORDS} WHERE {where} ORDER BY r.position"
        try:
            self._conn: sqlite3.Connection | None = backend._connect_reader()
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self._label) from exc
        self._cursor: sqlite3.Cursor | None = None

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._cursor = None

    def _open_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self._label}: the scan is closed")
        return self._conn

    async def open(self) -> None:
        conn = self._open_conn()
        if self._cursor is None:
            try:
                self._cursor = conn.execute(self._sql, self._params)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self._label) from exc

    async def next_page(self) -> list[Any]:
        if self._cursor is None:
            await self.open()
        assert self._cursor is not None
        try:
            rows: list[Any] = self._cursor.fetchmany(self._page_size)
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self._label) from exc
        return rows

    def stream_id(self, stream_no: int) -> IDType:
        conn = self._open_conn()
        try:
            row = conn.execute(
                "SELECT stream_id FROM lionstore_streams WHERE stream_no = ?", (stream_no,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, self._label) from exc
        if row is None:
            raise CorruptDatabaseError(
                f"{self._label}: a record names stream {stream_no}, which is missing"
            )
        return str.__new__(IDType, row[0])
