"""Bad input: each is refused with a clear error before anything is written.

Every test compares the log (head position, records of every run, runs) before and after.
Runs over the ``backend`` fixture, like the conformance suite.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
from pydantic import BaseModel

import lionstore
from lionstore import (
    ConcurrencyError,
    IDError,
    LionstoreError,
    NewRecord,
    RecordError,
    RecordTooLargeError,
    StoreClosedError,
)

from ._kinds import Blob, Kindless, Note, Ping, Reading
from .logtools import log_state, new_id, records

OpenStore = Callable[..., Any]


@pytest_asyncio.fixture
async def small(open_store: OpenStore) -> AsyncIterator[lionstore.Store]:
    """A store with a 2 KiB record limit and some history."""
    async with open_store(run="bad-input", max_record_bytes=2048) as store:
        await store.append([(new_id(), Ping(n=1)), (new_id(), Note(text="before"))])
        yield store


async def refused(
    store: lionstore.Store, error: type[BaseException], records_: Any, **kwargs: Any
) -> BaseException:
    """Append ``records_``; expect ``error``; check the log did not change."""
    before = await log_state(store)
    everything = await records(store, run=None)
    with pytest.raises(error) as caught:
        await store.append(records_, **kwargs)
    assert await log_state(store) == before
    assert await records(store, run=None) == everything
    assert str(caught.value)  # says what is wrong
    return caught.value


# -- data that cannot be stored -------------------------------------------------------------


class _Opaque:
    pass


@pytest.mark.parametrize(
    "value",
    [object(), _Opaque(), {"nested": [1, object()]}, b"\xff\xfe"],
    ids=["object", "custom-class", "nested-object", "bytes-not-utf8"],
)
async def test_data_that_is_not_json_serializable(small: lionstore.Store, value: Any) -> None:
    err = await refused(small, RecordError, [(new_id(), Ping(n=2)), (new_id(), Blob(value=value))])
    assert isinstance(err, ValueError)
    assert isinstance(err, LionstoreError)
    assert "logtest.blob" in str(err)


async def test_data_that_refers_to_itself(small: lionstore.Store) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    await refused(small, RecordError, [(new_id(), Blob(value=loop))])


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
async def test_nan_and_infinity_are_refused(small: lionstore.Store, number: float) -> None:
    err = await refused(small, RecordError, [(new_id(), Reading(value=number))])
    assert "JSON" in str(err)
    await refused(small, RecordError, [(new_id(), Blob(value={"deep": [1.0, number]}))])
    await refused(
        small, RecordError, [(new_id(), Ping(n=3)), (new_id(), Note(text="x", meta={"v": number}))]
    )


async def test_the_words_nan_and_infinity_inside_strings_are_fine(small: lionstore.Store) -> None:
    sid = new_id()
    data = Note(text="NaN Infinity -Infinity", tags=("NaN",), meta={"Infinity": "NaN"})
    await small.append([(sid, data)])
    [got] = await records(small, stream=sid)
    assert got.data == data


async def test_a_record_over_the_size_limit(small: lionstore.Store) -> None:
    err = await refused(
        small, RecordTooLargeError, [(new_id(), Ping(n=4)), (new_id(), Note(text="x" * 3000))]
    )
    assert isinstance(err, RecordError)
    assert "2048" in str(err)
    # the limit counts bytes of UTF-8, not characters: 700 euro signs are 2100 bytes
    await refused(small, RecordTooLargeError, [(new_id(), Note(text="€" * 700))])
    # just under the limit is fine
    sid = new_id()
    await small.append([(sid, Note(text="x" * 2000))])
    [got] = await records(small, stream=sid)
    assert len(got.raw.encode()) <= 2048


async def test_the_size_limit_cannot_be_set_absurdly_low(open_store: OpenStore) -> None:
    with pytest.raises(ValueError, match="max_record_bytes"):
        open_store(max_record_bytes=10)


# -- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id",
    ["not-a-uuid", "", "1234", 12345, None, 1.5, True, b"0" * 16, "x" * 10_000, object()],
    ids=["garbage", "empty", "short", "int", "none", "float", "bool", "bytes", "huge", "object"],
)
async def test_invalid_stream_ids(small: lionstore.Store, bad_id: Any) -> None:
    err = await refused(small, IDError, [(new_id(), Ping(n=5)), (bad_id, Ping(n=6))])
    assert isinstance(err, ValueError)
    await refused(small, IDError, [NewRecord(bad_id, Ping(n=7))])


async def test_invalid_ids_in_expected_versions(small: lionstore.Store) -> None:
    sid = new_id()
    await refused(small, IDError, [(sid, Ping(n=1))], expected_versions={"garbage": 0})
    await refused(small, IDError, [(sid, Ping(n=1))], expected_versions={None: 0})


async def test_invalid_run_references(small: lionstore.Store) -> None:
    with pytest.raises(IDError):
        await records(small, stream="not-a-uuid")
    with pytest.raises(ValueError):
        lionstore.open("unused.db", run="")
    with pytest.raises(ValueError):
        lionstore.open("unused.db", run="x" * 201)
    with pytest.raises(ValueError):
        lionstore.open("unused.db", run=123)  # type: ignore[arg-type]


# -- wrong types ----------------------------------------------------------------------------


class _NotARecord(BaseModel):
    n: int = 1


@pytest.mark.parametrize(
    "data",
    [{"n": 1}, _NotARecord(), "text", 42, None, Kindless()],
    ids=["dict", "plain-model", "str", "int", "none", "no-kind"],
)
async def test_data_that_is_not_record_data(small: lionstore.Store, data: Any) -> None:
    await refused(small, TypeError, [(new_id(), Ping(n=8)), (new_id(), data)])


@pytest.mark.parametrize(
    "item",
    [Ping(n=1), (new_id(),), (new_id(), Ping(n=1), "extra"), "string", None],
    ids=["bare-data", "one-tuple", "three-tuple", "string", "none"],
)
async def test_items_that_are_not_records(small: lionstore.Store, item: Any) -> None:
    await refused(small, TypeError, [(new_id(), Ping(n=9)), item])


@pytest.mark.parametrize(
    "version", [-1, -100, "1", 1.0, None, True], ids=["-1", "-100", "str", "float", "none", "bool"]
)
async def test_bad_expected_versions(small: lionstore.Store, version: Any) -> None:
    sid = new_id()
    err = await refused(small, ValueError, [(sid, Ping(n=1))], expected_versions={sid: version})
    assert not isinstance(err, ConcurrencyError)


@pytest.mark.parametrize("durability", ["fast", "FULL", "", None, 1])
def test_bad_durability(durability: Any, db_target: str) -> None:
    with pytest.raises(ValueError, match="durability"):
        lionstore.open(db_target, durability=durability)


async def test_bad_open_arguments(db_target: str) -> None:
    with pytest.raises(ValueError):
        lionstore.open(db_target, lock_timeout=0)
    with pytest.raises(TypeError):
        lionstore.open(12345)  # type: ignore[arg-type]


async def test_bad_read_arguments(small: lionstore.Store) -> None:
    with pytest.raises(ValueError):
        await small.read(page_size=0)
    with pytest.raises(ValueError):
        await small.read(until=datetime(2026, 1, 1))  # naive: which time zone?


# -- a closed store -------------------------------------------------------------------------


async def test_append_after_close(open_store: OpenStore) -> None:
    async with open_store(run="closed") as store:
        await store.append([(new_id(), Ping(n=1))])
    assert store.closed
    with pytest.raises(StoreClosedError):
        await store.append([(new_id(), Ping(n=2))])
    with pytest.raises(StoreClosedError):
        await store.append_records([(new_id(), Ping(n=2))])
    with pytest.raises(StoreClosedError):
        await store.sync()
    with pytest.raises(StoreClosedError):
        await store.read()
    await store.close()  # closing twice is harmless
    async with open_store(run="closed") as again:
        assert [r.data for r in await records(again, kinds=["logtest.ping"])] == [Ping(n=1)]


async def test_queries_after_close(open_store: OpenStore) -> None:
    async with open_store(run="closed") as store:
        pass
    for call in (store.head, store.runs, lambda: store.find_run("closed")):
        with pytest.raises(StoreClosedError):
            await call()
    with pytest.raises(StoreClosedError):
        await store.fork(at=1)
