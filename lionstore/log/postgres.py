"""The PostgreSQL backend: one database as lionstore's log.

It is split by role, each module on the one before: ``postgres_conn.py`` reaches the
server (URLs, errors, reconnecting); ``postgres_commit.py`` holds the connections and
the commit path (ordering, one round trip per commit); this module adds runs, reads,
checkpoints, retention, owner locks and claim turns, and is the
:class:`~lionstore.log.backend.LogBackend` the store opens.

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
from collections.abc import Iterator, Sequence
from typing import Any

from lionstore.domain.ids import IDType, is_id, to_id
from lionstore.domain.records import Recorded, RunStarted, encode_data
from lionstore.errors import CorruptDatabaseError, StoreError
from lionstore.log.backend import (
    CHECKPOINT_DIGEST_SQL,
    READ_CHECKPOINT_SQL,
    Checkpoint,
    ReadQuery,
    RunInfo,
    RunScan,
    check_scan,
    checkpoint_from_row,
    read_order,
)
from lionstore.log.digest import chain_start, record_digest
from lionstore.log.postgres_commit import (
    COLUMNS,
    FROM_RECORDS,
    HEAD_POSITION,
    LOCK_HEAD,
    PostgresCommits,
    WriteRows,
)
from lionstore.log.postgres_conn import (
    Backoff,
    asyncpg_dsn,
    display_url,
    is_disconnect,
    raiser,
    require_asyncpg,
    with_reconnect,
)

__all__ = [
    "with_reconnect",
    "PostgresBackend",
    "PostgresRunScan",
    "read_sql",
    "asyncpg_dsn",
    "display_url",
    "is_disconnect",
    "owner_lock_key",
    "require_asyncpg",
]

log = logging.getLogger("lionstore.postgres")

_SELECT_RUNS = (
    "SELECT r.run_no, r.run_id, r.label, r.started_at_us,"
    " coalesce(p.run_id, r.parent_run_id), r.forked_at_position"
    " FROM lionstore_runs r LEFT JOIN lionstore_runs p ON p.run_no = r.parent_run_no"
)
_LOCK_CLASS = 0x4C494F4E  # "LION": the first key of lionstore's advisory locks
# Made on each claim-turn session (take_claim_turn): wait for the turn, then read the
# head with a snapshot taken after the wait.
_TAKE_TURN_FUNCTION = f"""
CREATE OR REPLACE FUNCTION pg_temp.lionstore_take_turn(lock_class int, lock_key int)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_lock(lock_class, lock_key);
    RETURN ({HEAD_POSITION});
END
$$
"""
_TURN_CLASS = 0x4C495455  # "LITU": the first key of executors' claim turns
_TURN_WAIT = 2.0  # seconds a claim turn is waited for before claiming without it
_LOCK_WATCH_INTERVAL = 0.25  # how often a lost owner-lock connection is looked for


def _run_info(row: Sequence[Any]) -> RunInfo:
    no, rid, label, at, parent, forked = row
    return RunInfo(no, to_id(rid), label, at, to_id(parent) if parent else None, forked)


def owner_lock_key(owner: str) -> int:
    """The second key of processor ``owner``'s advisory lock (a signed 32-bit int)."""
    import hashlib

    return int.from_bytes(
        hashlib.blake2b(owner.encode(), digest_size=4).digest(), "big", signed=True
    )


def read_sql(query: ReadQuery, limit: int) -> tuple[str, list[Any]]:
    """The statement and parameters of one page of a read.

    One stream of a known run is found by (run_no, stream_id), then its records by
    (stream_no, stream_version) in version order, each page on from the version the
    last ended at: O(the page), however large the run or the stream. As a join on
    ``s.stream_id`` it was planned as a scan of every stream of the run (the run's
    condition is on the records, so the streams' index could not be used)."""
    where = ["r.position > $1"]
    params: list[Any] = [query.after]
    stream = None if query.stream_id is None else str(query.stream_id)
    streams = "SELECT x.stream_no FROM lionstore_streams x WHERE x.stream_id = ${}"
    if query.run_no is not None:
        streams += " AND x.run_no = ${}"
    version = query.after_version if query.one_stream and query.after_version else None
    conditions: list[tuple[str, list[Any]]] = [
        ("r.run_no = ${}", [query.run_no]),
        ("r.position <= ${}", [query.upto]),
        ("r.recorded_at_us <= ${}", [query.until_us]),
        (f"r.stream_no IN ({streams})", [stream, query.run_no]),
        ("r.stream_version > ${}", [version]),
        ("r.kind = ANY(${}::text[])", [list(query.kinds) if query.kinds else None]),
    ]
    for condition, values in conditions:
        if values[0] is not None:
            given = [v for v in values if v is not None]
            numbers = range(len(params) + 1, len(params) + 1 + len(given))
            params += given
            where.append(condition.format(*numbers))
    params.append(limit)
    sql = (
        f"SELECT {COLUMNS}{FROM_RECORDS} WHERE {' AND '.join(where)}"
        f" ORDER BY {read_order(query)} LIMIT ${len(params)}"
    )
    return sql, params


