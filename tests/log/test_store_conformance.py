"""The Store's contract, over the ``backend`` fixture: every backend must pass all of it.

Nothing here knows it is talking to SQLite; file-level behaviour is in test_sqlite_files.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from bounds import bounded

import lionstore
from lionstore import ConcurrencyError, NewRecord, Recorded, RunNotFoundError, UnknownRecord
from lionstore.domain.records import RunStarted

from ._kinds import Note, Ping, Reading
from .logtools import HERE, ROOT, new_id, records, shape, subprocess_env

OpenStore = Callable[..., Any]


# -- append: positions and versions ---------------------------------------------------------


async def test_positions_are_gapless_and_follow_commit_order(store: lionstore.Store) -> None:
    start = await store.head()
    returned: list[int] = []
    for size in (1, 4, 2, 7, 1):
        positions = await store.append([(new_id(), Ping(n=i)) for i in range(size)])
        assert len(positions) == size
        # one append: consecutive positions, right after everything committed before it
        assert positions == list(range(start + len(returned) + 1, start + len(returned) + 1 + size))
        returned += positions
    assert await store.head() == returned[-1]
    everything = await records(store, run=None)
    assert [r.position for r in everything] == list(range(1, returned[-1] + 1))


async def test_records_of_one_append_get_consecutive_positions_and_stream_versions(
    store: lionstore.Store,
) -> None:
    a, b = new_id(), new_id()
    committed = await store.append_records(
        [(a, Ping(n=1)), (b, Ping(n=2)), NewRecord(a, Ping(n=3)), (a, Ping(n=4)), (b, Ping(n=5))]
    )
    assert [r.position for r in committed] == list(
        range(committed[0].position, committed[0].position + 5)
    )
    assert [(r.stream_id, r.stream_version) for r in committed] == [
        (a, 1),
        (b, 1),
        (a, 2),
        (a, 3),
        (b, 2),
    ]
    later = await store.append_records([(b, Ping(n=6)), (a, Ping(n=7))])
    assert [(r.stream_id, r.stream_version) for r in later] == [(b, 3), (a, 4)]
    assert [r.stream_version for r in await records(store, stream=a)] == [1, 2, 3, 4]
    assert [r.data for r in await records(store, stream=b)] == [Ping(n=2), Ping(n=5), Ping(n=6)]


async def test_stream_ids_are_accepted_in_any_spelling(store: lionstore.Store) -> None:
    sid = new_id()
    await store.append([(sid.uuid, Ping(n=1))])  # uuid.UUID
    await store.append([(str(sid).upper(), Ping(n=2))])  # upper-case text
    await store.append([(sid.replace("-", ""), Ping(n=3))])  # hex without hyphens
    got = await records(store, stream=str(sid).upper())
    assert [(r.stream_id, r.stream_version) for r in got] == [(sid, 1), (sid, 2), (sid, 3)]
    assert all(r.stream_id == str(sid) for r in got)


async def test_append_of_nothing_writes_nothing(store: lionstore.Store) -> None:
    head = await store.head()
    assert await store.append([]) == []
    assert await store.head() == head


# -- expected versions ----------------------------------------------------------------------


async def test_expected_version_zero_means_a_new_stream(store: lionstore.Store) -> None:
    sid = new_id()
    [pos] = await store.append([(sid, Ping(n=1))], expected_versions={sid: 0})
    head = await store.head()
    assert head == pos
    with pytest.raises(ConcurrencyError):
        await store.append([(sid, Ping(n=2))], expected_versions={sid: 0})
    assert await store.head() == head
    assert [r.data for r in await records(store, stream=sid)] == [Ping(n=1)]


async def test_expected_new_stream_written_by_an_earlier_open_raises(
    open_store: OpenStore,
) -> None:
    # A store that never saw the stream (nothing cached about it) must still find out
    # that it exists: nothing of the refused batch is written, and the stream carries on.
    sid, other = new_id(), new_id()
    async with open_store(run="r") as first:
        await first.append([(sid, Ping(n=1))], expected_versions={sid: 0})
    async with open_store(run="r") as store:
        head = await store.head()
        with pytest.raises(ConcurrencyError, match="version 1"):
            await store.append(
                [(other, Ping(n=2)), (sid, Ping(n=3))], expected_versions={sid: 0, other: 0}
            )
        assert await store.head() == head
        assert await records(store, stream=other) == []
        committed = await store.append_records(
            [(sid, Ping(n=4)), (other, Ping(n=5))], expected_versions={sid: 1, other: 0}
        )
        assert [(r.stream_id, r.stream_version) for r in committed] == [(sid, 2), (other, 1)]


async def test_correct_expected_version_passes(store: lionstore.Store) -> None:
    sid = new_id()
    await store.append([(sid, Ping(n=1)), (sid, Ping(n=2))])
    committed = await store.append_records([(sid, Ping(n=3))], expected_versions={sid: 2})
    assert committed[0].stream_version == 3
    committed = await store.append_records(
        [(sid, Ping(n=4)), (sid, Ping(n=5))], expected_versions={str(sid).upper(): 3}
    )
    assert [r.stream_version for r in committed] == [4, 5]


@pytest.mark.parametrize("stale", [0, 1, 3, 10])
async def test_stale_expected_version_raises_and_writes_nothing(
    store: lionstore.Store, stale: int
) -> None:
    sid, other = new_id(), new_id()
    await store.append([(sid, Ping(n=1)), (sid, Ping(n=2))])
    head = await store.head()
    before = await records(store, run=None)
    with pytest.raises(ConcurrencyError, match="version 2"):
        # the whole batch is refused, including the record on the other stream
        await store.append(
            [(other, Ping(n=100)), (sid, Ping(n=3)), (other, Ping(n=101))],
            expected_versions={sid: stale},
        )
    assert await store.head() == head
    assert await records(store, run=None) == before
    assert await records(store, stream=other) == []
    # the refused append did not disturb what the store knows about the streams
    committed = await store.append_records(
        [(sid, Ping(n=3)), (other, Ping(n=4))], expected_versions={sid: 2, other: 0}
    )
    assert [(r.stream_id, r.stream_version, r.position) for r in committed] == [
        (sid, 3, head + 1),
        (other, 1, head + 2),
    ]


async def test_expected_version_may_guard_a_stream_the_batch_does_not_write(
    store: lionstore.Store,
) -> None:
    guard, target = new_id(), new_id()
    await store.append([(guard, Ping(n=1))])
    await store.append([(target, Ping(n=1))], expected_versions={guard: 1})
    with pytest.raises(ConcurrencyError):
        await store.append([(target, Ping(n=2))], expected_versions={guard: 0})
    assert [r.stream_version for r in await records(store, stream=target)] == [1]
    assert [r.stream_version for r in await records(store, stream=guard)] == [1]


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_concurrent_appends_one_stale_only_that_one_fails(
    open_store: OpenStore, durability: str
) -> None:
    async with open_store(run="group", durability=durability) as store:
        contested = new_id()
        await store.append([(contested, Ping(n=0))])  # at version 1
        start = await store.head()
        streams = [new_id() for _ in range(12)]
        calls = [
            store.append([(sid, Ping(n=i)), (sid, Ping(n=i + 100))])
            for i, sid in enumerate(streams)
        ]
        calls.insert(6, store.append([(contested, Ping(n=-1))], expected_versions={contested: 0}))
        results = await bounded(asyncio.gather(*calls, return_exceptions=True), "the appends")

        failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
        assert failed == [6]
        assert isinstance(results[6], ConcurrencyError)
        committed = [r for r in results if not isinstance(r, BaseException)]
        for positions in committed:
            assert positions == [positions[0], positions[0] + 1]
        every = sorted(p for positions in committed for p in positions)
        assert every == list(range(start + 1, start + 1 + 2 * len(streams)))
        assert await store.head() == start + 2 * len(streams)
        assert [r.data for r in await records(store, stream=contested)] == [Ping(n=0)]
        for i, sid in enumerate(streams):
            got = await records(store, stream=sid)
            assert [(r.stream_version, r.data) for r in got] == [
                (1, Ping(n=i)),
                (2, Ping(n=i + 100)),
            ]


async def test_concurrent_appends_expecting_the_same_version_exactly_one_wins(
    open_store: OpenStore,
) -> None:
    async with open_store(run="race", durability="full") as store:
        sid = new_id()
        await store.append([(sid, Ping(n=0))])
        results = await bounded(
            asyncio.gather(
                *(
                    store.append([(sid, Ping(n=i))], expected_versions={sid: 1})
                    for i in range(1, 9)
                ),
                return_exceptions=True,
            ),
            "the racing appends",
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1
        assert len(losers) == 7
        assert all(isinstance(e, ConcurrencyError) for e in losers)
        got = await records(store, stream=sid)
        assert [r.stream_version for r in got] == [1, 2]
        assert got[1].position == winners[0][0]


async def test_concurrent_appends_share_a_commit(open_store: OpenStore, clock: Any) -> None:
    """Group commit: appends queued while a commit is in flight go in one transaction
    (they carry one commit time, while every commit reads the clock afresh)."""

    def ticking() -> Any:
        clock.advance(0.001)
        return clock()

    async with open_store(run="grouped", durability="full", clock=ticking) as store:
        results = await bounded(
            asyncio.gather(*(store.append_records([(new_id(), Ping(n=i))]) for i in range(20))),
            "the grouped appends",
        )
        commit_times = {committed[0].recorded_at_us for committed in results}
        assert len(commit_times) < len(results)


# -- reads ----------------------------------------------------------------------------------


async def _two_runs_with_history(open_store: OpenStore, clock: Any) -> dict[str, Any]:
    """Two runs, three streams, four kinds, records at four distinct times."""
    world: dict[str, Any] = {"a": new_id(), "b": new_id(), "c": new_id()}
    a, b, c = world["a"], world["b"], world["c"]
    times = []
    async with (
        open_store(run="alpha", clock=clock) as alpha,
        open_store(run="beta", clock=clock) as beta,
    ):
        world["alpha"], world["beta"] = alpha.run_id, beta.run_id
        times.append(clock())
        await alpha.append([(a, Ping(n=1)), (b, Note(text="one", tags=("x",), meta={"k": [1]}))])
        await beta.append([(a, Ping(n=100))])  # same stream id, other run
        clock.advance(10)
        times.append(clock())
        await alpha.append([(c, Reading(value=1.5)), (a, Ping(n=2)), (b, Ping(n=3))])
        clock.advance(10)
        times.append(clock())
        await beta.append([(c, Note(text="beta"))])
        await alpha.append([(a, Note(text="two")), (c, Reading(value=-2.25))])
        clock.advance(10)
        times.append(clock())
        await alpha.append([(b, Ping(n=4))])
    world["times"] = times
    return world


@pytest.mark.parametrize("page_size", [1, 3, 1000])
async def test_read_filters(open_store: OpenStore, clock: Any, page_size: int) -> None:
    w = await _two_runs_with_history(open_store, clock)
    async with open_store(run="alpha") as store:
        everything = await records(store, run=None, page_size=page_size)
        assert [r.position for r in everything] == list(range(1, await store.head() + 1))
        assert len(everything) == 2 + 8 + 2  # two run.started, alpha's eight, beta's two

        def expect(keep: Callable[[Recorded], bool]) -> list[Recorded]:
            return [r for r in everything if keep(r)]

        async def read(**filters: Any) -> list[Recorded]:
            return await records(store, page_size=page_size, **filters)

        alpha_run = await read()
        assert alpha_run == expect(lambda r: r.run_id == w["alpha"])
        assert len(alpha_run) == 9
        assert await read(run="alpha") == alpha_run
        assert await read(run=w["alpha"]) == alpha_run
        assert await read(run="beta") == expect(lambda r: r.run_id == w["beta"])
        assert await read(run=str(w["beta"]).upper()) == expect(lambda r: r.run_id == w["beta"])

        assert [r.data for r in await read(stream=w["a"])] == [
            Ping(n=1),
            Ping(n=2),
            Note(text="two"),
        ]
        assert [r.data for r in await read(stream=w["a"], run=None)] == [
            Ping(n=1),
            Ping(n=100),
            Ping(n=2),
            Note(text="two"),
        ]
        assert await read(kinds=["logtest.reading"]) == expect(
            lambda r: r.run_id == w["alpha"] and r.kind == "logtest.reading"
        )
        assert await read(kinds=["logtest.note", "logtest.reading"], run=None) == expect(
            lambda r: r.kind in ("logtest.note", "logtest.reading")
        )
        assert await read(kinds=["no.such.kind"]) == []
        assert await read(stream=w["b"], kinds=["logtest.ping"]) == expect(
            lambda r: r.stream_id == w["b"] and r.kind == "logtest.ping"
        )

        assert await read(run=None, after=4) == everything[4:]
        assert await read(run=None, after=4, upto=9) == everything[4:9]
        assert await read(run=None, upto=3) == everything[:3]
        assert await read(run=None, after=9, upto=9) == []
        assert await read(after=10**9) == []
        assert await read(stream=w["a"], after=4, upto=12) == expect(
            lambda r: r.run_id == w["alpha"] and r.stream_id == w["a"] and 4 < r.position <= 12
        )

        t0, t1, t2, t3 = w["times"]
        assert {r.recorded_at for r in everything} == {t0, t1, t2, t3}
        assert await read(run=None, until=t0) == expect(lambda r: r.recorded_at <= t0)
        assert await read(run=None, until=t1) == expect(lambda r: r.recorded_at <= t1)
        assert await read(until=t2 - timedelta(microseconds=1)) == expect(
            lambda r: r.run_id == w["alpha"] and r.recorded_at < t2
        )
        assert await read(run=None, until=t3) == everything
        assert await read(run=None, until=t0 - timedelta(seconds=1)) == []
        assert await read(run="beta", until=t1, kinds=["logtest.ping"]) == expect(
            lambda r: r.run_id == w["beta"] and r.kind == "logtest.ping"
        )


async def test_read_pages_through_a_long_stream(store: lionstore.Store) -> None:
    sid = new_id()
    for chunk in range(4):
        await store.append([(sid, Ping(n=chunk * 10 + i)) for i in range(10)])
    for page_size in (1, 3, 7, 10, 40, 41):
        got = await records(store, stream=sid, page_size=page_size)
        assert [r.data.n for r in got] == list(range(40))  # type: ignore[union-attr]
        assert [r.stream_version for r in got] == list(range(1, 41))


async def test_read_pages_through_a_stream_interleaved_with_others(
    store: lionstore.Store,
) -> None:
    """A stream of this run is read in pages by its own versions: with other streams'
    records between its own, a kinds filter that skips some of them, and ``after`` or
    ``upto`` cutting into it, each page goes on where the last one stopped."""
    sid, other = new_id(), new_id()
    for n in range(30):
        data = Note(text=str(n)) if n % 3 == 0 else Ping(n=n)
        await store.append([(other, Ping(n=-n)), (sid, data), (other, Ping(n=-n))])
    everything = await records(store, stream=sid)
    assert [r.stream_version for r in everything] == list(range(1, 31))
    positions = [r.position for r in everything]
    assert positions == sorted(positions) and positions[1] - positions[0] == 3
    for page_size in (1, 2, 4, 29, 30, 31):
        assert await records(store, stream=sid, page_size=page_size) == everything
        pings = await records(store, stream=sid, kinds=["logtest.ping"], page_size=page_size)
        assert pings == [r for r in everything if r.kind == "logtest.ping"]
        middle = positions[11]
        assert await records(store, stream=sid, after=middle, page_size=page_size) == [
            r for r in everything if r.position > middle
        ]
        assert (
            await records(
                store, stream=sid, after=positions[3], upto=positions[20], page_size=page_size
            )
            == everything[4:21]
        )


async def test_read_is_lazy_and_sees_records_committed_while_it_streams(
    store: lionstore.Store,
) -> None:
    sid = new_id()
    await store.append([(sid, Ping(n=i)) for i in range(5)])
    seen = []
    async for record in await store.read(stream=sid, page_size=2):
        seen.append(record.data)
        if len(seen) == 1:
            await store.append([(sid, Ping(n=5))])
    assert seen == [Ping(n=i) for i in range(6)]


async def test_read_returns_decoded_models_and_raw_json(store: lionstore.Store, clock: Any) -> None:
    sid = new_id()
    sent = [
        Ping(n=-7),
        Note(
            text='héllo ✓ "quoted" \n newline',
            tags=("a", "b"),
            meta={"nested": {"x": [1, 2.5, None, True]}},
        ),
        Reading(value=0.1),
        Reading(value=1e300),
    ]
    committed = await store.append_records([(sid, data) for data in sent])
    got = await records(store, stream=sid)
    assert [r.data for r in got] == sent
    assert [type(r.data) for r in got] == [Ping, Note, Reading, Reading]
    assert got == committed
    for record, data in zip(got, sent, strict=True):
        assert isinstance(record.raw, str)
        assert json.loads(record.raw) == data.model_dump(mode="json")
        assert record.kind == data.kind
        assert record.kind_version == data.kind_version
        assert record.run_id == store.run_id
        assert record.recorded_at.tzinfo is not None
    line = got[1].to_json_dict()
    assert set(line) == {
        "position",
        "stream_id",
        "stream_version",
        "run_id",
        "kind",
        "kind_version",
        "data",
        "recorded_at",
    }
    assert line["data"] == sent[1].model_dump(mode="json")
    json.dumps(line)  # printable as one JSON line


async def test_recorded_at_comes_from_the_clock(open_store: OpenStore, clock: Any) -> None:
    async with open_store(run="timed", clock=clock) as store:
        clock.advance(123.456789)
        [record] = await store.append_records([(new_id(), Ping(n=1))])
        assert record.recorded_at == clock()
        [again] = await records(store, kinds=["logtest.ping"])
        assert again.recorded_at == clock()


async def test_read_of_an_unknown_run_raises(store: lionstore.Store) -> None:
    with pytest.raises(RunNotFoundError):
        await records(store, run="no-such-run")
    with pytest.raises(RunNotFoundError):
        await records(store, run=str(new_id()))


async def test_record_of_a_kind_this_process_does_not_know_reads_back_raw(
    open_store: OpenStore, db_target: str
) -> None:
    """Another program (here: another process) wrote kinds this code does not define:
    they read back as UnknownRecord with their data, in place, never dropped."""
    sid = new_id()
    async with open_store(run="mixed") as store:
        await store.append([(sid, Ping(n=1))])
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from typing import ClassVar
        import lionstore
        from lionstore import RecordData

        class Alien(RecordData):
            kind: ClassVar[str] = "logtest.alien"
            colour: str
            legs: int

        class PingV2(RecordData):  # a newer version of a kind the tests know
            kind: ClassVar[str] = "logtest.ping"
            kind_version: ClassVar[int] = 2
            n: int
            unit: str

        async def main(target, sid):
            async with lionstore.open(target, run="mixed") as store:
                positions = await store.append(
                    [(sid, Alien(colour="green", legs=3)), (sid, PingV2(n=2, unit="ms"))]
                )
            print(json.dumps(positions))

        asyncio.run(main(sys.argv[1], sys.argv[2]))
        """
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, db_target, sid],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    alien_pos, ping2_pos = json.loads(done.stdout)

    async with open_store(run="mixed") as store:
        await store.append([(sid, Ping(n=3))])
        got = await records(store, stream=sid)
        assert [r.stream_version for r in got] == [1, 2, 3, 4]
        assert [r.position for r in got][1:3] == [alien_pos, ping2_pos]
        assert got[0].data == Ping(n=1)
        assert got[1].data == UnknownRecord(
            kind="logtest.alien", kind_version=1, raw={"colour": "green", "legs": 3}
        )
        assert got[1].kind == "logtest.alien"
        assert json.loads(got[1].raw) == {"colour": "green", "legs": 3}
        assert got[2].data == UnknownRecord(
            kind="logtest.ping", kind_version=2, raw={"n": 2, "unit": "ms"}
        )
        assert got[3].data == Ping(n=3)
        assert await records(store, kinds=["logtest.alien"]) == [got[1]]
        assert got[1].to_json_dict()["data"] == {"colour": "green", "legs": 3}


