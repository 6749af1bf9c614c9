"""The PostgreSQL backend: asyncpg connections, positions serialized by a row lock.

Like the SQLite backend, the hot path talks to the driver directly (asyncpg here);
Alembic and SQLAlchemy are used only for migrations and the schema check at open
(``migrate.py``). One writer connection per backend runs the write transactions,
one at a time (an asyncio lock); reads go through a small pool of read-only
connections.

Ordering
    Every write transaction starts by locking the single ``lionstore_head`` row
    (``SELECT ... FOR UPDATE``) and numbers its records from ``last_position`` + 1.
    Writers in every process therefore commit one after another, positions are
    gapless and equal commit order, and a reader that has seen position ``p`` can
    never later find a record below ``p`` commit (the failure mode of a sequence
    column, shared/reference/ecosystem-notes.md section 1.5). Under READ COMMITTED
    each statement after the lock takes a fresh snapshot, so the transaction sees
    everything the previous lock holder committed.

One round trip per commit
    A commit is one call of ``pg_temp.lionstore_commit``, a function each writer
    session makes when it connects (``_FUNCTION``): it takes the head lock, checks the
    stream heads the client planned from, numbers, chains and writes, in one statement
    that is its own transaction. A stale stream head costs one more call; the locking
    transaction (``_commit_locked``) remains for a server without PL/pgSQL and for
    streams that keep moving. docs/design.md, PostgreSQL, says why this is safe.

Claim turns
    :meth:`PostgresBackend.take_claim_turn`: an advisory lock per executor that worker
    processes take one at a time from a cycle's sync to its claim's commit, so their
    claims are disjoint instead of racing for the same queue head.

Waking idle workers
    By polling: :meth:`PostgresBackend.tail` (``Store.sync()``) reads the head row,
    one indexed single-row query, and only reads records when it moved. The
    executor and exchange loops already call ``sync()`` every refresh interval, so
    a worker notices foreign work within that interval. LISTEN/NOTIFY would need a
    dedicated listening connection per process and a Store hook to wake the loops;
    a notification lost with a dropped connection would delay a worker until its
    next poll anyway, so the poll is what guarantees progress either way.

A server that restarts
    A connection the server dropped (a restart, a fast shutdown, a failover, a
    network cut) is not an error a caller sees until ``reconnect_timeout`` (an
    option of ``lionstore.open``, 60 s by default) has passed: :func:`is_disconnect`
    tells such errors (SQLSTATE class 08, 57P01-57P03, a socket error, asyncpg's
    "connection is closed" and "another operation is in progress" on a connection
    left broken) from the rest, the connection is dropped, and the call is tried
    again after a back-off of 0.05 s doubling up to 2 s. Reads are simply read
    again. A write transaction is redone only when it is known to be whole or
    absent: cut off before its COMMIT was sent, the server rolled it back; cut off
    during the COMMIT, its outcome is unknown, so it is first looked for (an
    append by the digest of its last record at the position it took, a new run by
    its id) and redone only if absent. A record is never appended twice. A
    :class:`PostgresRunScan` (one snapshot) cut off is not resumed: it raises.

Owner locks
    A processor that claims events holds a session-level advisory lock named after
    it (``pg_try_advisory_lock(LION, hash(owner))``) on a connection of its own, for
    as long as its store is open; a watchdog takes it again after the connection is
    lost (a restart drops every session's locks). Another process asks whether the
    lock is free (it takes it and gives it back at once): free means no live session
    of that owner, which is how ``lionstore.repositories.leases`` tells a dead owner
    on another machine. A hash collision can only make a dead owner look alive (its
    claims then wait for their leases), never the reverse.

Durability
    ``"normal"`` leaves the server's ``synchronous_commit`` as configured (on by
    default: a returned append survives a server crash); ``"full"`` sets it to
    ``on`` for the writer connection whatever the server default is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

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
from lionstore.log.digest import chain_start, record_digest
from lionstore.log.plan import Plan, decode_row
from lionstore.log.rows import RowDecoder

__all__ = [
    "with_reconnect",
    "PostgresBackend",
    "PostgresRunScan",
    "asyncpg_dsn",
    "display_url",
    "is_disconnect",
    "owner_lock_key",
    "require_asyncpg",
]

T = TypeVar("T")
log = logging.getLogger("lionstore.postgres")

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0
# SQLSTATEs that mean the session (not the statement) is gone: admin_shutdown,
# crash_shutdown, cannot_connect_now; class 08 is connection exceptions.
_GONE_STATES = frozenset({"57P01", "57P02", "57P03"})
_GONE_MESSAGES = (
    "connection is closed",
    "connection was closed",
    "another operation",  # "cannot switch to state N; another operation (M) is in progress"
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
)

_COLUMNS = (
    "r.position, s.stream_id, r.stream_version, r.kind, r.kind_version, r.data,"
    " r.recorded_at_us, r.run_no, r.digest"
)
_FROM = " FROM lionstore_records r JOIN lionstore_streams s ON s.stream_no = r.stream_no"
_LOCK_HEAD = (
    "SELECT last_position, last_stream_no, last_run_no FROM lionstore_head WHERE id = 1 FOR UPDATE"
)
# The lock, and the heads of the streams a commit names that the cache lacks, in one
# round trip. The look-up reads the statement's snapshot, taken before the lock was
# granted: it is used only when that snapshot's head equals the locked row's, i.e. no
# writer committed in between (every write moves the head in its own transaction).
_LOCK_AND_LOOK_UP = """
SELECT h.last_position, h.last_stream_no, h.last_run_no,
    (SELECT x.last_position FROM lionstore_head x WHERE x.id = 1),
    ARRAY(SELECT (s.stream_id, s.stream_no,
                  coalesce((SELECT max(r.stream_version) FROM lionstore_records r
                            WHERE r.stream_no = s.stream_no), 0))
          FROM lionstore_streams s WHERE s.run_no = $1 AND s.stream_id = ANY($2::text[]))
