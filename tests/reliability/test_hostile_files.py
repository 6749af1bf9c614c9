"""Files whose records were changed behind lionstore's back.

Zero-byte, truncated, random, foreign, damaged and newer-schema files are refused at
open and left unchanged (tests/log/test_sqlite_files.py). Here the file is a healthy
SQLite database whose *records* were tampered with: every entry point (the executor,
the exchange, rebuild, verify) either copes or raises a LionstoreError — never a
stray KeyError or AttributeError — verify reports the damage, and none of it writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore import Event, Exchange, Executor, LionstoreError, Source
from lionstore.replay import rebuild, verify

RUN = "tampered"


class Chore(Event):
    fail: bool = False

    async def invoke(self) -> None:
        if self.fail:
            raise RuntimeError("no")
        self.response = {"ok": True}


async def make_file(path: Path) -> None:
    async with lionstore.open(path, run=RUN) as store:
        executor = Executor(
            {"queue_capacity": 4, "capacity_refresh_time": 0.01}, store=store, name="chores"
        )
        await executor.start()
        await executor.extend([Chore(), Chore(fail=True), Chore()])
        await executor.forward()
        alice, bob = Source(), Source()
        exchange = Exchange(store=store, name="post")
        await exchange.add_source([alice, bob])
        for i in range(3):
            await alice.send(exchange.create_mail(alice, bob, "message", {"i": i}))
        await exchange.collect_all()
        await exchange.deliver_all()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def sql(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute(statement).rowcount >= 1, statement
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def first(kind: str) -> str:
    return (
        f"(SELECT position FROM lionstore_records WHERE kind = '{kind}' ORDER BY position LIMIT 1)"
    )


TAMPER: dict[str, str] = {
    "an outcome's response edited": (
        "UPDATE lionstore_records SET data = json_set(data, '$.response', 'forged') "
        f"WHERE position = {first('event.finished')}"
    ),
    "an outcome's status set to garbage": (
        "UPDATE lionstore_records SET data = json_set(data, '$.status', 'exploded') "
        f"WHERE position = {first('event.finished')}"
    ),
    "a record's data not JSON": (
        f"UPDATE lionstore_records SET data = '{{{{not json' WHERE position = {first('mail.sent')}"
    ),
    "a record's data the wrong shape": (
        f"UPDATE lionstore_records SET data = '[1, 2, 3]' WHERE position = {first('event.claimed')}"
    ),
    "a record from a future kind_version": (
        f"UPDATE lionstore_records SET kind_version = 99 WHERE position = {first('mail.delivered')}"
    ),
    "a claim deleted": f"DELETE FROM lionstore_records WHERE position = {first('event.claimed')}",
    "a delivery moved to another mail": (
        "UPDATE lionstore_records SET stream_version = stream_version + 5 "
        f"WHERE position = {first('mail.delivered')}"
    ),
}


def digest(path: Path) -> tuple[str, ...]:
    """The file's and its WAL's hashes (an empty WAL, which any reader of a WAL-mode
    file may create, counts as none)."""
    return tuple(
        hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() and p.stat().st_size else "-"
        for p in (path, Path(f"{path}-wal"))
    )


async def _executor(store: lionstore.Store) -> Any:
    executor = Executor(store=store, name="chores")
    await executor.load()
    return [e.status for e in executor.pile]


async def _exchange(store: lionstore.Store) -> Any:
    exchange = Exchange(store=store, name="post")
    await exchange.load()
    return exchange.dead_letters


async def _rebuild(store: lionstore.Store) -> Any:
    return (await rebuild(store)).counts()


ENTRY_POINTS: dict[str, Callable[[lionstore.Store], Any]] = {
    "executor": _executor,
    "exchange": _exchange,
    "rebuild": _rebuild,
}


@pytest.mark.parametrize("tamper", list(TAMPER))
async def test_tampered_records_are_reported_and_nothing_is_written(
    tmp_path: Path, tamper: str
) -> None:
    path = tmp_path / "t.db"
    await make_file(path)
    sql(path, TAMPER[tamper])
    before = digest(path)

    async with lionstore.open(path, run=RUN, readonly=True) as store:
        report = await verify(store)
        assert not report.ok, f"verify missed: {tamper}"
        assert report.divergence is not None and report.divergence.reason
        for name, entry in ENTRY_POINTS.items():
            try:
                await entry(store)
            except LionstoreError as exc:
                assert str(exc), name
            # any other exception type fails the test: it is not a clear error
    assert digest(path) == before

    # a writable open that only loads writes nothing either (no new run, no records)
    async with lionstore.open(path, run=RUN) as store:
        head = await store.head()
        for entry in ENTRY_POINTS.values():
            with contextlib.suppress(LionstoreError):
                await entry(store)
        assert await store.head() == head
        assert len(await store.runs()) == 1
