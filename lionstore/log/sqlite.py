"""The SQLite backend: one SQLite file (WAL) as lionstore's log.

It is split by role, each module on the one before: ``sqlite_threads.py`` runs
sqlite3 connections from asyncio and translates their errors; ``sqlite_commit.py``
holds the connections and the commit path (appends, group commit, the tail of other
writers' records); this module adds runs, reads, checkpoints and retention, and is
the :class:`~lionstore.log.backend.LogBackend` the store opens.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, cast

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
from lionstore.log.chaincheck import ChainCheck, start_chain_check
from lionstore.log.digest import chain_start, record_digest
from lionstore.log.migrate import readonly_uri
from lionstore.log.sqlite_commit import INSERT_RECORD, INSERT_STREAM, SYNCHRONOUS, SQLiteCommits
from lionstore.log.sqlite_threads import BusyError, io_error, translate_sqlite_error

__all__ = [
    "SQLiteBackend",
    "SQLiteRunScan",
    "SYNCHRONOUS",
    "io_error",
    "read_sql",
    "translate_sqlite_error",
]

_SELECT_RECORDS = (
    "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version, r.data,"
    " r.recorded_at_us, r.run_no, r.digest FROM lionstore_records r"
    " JOIN lionstore_streams s ON s.stream_no = r.stream_no"
)


def _record_filter(query: ReadQuery) -> tuple[str, list[Any]]:
    """The WHERE condition (records ``r`` joined to streams ``s``) and parameters of a
    read."""
    where = ["r.position > ?"]
    params: list[Any] = [query.after]
    stream = query.stream_id
    if query.run_no is not None:
        # With a stream, the run is only checked ("+" keeps SQLite from driving the
        # read by the run's index, which walks every record of the run): the stream's
        # own index finds its records, however large the run.
        where.append("+r.run_no = ?" if stream is not None else "r.run_no = ?")
        params.append(query.run_no)
    if query.upto is not None:
        where.append("r.position <= ?")
        params.append(query.upto)
    if query.until_us is not None:
        where.append("r.recorded_at_us <= ?")
        params.append(query.until_us)
    if stream is not None:
        # Looked up first (by (run_no, stream_id) when the run is known), then its
        # records by (stream_no, stream_version): O(the stream), not O(the run).
        if query.run_no is not None:
            where.append(
                "r.stream_no IN (SELECT x.stream_no FROM lionstore_streams x"
                " WHERE x.run_no = ? AND x.stream_id = ?)"
            )
            params += [query.run_no, stream]
            if query.after_version:
                where.append("r.stream_version > ?")
                params.append(query.after_version)
        else:
            where.append(
                "r.stream_no IN (SELECT x.stream_no FROM lionstore_streams x WHERE x.stream_id = ?)"
            )
            params.append(stream)
    if query.kinds:
        where.append(f"r.kind IN ({','.join('?' * len(query.kinds))})")
        params.extend(query.kinds)
    return " AND ".join(where), params


def read_sql(query: ReadQuery, limit: int) -> tuple[str, list[Any]]:
    """The statement and parameters of one page of a read (see :func:`_record_filter`
    for how one stream is found)."""
    where, params = _record_filter(query)
    params.append(limit)
    return f"{_SELECT_RECORDS} WHERE {where} ORDER BY {read_order(query)} LIMIT ?", params


class SQLiteBackend(SQLiteCommits):
    """Appends and reads on one SQLite file (WAL)."""

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
            last_position, last_stream_no, last_run_no = self._read_head(conn)
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
            conn.execute(INSERT_STREAM, (stream_no, run_no, run_id))
            digest = record_digest(
                chain_start(run_id), position, run_id, 1, RunStarted.kind, 1, now_us, text
            )
            conn.execute(
                INSERT_RECORD,
                (position, run_no, stream_no, 1, RunStarted.kind, 1, text, now_us, digest),
            )
            if parent is not None and forked_at is not None:
                position, stream_no = self._copy_prefix(
                    conn, parent.run_no, run_no, forked_at, position, stream_no, digest
                )
            # The run's number lives nowhere but here (see SELECT_HEAD).
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
        conn.executemany(INSERT_STREAM, new_streams)
        conn.executemany(INSERT_RECORD, new_records)
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
        return await self._read(lambda conn: self._read_head(conn)[0])

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
        # The head row is a high-water mark for positions and stream numbers (records
        # past it are the normal case: see SELECT_HEAD), so it is exact only for runs,
        # whose number a run's creation writes there. One statement, so one snapshot;
        # max(run_no) is a look-up at the end of a rowid.
        row = conn.execute(
            "SELECT h.last_run_no, (SELECT max(run_no) FROM lionstore_runs)"
            " FROM lionstore_head h WHERE h.id = 1"
        ).fetchone()
        if row is None:
            raise CorruptDatabaseError(f"{self._label}: the head row of the log is missing")
        head, last = row
        if (last or 0) > head:
            raise CorruptDatabaseError(
                f"{self._label}: the head row says the last run is {head}, but the"
                f" file holds run {last}: the file was edited or damaged"
            )

    async def read_rows(self, query: ReadQuery, limit: int) -> tuple[list[Any], dict[int, IDType]]:
        if query.one_stream and not self._readonly:
            # A stream's page (an aggregate's history, most often a few rows found by
            # index) is read on the idle writer connection in the caller's thread, as
            # an idle writer commits: the reader thread's hop cost more than the read
            # (0.083 against 0.21 ms for a three-record stream). Busy writer: the thread.
            def read(conn: sqlite3.Connection, *, wait: bool) -> Any:
                try:
                    return self._read_rows(conn, query, limit)
                except sqlite3.OperationalError as exc:
                    # The writer connection does not wait for locks (a WAL reader is
                    # refused only while another connection recovers or resets the
                    # WAL); the reader thread's connection waits up to lock_timeout.
                    if "locked" in str(exc) or "busy" in str(exc):
                        raise BusyError from None
                    raise

            page = self._write_now(read, commits=False)
            if page is not None:
                return cast(tuple[list[Any], dict[int, IDType]], page)
        return await self._read(self._read_rows, query, limit)

    def decode_row(self, row: Any, run_ids: dict[int, IDType]) -> Recorded:
        return self._rows.decode(row, run_ids)

    def decode_rows(self, rows: Sequence[Any], run_ids: dict[int, IDType]) -> Iterator[Recorded]:
        return self._rows.records(rows, run_ids)

    def _read_rows(
        self, conn: sqlite3.Connection, query: ReadQuery, limit: int
    ) -> tuple[list[Any], dict[int, IDType]]:
        sql, params = read_sql(query, limit)
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
                # The run may hold the log's last positions and streams, which commits
                # do not write to the head row: raise it to them first, so that none of
                # their numbers is ever handed out again (see SELECT_HEAD).
                last_position, last_stream_no, _ = self._read_head(conn)
                conn.execute(
                    "UPDATE lionstore_head SET last_position = ?, last_stream_no = ? WHERE id = 1",
                    (last_position, last_stream_no),
                )
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
        # The writer last: the last connection to close folds the WAL back into the
        # database file and removes the -wal and -shm files.
        if self._checkpointer is not None:
            await self._checkpointer.close()
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
