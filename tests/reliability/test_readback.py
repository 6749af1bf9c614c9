"""What lionstore writes it reads back, and what a damaged file holds is reported.

* One nesting limit (``MAX_JSON_DEPTH``), enforced when writing and honoured by every
  reader: data deeper than it is refused before anything is written; anything an
  append accepted comes back equal from the projections, rebuild, show, verify and
  export. An ``invoke()`` whose outcome cannot be recorded ends FAILED, once.
* A file edited or damaged behind lionstore's back gives a LionstoreError or the
  state that was logged, never another state, a stray exception or a crash of every
  command: a record nested 100,000 deep, records naming classes that are not theirs
  (with the digest chain recomputed, as someone hiding the edit would), an edited
  head row, bit flips in the ``(run_no, position)`` index and anywhere in the file.
* A full disk (a real, small tmpfs) says "disk full" and never calls a healthy file
  damaged.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import lionstore
from lionstore import (
    CorruptDatabaseError,
    Event,
    EventStatus,
    Exchange,
    Executor,
    LionstoreError,
    RecordError,
    StoreError,
)
from lionstore.cli import main
from lionstore.domain.records import MAX_JSON_DEPTH
from lionstore.replay import rebuild, verify
from lionstore.replay.resume import resume

from .checks import rechain
from .test_hostile_files import RUN, digest, first, make_file, sql

CONFIG = {"queue_capacity": 4, "capacity_refresh_time": 0.01}
DONE = (EventStatus.FAILED, EventStatus.COMPLETED)


def deep(levels: int, bottom: Any = "b") -> Any:
    value: Any = bottom
    for _ in range(levels):
        value = [value]
    return value


class Nested(Event):
    """An event holding any payload; its ``invoke()`` answers ``respond`` levels deep."""

    payload: Any = None
    respond: int = 0

    async def invoke(self) -> None:
        self.response = deep(self.respond) if self.respond else "ok"


class Other(BaseModel):
    """A model of this process that no record is about."""

    x: int


class Note(lionstore.RecordData):
    kind = "test.readback.note"
    n: int


def cli(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


# -- 1. what lionstore writes it reads back -------------------------------------------


async def test_an_event_field_is_refused_past_the_limit_and_read_back_within_it(
    tmp_path: Path,
) -> None:
    """event.appended holds the field two levels down ({"fields": {"payload": ...}}):
    126 list levels are the deepest a payload may be. 205 was acknowledged and lost."""
    path = tmp_path / "deep.db"
    accepted: dict[str, int] = {}
    async with lionstore.open(path, run="deep") as store:
        executor = Executor(CONFIG, store=store, name="x")
        await executor.start()
        for levels in (100, MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH - 1, 199, 205, 254, 1000):
            event = Nested(payload=deep(levels))
            head = await store.head()
            try:
                await executor.append(event)
            except RecordError as exc:
                assert "nested" in str(exc) or "depth" in str(exc), exc
                assert await store.head() == head  # nothing written
            else:
                accepted[event.id] = levels
    assert sorted(accepted.values()) == [100, MAX_JSON_DEPTH - 2]

    async with lionstore.open(path, run="deep", checkpoints=False, readonly=True) as store:
        executor = Executor(store=store, name="x")
        await executor.load()
        assert all(isinstance(e, Nested) for e in executor.pile)
        payloads = {e.id: e.payload for e in executor.pile if isinstance(e, Nested)}
        assert payloads == {i: deep(n) for i, n in accepted.items()}
        assert (await verify(store)).ok
        projection = await rebuild(store)
        rebuilt = {e.id: e.fields["payload"] for e in projection.executors["x"].pile}  # type: ignore[attr-defined]
        assert rebuilt == {i: deep(n) for i, n in accepted.items()}


async def test_an_outcome_too_deep_to_record_is_failed_once_and_never_run_again(
    tmp_path: Path,
) -> None:
    """A response 200 deep was recorded COMPLETED, read back as PROCESSING, run again
    and recorded COMPLETED a second time. Now: FAILED with the reason, the rest of the
    batch recorded, nothing run again on reopen, and verify is happy."""
    path = tmp_path / "outcome.db"
    async with lionstore.open(path, run="out") as store:
        executor = Executor(CONFIG, store=store, name="x")
        await executor.start()
        bad, good = Nested(respond=200), Nested(respond=MAX_JSON_DEPTH - 10)
        await executor.extend([bad, good])
        await executor.forward()
        pile = executor.pile
        await wait_for(
            lambda: all(pile[i].status.value in ("failed", "completed") for i in (bad.id, good.id))
        )
        assert pile[bad.id].status == EventStatus.FAILED
        assert "the outcome could not be recorded" in (pile[bad.id].execution.error or "")
        assert pile[good.id].status == EventStatus.COMPLETED

    for _ in range(2):  # reopen twice: the second open would run a PROCESSING event again
        async with lionstore.open(path, run="out", checkpoints=False) as store:
            executor = Executor(CONFIG, store=store, name="x")
            await executor.start()
            await executor.forward()
            statuses = {e.id: e.status for e in executor.pile}
            assert statuses == {bad.id: EventStatus.FAILED, good.id: EventStatus.COMPLETED}
            assert executor.pile[good.id].execution.response == deep(MAX_JSON_DEPTH - 10)
            finished = [r.stream_id async for r in await store.read(kinds=["event.finished"])]
            assert sorted(finished) == sorted([bad.id, good.id])
            assert (await verify(store)).ok


def json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8)
    )
    tree = st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=12,
    )
    # wrapped in enough levels to reach (and pass) the limit now and then
    return st.tuples(tree, st.integers(0, MAX_JSON_DEPTH + 4)).map(lambda t: deep(t[1], t[0]))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=json_values())
def test_whatever_append_accepts_every_reader_reads_back_equal(
    tmp_path_factory: pytest.TempPathFactory, payload: Any
) -> None:
    path = tmp_path_factory.mktemp("prop") / "p.db"

    async def write() -> str | None:
        async with lionstore.open(path, run="p") as store:
            executor = Executor(CONFIG, store=store, name="x")
            await executor.start()
            event = Nested(payload=payload)
            try:
                await executor.append(event)
            except RecordError:
                return None
            return event.id

    async def read_back(event_id: str) -> None:
        async with lionstore.open(path, run="p", checkpoints=False, readonly=True) as store:
            executor = Executor(store=store, name="x")
            await executor.load()
            assert executor.pile[event_id].payload == payload
            (appended,) = [r async for r in await store.read(kinds=["event.appended"])]
            assert appended.data_json()["fields"]["payload"] == payload
            assert (await verify(store)).ok
            projection = await rebuild(store)
            (event,) = projection.executors["x"].pile
            assert event.fields["payload"] == payload  # type: ignore[attr-defined]

    event_id = asyncio.run(write())
    if event_id is None:
        return  # refused: nothing to read back (the refusal itself is tested above)
    asyncio.run(read_back(event_id))
    code, out, err = cli("export", path, "--run", "p")
    assert code == 0, err
    (line,) = [json.loads(x) for x in out.splitlines() if '"event.appended"' in x]
    assert line["data"]["fields"]["payload"] == payload
    code, out, err = cli("show", path, "--run", "p")
    assert code == 0 and "unexpected" not in err, err


# -- 2. bad files give a LionstoreError -----------------------------------------------


def too_deep_for_python(kind: str, levels: int = 100_000) -> str:
    """SQL putting JSON nested ``levels`` deep into the first ``kind`` record."""
    return (
        "UPDATE lionstore_records SET data = '{\"x\":' || replace(hex(zeroblob("
        f"{levels})), '00', '[') || replace(hex(zeroblob({levels})), '00', ']') || '}}'"
        f" WHERE position = {first(kind)}"
    )


async def test_a_record_nested_100000_deep_is_that_records_problem(tmp_path: Path) -> None:
    """Every command failed with RecursionError (unexpected). Now runs, log and export
    read the file, verify and show name the record, and loads raise LionstoreErrors."""
    path = tmp_path / "deep.db"
    await make_file(path)
    sql(path, too_deep_for_python("mail.sent"))
    before = digest(path)
    for args in (("runs",), ("log",), ("export", "--run", RUN), ("timeline", "--run", RUN)):
        code, out, err = await asyncio.to_thread(cli, args[0], path, *args[1:])
        assert code == 0, (args, err)
        assert out and "unexpected" not in err, args
    for args in (("verify", "--run", RUN), ("show", "--run", RUN)):
        code, out, err = await asyncio.to_thread(cli, args[0], path, *args[1:])
        assert "unexpected" not in err and "Recursion" not in out + err, (args, err)
    code, out, _ = await asyncio.to_thread(cli, "verify", path, "--run", RUN)
    assert code != 0 and "position" in out
    async with lionstore.open(path, run=RUN, readonly=True, checkpoints=False) as store:
        with pytest.raises(LionstoreError):
            await Exchange(store=store, name="post").load()
        executor = Executor(store=store, name="chores")  # the damage is in another stream
        with pytest.raises(LionstoreError):  # ... but the digest chain covers the run
            await executor.load()
    assert digest(path) == before


def _entry_points() -> dict[str, Any]:
    async def executor(store: lionstore.Store) -> Any:
        ex = Executor(store=store, name="chores")
        await ex.load()
        return [e.status for e in ex.pile]

    async def exchange(store: lionstore.Store) -> Any:
        ex = Exchange(store=store, name="post")
        await ex.load()
        return {k: [m.id for m in v.pile_] for k, v in ex.mailboxes.items()}

    async def rebuilt(store: lionstore.Store) -> Any:
        return (await rebuild(store)).summary()

    return {"executor": executor, "exchange": exchange, "rebuild": rebuilt}


CLASS_TAMPER = {
    "an event's metadata names another class": (
        "UPDATE lionstore_records SET data = json_set(data, '$.metadata.lion_class',"
        f" 'lionstore.domain.mail.Mail') WHERE position = {first('event.appended')}",
        {"executor", "rebuild", "verify", "resume"},
    ),
    "a mail item names another model of the process": (
        "UPDATE lionstore_records SET data = json_set(data, '$.package.item_class',"
        f" '{Other.__module__}.Other') WHERE position = {first('mail.sent')}",
        {"exchange"},
    ),
    "a mail item names a lionstore record class": (
        "UPDATE lionstore_records SET data = json_set(data, '$.package.item_class',"
        f" 'lionstore.domain.records.RunStarted') WHERE position = {first('mail.sent')}",
        {"exchange"},
    ),
}


@pytest.mark.parametrize("tamper", list(CLASS_TAMPER))
async def test_a_record_naming_a_class_not_its_own_raises_record_error_with_its_position(
    tmp_path: Path, tamper: str
) -> None:
    """pydantic's ValidationError escaped rebuild, verify, resume and Exchange.load()
    (and the file chose which model of the process validated its data). The edit is
    hidden by recomputing the digest chain, so the class check itself is what reports."""
    path = tmp_path / "t.db"
    await make_file(path)
    statement, failing = CLASS_TAMPER[tamper]
    kind = "event.appended" if "event" in tamper else "mail.sent"
    ((position,),) = _rows(path, f"SELECT {first(kind)}")
    sql(path, statement)
    rechain(path, RUN)
    async with lionstore.open(path, run=RUN, readonly=True, checkpoints=False) as store:
        for name, entry in _entry_points().items():
            if name in failing:
                with pytest.raises(RecordError, match=f"position {position}"):
                    await entry(store)
            else:
                await entry(store)
        report = await verify(store)
        if "verify" in failing:
            assert not report.ok and report.divergence is not None
            assert report.divergence.position == position
    if "resume" in failing:
        async with lionstore.open(path, run=RUN, checkpoints=False) as store:
            with pytest.raises(RecordError, match=f"position {position}"):
                await asyncio.wait_for(resume(store), timeout=60)


def _rows(path: Path, statement: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


async def test_an_edited_head_row_shows_no_old_state(tmp_path: Path) -> None:
    """A lowered head row once showed an old state (every event PENDING, verify OK) and
    resume then failed on a UNIQUE constraint. Since schema 0003 the row is only a
    high-water mark on SQLite: lowered, it changes nothing that is read, and the next
    append goes after the last record. A lowered run number is refused."""
    path = tmp_path / "head.db"
    await make_file(path)
    async with lionstore.open(path, run=RUN, readonly=True) as store:
        expected = {name: await entry(store) for name, entry in _entry_points().items()}
        head = await store.head()
    sql(path, "UPDATE lionstore_head SET last_position = last_position - 5")
    async with lionstore.open(path, run=RUN, readonly=True) as store:
        assert await store.head() == head
        assert {name: await entry(store) for name, entry in _entry_points().items()} == expected
        assert (await verify(store)).ok
    async with lionstore.open(path, run=RUN) as store:
        [position] = await store.append([(lionstore.IDType.create(), Note(n=1))])
        assert position == head + 1
    sql(path, "UPDATE lionstore_head SET last_run_no = 0")
    before = digest(path)
    for readonly in (True, False):
        with pytest.raises(CorruptDatabaseError, match="head row"):
            async with lionstore.open(path, run=RUN, readonly=readonly):
                pass
    assert digest(path) == before


async def _state(path: Path, checkpoints: bool) -> Any:
    """What the entry points give for the file, or the LionstoreError type's name."""
    try:
        async with lionstore.open(path, run=RUN, readonly=True, checkpoints=checkpoints) as store:
            return {name: await entry(store) for name, entry in _entry_points().items()}
    except LionstoreError as exc:
        return type(exc).__name__


