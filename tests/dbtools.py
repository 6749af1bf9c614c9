"""Reaching into a test database behind lionstore's back, on SQLite or PostgreSQL.

Tests that tamper with records or hold the write lock use these instead of
``sqlite3`` so they run on every backend. Statements use ``?`` placeholders; for
PostgreSQL they become ``$1, $2, ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pg_cluster import run_async

from lionstore.log.postgres import asyncpg_dsn


def is_postgres(target: str | Path) -> bool:
    return str(target).startswith("postgresql")


def _numbered(statement: str) -> str:
    parts = statement.split("?")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]


async def _pg(target: str, statement: str, params: tuple[Any, ...], fetch: bool) -> Any:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(target))
    try:
        if fetch:
            return [tuple(row) for row in await conn.fetch(_numbered(statement), *params)]
        status = await conn.execute(_numbered(statement), *params)
        count = status.rsplit(" ", 1)[-1]  # "UPDATE 1"; "CREATE TABLE" changes no rows
        return int(count) if count.isdigit() else 0
    finally:
        await conn.close()


def query(target: str | Path, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of one SELECT."""
    if is_postgres(target):
        rows: list[tuple[Any, ...]] = run_async(_pg(str(target), statement, params, True))
        return rows
    conn = sqlite3.connect(target)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def execute(target: str | Path, statement: str, *params: Any) -> int:
    """Run one statement in its own transaction; return the rows it changed."""
    if is_postgres(target):
        changed: int = run_async(_pg(str(target), statement, params, False))
        return changed
    conn = sqlite3.connect(target)
    try:
        with conn:
            return conn.execute(statement, params).rowcount
    finally:
        conn.close()


def record_data(target: str | Path, position: int) -> dict[str, Any]:
    """The JSON data of the record at ``position``."""
    ((data,),) = query(target, "SELECT data FROM lionstore_records WHERE position = ?", position)
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def set_field(target: str | Path, position: int, name: str, value: Any) -> int:
    """Set one top-level field of a record's JSON data; return the rows changed."""
    data = record_data(target, position)
    data[name] = value
    return execute(
        target,
        "UPDATE lionstore_records SET data = ? WHERE position = ?",
        json.dumps(data, separators=(",", ":")),
        position,
    )


@contextlib.contextmanager
def write_lock_held(target: str | Path) -> Iterator[None]:
    """Another connection holds the log's write lock for the duration."""
    if not is_postgres(target):
        conn = sqlite3.connect(target, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    locked, release = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def hold() -> None:
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(str(target)))
        try:
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM lionstore_head WHERE id = 1 FOR UPDATE")
                locked.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait)
        finally:
            await conn.close()

    def main() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:
            failure.append(exc)
            locked.set()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        assert locked.wait(60), "the lock-holding connection never got the lock"
        if failure:
            raise failure[0]
        yield
    finally:
        release.set()
        thread.join(60)


def rechain(target: str | Path, run: str) -> None:
    """Recompute the digest chain of ``run`` (its id or label) over the stored bytes,
    as someone hiding an edit would: a test of what an edit does past the digest check
    every load makes."""
    from lionstore.log.digest import chain_start, record_digest

    ((run_no, run_id),) = query(
        target, "SELECT run_no, run_id FROM lionstore_runs WHERE run_id = ? OR label = ?", run, run
    )
    rows = query(
        target,
        "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version,"
        " r.recorded_at_us, r.data FROM lionstore_records r JOIN lionstore_streams s"
        " ON s.stream_no = r.stream_no WHERE r.run_no = ? ORDER BY r.position",
        run_no,
    )
    tip = chain_start(run_id)
    for row in rows:
        tip = record_digest(tip, *row)
        execute(target, "UPDATE lionstore_records SET digest = ? WHERE position = ?", tip, row[0])
