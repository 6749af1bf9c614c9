"""A stream's records are read by the stream's own index, however large its run.

``Store.read(stream=...)`` is an event store's most basic read (an aggregate's
history). Written as a join filtered on ``s.stream_id``, with the run's condition on
the records, it was planned on SQLite as a walk through every record of the run (the
run's index gives position order) and on PostgreSQL as a scan of every stream (the
streams' index leads with the run, which the query did not give it): 20-25 ms for a
one-record stream in a run of 200,000 records on SQLite, 50-60 ms in a run of a million
streams on PostgreSQL. Now the stream is looked up by (run, stream id) and its records
by (stream number, version), each page on from the last version.

These tests read the plans the backends' own read statements get, on a run with
enough streams for a scan to be what a planner would choose if it could.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore import IDType
from lionstore.log import postgres, sqlite
from lionstore.log.backend import ReadQuery

from ._kinds import Ping

STREAMS = 20_000


async def _many_streams(target: str) -> tuple[int, IDType]:
    """A run of STREAMS one-record streams (one of them with three records); its
    number and that stream."""
    async with lionstore.open(target, run="many") as store:
        sids = [IDType.create() for _ in range(STREAMS)]
        for i in range(0, STREAMS, 5_000):
            await store.append([(sid, Ping(n=1)) for sid in sids[i : i + 5_000]])
        await store.append([(sids[123], Ping(n=2)), (sids[123], Ping(n=3))])
        got = [r.data async for r in await store.read(stream=sids[123], page_size=2)]
        assert got == [Ping(n=1), Ping(n=2), Ping(n=3)]
        return store.run.run_no, sids[123]


async def test_sqlite_reads_a_stream_by_its_index(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    run_no, sid = await _many_streams(str(path))
    conn = sqlite3.connect(path)
    try:
        for query in (
            ReadQuery(run_no=run_no, stream_id=sid),
            ReadQuery(run_no=run_no, stream_id=sid, after_version=1, kinds=("logtest.ping",)),
        ):
            sql, params = sqlite.read_sql(query, 1000)
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "run_position" not in plan, plan  # no walk through the run's records
            assert "SCAN" not in plan, plan
            # the stream by (run_no, stream_id), its records by (stream_no, version)
            assert "lionstore_streams_1 (run_no=? AND stream_id=?)" in plan, plan
            assert "lionstore_records_1 (stream_no=?" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # in index order: no sort per page
    finally:
        conn.close()


@pytest.mark.usefixtures("pg_cluster")
@pytest.mark.fresh_database
async def test_postgres_reads_a_stream_by_its_index(pg_database: str) -> None:
    import asyncpg

    run_no, sid = await _many_streams(pg_database)
    conn: Any = await asyncpg.connect(postgres.asyncpg_dsn(pg_database))
    try:
        await conn.execute("ANALYZE")  # the planner knows how large the run is
        await conn.execute("SET plan_cache_mode = force_generic_plan")  # as after 5 calls
        for query in (
            ReadQuery(run_no=run_no, stream_id=sid),
            ReadQuery(run_no=run_no, stream_id=sid, after_version=1, kinds=("logtest.ping",)),
        ):
            sql, params = postgres.read_sql(query, 1000)
            await conn.execute(f"PREPARE page AS {sql}")
            try:
                values = ", ".join(_literal(v) for v in params)
                plan = "\n".join(
                    row[0] for row in await conn.fetch(f"EXPLAIN EXECUTE page({values})")
                )
            finally:
                await conn.execute("DEALLOCATE page")
            assert "Seq Scan" not in plan, plan  # neither the streams nor the records
            assert "Index Scan using uq_lionstore_streams_run_no_stream_id" in plan, plan
            assert "uq_lionstore_records_stream_no_stream_version" in plan, plan
    finally:
        await conn.close()


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::text[]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(int(value))
