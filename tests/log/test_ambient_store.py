"""The ambient store: classes built with no ``store=`` inside ``async with
lionstore.open(...)`` use that store; outside any, they say what to do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import lionstore
from lionstore import Exchange, Executor, MailManager, NoStoreError


async def test_open_block_makes_its_store_current(tmp_path: Path) -> None:
    assert lionstore.current_store() is None
    async with lionstore.open(tmp_path / "a.db", run="r") as store:
        assert lionstore.current_store() is store
        ex = Executor({"queue_capacity": 1, "capacity_refresh_time": 0.01})
        assert ex.store is store
        assert Exchange([]).store is store
        assert MailManager([]).store is store
    assert lionstore.current_store() is None


async def test_nested_blocks_restore_the_outer_store(tmp_path: Path) -> None:
    async with lionstore.open(tmp_path / "a.db", run="outer") as outer:
        async with lionstore.open(tmp_path / "b.db", run="inner") as inner:
            assert lionstore.current_store() is inner
        assert lionstore.current_store() is outer


async def test_awaited_store_used_as_context_manager(tmp_path: Path) -> None:
    store: lionstore.Store = await lionstore.open(tmp_path / "a.db", run="r")
    assert lionstore.current_store() is None  # awaiting alone makes nothing current
    async with store:
        current = lionstore.current_store()
        assert current is store
    assert lionstore.current_store() is None
    assert store.closed


async def test_explicit_store_wins_over_the_ambient_one(tmp_path: Path) -> None:
    async with (
        lionstore.open(tmp_path / "a.db", run="a") as a,
        lionstore.open(tmp_path / "b.db", run="b") as b,
    ):
        assert Executor(store=a).store is a
        assert Exchange([], store=a).store is a
        assert Executor().store is b


async def test_tasks_see_the_store_of_their_own_block(tmp_path: Path) -> None:
    seen: dict[str, object] = {}
    gate = asyncio.Event()

    async def worker(name: str) -> None:
        async with lionstore.open(tmp_path / f"{name}.db", run=name) as store:
            await asyncio.wait_for(gate.wait(), 10)
            seen[name] = (lionstore.current_store() is store, Executor().store is store)

    tasks = [asyncio.create_task(worker(n)) for n in ("x", "y")]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert seen == {"x": (True, True), "y": (True, True)}
    assert lionstore.current_store() is None


@pytest.mark.parametrize("cls", [Executor, Exchange, MailManager])
def test_no_store_anywhere_names_the_class_called(cls: type) -> None:
    with pytest.raises(NoStoreError) as info:
        cls()
    message = str(info.value)
    assert message.startswith(f"{cls.__name__} needs a store")
    assert "lionstore.open" in message
    assert isinstance(info.value, TypeError)  # lionagi-era `except TypeError` still catches it


def test_a_non_store_is_refused() -> None:
    with pytest.raises(TypeError, match="store must be a lionstore Store, not str"):
        Executor(store="work.db")  # type: ignore[arg-type]
