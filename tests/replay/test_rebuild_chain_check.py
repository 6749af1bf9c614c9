"""A large run's digest chain is checked by a second process while rebuild folds it
(lionstore.log.chaincheck): the same state as the in-thread check, and a record that
does not chain is refused with its position, the same way."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore import CorruptDatabaseError, Event, Executor
from lionstore.log.sqlite import SQLiteBackend
from lionstore.replay import rebuild, state


class Doubling(Event):
    n: int = 0

    async def invoke(self) -> None:
        self.response = self.n * 2


async def record(path: Path) -> None:
    async with lionstore.open(path, run="chain") as store:
        executor = Executor({"queue_capacity": 10, "capacity_refresh_time": 0.01}, name="x")
        await executor.start()
        await executor.extend([Doubling(n=i) for i in range(30)])
        await executor.forward()
        executor.close()
        assert store.position > 60


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every run the rebuild hands to a child process (the threshold set to 0)."""
    started: list[Any] = []
    real = SQLiteBackend.start_chain_check

    async def spy(self: SQLiteBackend, query: Any, tip: str) -> Any:
        check = await real(self, query, tip)
        started.append(check)
        return check

    monkeypatch.setattr(state, "PARALLEL_CHECK_AT", 0)
    monkeypatch.setattr(SQLiteBackend, "start_chain_check", spy)
    return started


async def rebuilt(path: Path, **kwargs: Any) -> dict[str, Any]:
    async with lionstore.open(path, readonly=True) as store:
        projection = await rebuild(store, run="chain", **kwargs)
        return {
            "summary": projection.summary(),
            "counts": projection.counts(),
            "tip": projection.tip,
        }


async def test_the_child_check_gives_the_same_state_and_tip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checks: list[Any]
) -> None:
    db = tmp_path / "run.db"
    await record(db)
    in_child = await rebuilt(db)
    at = await rebuilt(db, at=40)
    assert len(checks) == 2 and all(c is not None for c in checks)
    monkeypatch.setattr(state, "PARALLEL_CHECK_AT", 10**12)
    in_thread = await rebuilt(db)
    assert len(checks) == 2  # not used above the threshold
    assert in_child == in_thread
    assert at == await rebuilt(db, at=40)
    assert in_child["counts"]["events"] == {"completed": 30}
    assert in_child["tip"] and at["tip"] != in_child["tip"]


async def test_a_record_that_does_not_chain_is_refused_with_its_position(
    tmp_path: Path, checks: list[Any]
) -> None:
    db = tmp_path / "run.db"
    await record(db)
    with sqlite3.connect(db) as conn:
        (position,) = conn.execute(
            "SELECT max(position) FROM lionstore_records WHERE kind = 'event.finished'"
        ).fetchone()
        before = conn.execute(
            "SELECT data FROM lionstore_records WHERE position = ?", (position,)
        ).fetchone()
        conn.execute(
            "UPDATE lionstore_records SET data = json_set(data, '$.response', 999)"
            " WHERE position = ?",
            (position,),
        )
        after = conn.execute(
            "SELECT data FROM lionstore_records WHERE position = ?", (position,)
        ).fetchone()
        assert before != after
    with pytest.raises(CorruptDatabaseError, match=rf"position {position} does not chain"):
        await rebuilt(db)
    assert len(checks) == 1 and checks[0] is not None