# -- runs -----------------------------------------------------------------------------------


async def test_run_none_starts_a_fresh_run_every_time(open_store: OpenStore) -> None:
    ids = []
    for _ in range(3):
        async with open_store() as store:
            assert store.run.label is None
            ids.append(store.run_id)
    assert len(set(ids)) == 3
    async with open_store(run=ids[1]) as store:
        runs = await store.runs()
    assert [r.run_id for r in runs] == ids
    assert all(r.label is None for r in runs)


async def test_a_label_names_one_run(open_store: OpenStore) -> None:
    sid = new_id()
    async with open_store(run="nightly") as first:
        run_id = first.run_id
        assert first.run.label == "nightly"
        await first.append([(sid, Ping(n=1))])
    async with open_store(run="nightly") as second:
        assert second.run_id == run_id
        [record] = await second.append_records([(sid, Ping(n=2))])
        assert record.stream_version == 2
        runs = await second.runs()
    assert [(r.run_id, r.label) for r in runs] == [(run_id, "nightly")]


async def test_a_run_id_attaches_to_that_run(open_store: OpenStore) -> None:
    async with open_store(run="labelled") as first:
        run_id = first.run_id
    async with open_store() as unlabelled:
        other = unlabelled.run_id
    for ref in (str(run_id), str(run_id).upper()):
        async with open_store(run=ref) as store:
            assert store.run_id == run_id
            assert store.run.label == "labelled"
    async with open_store(run=str(other)) as store:
        assert store.run_id == other
        assert len(await store.runs()) == 2


