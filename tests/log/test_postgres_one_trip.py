"""PostgreSQL commits in one round trip (``pg_temp.lionstore_commit``).

Round trips are counted as the statements the writer connection sends (asyncpg's
query logger sees every one, ``BEGIN`` and ``COMMIT`` included); the statement is
prepared on its first use, so each test commits once before it counts. The digest
chain the function computes is checked by the Python code that reads it back, with
text outside ASCII in the data; a stale cache costs one more trip and decides on the
log as it is; positions stay gapless whatever the order commits arrive in.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

import lionstore
from lionstore import IDType, RecordData
from lionstore.errors import ConcurrencyError
from lionstore.log.postgres import PostgresBackend
from lionstore.replay import verify

pytestmark = pytest.mark.usefixtures("pg_cluster")


class Note(RecordData):
    kind: ClassVar[str] = "test.note"
    text: str


def _backend(store: lionstore.Store) -> PostgresBackend:
    backend = store._backend
    assert isinstance(backend, PostgresBackend)
    return backend


class Statements:
    """The statements one store's writer connection sends while counted."""

    def __init__(self, store: lionstore.Store) -> None:
        self.conn: Any = _backend(store)._conn
        assert self.conn is not None, "the store has not written yet"
        self.sent: list[str] = []

    def _log(self, record: Any) -> None:
        self.sent.append(" ".join(record.query.split()))

    def __enter__(self) -> Statements:
        self.conn.add_query_logger(self._log)
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.remove_query_logger(self._log)

    async def settled(self) -> list[str]:
        await asyncio.sleep(0)  # the logger is called soon after each statement
        return self.sent


async def test_a_single_record_append_is_one_round_trip(pg_database: str) -> None:
    async with lionstore.open(pg_database, run="one-trip") as store:
        first, second = IDType.create(), IDType.create()
        await store.append([(first, Note(text="warm-up"))])  # prepares the statement
        with Statements(store) as counted:
            await store.append([(second, Note(text="a new stream"))])
            await store.append(
                [(first, Note(text="an existing one"))], expected_versions={first: 1}
            )
            sent = await counted.settled()
        assert len(sent) == 2, sent  # one statement per append: no BEGIN, lock, COMMIT
        assert all("pg_temp.lionstore_commit" in s for s in sent)
        assert store.position == 4  # run.started, then three appends
        versions = [(r.stream_id, r.stream_version) async for r in await store.read()]
        assert versions[1:] == [(first, 1), (second, 1), (first, 2)]


async def test_a_catch_up_is_one_round_trip(pg_database: str) -> None:
    """``sync`` reads the head and the records another writer committed in one
    statement, whether it finds records or none."""
    async with (
        lionstore.open(pg_database, run="tail") as store,
        lionstore.open(pg_database, run="tail") as other,
    ):
        await store.append([(IDType.create(), Note(text="warm-up"))])  # opens the writer
        await store.sync()
        await other.append([(IDType.create(), Note(text=str(i))) for i in range(3)])
        head = await other.head()
        seen: list[int] = []
        store.subscribe(lambda records: seen.extend(r.position for r in records))
        with Statements(store) as counted:
            assert await store.sync() == head
            assert len(await counted.settled()) == 1
            assert await store.sync() == head  # nothing new: still one statement
            assert len(await counted.settled()) == 2
        assert seen == [head - 2, head - 1, head]


async def test_a_group_no_request_syncs_commits_without_waiting_for_the_flush(
    pg_database: str,
) -> None:
    """At durability "full" an append commits with ``synchronous_commit`` on (the
    session's setting) and one made with ``sync=False`` (an executor's claim) with it
    off for its own transaction: the client says which, and the function sets it."""
    from lionstore.log.postgres_commit import _CALL

    async with lionstore.open(pg_database, run="sync", durability="full") as store:
        sid = IDType.create()
        await store.append([(sid, Note(text="warm-up"))])
        conn: Any = _backend(store)._conn
        calls: list[Any] = []

        def log(record: Any) -> None:
            if "lionstore_commit" in record.query:
                calls.append(record.args[-1])

        conn.add_query_logger(log)
        try:
            await store.append_records([(sid, Note(text="synced"))])
            await store.append_records([(sid, Note(text="a claim")), (sid, Note(text="2"))],
                                       sync=False)  # fmt: skip
            for _ in range(1000):  # the logger is called soon after each statement
                if len(calls) == 2:
                    break
                await asyncio.sleep(0)
        finally:
            conn.remove_query_logger(log)
        assert calls == [True, False]
        texts = [getattr(r.data, "text", None) async for r in await store.read(stream=sid)]
        assert texts == ["warm-up", "synced", "a claim", "2"]
        for sync, level in ((True, "on"), (False, "off")):
            async with conn.transaction():  # see the setting before the commit ends
                await conn.fetchrow(_CALL, store.run.run_no, store.position, "x",
                                    *([[]] * 10), 0, sync)  # fmt: skip
                assert await conn.fetchval("SHOW synchronous_commit") == level
        assert await conn.fetchval("SHOW synchronous_commit") == "on"  # the session's