class PostgresBackend(PostgresCommits):
    """Appends and reads on one PostgreSQL database (its current schema).

    A method that writes passes an ``async def body(conn)`` to :meth:`_transaction`
    (one transaction on the writer connection, errors translated); one that reads
    takes a connection of :meth:`_readers` through :meth:`_call`.
    """

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
            last_position, last_stream_no, last_run_no = await conn.fetchrow(LOCK_HEAD)
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
            rows = WriteRows()
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
        self, conn: Any, rows: WriteRows, from_run: int, upto: int, position: int, stream_no: int
    ) -> int:
        """Add ``from_run``'s records up to position ``upto`` to ``rows`` (a fork).

        The run's own ``run.started`` record is not copied; the fork gets its own.
        The copies get new positions, so the fork's digest chain is its own.
        """
        mapping: dict[int, int] = {}
        digest = rows.digests[-1]
        for old_no, sid, version, kind, kind_version, data, at_us in await conn.fetch(
            "SELECT r.stream_no, s.stream_id, r.stream_version, r.kind, r.kind_version,"
            f" r.data, r.recorded_at_us{FROM_RECORDS}"
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
        position: int = await self._read(lambda pool: pool.fetchval(HEAD_POSITION))
        return position

    async def read_rows(self, query: ReadQuery, limit: int) -> tuple[list[Any], dict[int, IDType]]:
        sql, params = read_sql(query, limit)

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
            await conn.fetchrow(LOCK_HEAD)
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
            backoff = Backoff(self._reconnect_timeout, self._label)
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
                        return await self._call(raiser(exc))
                    await self._retry_after(backoff, exc)
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

    async def take_claim_turn(self, name: str) -> int | None:
        """Wait (up to 2 s) for executor ``name``'s claim turn: a session advisory lock
        that processors of that executor in every process take one at a time from the
        sync before a cycle's claim to the claim's commit, so each decides on a log that
        holds the claims made before it and none races for the same queue head.

        Returns the log's head position read once the lock is granted, in the same
        round trip (``pg_temp.lionstore_take_turn``: a plpgsql function takes a fresh
        snapshot for each statement, so its read sees every commit made before the
        turn came, which a single SELECT, whose snapshot predates its wait, would
        not). The caller then reads the tail up to it without asking for the head
        again: two round trips fewer while every other worker waits. None: not taken
        (not waited for longer, nothing held); the caller claims without, as
        compare-and-set keeps claims correct either way."""
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
                    try:
                        await conn.execute(_TAKE_TURN_FUNCTION)
                        self._turn_one_trip = True
                    except asyncpg.PostgresError as exc:  # e.g. no PL/pgSQL: two trips
                        log.info("%s: claim turns in two round trips: %s", self._label, exc)
                        self._turn_one_trip = False
                key = owner_lock_key(name)
                if self._turn_one_trip:
                    head = await conn.fetchval(
                        "SELECT pg_temp.lionstore_take_turn($1, $2)", _TURN_CLASS, key
                    )
                else:  # the head read by a statement of its own, after the lock came
                    await conn.execute("SELECT pg_advisory_lock($1, $2)", _TURN_CLASS, key)
                    head = await conn.fetchval(HEAD_POSITION)
                return int(head)
            except Exception as exc:
                if self._turn_conn is not None and getattr(exc, "sqlstate", None) != "55P03":
                    # Not a wait that ran out (lock_timeout: nothing held): a lost
                    # connection, or a failure once the lock came. A session lock
                    # outlives a failed statement; ending the session frees it.
                    self._turn_conn.terminate()
                    self._turn_conn = None
                log.debug("%s: claim turn of %s not taken: %s", self._label, name, exc)
                return None
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
                # Two ints of this module's own, written into the text: a statement
                # without parameters goes as a simple query, sent in this task's first
                # step. With parameters, the first unlock on a connection would first
                # prepare the statement and send the unlock only once its caller next
                # yields, which after a claim's commit is when the claim's records are
                # folded: 170 ms late for a forward queueing 2,000 events.
                await conn.execute(
                    f"SELECT pg_advisory_unlock({int(_TURN_CLASS)}, {int(owner_lock_key(name))})"
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
            f" r.data, s.stream_id, r.recorded_at_us, r.digest{FROM_RECORDS}"
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