async def test_a_uuid_that_is_not_a_run_raises(open_store: OpenStore) -> None:
    async with open_store(run="only") as store:
        before = await store.runs()
        head = await store.head()
    with pytest.raises(RunNotFoundError):
        async with open_store(run=str(new_id())):
            pass
    async with open_store(run="only") as store:
        assert await store.runs() == before
        assert await store.head() == head


async def test_concurrent_opens_of_one_new_label_share_the_run(open_store: OpenStore) -> None:
    async with open_store(run="first"):
        pass
    stores = await bounded(
        asyncio.gather(*(open_store(run="together") for _ in range(3))), "the opens"
    )
    try:
        assert len({s.run_id for s in stores}) == 1
        assert [r.label for r in await stores[0].runs()] == ["first", "together"]
    finally:
        for s in stores:
            await s.close()


_OPEN_MANY_AT_ONCE = textwrap.dedent(
    """
    import asyncio, json, sys, uuid
    import lionstore
    sys.path.insert(0, sys.argv[2])
    from _kinds import Ping

    async def main(target):
        stores = await asyncio.wait_for(
            asyncio.gather(*(lionstore.open(target, run="fresh") for _ in range(3))), 60
        )
        positions = await asyncio.wait_for(
            asyncio.gather(*(s.append([(uuid.uuid4(), Ping(n=1))]) for s in stores)), 60
        )
        for s in stores:
            await s.close()
        return {"runs": sorted({s.run_id for s in stores}), "positions": positions}

    print(json.dumps(asyncio.run(main(sys.argv[1]))))
    """
)