async def test_the_locking_commit_took_four(pg_database: str) -> None:
    """The figure the one-trip commit is measured against: the same append made the
    locking way (the path kept for a server without PL/pgSQL) sends BEGIN, the lock,
    the write and COMMIT."""
    async with lionstore.open(pg_database, run="locking") as store:
        stream = IDType.create()
        await store.append([(stream, Note(text="warm-up"))])
        backend = _backend(store)
        backend._one_trip = False
        await store.append([(stream, Note(text="prepares"))], expected_versions={stream: 1})
        with Statements(store) as counted:
            await store.append([(stream, Note(text="counted"))], expected_versions={stream: 2})
            sent = await counted.settled()
        assert len(sent) == 4, sent
        assert sent[0].startswith("BEGIN") and sent[-1].startswith("COMMIT")


async def test_a_stream_the_cache_lacks_is_looked_up_not_sent_twice(pg_database: str) -> None:
    """A commit expecting a stream this writer has never cached (another process wrote
    it; this one read it from the log's history) asks for the stream's head first, ids
    only, and then commits in one call. Sent as absent, the call would be stale and
    the retry would send every record again."""
    async with (
        lionstore.open(pg_database, run="lacks") as a,
        lionstore.open(pg_database, run="lacks") as b,
    ):
        shared = [IDType.create() for _ in range(3)]
        await a.append([(IDType.create(), Note(text="a's warm-up"))])
        await b.append([(sid, Note(text="b writes first")) for sid in shared])
        with Statements(a) as counted:
            await a.append(
                [(sid, Note(text="then a")) for sid in shared],
                expected_versions={sid: 1 for sid in shared},
            )
            sent = await counted.settled()
        assert len(sent) == 2, sent
        assert "lionstore_streams" in sent[0] and "lionstore_commit" not in sent[0]
        assert "pg_temp.lionstore_commit" in sent[1]
        versions = [(r.stream_id, r.stream_version) async for r in await a.read(after=2)]
        assert sorted(versions[-3:]) == sorted((sid, 2) for sid in shared)


async def test_a_stale_cache_costs_one_more_trip_and_decides_on_the_log(
    pg_database: str,
) -> None:
    async with (
        lionstore.open(pg_database, run="stale") as a,
        lionstore.open(pg_database, run="stale") as b,
    ):
        shared = IDType.create()
        await b.append([(shared, Note(text="b writes first"))])  # b caches it at 1
        await a.append([(shared, Note(text="then a"))], expected_versions={shared: 1})
        with Statements(b) as counted:
            # b's cache has ``shared`` at version 1: the function finds it at 2 and
            # writes nothing; b plans again from the head it returned and commits.
            position = await b.append(
                [(shared, Note(text="then b"))], expected_versions={shared: 2}
            )
            sent = await counted.settled()
        assert len(sent) == 2, sent
        assert all("pg_temp.lionstore_commit" in s for s in sent)
        assert position == [b.position]
        with pytest.raises(ConcurrencyError, match="is at version 3, expected 2"):
            await a.append([(shared, Note(text="a is behind"))], expected_versions={shared: 2})
        records = [r async for r in await a.read(stream=shared)]
        assert [(r.stream_version, r.data.text) for r in records] == [  # type: ignore[union-attr]
            (1, "b writes first"),
            (2, "then a"),
            (3, "then b"),
        ]


async def test_the_function_chains_digests_as_python_does(pg_database: str) -> None:
    """verify recomputes every record's digest in Python: text outside ASCII, batches,
    new and old streams, written by two stores interleaved."""
    async with (
        lionstore.open(pg_database, run="chain") as a,
        lionstore.open(pg_database, run="chain") as b,
    ):
        streams = [IDType.create() for _ in range(5)]
        for i in range(20):
            store = a if i % 3 else b
            batch = [
                (streams[(i + k) % 5], Note(text=f'é 漢字 🦁 \\n " {i}.{k}')) for k in range(3)
            ]
            await store.append(batch)
        report = await verify(a)
        assert report.divergence is None, report.divergence
        assert report.records == 61