FROM lionstore_head h WHERE h.id = 1 FOR UPDATE OF h
"""
# One statement writes a transaction's new streams and records and moves the head.
# (The records' foreign keys are checked at the end of the statement, when the
# streams are in.)
_WRITE = """
WITH new_streams AS (
    INSERT INTO lionstore_streams (stream_no, run_no, stream_id)
    SELECT n, $1, sid FROM unnest($2::bigint[], $3::text[]) AS t(n, sid)
), new_records AS (
    INSERT INTO lionstore_records (position, run_no, stream_no, stream_version, kind,
                                   kind_version, data, recorded_at_us, digest)
    SELECT p, $1, n, v, k, kv, d, at, g
    FROM unnest($4::bigint[], $5::bigint[], $6::int[], $7::text[], $8::smallint[],
                $9::text[], $10::bigint[], $11::text[]) AS t(p, n, v, k, kv, d, at, g)
)
UPDATE lionstore_head SET last_position = $12, last_stream_no = $13, last_run_no = $14
WHERE id = 1
"""
# New stream numbers in a plan made before the head is known: above this (stream
# numbers never get near it), the function maps them to last_stream_no + 1, + 2, ...
_OFFSET = 1 << 62
# A commit in one round trip: a function in the writer session's temporary schema,
# made when the connection is (no schema change: the function is always the code's own
# version). It takes the head lock, checks that every stream the client planned from is
# where the client believed (its number and version; absent: number 0), and then
# numbers, chains (the digest, computed as lionstore.log.digest does), writes the
# records and moves the head; or, when a belief is stale, writes nothing and returns
# the streams' true heads. Either way it returns the run's records other writers
# committed after p_seen. One statement outside a transaction block is its own
# transaction: no BEGIN, no COMMIT.
_FUNCTION = f"""
CREATE OR REPLACE FUNCTION pg_temp.lionstore_commit(
    p_run integer, p_seen bigint, p_start text,
    p_check_sids text[], p_check_nos bigint[], p_check_versions integer[],
    p_new_sids text[], p_nos bigint[], p_sids text[], p_versions integer[],
    p_kinds text[], p_kvs smallint[], p_texts text[], p_at bigint,
    OUT o_stale boolean, OUT o_position bigint, OUT o_stream_no bigint,
    OUT o_digests text[], OUT h_sids text[], OUT h_nos bigint[], OUT h_versions integer[],
    OUT f_positions bigint[], OUT f_sids text[], OUT f_versions integer[],
    OUT f_kinds text[], OUT f_kvs smallint[], OUT f_texts text[], OUT f_ats bigint[],
    OUT f_digests text[], OUT f_nos bigint[])
LANGUAGE plpgsql AS $body$
DECLARE
    v_prev text;
    r record;
BEGIN
    SELECT last_position, last_stream_no INTO o_position, o_stream_no
    FROM lionstore_head WHERE id = 1 FOR UPDATE;
    SELECT coalesce(bool_or(coalesce(s.stream_no, 0) <> b.no
                            OR coalesce(v.version, 0) <> b.version), false),
           array_agg(b.sid), array_agg(coalesce(s.stream_no, 0)),
           array_agg(coalesce(v.version, 0))
    INTO o_stale, h_sids, h_nos, h_versions
    FROM unnest(p_check_sids, p_check_nos, p_check_versions) AS b(sid, no, version)
    LEFT JOIN lionstore_streams s ON s.run_no = p_run AND s.stream_id = b.sid
    LEFT JOIN LATERAL (SELECT max(x.stream_version) AS version FROM lionstore_records x
                       WHERE x.stream_no = s.stream_no) v ON true;
    IF o_position > p_seen THEN
        SELECT array_agg(q.position ORDER BY q.position),
               array_agg(q.stream_id ORDER BY q.position),
               array_agg(q.stream_version ORDER BY q.position),
               array_agg(q.kind ORDER BY q.position),
               array_agg(q.kind_version ORDER BY q.position),
               array_agg(q.data ORDER BY q.position),
               array_agg(q.recorded_at_us ORDER BY q.position),
               array_agg(q.digest ORDER BY q.position),
               array_agg(q.stream_no ORDER BY q.position)
        INTO f_positions, f_sids, f_versions, f_kinds, f_kvs, f_texts, f_ats, f_digests, f_nos
        FROM (SELECT x.position, s.stream_id, x.stream_version, x.kind, x.kind_version,
                     x.data, x.recorded_at_us, x.digest, x.stream_no
              FROM lionstore_records x JOIN lionstore_streams s ON s.stream_no = x.stream_no
              WHERE x.run_no = p_run AND x.position > p_seen AND x.position <= o_position) q;
    END IF;
    IF o_stale THEN
        RETURN;
    END IF;
    h_sids := NULL; h_nos := NULL; h_versions := NULL;
    IF coalesce(array_length(p_sids, 1), 0) = 0 THEN
        RETURN;
    END IF;
    v_prev := coalesce((SELECT x.digest FROM lionstore_records x WHERE x.run_no = p_run
                        ORDER BY x.position DESC LIMIT 1), p_start);
    o_digests := ARRAY[]::text[];
    FOR r IN SELECT * FROM unnest(p_sids, p_versions, p_kinds, p_kvs, p_texts)
             WITH ORDINALITY AS t(sid, version, kind, kv, txt, i) LOOP
        v_prev := left(encode(sha256(convert_to(
            v_prev || '|' || (o_position + r.i) || '|' || r.sid || '|' || r.version || '|'
            || r.kind || '|' || r.kv || '|' || p_at || '|' || r.txt, 'UTF8')), 'hex'), 32);
        o_digests := o_digests || v_prev;
    END LOOP;
    INSERT INTO lionstore_streams (stream_no, run_no, stream_id)
    SELECT o_stream_no + t.i, p_run, t.sid FROM unnest(p_new_sids) WITH ORDINALITY AS t(sid, i);
    INSERT INTO lionstore_records (position, run_no, stream_no, stream_version, kind,
                                   kind_version, data, recorded_at_us, digest)
    SELECT o_position + t.i, p_run,
           CASE WHEN t.n > {_OFFSET} THEN o_stream_no + (t.n - {_OFFSET}) ELSE t.n END,
           t.version, t.kind, t.kv, t.txt, p_at, t.digest
    FROM unnest(p_nos, p_versions, p_kinds, p_kvs, p_texts, o_digests)
         WITH ORDINALITY AS t(n, version, kind, kv, txt, digest, i);
    UPDATE lionstore_head
    SET last_position = o_position + array_length(p_sids, 1),
        last_stream_no = o_stream_no + coalesce(array_length(p_new_sids, 1), 0)
    WHERE id = 1;
END
$body$
"""
_CALL = (
    "SELECT * FROM pg_temp.lionstore_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
    " $11, $12, $13, $14)"
)
# A belief found stale this many times in a row (streams another writer keeps moving):
# the commit is made the locking way, which cannot be stale.
_MAX_STALE = 3
_SELECT_RUNS = (
    "SELECT r.run_no, r.run_id, r.label, r.started_at_us,"
    " coalesce(p.run_id, r.parent_run_id), r.forked_at_position"
    " FROM lionstore_runs r LEFT JOIN lionstore_runs p ON p.run_no = r.parent_run_no"
)
_LOCK_CLASS = 0x4C494F4E  # "LION": the first key of lionstore's advisory locks
_TURN_CLASS = 0x4C495455  # "LITU": the first key of executors' claim turns
_TURN_WAIT = 2.0  # seconds a claim turn is waited for before claiming without it
_LOCK_WATCH_INTERVAL = 0.25  # how often a lost owner-lock connection is looked for
_MAX_CACHED_STREAMS = 100_000
_POOL_SIZE = 4


def asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg takes, from a SQLAlchemy URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return f"postgresql://{rest}"


def display_url(url: str) -> str:
    """``url`` as shown in messages: the password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: shown as given, it holds no recognisable password
        return url