async def test_concurrent_opens_of_a_new_database(db_target: str) -> None:
    """Three opens at once in one event loop, on a database that does not exist yet.
    (In a child process: a deadlock there must fail this test, not hang the suite.)"""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _OPEN_MANY_AT_ONCE, db_target, str(HERE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["runs"]) == 1
    assert sorted(p for ps in result["positions"] for p in ps) == [2, 3, 4]


async def test_store_runs_lists_every_run(open_store: OpenStore, clock: Any) -> None:
    async with open_store(run="one", clock=clock) as one:
        clock.advance(1)
        async with open_store(clock=clock) as two:
            clock.advance(1)
            async with open_store(run="three", clock=clock) as three:
                runs = await three.runs()
                assert [r.run_id for r in runs] == [one.run_id, two.run_id, three.run_id]
                assert [r.label for r in runs] == ["one", None, "three"]
                assert [r.parent_run_id for r in runs] == [None, None, None]
                assert runs[1].started_at_us - runs[0].started_at_us == 1_000_000
                assert await three.find_run("one") == runs[0]
                assert await three.find_run(str(two.run_id)) == runs[1]
                with pytest.raises(RunNotFoundError):
                    await three.find_run("four")


async def test_the_first_record_of_every_run_is_run_started(open_store: OpenStore) -> None:
    async with open_store(run="a") as a, open_store() as b:
        await a.append([(new_id(), Ping(n=1))])
        await b.append([(new_id(), Ping(n=2))])
        fork = await a.fork(at=await a.head(), label="a-fork")
        for run, label in ((a.run, "a"), (b.run, None), (fork, "a-fork")):
            got = await records(a, run=str(run.run_id))
            first = got[0]
            assert first.kind == "run.started"
            assert first.stream_id == run.run_id
            assert first.stream_version == 1
            assert isinstance(first.data, RunStarted)
            assert first.data.label == label
            assert [r.kind for r in got].count("run.started") == 1


