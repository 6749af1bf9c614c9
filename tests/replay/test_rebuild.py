"""rebuild(): the state of a run at any position or time is the fold of its records up to
there, equal to what the live objects showed at that moment, without the user's classes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from replay_scenarios import EXECUTOR, ROUTER, Recording, rebuilt_state

import lionstore
from lionstore.projections.executor import RecordedEvent
from lionstore.replay import RunProjection, rebuild


async def rebuild_at(recording: Recording, **bounds: Any) -> RunProjection:
    async with lionstore.open(recording.path, readonly=True) as store:
        return await rebuild(store, run=recording.label, **bounds)


def test_the_state_at_each_commit_equals_the_live_state(recording: Recording) -> None:
    assert len(recording.snapshots) >= 15  # every commit of the run after the setup

    async def check() -> None:
        async with lionstore.open(recording.path, readonly=True) as store:
            for position, live in recording.snapshots.items():
                projection = await rebuild(store, run=recording.run_id, at=position)
                assert projection.position == position
                assert rebuilt_state(projection) == live, f"at position {position}"

    asyncio.run(check())


def test_the_recording_went_through_every_state(recording: Recording) -> None:
    """The scenario covers what rebuild must get right: pending, queued, processing,
    deferred, failed, retried, completed; outboxes, buffer, inboxes, dead letters."""
    statuses = {e[1] for live in recording.snapshots.values() for e in live["events"]}
    assert statuses == {"pending", "processing", "completed", "failed"}
    assert any(live["queue"] for live in recording.snapshots.values())
    assert any(live["buffer"] for live in recording.snapshots.values())
    final = recording.snapshots[recording.end]
    assert [e[1:] for e in final["events"]] == [
        ("completed", 4, None, 1),
        ("completed", 9, None, 1),
        ("failed", None, "ValueError: negative: -1", 2),  # retried once, failed again
    ]
    assert [reason for _, reason, _ in final["dead"]] == [
        "recipient_unknown",  # collected: nobody by that id
        "sender_deleted",  # c's mail, still in its outbox when c was deleted
        "recipient_deleted",  # sent to c after c was deleted
    ]


def test_the_state_at_a_time_equals_the_state_at_that_commit(recording: Recording) -> None:
    times = list(recording.commit_times.values())
    unique = [p for p, t in recording.commit_times.items() if times.count(t) == 1]
    assert len(unique) >= 5

    async def check() -> None:
        async with lionstore.open(recording.path, readonly=True) as store:
            for position in unique:
                moment = datetime.fromtimestamp(recording.commit_times[position] / 1e6, UTC)
                # a datetime holds microseconds exactly; the bound is inclusive
                projection = await rebuild(store, run=recording.run_id, until=moment)
                assert projection.position == position
                assert rebuilt_state(projection) == recording.snapshots[position]

    asyncio.run(check())


def test_rebuild_needs_no_user_classes(recording: Recording) -> None:
    projection = asyncio.run(rebuild_at(recording))
    events = list(projection.executors[EXECUTOR].pile)
    assert all(isinstance(e, RecordedEvent) for e in events)
    assert [e.event_class for e in events] == ["replay_scenarios.ReplayJob"] * 3  # type: ignore[attr-defined]
    assert [e.fields for e in events] == [  # type: ignore[attr-defined]
        {"value": 2, "label": "fast"},
        {"value": 3, "label": "slow"},
        {"value": -1, "label": "bad"},
    ]
    assert projection.counts() == {
        "events": {"completed": 2, "failed": 1},
        "mail": {"inbox": 3, "dead": 3},
    }
    summary = projection.summary()
    assert summary["records"] == summary["position"] == recording.end
    assert list(summary["routers"]) == [ROUTER]


def test_rebuild_at_zero_and_past_the_end(recording: Recording) -> None:
    empty = asyncio.run(rebuild_at(recording, at=0))
    assert (empty.records, empty.executors, empty.routers) == (0, {}, {})
    beyond = asyncio.run(rebuild_at(recording, at=recording.end + 1000))
    assert rebuilt_state(beyond) == recording.snapshots[recording.end]


def test_rebuild_reports_progress(recording: Recording) -> None:
    seen: list[int] = []

    async def run() -> RunProjection:
        async with lionstore.open(recording.path, readonly=True) as store:
            return await rebuild(store, run=recording.label, progress=seen.append, page_size=7)

    projection = asyncio.run(run())
    assert projection.records == recording.end
    assert seen == []  # called every 10,000 records only