def require_asyncpg() -> None:
    """Raise StoreError naming the extra to install when asyncpg is missing."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        raise StoreError("PostgreSQL needs asyncpg: pip install 'lionstore[postgres]'") from None


def _run_info(row: Sequence[Any]) -> RunInfo:
    no, rid, label, at, parent, forked = row
    return RunInfo(no, to_id(rid), label, at, to_id(parent) if parent else None, forked)


class _Rows:
    """The columns of the streams and records one write transaction inserts."""

    def __init__(self) -> None:
        self.stream_nos: list[int] = []
        self.stream_ids: list[str] = []
        self.positions: list[int] = []
        self.record_sids: list[str] = []
        self.numbers: list[int] = []
        self.versions: list[int] = []
        self.kinds: list[str] = []
        self.kind_versions: list[int] = []
        self.texts: list[str] = []
        self.times: list[int] = []
        self.digests: list[str] = []

    def add_stream(self, stream_no: int, stream_id: str) -> None:
        self.stream_nos.append(stream_no)
        self.stream_ids.append(stream_id)

    def add_record(
        self,
        sid: str,
        number: int,
        version: int,
        kind: str,
        kind_version: int,
        text: str,
        at_us: int,
    ) -> None:
        self.record_sids.append(sid)
        self.numbers.append(number)
        self.versions.append(version)
        self.kinds.append(kind)
        self.kind_versions.append(kind_version)
        self.texts.append(text)
        self.times.append(at_us)

    async def write(
        self, conn: Any, run_no: int, first_position: int, head: tuple[int, int, int]
    ) -> None:
        self.positions = list(range(first_position, first_position + len(self.numbers)))
        await conn.execute(
            _WRITE,
            run_no,
            self.stream_nos,
            self.stream_ids,
            self.positions,
            self.numbers,
            self.versions,
            self.kinds,
            self.kind_versions,
            self.texts,
            self.times,
            self.digests,
            *head,
        )


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection or the server went away (so the call may
    succeed on a new connection), rather than that the statement failed."""
    import asyncpg

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the error or its causes
        seen.add(id(current))
        if isinstance(current, asyncpg.PostgresConnectionError | OSError | EOFError):
            return True
        if isinstance(current, asyncpg.PostgresError):
            state = str(getattr(current, "sqlstate", "") or "")
            if state in _GONE_STATES or state.startswith("08"):
                return True
        if type(current).__module__.startswith("asyncpg"):  # InterfaceError, InternalClientError
            text = str(current).lower()
            if any(m in text for m in _GONE_MESSAGES):
                return True
        current = current.__cause__ or current.__context__
    return False


class _Backoff:
    """Waits between attempts on a lost connection, until ``timeout`` has passed since
    the first loss; then the last error is raised."""

    def __init__(self, timeout: float, label: str) -> None:
        self.timeout = timeout
        self.label = label
        self.deadline: float | None = None
        self.delay = _FIRST_BACKOFF
        self.attempts = 0

    async def wait(self, exc: BaseException) -> None:
        """Sleep before the next attempt, or re-raise ``exc`` past the deadline."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.timeout
            log.warning(
                "%s: lost the connection to PostgreSQL (%s); reconnecting for up to %.0f s",
                self.label,
                " ".join(str(exc).split()) or type(exc).__name__,
                self.timeout,
            )
        if now >= self.deadline:
            raise exc
        self.attempts += 1
        await asyncio.sleep(min(self.delay, max(self.deadline - now, 0.0)))
        self.delay = min(self.delay * 2, _MAX_BACKOFF)

    def recovered(self) -> None:
        if self.deadline is not None:
            log.warning("%s: reconnected to PostgreSQL after %d retries", self.label, self.attempts)


async def with_reconnect(call: Callable[[], Awaitable[T]], timeout: float, label: str) -> T:
    """``await call()``, made again after a lost connection or a server that is not
    accepting connections yet (back-off, for up to ``timeout`` seconds; then the last
    error). For calls that only read, or that are whole or absent (opening a store)."""
    backoff = _Backoff(timeout, label)
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not is_disconnect(exc):
                raise
            await backoff.wait(exc)
            continue
        backoff.recovered()
        return result


def owner_lock_key(owner: str) -> int:
    """The second key of processor ``owner``'s advisory lock (a signed 32-bit int)."""
    import hashlib

    return int.from_bytes(
        hashlib.blake2b(owner.encode(), digest_size=4).digest(), "big", signed=True
    )


def _raiser(exc: BaseException) -> Callable[[], Awaitable[Any]]:
    """A call that raises ``exc`` (to translate it as :meth:`PostgresBackend._call` does)."""

    async def fn() -> Any:
        raise exc

    return fn


def _translate(exc: BaseException, label: str) -> BaseException:
    import asyncpg

    if isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        return StoreLockedError(f"{label}: another writer held the log lock past the timeout")
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return StoreError(f"{label}: the store was opened read-only")
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
        return StoreError(f"{label}: {exc}")
    return exc