def _flip(source: Path, target: Path, offset: int, bit: int) -> None:
    data = bytearray(source.read_bytes())
    data[offset] ^= 1 << bit
    target.write_bytes(bytes(data))


def _index_cells(path: Path, index: str) -> range:
    """The byte range of the cell content area of ``index``'s root page."""
    ((root,),) = _rows(path, f"SELECT rootpage FROM sqlite_master WHERE name = '{index}'")
    ((page_size,),) = _rows(path, "PRAGMA page_size")
    start = (root - 1) * page_size
    page = path.read_bytes()[start : start + page_size]
    assert page[0] in (0x0A, 0x02), "an index b-tree page"
    content = int.from_bytes(page[5:7], "big") or 65536
    return range(start + content, start + page_size)


async def test_bit_flips_in_the_run_position_index_give_the_logged_state_or_an_error(
    tmp_path: Path, record_property: Any
) -> None:
    """A flipped bit in the (run_no, position) index passed quick_check, and load()
    returned wrong inboxes or raised KeyError: 0. Every flip now gives the logged state
    or a LionstoreError (the digest chain checked as records are folded)."""
    path = tmp_path / "index.db"
    await make_file(path)
    logged = await _state(path, checkpoints=False)
    assert isinstance(logged, dict)
    cells = _index_cells(path, "ix_lionstore_records_run_position")
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for n in range(60):
        flipped = tmp_path / f"f{n}.db"
        _flip(path, flipped, rng.choice(cells), rng.randrange(8))
        got = await _state(flipped, checkpoints=False)
        key = "logged state" if got == logged else got if isinstance(got, str) else "WRONG STATE"
        outcomes[key] = outcomes.get(key, 0) + 1
        assert got == logged or isinstance(got, str), (n, got)
        flipped.unlink()
    record_property("reliability", f"index bit flips: 60 -> {outcomes}")


