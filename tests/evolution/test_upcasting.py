"""event.finished v1 (float seconds ``duration``) reads as v2 (``duration_us``)
everywhere: the store, projections, rebuild, verify and the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bounds import bounded
from evo_helpers import run_cli, stored_rows

import lionstore
from lionstore.domain.event_records import EventFinished, duration_to_us
from lionstore.domain.records import RecordData, UnknownRecord, decode_data, register_upcaster
from lionstore.replay import rebuild, verify


def stored_finished(path: Path) -> list[dict[str, Any]]:
    return [json.loads(str(row[6])) for row in stored_rows(path) if row[4] == "event.finished"]


async def test_the_fixture_holds_v1_records_and_they_read_as_v2(upgraded: Path) -> None:
    stored = stored_finished(upgraded)
    assert stored and all("duration" in d and "duration_us" not in d for d in stored)
    async with lionstore.open(upgraded, readonly=True) as store:
        finished = [r async for r in await store.read(run=None, kinds=["event.finished"])]
    assert len(finished) == len(stored)
    for record, old in zip(finished, stored, strict=True):
        assert record.kind_version == 1 and record.upcast
        assert isinstance(record.data, EventFinished)
        assert record.data.duration_us == round(old["duration"] * 1_000_000)
        assert record.data.duration_us is not None
        assert record.data.duration == record.data.duration_us / 1_000_000
        assert json.loads(record.raw) == old  # the stored bytes are untouched
        shown = record.to_json_dict()
        assert shown["kind_version"] == 1
        assert "duration" not in shown["data"]
        assert shown["data"]["duration_us"] == record.data.duration_us


async def test_rebuild_and_verify_over_upcast_records(upgraded: Path) -> None:
    async with lionstore.open(upgraded, readonly=True) as store:
        projection = await rebuild(store, run="fixture")
        found = [e.execution.duration for e in projection.executors["worker"].pile]
        durations = sorted(d for d in found if d is not None)
        assert len(durations) == len(found) and all(d > 0 for d in durations)
        assert all(round(d * 1_000_000) == d * 1_000_000 for d in durations)
        for run in ("fixture", "fixture-fork"):
            report = await verify(store, run=run)
            assert report.ok, report.divergence


async def test_new_records_are_v2_next_to_old_v1_ones_and_the_run_still_verifies(
    upgraded: Path,
) -> None:
    from fixture_kinds import FixtureExecutor, FixtureTask

    async with lionstore.open(upgraded, run="fixture") as store:
        executor = FixtureExecutor(
            {"queue_capacity": 10, "capacity_refresh_time": 0.01}, store=store, name="worker"
        )
        await executor.start()
        assert len(executor.pile) == 4  # rebuilt from v1 outcomes
        old = next(e for e in executor.pile if e.execution.response == 3)
        assert old.execution.duration is not None
        await executor.append(FixtureTask(name="new", numerator=6, denominator=3))
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        await executor.stop()
        records = [r async for r in await store.read(kinds=["event.finished"])]
        assert [r.kind_version for r in records] == [1, 1, 1, 1, 1, 2]
        assert "duration_us" in json.loads(records[-1].raw)
        report = await verify(store, run="fixture")
        assert report.ok, report.divergence


def test_cli_log_show_export_print_the_current_shape(upgraded: Path, tmp_path: Path) -> None:
    log = run_cli("log", str(upgraded), "--run", "fixture", "--kind", "event.finished", "--json")
    lines = [json.loads(line) for line in log.splitlines()]
    assert len(lines) == 5 and all(line["kind_version"] == 1 for line in lines)
    assert all("duration_us" in line["data"] and "duration" not in line["data"] for line in lines)
    text = run_cli("log", str(upgraded), "--run", "fixture", "--kind", "event.finished")
    assert "duration_us" in text and '"duration"' not in text
    shown = json.loads(run_cli("show", str(upgraded), "--run", "fixture", "--json"))
    events = shown["executors"]["worker"]["events"]
    assert all(isinstance(e["duration"], float) for e in events)
    out = tmp_path / "export.jsonl"
    run_cli("export", str(upgraded), "--run", "fixture", "--output", str(out))
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    finished = [e for e in exported if e["kind"] == "event.finished"]
    assert all(e["kind_version"] == 1 and "duration_us" in e["data"] for e in finished)


def test_old_data_an_upcaster_cannot_read_comes_back_unknown() -> None:
    broken = json.dumps({"status": "completed", "attempt": 1, "duration": "soon"})
    data = decode_data("event.finished", 1, broken)
    assert isinstance(data, UnknownRecord)
    assert data.raw["duration"] == "soon" and data.kind_version == 1
    fine = decode_data("event.finished", 1, json.dumps({"status": "failed", "attempt": 2}))
    assert isinstance(fine, EventFinished) and fine.duration is None
    newer = decode_data("event.finished", 3, "{}")
    assert isinstance(newer, UnknownRecord)


def test_duration_to_us_rounds_to_whole_microseconds() -> None:
    assert duration_to_us(None) is None
    assert duration_to_us(1.3719999969907803e-05) == 14
    assert duration_to_us(0.5) == 500_000


@pytest.mark.parametrize(
    ("kind", "version", "fn", "error"),
    [
        ("", 1, lambda d: d, ValueError),
        ("k", 0, lambda d: d, ValueError),
        ("k", True, lambda d: d, ValueError),
        ("k", 1, "not callable", TypeError),
    ],
)
def test_register_upcaster_refuses_bad_arguments(
    kind: str, version: int, fn: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        register_upcaster(kind, version, fn)


class _Gapped(RecordData):
    """At version 3, with an upcaster from 2 only: version 1 has no path to the current shape."""

    kind: ClassVar[str] = "evotest.gapped"
    kind_version: ClassVar[int] = 3
    value: int = 0
    steps: tuple[int, ...] = ()


def _gapped_2_to_3(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "steps": (*data.get("steps", ()), 3)}


register_upcaster(_Gapped.kind, 2, _gapped_2_to_3)


def test_a_missing_upcaster_in_the_chain_leaves_the_record_unknown() -> None:
    # Version 1 data happens to validate as version 3, so skipping the missing 1 -> 2 step
    # would silently read it as current; it must come back unknown, stored data intact.
    old = decode_data(_Gapped.kind, 1, json.dumps({"value": 7}))
    assert isinstance(old, UnknownRecord)
    assert old.kind_version == 1 and old.raw == {"value": 7}
    # The registered part of the chain still runs, in order.
    v2 = decode_data(_Gapped.kind, 2, json.dumps({"value": 7, "steps": [2]}))
    assert v2 == _Gapped(value=7, steps=(2, 3))
    assert decode_data(_Gapped.kind, 3, json.dumps({"value": 7})) == _Gapped(value=7)
