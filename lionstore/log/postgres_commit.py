"""How the PostgreSQL backend writes: its connections, and the commit path.


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

A claim waits for no WAL flush of its own
    A group none of whose requests needs a sync (``AppendRequest.sync``: an executor's
    claim) is committed with ``synchronous_commit`` off for its transaction alone
    (``p_sync``). The cycle's outcome commits with it on, and a flush reaches every WAL
    record before the outcome's, the claim's included: the claim is durable before
    ``forward()`` returns, and a server crash during ``invoke()`` can lose only the
    claim (the event runs again, as after any crash then), as on SQLite at "full".
    Anything another session committed after seeing the claim is flushed only with it.
    The locking transaction syncs every commit.

"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from lionstore.domain.ids import IDType
from lionstore.domain.records import Recorded
from lionstore.errors import CorruptDatabaseError, StoreError
from lionstore.log.backend import (
    AppendRequest,
    CommitOutcome,
    LogBackend,
    RunInfo,
    announce_committed,
)
from lionstore.log.digest import chain_start
from lionstore.log.plan import Plan
from lionstore.log.postgres_conn import (
    Backoff,
    asyncpg_dsn,
    is_disconnect,
    raiser,
    translate_error,
    with_reconnect,
)
from lionstore.log.rows import RowDecoder

__all__ = ["COLUMNS", "FROM_RECORDS", "HEAD_POSITION", "LOCK_HEAD", "PostgresCommits", "WriteRows"]

T = TypeVar("T")
log = logging.getLogger("lionstore.postgres")

COLUMNS = (
    "r.position, s.stream_id, r.stream_version, r.kind, r.kind_version, r.data,"
    " r.recorded_at_us, r.run_no, r.digest"
)
FROM_RECORDS = " FROM lionstore_records r JOIN lionstore_streams s ON s.stream_no = r.stream_no"
# A catch-up reads a few records at the end of a run that may hold millions of streams:
# each record's stream id by an index probe, never a join the planner may make a scan
# of every stream (a generic plan with a range on positions is one; see _FUNCTION).
_CATCH_UP_COLUMNS = (
    "r.position, (SELECT s.stream_id FROM lionstore_streams s WHERE s.stream_no = r.stream_no),"
    " r.stream_version, r.kind, r.kind_version, r.data, r.recorded_at_us, r.run_no, r.digest,"
    " r.stream_no"
)
#: The log's last position: exact here (every commit moves the head row it locks).
HEAD_POSITION = "SELECT last_position FROM lionstore_head WHERE id = 1"
# A catch-up in one round trip: the head, and the run's records after $2 up to it, read
# by one statement (one snapshot; the head moves in the transaction that commits the
# records below it, so none of them can be missing). A row per record with the head
# last; a single row of NULLs and the head when there is none.
_TAIL = (
    f"SELECT {_CATCH_UP_COLUMNS}, h.last_position FROM lionstore_head h"
    " LEFT JOIN lionstore_records r"
    " ON r.run_no = $1 AND r.position > $2 AND r.position <= h.last_position"
    " WHERE h.id = 1 ORDER BY r.position"
)
LOCK_HEAD = (
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
#
# Its look-ups are written so that the planner can only probe indexes: a LATERAL
# subquery with LIMIT 1 per stream checked, a scalar subquery per foreign record for
# its stream id. Written as plain joins, their generic plans (the ones a session
# settles on after five calls) were hash joins over every stream of the run: the check
# while the tables were unanalysed, as in a young run; the catch-up once they were
# analysed. 1 ms per commit with 10,000 streams, growing with the run, and 70% of the
# server's time in the function (tests/log/test_postgres_one_trip.py reads the plans).
_FUNCTION = f"""
CREATE OR REPLACE FUNCTION pg_temp.lionstore_commit(
    p_run integer, p_seen bigint, p_start text,
    p_check_sids text[], p_check_nos bigint[], p_check_versions integer[],
    p_new_sids text[], p_nos bigint[], p_sids text[], p_versions integer[],
    p_kinds text[], p_kvs smallint[], p_texts text[], p_at bigint, p_sync boolean,
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
    IF NOT p_sync THEN
        -- for this transaction only: its commit does not wait for the WAL flush
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    SELECT last_position, last_stream_no INTO o_position, o_stream_no
    FROM lionstore_head WHERE id = 1 FOR UPDATE;
    SELECT coalesce(bool_or(coalesce(s.stream_no, 0) <> b.no
                            OR coalesce(v.version, 0) <> b.version), false),
           array_agg(b.sid), array_agg(coalesce(s.stream_no, 0)),
           array_agg(coalesce(v.version, 0))
    INTO o_stale, h_sids, h_nos, h_versions
    FROM unnest(p_check_sids, p_check_nos, p_check_versions) AS b(sid, no, version)
    LEFT JOIN LATERAL (SELECT y.stream_no FROM lionstore_streams y
                       WHERE y.run_no = p_run AND y.stream_id = b.sid LIMIT 1) s ON true
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
        FROM (SELECT x.position,
                     (SELECT s.stream_id FROM lionstore_streams s
                      WHERE s.stream_no = x.stream_no) AS stream_id,
                     x.stream_version, x.kind, x.kind_version,
                     x.data, x.recorded_at_us, x.digest, x.stream_no
              FROM lionstore_records x
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
    " $11, $12, $13, $14, $15)"
)
# A belief found stale this many times in a row (streams another writer keeps moving):
# the commit is made the locking way, which cannot be stale.
_MAX_STALE = 3
_MAX_CACHED_STREAMS = 100_000
_POOL_SIZE = 4


async def _one_loop_turn() -> None:
    """Let the event loop run the tasks that are ready, once, without becoming a point
    where the caller can be cancelled: a commit has been made and its outcome must reach
    the caller. A cancellation that comes meanwhile is handed on at the caller's next
    await instead."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a coroutine awaiting runs in a task
            raise
        task.uncancel()
        task.cancel()  # thrown in at the next await, as if it had come just after


class WriteRows:
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


class PostgresCommits(LogBackend):
    """The connections to one PostgreSQL database and the commit path. The rest of the
    backend is :class:`lionstore.log.postgres.PostgresBackend`, built on this.

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
        self._turn_one_trip = True  # whether the turn session has pg_temp.lionstore_take_turn
        self._turn_guard: asyncio.Lock | None = None

    # -- connections -----------------------------------------------------------------

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` once, its driver errors translated."""
        try:
            return await fn()
        except Exception as exc:
            translated = translate_error(exc, self._label)
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

    async def _retry_after(self, backoff: Backoff, exc: Exception) -> None:
        """Wait before trying again after ``exc``, a lost connection; past the
        reconnect deadline, raise it translated (as :meth:`_call` does)."""
        try:
            await backoff.wait(exc)
        except Exception:
            await self._call(raiser(exc))

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
        backoff = Backoff(self._reconnect_timeout, self._label)
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
                        return await self._call(raiser(exc))
                    self._drop_writer()
                    if phase == "commit":
                        if committed is None:
                            raise StoreError(
                                f"{self._label}: the connection was lost during COMMIT; "
                                f"whether the transaction committed is unknown ({exc})"
                            ) from exc
                        unknown[:] = [result]
                    await self._retry_after(backoff, exc)
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
        backoff = Backoff(self._reconnect_timeout, self._label)
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
                    if not stale:
                        # Streams the commit expects to exist that the cache lacks (this
                        # process read them from the log's history, not through a
                        # commit or a catch-up): asked for first, ids only. Sent as
                        # absent they would make the call stale, and the retry send
                        # every record a second time (a forward queueing 2,000 loaded
                        # events sent 2,000 texts twice).
                        missing = {
                            sid: None
                            for req in requests
                            for sid, version in req.expected.items()
                            if version and sid not in cache
                        }
                        if missing:
                            await self._look_up(conn, run.run_no, list(missing))
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
                        any(req.sync for req in requests),
                    )
                except Exception as exc:
                    self._forget()
                    if not is_disconnect(exc):
                        return await self._call(raiser(exc))
                    self._drop_writer()
                    if beliefs:  # sent, perhaps committed: looked for before a redo
                        cut_off = beliefs
                    await self._retry_after(backoff, exc)
                    continue
                except BaseException:  # cancelled mid-statement: start afresh
                    self._forget()
                    self._drop_writer()
                    raise
                backoff.recovered()
                is_stale, last_position, last_stream_no, digests = row[0], row[1], row[2], row[3]
                if not is_stale and announce_committed(requests, draft.results):
                    # Committed: a task a callback started (an executor giving back its
                    # claim turn) runs its first step now, before the records, the
                    # other writers' and these, are decoded and handed to subscribers.
                    await _one_loop_turn()
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
        for sid, version, stream_no in zip(sids, versions, nos, strict=True):
            streams[sid] = (stream_no, version)
        rows = zip(
            positions, sids, versions, kinds, kvs, texts, ats, [run.run_no] * len(positions),
            digests, strict=True,
        )  # fmt: skip
        return list(self._rows.records(rows, {run.run_no: run.run_id}))

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
            f"SELECT r.position{FROM_RECORDS} WHERE s.run_no = $1 AND s.stream_id = $2"
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
            f"SELECT {COLUMNS}{FROM_RECORDS} WHERE r.run_no = $1 AND r.position > $2"
            " AND r.position < $3 ORDER BY r.position",
            run.run_no,
            seen,
            first,
        )
        outcome.foreign = list(self._rows.records(foreign, {run.run_no: run.run_id}))
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
        rows: list[Any] = []
        if last_position != seen:
            rows = await conn.fetch(
                f"SELECT {_CATCH_UP_COLUMNS} FROM lionstore_records r WHERE r.run_no = $1"
                " AND r.position > $2 AND r.position <= $3 ORDER BY r.position",
                run.run_no,
                seen,
                last_position,
            )
        return self._caught_up(run, seen, last_position, rows)

    def _caught_up(
        self, run: RunInfo, seen: int, last_position: int, rows: Sequence[Any]
    ) -> list[Recorded]:
        """The records of ``rows`` (``_CATCH_UP_COLUMNS`` first: every record of the run
        in positions ``(seen, last_position]``), the caches brought up to them."""
        if self._known_run != run.run_no or self._known != seen:
            self._forget()  # the caches may miss records up to seen: start afresh
            self._known_run = run.run_no
        streams = self._streams
        for row in rows:
            streams[row[1]] = (row[9], row[2])
        foreign = list(self._rows.records([r[:9] for r in rows], {run.run_no: run.run_id}))
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
    ) -> tuple[CommitOutcome, WriteRows]:
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
        rows = WriteRows()
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

    async def tail(
        self, run: RunInfo, seen: int, upto: int | None = None
    ) -> tuple[list[Recorded], int] | None:
        async def body() -> tuple[list[Recorded], int] | None:
            conn = await self._writer()
            if upto is not None and upto >= seen:
                # Read from the head row after the commits below it (a claim turn's
                # read): no record up to it can still appear.
                if upto == seen:
                    return None
                return await self._catch_up(conn, run, seen, upto), upto
            rows = await conn.fetch(_TAIL, run.run_no, seen)
            last_position: int = rows[0][-1]
            if last_position == seen:
                return None
            found = [row for row in rows if row[0] is not None]
            return self._caught_up(run, seen, last_position, found), last_position

        backoff = Backoff(self._reconnect_timeout, self._label)
        while True:
            try:
                async with self._lock():
                    result = await body()
            except Exception as exc:
                self._forget()
                if is_disconnect(exc):
                    self._drop_writer()
                    await self._retry_after(backoff, exc)
                    continue
                return await self._call(raiser(exc))
            backoff.recovered()
            return result