async def test_random_bit_flips_give_the_logged_state_or_an_error(
    tmp_path: Path, record_property: Any
) -> None:
    """42 of 120 random bit flips gave a changed state with no error from show or
    load(). Each flip now gives what was logged, or a LionstoreError."""
    path = tmp_path / "flips.db"
    await make_file(path)
    async with lionstore.open(path, run=RUN):  # a few more checkpoints and records
        pass
    size = path.stat().st_size
    logged = {cp: await _state(path, checkpoints=cp) for cp in (True, False)}
    rng = random.Random(120)
    outcomes: dict[str, int] = {}
    for n in range(120):
        flipped = tmp_path / f"f{n}.db"
        _flip(path, flipped, rng.randrange(100, size), rng.randrange(8))  # past the header
        for cp in (True, False):
            got = await _state(flipped, checkpoints=cp)
            same = got == logged[cp]
            key = "logged state" if same else got if isinstance(got, str) else "WRONG STATE"
            outcomes[key] = outcomes.get(key, 0) + 1
            assert same or isinstance(got, str), (n, cp, got)
        _, _, err = await asyncio.to_thread(cli, "show", flipped, "--run", RUN)
        assert "unexpected" not in err, (n, err)
        flipped.unlink()
    record_property("reliability", f"random bit flips in {size} bytes: 120 x 2 loads -> {outcomes}")