async def test_positions_stay_gapless_under_concurrent_commits(pg_database: str) -> None:
    """Eight stores (eight writer sessions) commit at once, some to the same streams
    with expected versions: every position from 1 to the head is taken once, each
    stream's versions run 1, 2, 3, ... and every record chains to the one before."""
    stores = [await lionstore.open(pg_database, run="gapless") for _ in range(8)]
    shared = [IDType.create() for _ in range(3)]
    refused = 0

    async def writer(store: lionstore.Store, n: int) -> None:
        nonlocal refused
        for i in range(25):
            await store.append([(IDType.create(), Note(text=f"{n}.{i}"))])
            target = shared[(n + i) % 3]
            await store.sync()
            version = len([r async for r in await store.read(stream=target)])
            try:
                await store.append(
                    [(target, Note(text=f"{n}.{i}"))], expected_versions={target: version}
                )
            except ConcurrencyError:
                refused += 1

    try:
        await asyncio.wait_for(
            asyncio.gather(*(writer(s, n) for n, s in enumerate(stores))), timeout=120
        )
        reader = stores[0]
        await reader.sync()
        records = [r async for r in await reader.read()]
        assert [r.position for r in records] == list(range(1, len(records) + 1))
        assert reader.position == len(records)
        assert len(records) == 1 + 8 * 25 + (8 * 25 - refused)
        for stream in shared:
            versions = [r.stream_version for r in records if r.stream_id == stream]
            assert versions == list(range(1, len(versions) + 1))
        report = await verify(reader)
        assert report.divergence is None, report.divergence
    finally:
        for store in stores:
            await store.close()


@pytest.mark.fresh_database  # never analysed, as a young run's tables are
async def test_look_ups_probe_indexes_however_large_the_run(pg_database: str) -> None:
    """The commit function's look-ups and the client's catch-up are planned as index
    probes, never as a scan of the run's streams, whatever the statistics say. Written
    as joins, the function's stale-belief check got a hash join over every stream of
    the run as its generic plan (the one a session settles on after five calls) while
    the tables were unanalysed, and the catch-up once they were analysed: every commit
    or sync read every stream, a cost that grew with the run (the check alone was 70%
    of the server's time in a worker's commits). The plans are the ones the writer
    session runs, logged by auto_explain as notices, generic as after the first calls."""
    async with lionstore.open(pg_database, run="probes") as store:
        conn: Any = _backend(store)._conn
        assert conn is not None
        streams = [IDType.create() for _ in range(30_000)]

        async def create(first: int, last: int) -> None:
            for i in range(first, last, 1_000):
                await store.append([(sid, Note(text="new")) for sid in streams[i : i + 1_000]])

        await create(0, 3_000)
        plans: list[str] = []
        conn.add_log_listener(lambda _conn, message: plans.append(message.message))
        await conn.execute("LOAD 'auto_explain'")
        await conn.execute(
            "SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements"
            " = on; SET auto_explain.log_level = notice; SET client_min_messages = notice;"
            " SET plan_cache_mode = force_generic_plan"
        )

        async def elsewhere(sid: IDType) -> None:
            async with lionstore.open(pg_database, run="probes") as other:
                await other.append([(sid, Note(text="from elsewhere"))])

        try:
            # Unanalysed (3,000 streams): a commit that checks beliefs about three
            # existing streams, with another writer's record to catch up on.
            await elsewhere(streams[0])
            await store.append(
                [(sid, Note(text="again")) for sid in streams[1:4]],
                expected_versions={sid: 1 for sid in streams[1:4]},
            )
            await create(3_000, 30_000)
            await conn.execute("ANALYZE")  # now the planner knows how large the run is
            await elsewhere(streams[4])
            await store.sync()  # the client's own catch-up
        finally:
            await conn.execute("RESET ALL")
        check = [p for p in plans if "bool_or" in p]
        catch_up = [p for p in plans if "array_agg(q.position" in p]
        synced = [p for p in plans if "r.position <= h.last_position" in p]
        assert check and catch_up and synced, plans  # each statement ran and was logged
        for plan in check + catch_up + synced:
            assert "Seq Scan on lionstore_streams" not in plan, plan
            assert "Bitmap Heap Scan on lionstore_streams" not in plan, plan
            assert "Hash" not in plan, plan
        assert "Index Scan using uq_lionstore_streams_run_no_stream_id" in check[0], check[0]
        assert "Index Scan using pk_lionstore_streams" in catch_up[0], catch_up[0]
        assert "Index Scan using pk_lionstore_streams" in synced[0], synced[0]
        # the catch-up's head and records in one statement, the records by a range probe
        assert "Seq Scan on lionstore_records" not in synced[0], synced[0]
        positions = [r.position async for r in await store.read()]
        assert positions == list(range(1, len(positions) + 1))