async def test_reopen_after_close_keeps_everything(open_store: OpenStore, clock: Any) -> None:
    sid = new_id()
    async with open_store(run="durable", clock=clock) as store:
        await store.append([(sid, Ping(n=1)), (new_id(), Note(text="x", meta={"a": 1}))])
        clock.advance(5)
        await store.append([(sid, Reading(value=2.5))])
        before = await records(store, run=None)
        head = await store.head()
        runs = await store.runs()
    async with open_store(run="durable", clock=clock) as store:
        assert await records(store, run=None) == before
        assert await store.head() == head
        assert await store.runs() == runs
        committed = await store.append_records([(sid, Ping(n=2))], expected_versions={sid: 2})
        assert (committed[0].position, committed[0].stream_version) == (head + 1, 3)


# -- fork -----------------------------------------------------------------------------------


async def test_fork_copies_a_prefix_and_leaves_the_source_alone(
    open_store: OpenStore, clock: Any
) -> None:
    a, b = new_id(), new_id()
    async with open_store(run="source", clock=clock) as src, open_store(run="noise") as noise:
        await src.append([(a, Ping(n=1)), (b, Note(text="b1"))])
        await noise.append([(a, Ping(n=999))])  # another run, interleaved positions
        [cut] = await src.append([(a, Ping(n=2))])
        await src.append([(b, Note(text="b2")), (a, Ping(n=3))])
        source_before = await records(src)
        clock.advance(60)

        info = await src.fork(at=cut, label="forked")
        assert info.label == "forked"
        assert info.parent_run_id == src.run_id
        assert info.forked_at_position == cut
        assert info.run_id != src.run_id

        assert await records(src) == source_before  # the source is unchanged
        forked = await records(src, run="forked")
        assert forked[0].kind == "run.started"
        assert forked[0].stream_id == info.run_id
        assert forked[0].data == RunStarted(
            label="forked", parent_run_id=src.run_id, forked_at_position=cut
        )
        prefix = [r for r in source_before if r.position <= cut and r.kind != "run.started"]
        assert [shape(r) for r in forked[1:]] == [shape(r) for r in prefix]
        assert len(forked) == 1 + 3
        assert all(r.run_id == info.run_id for r in forked)
        head = await src.head()  # the fork is appended at the end of the log, in one piece
        assert [r.position for r in forked] == list(range(head - len(forked) + 1, head + 1))

        runs = {r.label: r for r in await src.runs()}
        assert runs["forked"] == info

    # the fork is a run like any other: it continues from the copied versions
    async with open_store(run="forked") as fork:
        committed = await fork.append_records([(a, Ping(n=20))], expected_versions={a: 2})
        assert committed[0].stream_version == 3
        with pytest.raises(ConcurrencyError):
            await fork.append([(b, Note(text="b2'"))], expected_versions={b: 2})
    async with open_store(run="source") as src:
        assert await records(src) == source_before