class PostgresBackend(LogBackend):
    """Appends and reads on one PostgreSQL database (its current schema).

    A method that writes passes an ``async def body(conn)`` to :meth:`_transaction`
    (one transaction on the writer connection, errors translated); one that reads
    takes a connection of :meth:`_readers` through :meth:`_call`.
    """

    def __init__(
        self,
        url: str,
        *,
        label: str,
        durability: str = "normal",
        lock_timeout: float = 30.0,
        readonly: bool = False,
        reconnect_timeout: float = 60.0,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._reconnect_timeout = reconnect_timeout
        self._label = label
        self._durability = durability
        self._lock_timeout = lock_timeout
        self._readonly = readonly
        self._conn: Any = None  # the writer connection, made on first write
        self._pool: Any = None  # read connections, made on first read
        self._write_lock: asyncio.Lock | None = None
        self._one_trip = True  # whether the writer session has pg_temp.lionstore_commit
        self._pool_lock: asyncio.Lock | None = None
        # What this writer knows of its run, valid as of log position _known (the
        # head after its last commit or tail): stream_id -> (stream_no, version), and
        # the digest of the run's last record. Foreign records read later update both.
        self._known: int | None = None
        self._known_run: int | None = None
        self._streams: dict[str, tuple[int, int]] = {}
        self._tip: str | None = None
        self._run_ids: dict[int, IDType] = {}
        self._rows = RowDecoder(label)
        # Owner locks: the keys this process holds, the connection holding them, the keys
        # taken on that connection, and the task that takes them again after a loss.
        self._owner_keys: set[int] = set()
        self._lock_conn: Any = None
        self._taken: set[int] = set()
        self._lock_watch: asyncio.Task[None] | None = None
        self._lock_guard: asyncio.Lock | None = None
        # Claim turns: a connection of their own (a wait for a turn blocks it).
        self._turn_conn: Any = None
        self._turn_guard: asyncio.Lock | None = None

    # -- connections -----------------------------------------------------------------

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` once, its driver errors translated."""
        try:
            return await fn()
        except Exception as exc:
            translated = _translate(exc, self._label)
            if translated is exc:
                raise
            raise translated from exc

    async def _read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``fn(pool)`` on the read pool, read again on a new connection while the
        server is away (up to ``reconnect_timeout``)."""

        async def once() -> T:
            return await fn(await self._readers())

        return await self._call(lambda: with_reconnect(once, self._reconnect_timeout, self._label))

    async def _writer(self) -> Any:
        if self._readonly:
            raise StoreError(f"{self._label}: the store was opened read-only")
        if self._conn is None or self._conn.is_closed():
            import asyncpg

            settings = {"lock_timeout": f"{int(self._lock_timeout * 1000)}ms"}
            if self._durability == "full":
                settings["synchronous_commit"] = "on"
            self._conn = conn = await asyncpg.connect(self._dsn, server_settings=settings)
            self._forget()
            try:
                await conn.execute(_FUNCTION)
                self._one_trip = True
            except asyncpg.PostgresError as exc:  # e.g. no PL/pgSQL: commits take the lock
                log.info("%s: commits take the head lock in the session (%s)", self._label, exc)
                self._one_trip = False
        return self._conn

    async def _readers(self) -> Any:
        if self._pool is None:
            if self._pool_lock is None:
                self._pool_lock = asyncio.Lock()
            async with self._pool_lock:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=_POOL_SIZE,
                        server_settings={"default_transaction_read_only": "on"},
                    )
        return self._pool

    def _lock(self) -> asyncio.Lock:
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return self._write_lock

    def _forget(self) -> None:
        self._known = None
        self._streams = {}
        self._tip = None

    def _drop_writer(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _transaction(
        self,
        fn: Callable[[Any], Awaitable[T]],
        committed: Callable[[Any, T], Awaitable[bool]] | None = None,
    ) -> T:
        """Run ``fn(conn)`` in one write transaction on the writer connection.

        On a lost connection it is run again on a new one (up to
        ``reconnect_timeout``) when that is safe: it was cut off before COMMIT (the
        server rolled it back), or during COMMIT and ``committed(conn, result)``,
        asked on the new connection, says it did not commit. If it did, ``result``
        is returned; with no ``committed`` to ask, an unknown outcome raises.
        """
        backoff = _Backoff(self._reconnect_timeout, self._label)
        async with self._lock():
            unknown: list[T] = []  # the result of a transaction whose COMMIT was cut off
            while True:
                phase = "connect"
                try:
                    conn = await self._writer()
                    if unknown:
                        assert committed is not None
                        phase = "check"
                        if await committed(conn, unknown[0]):
                            log.warning("%s: the cut-off COMMIT had committed", self._label)
                            backoff.recovered()
                            return unknown[0]
                        log.warning("%s: the cut-off COMMIT had not committed: redone", self._label)
                        unknown.clear()  # absent: redo it
                    phase = "body"
                    transaction = conn.transaction()
                    await transaction.start()
                    try:
                        result = await fn(conn)
                    except Exception:
                        try:
                            if not conn.is_closed():
                                await transaction.rollback()
                        except Exception:  # the connection is broken: start afresh
                            self._drop_writer()
                        raise
                    phase = "commit"
                    await transaction.commit()
                except BaseException as exc:
                    self._forget()  # what the failed transaction taught us was not committed
                    if not isinstance(exc, Exception):  # cancelled mid-statement: start afresh
                        self._drop_writer()
                        raise
                    if not is_disconnect(exc):
                        return await self._call(_raiser(exc))
                    self._drop_writer()
                    if phase == "commit":
                        if committed is None:
                            raise StoreError(
                                f"{self._label}: the connection was lost during COMMIT; "
                                f"whether the transaction committed is unknown ({exc})"
                            ) from exc
                        unknown[:] = [result]
                    try:
                        await backoff.wait(exc)
                    except Exception:
                        return await self._call(_raiser(exc))
                    continue
                backoff.recovered()
                return result

    # -- writes ----------------------------------------------------------------------

    async def commit(
        self, run: RunInfo, requests: Sequence[AppendRequest], now_us: int, seen: int
    ) -> CommitOutcome:
        found = await self._commit_one_trip(run, requests, now_us, seen)
        if isinstance(found, CommitOutcome):
            return found
        # The function is missing, or the streams kept moving: the locking way, from
        # where the one-trip attempts left off (their foreign records kept).
        foreign, seen = found
        outcome = await self._commit_locked(run, requests, now_us, seen)
        outcome.foreign = foreign + outcome.foreign
        return outcome

    async def _commit_one_trip(
        self, run: RunInfo, requests: Sequence[AppendRequest], now_us: int, seen: int
    ) -> CommitOutcome | tuple[list[Recorded], int]:
        """The commit as one call of ``pg_temp.lionstore_commit`` (one round trip while
        this writer's stream cache is right; one more per stale belief). Returns the
        outcome, or (the foreign records read, the position they reach) when the
        commit is to be made the locking way."""
        backoff = _Backoff(self._reconnect_timeout, self._label)
        foreign: list[Recorded] = []
        start = chain_start(run.run_id)
        stale = 0
        cut_off: dict[str, tuple[int, int] | None] | None = None  # beliefs of a lost call
        async with self._lock():
            while True:
                beliefs: dict[str, tuple[int, int] | None] = {}
                try:
                    conn = await self._writer()
                    if not self._one_trip or stale >= _MAX_STALE:
                        return foreign, seen
                    if cut_off is not None:
                        outcome = await self._cut_off_outcome(
                            conn, run, requests, now_us, seen, cut_off
                        )
                        cut_off = None
                        if outcome is not None:
                            log.warning("%s: the cut-off commit had committed", self._label)
                            backoff.recovered()
                            outcome.foreign = foreign + outcome.foreign
                            return outcome
                        log.warning("%s: the cut-off commit had not committed: redone", self._label)
                    if self._known_run != run.run_no or self._known != seen:
                        self._forget()
                        self._known_run = run.run_no
                    if len(self._streams) > _MAX_CACHED_STREAMS:
                        self._streams = {}
                    cache = self._streams
                    draft = Plan(0, _OFFSET, cache.get)
                    draft.add_all(requests)
                    for req in requests:
                        for expected in req.expected:
                            beliefs[expected] = cache.get(expected)
                    for sid in draft.sids:
                        if sid not in beliefs:
                            beliefs[sid] = cache.get(sid)
                    heads = [beliefs[sid] or (0, 0) for sid in beliefs]
                    row = await conn.fetchrow(
                        _CALL,
                        run.run_no,
                        seen,
                        start,
                        list(beliefs),
                        [h[0] for h in heads],
                        [h[1] for h in heads],
                        draft.new_streams,
                        draft.numbers,
                        draft.sids,
                        draft.versions,
                        draft.kinds,
                        draft.kind_versions,
                        draft.texts,
                        now_us,
                    )
                except Exception as exc:
                    self._forget()
                    if not is_disconnect(exc):
                        return await self._call(_raiser(exc))
                    self._drop_writer()
                    if beliefs:  # sent, perhaps committed: looked for before a redo
                        cut_off = beliefs
                    try:
                        await backoff.wait(exc)
                    except Exception:
                        return await self._call(_raiser(exc))
                    continue
                except BaseException:  # cancelled mid-statement: start afresh
                    self._forget()
                    self._drop_writer()
                    raise
                backoff.recovered()
                is_stale, last_position, last_stream_no, digests = row[0], row[1], row[2], row[3]
                foreign += self._take_foreign(run, row[7:])
                self._known = seen = last_position
                self._tip = None
                if is_stale:
                    stale += 1
                    for sid, no, version in zip(row[4], row[5], row[6], strict=True):
                        if no:
                            cache[sid] = (no, version)
                        else:
                            cache.pop(sid, None)
                    continue
                plan = Plan(last_position, last_stream_no, cache.get)
                plan.add_all(requests)
                if len(plan.numbers) != len(digests or ()):
                    raise CorruptDatabaseError(
                        f"{self._label}: the commit function wrote {len(digests or ())}"
                        f" records where {len(plan.numbers)} were planned"
                    )
                outcome = plan.outcome(run.run_id, now_us, digests or [])
                cache.update(plan.heads)
                outcome.foreign = foreign
                self._known = outcome.head
                return outcome

    def _take_foreign(self, run: RunInfo, columns: Sequence[Any]) -> list[Recorded]:
        """The foreign records the function returned, as Recorded; the stream cache
        learns their heads."""
        positions, sids, versions, kinds, kvs, texts, ats, digests, nos = columns
        if not positions:
            return []
        streams = self._streams
        found: list[Recorded] = []
        columns = (positions, sids, versions, kinds, kvs, texts, ats, digests, nos)
        for row in zip(*columns, strict=True):
            streams[row[1]] = (row[8], row[2])
            found.append(decode_row((*row[:7], run.run_no, row[7]), run.run_id))
        return found

    async def _cut_off_outcome(
        self,
        conn: Any,
        run: RunInfo,
        requests: Sequence[AppendRequest],
        now_us: int,
        seen: int,
        beliefs: dict[str, tuple[int, int] | None],
    ) -> CommitOutcome | None:
        """The outcome of a call whose connection was lost before its answer, if it
        committed (None: it did not, redo it). Its last record is looked for by stream,
        version, time and data; found, the call's beliefs held, so planning from them
        again numbers the records as the function did."""
        self._forget()
        draft = Plan(0, _OFFSET, beliefs.get)
        draft.add_all(requests)
        if not draft.numbers:
            return None  # nothing to write: redoing it changes nothing
        last = await conn.fetchval(
            f"SELECT r.position{_FROM} WHERE s.run_no = $1 AND s.stream_id = $2"
            " AND r.stream_version = $3 AND r.recorded_at_us = $4 AND r.data = $5",
            run.run_no,
            draft.sids[-1],
            draft.versions[-1],
            now_us,
            draft.texts[-1],
        )
        if last is None:
            return None
        first = last - len(draft.numbers) + 1
        rows = await conn.fetch(
            "SELECT position, stream_no, digest FROM lionstore_records"
            " WHERE position >= $1 AND position <= $2 ORDER BY position",
            first,
            last,
        )
        last_stream_no = 0
        if draft.new_streams:
            index = draft.numbers.index(_OFFSET + 1)
            last_stream_no = rows[index][1] - 1
        plan = Plan(first - 1, last_stream_no, beliefs.get)
        plan.add_all(requests)
        outcome = plan.outcome(run.run_id, now_us, [r[2] for r in rows])
        foreign = await conn.fetch(
            f"SELECT {_COLUMNS}{_FROM} WHERE r.run_no = $1 AND r.position > $2"
            " AND r.position < $3 ORDER BY r.position",
            run.run_no,
            seen,
            first,
        )
        outcome.foreign = [decode_row(r, run.run_id) for r in foreign]
        return outcome

    async def _commit_locked(
        self, run: RunInfo, requests: Sequence[AppendRequest], now_us: int, seen: int
    ) -> CommitOutcome:
        """The commit as a transaction that takes the head lock first and plans under
        it (four round trips or more)."""
        planned: list[tuple[int, str]] = []  # (last position, its digest) of the attempt

        async def body(conn: Any) -> CommitOutcome:
            planned.clear()
            cache = self._streams if self._known_run == run.run_no else {}
            wanted: set[str] = {sid for req in requests for sid in req.expected if sid not in cache}
            wanted.update(row[0] for req in requests for row in req.rows if row[0] not in cache)
            last_position, last_stream_no, last_run_no, snapshot, found = await conn.fetchrow(
                _LOCK_AND_LOOK_UP, run.run_no, list(wanted)
            )
            foreign = await self._catch_up(conn, run, seen, last_position)
            checked: set[str] = set()
            if snapshot == last_position:  # the look-up saw what the lock protects
                self._streams.update((sid, (no, version)) for sid, no, version in found)
                checked = wanted
            outcome, rows = await self._plan(
                conn, run, requests, now_us, last_position, last_stream_no, checked
            )
            if rows.numbers:
                head = (outcome.head, outcome.last_stream_no, last_run_no)
                await rows.write(conn, run.run_no, last_position + 1, head)
                planned.append((outcome.head, rows.digests[-1]))
            outcome.foreign = foreign
            return outcome

        async def committed(conn: Any, _outcome: CommitOutcome) -> bool:
            # The digest chains the record's position, stream, version, kind, data and
            # time to the run's previous record: found at that position, it is ours.
            if not planned:
                return True  # nothing was written: redoing it would change nothing
            position, digest = planned[-1]
            found = await conn.fetchval(
                "SELECT digest FROM lionstore_records WHERE position = $1", position
            )
            return bool(found == digest)

        outcome = await self._transaction(body, committed)
        self._known = outcome.head
        return outcome

    async def _catch_up(
        self, conn: Any, run: RunInfo, seen: int, last_position: int
    ) -> list[Recorded]:
        """This run's records other writers committed after ``seen`` (the lock is held,
        so nothing below ``last_position`` can still appear)."""
        if self._known_run != run.run_no or self._known != seen:
            self._forget()  # the caches may miss records up to seen: start afresh
            self._known_run = run.run_no
        foreign: list[Recorded] = []
        if last_position != seen:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS}, r.stream_no{_FROM} WHERE r.run_no = $1"
                " AND r.position > $2 AND r.position <= $3 ORDER BY r.position",
                run.run_no,
                seen,
                last_position,
            )
            streams = self._streams
            for row in rows:
                streams[row[1]] = (row[9], row[2])
                foreign.append(decode_row(row[:9], run.run_id))
            if rows:
                self._tip = rows[-1][8]
        self._known = last_position
        return foreign

    async def _look_up(self, conn: Any, run_no: int, stream_ids: list[str]) -> None:
        """Put the heads of those of ``stream_ids`` that exist in the stream cache."""
        for sid, stream_no, version in await conn.fetch(
            "SELECT s.stream_id, s.stream_no,"
            " (SELECT max(r.stream_version) FROM lionstore_records r"
            "  WHERE r.stream_no = s.stream_no)"
            " FROM lionstore_streams s WHERE s.run_no = $1 AND s.stream_id = ANY($2::text[])",
            run_no,
            stream_ids,
        ):
            self._streams[sid] = (stream_no, version or 0)

    async def _run_tip(self, conn: Any, run: RunInfo) -> str:
        if self._tip is None:
            digest = await conn.fetchval(
                "SELECT digest FROM lionstore_records WHERE run_no = $1"
                " ORDER BY position DESC LIMIT 1",
                run.run_no,
            )
            self._tip = digest or chain_start(run.run_id)
        return self._tip

    async def _plan(
        self,
        conn: Any,
        run: RunInfo,
        requests: Sequence[AppendRequest],
        now_us: int,
        last_position: int,
        last_stream_no: int,
        checked: set[str],
    ) -> tuple[CommitOutcome, _Rows]:
        """Check the expected versions and number the accepted records.

        The head row lock is held, so a stream not found in the table now cannot
        appear before this transaction commits: one look-up settles what is new
        (``checked``: the streams the locking statement already looked up).
        """
        if len(self._streams) > _MAX_CACHED_STREAMS:
            self._streams = {}
        cache = self._streams
        unknown = {sid for req in requests for sid in req.expected if sid not in cache}
        unknown.update(row[0] for req in requests for row in req.rows if row[0] not in cache)
        unknown -= checked  # looked up with the lock: those not found are new
        if unknown:
            await self._look_up(conn, run.run_no, list(unknown))
        plan = Plan(last_position, last_stream_no, cache.get)
        plan.add_all(requests)
        rows = _Rows()
        rows.stream_nos = list(range(last_stream_no + 1, plan.stream_no + 1))
        rows.stream_ids = plan.new_streams
        rows.record_sids = plan.sids
        rows.numbers = plan.numbers
        rows.versions = plan.versions
        rows.kinds = plan.kinds
        rows.kind_versions = plan.kind_versions
        rows.texts = plan.texts
        rows.times = [now_us] * len(plan.numbers)
        if plan.numbers:
            rows.digests = plan.digests(await self._run_tip(conn, run), now_us)
            self._tip = rows.digests[-1]
        outcome = plan.outcome(run.run_id, now_us, rows.digests)
        cache.update(plan.heads)
        return outcome, rows

    async def tail(self, run: RunInfo, seen: int) -> tuple[list[Recorded], int] | None:
        async def body() -> tuple[list[Recorded], int] | None:
            conn = await self._writer()
            last_position: int = await conn.fetchval(
                "SELECT last_position FROM lionstore_head WHERE id = 1"
            )
            if last_position == seen:
                return None
            # The head moves in the transaction that commits the records below it, and
            # writers commit one at a time: every record up to it is committed now.
            return await self._catch_up(conn, run, seen, last_position), last_position

        backoff = _Backoff(self._reconnect_timeout, self._label)
        while True:
            try:
                async with self._lock():
                    result = await body()
            except Exception as exc:
                self._forget()
                if is_disconnect(exc):
                    self._drop_writer()
                    try:
                        await backoff.wait(exc)
                    except Exception:
                        return await self._call(_raiser(exc))
                    continue
                return await self._call(_raiser(exc))
            backoff.recovered()
            return result

    # -- runs ------------------------------------------------------------------------

    async def create_run(
        self,
        label: str | None,
        now_us: int,
        run_id: IDType | None = None,
        parent: RunInfo | None = None,
        forked_at: int | None = None,
    ) -> RunInfo:
        new_id = run_id or IDType.create()

        async def body(conn: Any) -> RunInfo:
            last_position, last_stream_no, last_run_no = await conn.fetchrow(_LOCK_HEAD)
            run_no = last_run_no + 1
            await conn.execute(
                "INSERT INTO lionstore_runs (run_no, run_id, label, started_at_us,"
                " parent_run_no, forked_at_position, parent_run_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                run_no,
                str(new_id),
                label,
                now_us,
                parent.run_no if parent else None,
                forked_at,
                str(parent.run_id) if parent else None,
            )
            # run.started is the first record of every run, a fork's too.
            rows = _Rows()
            text = encode_data(
                RunStarted(
                    label=label,
                    parent_run_id=parent.run_id if parent else None,
                    forked_at_position=forked_at,
                )
            )
            stream_no = last_stream_no + 1
            rows.add_stream(stream_no, new_id)
            rows.add_record(new_id, stream_no, 1, RunStarted.kind, 1, text, now_us)
            digest = record_digest(
                chain_start(new_id), last_position + 1, new_id, 1, RunStarted.kind, 1, now_us, text
            )
            rows.digests.append(digest)
            if parent is not None and forked_at is not None:
                stream_no = await self._copy_prefix(
                    conn, rows, parent.run_no, forked_at, last_position + 1, stream_no
                )
            head = last_position + len(rows.numbers)
            await rows.write(conn, run_no, last_position + 1, (head, stream_no, run_no))
            return RunInfo(
                run_no, new_id, label, now_us, parent.run_id if parent else None, forked_at
            )

        async def committed(conn: Any, _run: RunInfo) -> bool:
            found = await conn.fetchval(
                "SELECT 1 FROM lionstore_runs WHERE run_id = $1", str(new_id)
            )
            return found is not None

        try:
            return await self._transaction(body, committed)
        except StoreError as exc:
            import asyncpg

            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise StoreError(f"{self._label}: a run labelled {label!r} exists") from exc
            raise

    async def _copy_prefix(
        self, conn: Any, rows: _Rows, from_run: int, upto: int, position: int, stream_no: int
    ) -> int:
        """Add ``from_run``'s records up to position ``upto`` to ``rows`` (a fork).

        The run's own ``run.started`` record is not copied; the fork gets its own.
        The copies get new positions, so the fork's digest chain is its own.
        """
        mapping: dict[int, int] = {}
        digest = rows.digests[-1]
        for old_no, sid, version, kind, kind_version, data, at_us in await conn.fetch(
            "SELECT r.stream_no, s.stream_id, r.stream_version, r.kind, r.kind_version,"
            f" r.data, r.recorded_at_us{_FROM}"
            " WHERE r.run_no = $1 AND r.position <= $2 AND r.kind != $3 ORDER BY r.position",
            from_run,
            upto,
            RunStarted.kind,
        ):
            new_no = mapping.get(old_no)
            if new_no is None:
                stream_no += 1
                new_no = mapping[old_no] = stream_no
                rows.add_stream(new_no, sid)
            position += 1
            digest = record_digest(digest, position, sid, version, kind, kind_version, at_us, data)
            rows.add_record(sid, new_no, version, kind, kind_version, data, at_us)
            rows.digests.append(digest)
        return stream_no

    async def list_runs(self) -> list[RunInfo]:
        rows = await self._read(lambda pool: pool.fetch(f"{_SELECT_RUNS} ORDER BY r.run_no"))
        return [_run_info(row) for row in rows]

    async def find_run(self, ref: str) -> RunInfo | None:
        run_id = str(to_id(ref)) if is_id(ref) else None  # any spelling of the UUID
        row = await self._read(
            lambda pool: pool.fetchrow(
                f"{_SELECT_RUNS} WHERE r.run_id = $1 OR r.label = $2"
                " ORDER BY r.run_id = $1 DESC LIMIT 1",
                run_id,
                ref,
            )
        )
        return None if row is None else _run_info(row)

    # -- reads -----------------------------------------------------------------------

    async def head_position(self) -> int:
        position: int = await self._read(
            lambda pool: pool.fetchval("SELECT last_position FROM lionstore_head WHERE id = 1")
        )
        return position

    async def read_rows(self, query: ReadQuery, limit: int) -> tuple[list[Any], dict[int, IDType]]:
        where = ["r.position > $1"]
        params: list[Any] = [query.after]
        for condition, value in (
            ("r.run_no = ${}", query.run_no),
            ("r.position <= ${}", query.upto),
            ("r.recorded_at_us <= ${}", query.until_us),
            ("s.stream_id = ${}", None if query.stream_id is None else str(query.stream_id)),
            ("r.kind = ANY(${}::text[])", list(query.kinds) if query.kinds else None),
        ):
            if value is not None:
                params.append(value)
                where.append(condition.format(len(params)))
        params.append(limit)
        sql = (
            f"SELECT {_COLUMNS}{_FROM} WHERE {' AND '.join(where)}"
            f" ORDER BY r.position LIMIT ${len(params)}"
        )

        async def fetch(pool: Any) -> tuple[list[Any], dict[int, IDType]]:
            async with pool.acquire() as conn:
                rows = await conn.fetch(sql, *params)
                if rows and (not self._run_ids or any(r[7] not in self._run_ids for r in rows)):
                    self._run_ids = {
                        no: to_id(rid)
                        for no, rid in await conn.fetch("SELECT run_no, run_id FROM lionstore_runs")
                    }
            return list(rows), self._run_ids

        return await self._read(fetch)

    def decode_row(self, row: Any, run_ids: dict[int, IDType]) -> Recorded:
        return self._rows.decode(row, run_ids)

    def decode_rows(self, rows: Sequence[Any], run_ids: dict[int, IDType]) -> Iterator[Recorded]:
        return self._rows.records(rows, run_ids)

    def scan_run(self, query: ReadQuery, page_size: int) -> PostgresRunScan:
        check_scan(query, page_size)
        return PostgresRunScan(self, query, page_size)

    # -- checkpoints -----------------------------------------------------------------

    async def read_checkpoint(self, run_no: int, name: str) -> Checkpoint | None:
        row = await self._read(
            lambda pool: pool.fetchrow(READ_CHECKPOINT_SQL.format("$1", "$2"), run_no, name)
        )
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
        async def body(conn: Any) -> bool:
            digest = await conn.fetchval(CHECKPOINT_DIGEST_SQL.format("$1", "$2"), run_no, position)
            if digest is None:
                return False
            await conn.execute(
                "INSERT INTO lionstore_checkpoints (run_no, name, position, digest,"
                " format_version, snapshot, written_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (run_no, name) DO UPDATE SET position = excluded.position,"
                " digest = excluded.digest, format_version = excluded.format_version,"
                " snapshot = excluded.snapshot, written_at_us = excluded.written_at_us",
                run_no,
                name,
                position,
                digest,
                format_version,
                snapshot,
                now_us,
            )
            return True

        async def redo(_conn: Any, _written: bool) -> bool:
            return False  # an upsert of the same snapshot: redoing it is harmless

        return await self._transaction(body, redo)

    # -- retention -------------------------------------------------------------------

    async def delete_run(self, run_no: int) -> int | None:
        """Delete run ``run_no`` whole (records, streams, checkpoints, the run) in one
        transaction, holding the head lock like every write; forks of it lose the
        parent link but keep its id. Returns the number of records removed (None: no
        such run). Positions are not reused."""

        async def body(conn: Any) -> int | None:
            await conn.fetchrow(_LOCK_HEAD)
            found = await conn.fetchval("SELECT 1 FROM lionstore_runs WHERE run_no = $1", run_no)
            if found is None:
                return None
            await conn.execute(
                "UPDATE lionstore_runs SET parent_run_no = NULL WHERE parent_run_no = $1", run_no
            )
            await conn.execute("DELETE FROM lionstore_checkpoints WHERE run_no = $1", run_no)
            status = await conn.execute("DELETE FROM lionstore_records WHERE run_no = $1", run_no)
            await conn.execute("DELETE FROM lionstore_streams WHERE run_no = $1", run_no)
            await conn.execute("DELETE FROM lionstore_runs WHERE run_no = $1", run_no)
            return int(status.rsplit(" ", 1)[-1])  # "DELETE n"

        async def committed(conn: Any, _removed: int | None) -> bool:
            found = await conn.fetchval("SELECT 1 FROM lionstore_runs WHERE run_no = $1", run_no)
            return found is None

        removed = await self._transaction(body, committed)
        self._forget()
        self._run_ids = {}
        return removed

    # -- owner locks -----------------------------------------------------------------

    owner_locks = True
    claim_turns = True

    @property
    def readonly(self) -> bool:
        return self._readonly

    async def hold_owner_lock(self, owner: str) -> None:
        key = owner_lock_key(owner)
        conn = self._lock_conn
        if key in self._taken and conn is not None and not conn.is_closed():
            return
        self._owner_keys.add(key)
        await self._take_owner_locks()
        if self._lock_watch is None:
            self._lock_watch = asyncio.get_running_loop().create_task(
                self._watch_owner_locks(), name="lionstore-owner-locks"
            )

    async def _take_owner_locks(self) -> None:
        """(Re)connect the lock connection if needed and take every key not taken on it,
        retrying a lost connection as every call does."""
        if self._lock_guard is None:
            self._lock_guard = asyncio.Lock()
        async with self._lock_guard:
            backoff = _Backoff(self._reconnect_timeout, self._label)
            while True:
                try:
                    conn = self._lock_conn
                    if conn is None or conn.is_closed():
                        import asyncpg

                        self._taken = set()
                        self._lock_conn = conn = await asyncpg.connect(self._dsn)
                    for key in sorted(self._owner_keys - self._taken):
                        # False only if another session holds it (an owner-name hash
                        # collision): then it looks alive anyway, which is the safe side.
                        await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_CLASS, key)
                        self._taken.add(key)
                except Exception as exc:
                    if self._lock_conn is not None:
                        self._lock_conn.terminate()
                        self._lock_conn = None
                    if not is_disconnect(exc):
                        return await self._call(_raiser(exc))
                    try:
                        await backoff.wait(exc)
                    except Exception:
                        return await self._call(_raiser(exc))
                    continue
                backoff.recovered()
                return

    async def _watch_owner_locks(self) -> None:
        # Until close() forgets this task: on Python 3.11 asyncio.wait_for can swallow
        # the cancellation close() sends (when the ping ends at that moment), and a
        # loop that only stopped on it would then run, and close() wait, for ever.
        while asyncio.current_task() is self._lock_watch:
            await asyncio.sleep(_LOCK_WATCH_INTERVAL)
            if asyncio.current_task() is not self._lock_watch:
                return
            conn = self._lock_conn
            if conn is not None and not conn.is_closed():
                # An idle connection need not have noticed that the server restarted
                # (is_closed() stays False until something is read): ask it, under the
                # guard that keeps it to one operation at a time.
                if self._lock_guard is None:
                    self._lock_guard = asyncio.Lock()
                async with self._lock_guard:
                    if conn is not self._lock_conn:
                        continue
                    try:
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), _LOCK_WATCH_INTERVAL * 4)
                        continue
                    except Exception:
                        conn.terminate()
                        self._lock_conn = None
            try:
                await self._take_owner_locks()
            except Exception:  # still away past reconnect_timeout: keep trying
                log.warning("%s: owner locks not held yet; retrying", self._label)

    async def owner_lock_free(self, owner: str) -> bool | None:
        key = owner_lock_key(owner)
        if key in self._owner_keys:
            return False  # this process's own

        async def probe(pool: Any) -> bool:
            async with pool.acquire() as conn:
                free = bool(
                    await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_CLASS, key)
                )
                if free:
                    await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", _LOCK_CLASS, key)
                return free

        return await self._read(probe)

    # -- claim turns -------------------------------------------------------------------

    async def take_claim_turn(self, name: str) -> bool:
        """Wait (up to 2 s) for executor ``name``'s claim turn: a session advisory lock
        that processors of that executor in every process take one at a time from the
        sync before a cycle's claim to the claim's commit, so each decides on a log that
        holds the claims made before it and none races for the same queue head. True
        when taken; False (not waited for longer, nothing held) lets the caller claim
        without it, as compare-and-set keeps claims correct either way."""
        if self._turn_guard is None:
            self._turn_guard = asyncio.Lock()
        async with self._turn_guard:
            try:
                conn = self._turn_conn
                if conn is None or conn.is_closed():
                    import asyncpg

                    settings = {"lock_timeout": f"{int(_TURN_WAIT * 1000)}ms"}
                    self._turn_conn = conn = await asyncpg.connect(
                        self._dsn, server_settings=settings
                    )
                await conn.execute(
                    "SELECT pg_advisory_lock($1, $2)", _TURN_CLASS, owner_lock_key(name)
                )
                return True
            except Exception as exc:
                if self._turn_conn is not None and is_disconnect(exc):
                    self._turn_conn.terminate()
                    self._turn_conn = None
                log.debug("%s: claim turn of %s not taken: %s", self._label, name, exc)
                return False
            except BaseException:  # cancelled while waiting: it may have been granted
                if self._turn_conn is not None:
                    self._turn_conn.terminate()  # the session ends, and the lock with it
                    self._turn_conn = None
                raise

    async def end_claim_turn(self, name: str) -> None:
        """Give back executor ``name``'s claim turn (taken by :meth:`take_claim_turn`)."""
        assert self._turn_guard is not None
        async with self._turn_guard:
            conn = self._turn_conn
            if conn is None or conn.is_closed():
                return  # the session ended, and its locks with it
            try:
                await conn.execute(
                    "SELECT pg_advisory_unlock($1, $2)", _TURN_CLASS, owner_lock_key(name)
                )
            except BaseException as exc:  # failed or cancelled: the session ends, the lock with it
                conn.terminate()
                self._turn_conn = None
                if not isinstance(exc, Exception):
                    raise  # (an error is not the caller's: its claim has committed)

    async def close(self) -> None:
        turn_conn, self._turn_conn = self._turn_conn, None
        if turn_conn is not None:
            turn_conn.terminate()
        watch, self._lock_watch = self._lock_watch, None
        if watch is not None:
            watch.cancel()
            # (not wait_for: that can lose a cancellation; the task ends on its own at
            # its next turn of the loop even if this one was lost)
            await asyncio.wait({watch}, timeout=_LOCK_WATCH_INTERVAL * 8)
        lock_conn, self._lock_conn = self._lock_conn, None
        if lock_conn is not None:
            lock_conn.terminate()  # the session ends: its locks are released
        conn, self._conn = self._conn, None
        pool, self._pool = self._pool, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=self._lock_timeout)
            except Exception:  # the server is gone (or going): nothing to close cleanly
                conn.terminate()
        if pool is not None:
            # pool.close() waits for every acquired connection to come back: one held
            # by a scan nobody closed would make this wait forever.
            try:
                await asyncio.wait_for(pool.close(), timeout=self._lock_timeout)
            except TimeoutError:
                pool.terminate()


class PostgresRunScan(RunScan):
    """A :class:`RunScan` on one pooled read connection: a read-only REPEATABLE READ
    transaction (one snapshot for the whole scan) and a server-side cursor fetched a
    page at a time. Every row brings its stream's text id: the look-up a row without
    one would need is a round trip the fold cannot wait for, and the join is made
    for the row anyway."""

    def __init__(self, backend: PostgresBackend, query: ReadQuery, page_size: int) -> None:
        self._backend = backend
        self._page_size = page_size
        where = ["r.run_no = $1"]
        params: list[Any] = [query.run_no]
        for condition, value in (
            ("r.position <= ${}", query.upto),
            ("r.recorded_at_us <= ${}", query.until_us),
        ):
            if value is not None:
                params.append(value)
                where.append(condition.format(len(params)))
        self._sql = (
            "SELECT r.position, r.stream_no, r.stream_version, r.kind, r.kind_version,"
            f" r.data, s.stream_id, r.recorded_at_us, r.digest{_FROM}"
            f" WHERE {' AND '.join(where)} ORDER BY r.position"
        )
        self._params = params
        self._pool: Any = None
        self._conn: Any = None
        self._transaction: Any = None
        self._cursor: Any = None
        self._closed = False

    async def open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._backend._label}: the scan is closed")
        if self._conn is not None:
            return
        backend = self._backend
        self._pool = await backend._readers()
        self._conn = await backend._call(self._pool.acquire)

        async def begin() -> None:
            self._transaction = self._conn.transaction(isolation="repeatable_read", readonly=True)
            await self._transaction.start()
            self._cursor = await self._conn.cursor(self._sql, *self._params)

        try:
            await backend._call(begin)
        except BaseException:
            await self.close()
            raise

    async def next_page(self) -> list[Any]:
        if self._cursor is None:
            await self.open()
        rows: list[Any] = await self._backend._call(lambda: self._cursor.fetch(self._page_size))
        return rows

    def stream_id(self, stream_no: int) -> IDType:
        raise CorruptDatabaseError(
            f"{self._backend._label}: a record of stream {stream_no} came without its id"
        )

    async def close(self) -> None:
        self._closed = True
        conn, self._conn, self._cursor = self._conn, None, None
        if conn is None:
            return
        try:
            if self._transaction is not None and not conn.is_closed():
                await self._transaction.rollback()
        finally:
            self._transaction = None
            await self._pool.release(conn)
