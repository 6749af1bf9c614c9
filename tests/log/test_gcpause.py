"""lionstore pauses the cyclic garbage collector around its own bulk work only, and
always leaves it as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

import lionstore
from lionstore._gcpause import BULK, gc_paused
from lionstore.domain.ids import IDType

from ._kinds import Ping


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        (gc.enable if was else gc.disable)()


def test_pauses_nest_and_restore(collector_enabled: None) -> None:
    with gc_paused(BULK):
        assert not gc.isenabled()
        with gc_paused(BULK):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause is still on
    assert gc.isenabled()
    with gc_paused(BULK - 1):  # small work: no pause
        assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled(collector_enabled: None) -> None:
    gc.disable()
    with gc_paused(BULK):
        assert not gc.isenabled()
    assert not gc.isenabled()


async def test_a_bulk_append_leaves_the_collector_on(
    store: lionstore.Store, collector_enabled: None
) -> None:
    seen: list[bool] = []
    store.subscribe(lambda records: seen.append(gc.isenabled()))
    positions = await store.append([(IDType.create(), Ping(n=i)) for i in range(2 * BULK)])
    assert len(positions) == 2 * BULK
    assert seen == [False]  # the feed ran inside the pause ...
    assert gc.isenabled()  # ... and the collector is back on afterwards