async def test_fork_at_zero_and_past_the_head(store: lionstore.Store) -> None:
    sid = new_id()
    await store.append([(sid, Ping(n=1)), (sid, Ping(n=2))])
    empty = await store.fork(at=0, label="empty")
    assert [r.kind for r in await records(store, run="empty")] == ["run.started"]
    whole = await store.fork(at=10**9)
    got = await records(store, run=str(whole.run_id))
    assert [r.data for r in got[1:]] == [Ping(n=1), Ping(n=2)]
    assert empty.run_id != whole.run_id
    with pytest.raises(ValueError):
        await store.fork(at=-1)
    with pytest.raises(RunNotFoundError):
        await store.fork(at=1, run="no-such-run")


# -- the feed -------------------------------------------------------------------------------


async def test_subscribers_get_every_committed_record_once_in_order(store: lionstore.Store) -> None:
    batches: list[list[Recorded]] = []
    sub = store.subscribe(lambda recs: batches.append(list(recs)))
    sid = new_id()

    [first] = await store.append([(sid, Ping(n=0))])
    # delivered before the append returned
    assert [r.position for b in batches for r in b] == [first]

    results = await bounded(
        asyncio.gather(
            *(store.append([(new_id(), Ping(n=i)), (sid, Ping(n=i))]) for i in range(1, 11))
        ),
        "the appends",
    )
    with pytest.raises(ConcurrencyError):
        await store.append([(sid, Ping(n=-1))], expected_versions={sid: 0})
    [last] = await store.append([(sid, Ping(n=11))])

    delivered = [r for b in batches for r in b]
    expected_positions = sorted([first, last, *(p for ps in results for p in ps)])
    assert [r.position for r in delivered] == expected_positions
    assert delivered == await records(store, after=first - 1)
    assert all(b for b in batches)

    sub.close()
    await store.append([(sid, Ping(n=12))])
    assert [r for b in batches for r in b] == delivered


