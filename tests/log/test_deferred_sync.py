"""At durability "full", an executor's claim commits without a sync of its own: the
outcome's commit, which syncs the WAL as a whole, makes it durable before forward()
returns. Everything a caller gets back from (an append, a forward, a mail) is synced.

Observed through SQLite itself: the statements the writer connection runs (its trace
callback), grouped into transactions, and the level each transaction committed at.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from bounds import bounded

import lionstore
from lionstore.domain.records import RecordData
from lionstore.log.sqlite import SQLiteBackend


class Noted(RecordData):
    kind = "deferredsync.noted"
    n: int


class Trivial(lionstore.Event):
    async def invoke(self) -> None:
        self.response = "ok"


def _trace(store: lionstore.Store) -> list[str]:
    statements: list[str] = []
    conn = store._backend._writer.connection()  # type: ignore[attr-defined]
    conn.set_trace_callback(statements.append)
    return statements


def _commits(statements: list[str]) -> list[tuple[str, set[str]]]:
    """(the synchronous level it committed at, the record kinds it wrote) per
    transaction, in order."""
    level, kinds, out = "FULL", set[str](), []
    for statement in statements:
        text = statement.strip()
        upper = text.upper()
        if upper.startswith("PRAGMA SYNCHRONOUS="):
            level = upper.split("=", 1)[1]
        elif upper.startswith("BEGIN"):
            kinds = set()
        elif upper.startswith("INSERT INTO LIONSTORE_RECORDS"):
            kinds.update(k for k in _KINDS if f"'{k}'" in text)
        elif upper == "COMMIT" and kinds:
            out.append((level, kinds))
    return out


_KINDS = (
    "event.appended",
    "event.queued",
    "event.claimed",
    "event.finished",
    Noted.kind,
)


async def test_a_claim_is_synced_by_its_outcome_at_full_durability(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    async with lionstore.open(path, run="r", durability="full") as store:
        executor = lionstore.Executor(
            {"queue_capacity": 4, "capacity_refresh_time": 0.01}, store=store, name="x"
        )
        await executor.start()
        statements = _trace(store)
        event = Trivial()
        await executor.append(event)
        await executor.forward()
        assert event.status is lionstore.EventStatus.COMPLETED
        assert _commits(statements) == [
            ("FULL", {"event.appended"}),
            ("NORMAL", {"event.queued", "event.claimed"}),
            ("FULL", {"event.finished"}),
        ]
        # the connection is back at FULL for whatever comes next
        conn = store._backend._writer.connection()  # type: ignore[attr-defined]
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)
        executor.close()
    async with lionstore.open(path, run="r", readonly=True) as store:
        kinds = [r.kind async for r in await store.read()]
        assert kinds[-4:] == ["event.appended", "event.queued", "event.claimed", "event.finished"]


async def test_a_claim_that_also_appends_events_is_synced(tmp_path: Path) -> None:
    """lionagi's iModel path appends, queues and claims new events in one commit: those
    are appends, synced before anything is invoked."""
    async with lionstore.open(tmp_path / "admit.db", run="r", durability="full") as store:
        processor = lionstore.Processor(4, 0.01)
        await processor.enqueue(Trivial())  # the processor joins the ambient store
        statements = _trace(store)
        ran = await bounded(
            processor._cycle_with(forward=False, admit=[Trivial()]), "an admitting cycle"
        )
        assert ran == 2
        assert _commits(statements) == [
            ("FULL", {"event.appended", "event.queued", "event.claimed"}),
            ("FULL", {"event.finished"}),
        ]


async def test_at_normal_durability_the_level_is_never_touched(tmp_path: Path) -> None:
    async with lionstore.open(tmp_path / "n.db", run="r") as store:
        executor = lionstore.Executor(
            {"queue_capacity": 4, "capacity_refresh_time": 0.01}, store=store, name="x"
        )
        await executor.start()
        statements = _trace(store)
        await executor.append(Trivial())
        await executor.forward()
        assert not [s for s in statements if "synchronous" in s.lower()]
        executor.close()


async def test_a_group_with_one_request_to_sync_is_synced(tmp_path: Path) -> None:
    async with lionstore.open(tmp_path / "g.db", run="r", durability="full") as store:
        await store.append([(lionstore.IDType.create(), Noted(n=0))])
        statements = _trace(store)
        # submitted at the same moment: one group commit
        lazy = store.append_records([(lionstore.IDType.create(), Noted(n=1))], sync=False)
        eager = store.append_records([(lionstore.IDType.create(), Noted(n=2))])
        await bounded(asyncio.gather(lazy, eager), "two appends")
        alone = await store.append_records([(lionstore.IDType.create(), Noted(n=3))], sync=False)
        assert len(alone) == 1
        assert [level for level, _ in _commits(statements)] == ["FULL", "NORMAL"]


async def test_a_connection_that_cannot_be_set_back_is_dropped(tmp_path: Path) -> None:
    """Setting the level back fails inside a transaction; the connection must then never
    commit again at NORMAL: it is closed, and the next write opens one at FULL."""
    async with lionstore.open(tmp_path / "d.db", run="r", durability="full") as store:
        await store.append([(lionstore.IDType.create(), Noted(n=0))])
        backend = store._backend
        assert isinstance(backend, SQLiteBackend)
        stuck = backend._writer.connection()
        stuck.execute("PRAGMA synchronous=NORMAL")
        stuck.execute("BEGIN")  # the level cannot change until this ends
        backend._restore_synchronous(stuck)
        with pytest.raises(sqlite3.ProgrammingError):  # closed
            stuck.execute("SELECT 1")
        [position] = await store.append([(lionstore.IDType.create(), Noted(n=1))])
        fresh = backend._writer.connection()
        assert fresh is not stuck
        assert fresh.execute("PRAGMA synchronous").fetchone() == (2,)
        assert position == await store.head()