# -- a full disk (a real one: a tiny tmpfs) -------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount ({exc}): a real full disk needs a small tmpfs")
    if done.returncode != 0:
        pytest.skip(f"mounting a 2 MiB tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30, check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    assert shutil.disk_usage(disk).free < 4096
    return filler


async def test_a_full_disk_says_disk_full_and_never_calls_a_healthy_file_damaged(
    tmp_path: Path, small_disk: Path
) -> None:
    healthy = small_disk / "healthy.db"
    await make_file(tmp_path / "made.db")
    shutil.copy(tmp_path / "made.db", healthy)
    filler = _fill(small_disk)
    before = digest(healthy)

    new = small_disk / "new.db"
    with pytest.raises(StoreError, match="disk full") as caught:
        await lionstore.open(new, run="r")
    assert not isinstance(caught.value, CorruptDatabaseError)
    assert not new.exists() and not [p for p in os.listdir(small_disk) if p.startswith(".new.db")]

    for readonly in (True, False):
        with pytest.raises(StoreError, match="disk full") as caught:
            async with lionstore.open(healthy, run=RUN, readonly=readonly):
                pass
        assert not isinstance(caught.value, CorruptDatabaseError), caught.value
    code, _, err = await asyncio.to_thread(cli, "runs", healthy)
    assert code != 0 and "disk full" in err and "unexpected" not in err and "damaged" not in err
    assert digest(healthy) == before

    filler.unlink()  # room again: the same file opens, whole
    async with lionstore.open(healthy, run=RUN) as store:
        assert (await verify(store)).ok
        executor = Executor(store=store, name="chores")
        await executor.load()
        assert len(executor.pile) == 3

    # full in the middle of appends: "disk full", and nothing half-written
    async with lionstore.open(healthy, run=RUN) as store:
        filler = _fill(small_disk)
        with pytest.raises(StoreError, match="disk full"):
            for _ in range(100):
                executor = Executor(CONFIG, store=store, name="more")
                await executor.extend([Nested(payload="x" * 2000) for _ in range(50)])
        filler.unlink()
    async with lionstore.open(healthy, run=RUN, readonly=True) as store:
        assert (await verify(store)).ok