async def test_on_committed_is_called_once_before_the_records_are_delivered(
    store: lionstore.Store, caplog: pytest.LogCaptureFixture
) -> None:
    """append_records(on_committed=...) calls it once the records are committed,
    before subscribers see them and before the call returns; never for a refused
    append; a callback that raises is logged and the records stay committed."""
    events: list[str] = []
    store.subscribe(lambda recs: events.append(f"delivered {len(recs)}"))
    sid = new_id()

    committed = await store.append_records(
        [(sid, Ping(n=1)), (sid, Ping(n=2))], on_committed=lambda: events.append("committed")
    )
    events.append("returned")
    assert events == ["committed", "delivered 2", "returned"]
    assert [r.stream_version for r in committed] == [1, 2]

    events.clear()
    with pytest.raises(ConcurrencyError):
        await store.append_records(
            [(sid, Ping(n=3))],
            expected_versions={sid: 1},
            on_committed=lambda: events.append("committed"),
        )
    assert events == []  # refused: nothing committed, nothing called

    def broken() -> None:
        raise RuntimeError("callback bug")

    [record] = await store.append_records([(sid, Ping(n=4))], on_committed=broken)
    assert "an on_committed callback failed" in caplog.text
    assert [r.data for r in await records(store, stream=sid)] == [
        Ping(n=1),
        Ping(n=2),
        Ping(n=4),
    ]
    assert record.stream_version == 3


async def test_a_failing_subscriber_is_dropped_and_appends_go_on(store: lionstore.Store) -> None:
    calls = []

    def broken(recs: Any) -> None:
        calls.append(len(recs))
        raise RuntimeError("projection bug")

    good: list[Recorded] = []
    store.subscribe(broken)
    store.subscribe(good.extend)
    p1 = await store.append([(new_id(), Ping(n=1))])
    p2 = await store.append([(new_id(), Ping(n=2))])
    assert calls == [1]
    assert [r.position for r in good] == p1 + p2


async def test_two_stores_on_one_run_see_each_others_records(open_store: OpenStore) -> None:
    shared = new_id()
    async with (
        open_store(run="shared") as a,
        open_store(run="shared") as b,
        open_store(run="elsewhere") as other,
    ):
        assert a.run_id == b.run_id
        fed_a: list[Recorded] = []
        fed_b: list[Recorded] = []
        a.subscribe(fed_a.extend)
        b.subscribe(fed_b.extend)

        pa = await a.append([(shared, Ping(n=1)), (shared, Ping(n=2))])
        await other.append([(shared, Ping(n=-1))])  # another run: never fed to a or b
        assert fed_b == []
        head = await b.sync()
        assert head == await a.head()
        assert [r.position for r in fed_b] == pa
        assert await b.sync() == head  # nothing new: nothing delivered again
        assert [r.position for r in fed_b] == pa

        pa2 = await a.append([(shared, Ping(n=3))])
        # b learns a's versions inside its own append, and feeds a's records first
        pb = await b.append([(shared, Ping(n=4))], expected_versions={shared: 3})
        assert [r.position for r in fed_b] == pa + pa2 + pb
        assert [r.data for r in fed_b] == [Ping(n=1), Ping(n=2), Ping(n=3), Ping(n=4)]

        # a has a stale picture of the stream until it hears of b's record
        with pytest.raises(ConcurrencyError):
            await a.append([(shared, Ping(n=5))], expected_versions={shared: 3})
        assert [r.position for r in fed_a] == pa + pa2 + pb
        pa3 = await a.append([(shared, Ping(n=5))], expected_versions={shared: 4})
        await b.sync()

        for fed in (fed_a, fed_b):
            assert [r.position for r in fed] == pa + pa2 + pb + pa3
            assert [r.stream_version for r in fed] == [1, 2, 3, 4, 5]
        assert fed_a == fed_b
        assert fed_b == await records(b, kinds=["logtest.ping"])


async def test_sync_on_a_quiet_store_returns_the_head(store: lionstore.Store) -> None:
    await store.append([(new_id(), Ping(n=1))])
    assert await store.sync() == await store.head()


async def test_durability_full_appends_and_reads(open_store: OpenStore) -> None:
    sid = new_id()
    async with open_store(run="safe", durability="full") as store:
        assert store.durability == "full"
        positions = await store.append([(sid, Ping(n=1)), (sid, Ping(n=2))])
        assert [r.data for r in await records(store, stream=sid)] == [Ping(n=1), Ping(n=2)]
    async with open_store(run="safe") as store:
        assert [r.position for r in await records(store, stream=sid)] == positions


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_appends_racing_close_are_all_answered(
    open_store: OpenStore, durability: str
) -> None:
    """Appends made while close() waits for the writer either commit or raise
    StoreClosedError; none is left waiting forever."""
    store = await open_store(run="closing", durability=durability)
    await store.append([(new_id(), Ping(n=0))])
    results = await asyncio.wait_for(
        asyncio.gather(
            store.append([(new_id(), Ping(n=1))]),
            store.append([(new_id(), Ping(n=2))]),  # queued behind the first
            store.close(),
            store.append([(new_id(), Ping(n=3))]),  # after close() began
            return_exceptions=True,
        ),
        timeout=10,
    )
    assert results[2] is None
    assert isinstance(results[3], lionstore.StoreClosedError)
    committed = []
    for n in (1, 2):
        result = results[n - 1]
        assert isinstance(result, (list, lionstore.StoreClosedError)), result
        if isinstance(result, list):
            committed.append(Ping(n=n))
    async with open_store(run="closing") as again:
        written = [r.data for r in await records(again, kinds=["logtest.ping"])]
    assert written == [Ping(n=0), *committed]
