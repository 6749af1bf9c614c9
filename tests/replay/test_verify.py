"""verify(): re-decide a recorded run and compare it with its log, record by record."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dbtools import execute, query, rechain, record_data, set_field
from replay_scenarios import Recording, positions

import lionstore
import lionstore.repositories.executor as decisions
from lionstore.replay import VerifyReport, verify


async def _verify(path: str, run: str) -> VerifyReport:
    async with lionstore.open(path, readonly=True) as store:
        return await verify(store, run=run)


def verify_file(recording: Recording) -> VerifyReport:
    return asyncio.run(_verify(recording.path, recording.label))


def cycle_positions(target: str, cycle: int) -> list[int]:
    """Positions of the records one processor cycle wrote (queued, claimed, deferred)."""
    rows = query(
        target,
        "SELECT position, data FROM lionstore_records WHERE kind IN ('event.queued',"
        " 'event.claimed', 'event.deferred') ORDER BY position",
    )
    return [p for p, data in rows if json.loads(data).get("cycle") == cycle]


def test_an_untouched_run_verifies(recording: Recording) -> None:
    report = verify_file(recording)
    assert report.ok, report.divergence
    assert report.divergence is None
    assert report.run_id == recording.run_id
    assert report.records == recording.end
    assert report.cycles >= 3  # the first cycle, the one after the denial, the retry's
    assert report.counts == {
        "events": {"completed": 2, "failed": 1},
        "mail": {"inbox": 3, "dead": 3},
    }
    assert report.to_dict()["ok"] is True


@pytest.mark.parametrize(
    ("kind", "index", "name", "value"),
    [
        ("event.finished", 0, "status", "failed"),  # a status
        ("event.finished", 0, "response", 5),  # an outcome
        ("event.finished", -1, "error", None),  # a failure turned into nothing
        ("event.claimed", 0, "attempt", 2),
        ("mail.dead_lettered", 0, "reason", "sender_deleted"),
    ],
)
def test_an_edited_record_fails_at_its_position(
    recording: Recording, kind: str, index: int, name: str, value: Any
) -> None:
    position = positions(recording.path, kind)[index]
    assert set_field(recording.path, position, name, value) == 1
    report = verify_file(recording)
    assert not report.ok
    assert report.divergence is not None
    assert report.divergence.position == position
    assert "digest mismatch" in report.divergence.reason
    assert report.divergence.actual is not None
    assert report.divergence.actual["position"] == position
    assert report.records == position - 1


@pytest.mark.parametrize("kind", ["event.claimed", "event.finished", "mail.collected"])
def test_a_deleted_record_fails_at_or_before_the_next_record(
    recording: Recording, kind: str
) -> None:
    deleted = positions(recording.path, kind)[0]
    assert execute(recording.path, "DELETE FROM lionstore_records WHERE position = ?", deleted) == 1
    report = verify_file(recording)
    assert report.divergence is not None
    assert report.divergence.position <= deleted + 1
    assert report.divergence.position == deleted + 1  # the chain breaks at the next record
    assert "changed or deleted" in report.divergence.reason


def test_a_changed_capacity_rule_is_caught_at_the_first_cycle(
    recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert verify_file(recording).ok
    original = decisions.cycle_candidates
    monkeypatch.setattr(
        decisions,
        "cycle_candidates",
        lambda state, capacity, now_us, forward: original(state, 1, now_us, forward),
    )
    report = verify_file(recording)
    assert report.divergence is not None
    first_cycle = cycle_positions(recording.path, 1)
    # cycle 1 queued the three jobs, claimed "fast" and deferred "slow" (capacity 2);
    # with capacity 1 it would have offered "fast" only: the deferral is not expected.
    kinds = [record_data(recording.path, p) for p in first_cycle]
    assert len(first_cycle) == 5 and len(kinds) == 5
    assert report.divergence.position == first_cycle[4]
    assert report.cycles == 1
    assert "processor cycle 1 of " in report.divergence.reason
    assert "decided differently" in report.divergence.reason
    assert report.divergence.expected is None
    assert report.divergence.actual is not None
    assert report.divergence.actual["kind"] == "event.deferred"
    assert report.divergence.actual["stream_id"] == recording.jobs[1]


def test_a_changed_backoff_rule_is_caught(
    recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = decisions.backoff_for
    monkeypatch.setattr(
        decisions, "backoff_for", lambda refresh, cap: original(refresh * 2, cap * 2)
    )
    report = verify_file(recording)
    assert report.divergence is not None
    (deferred,) = positions(recording.path, "event.deferred")
    assert report.divergence.position == deferred
    assert report.divergence.expected is not None and report.divergence.actual is not None
    expected, actual = report.divergence.expected["data"], report.divergence.actual["data"]
    assert expected["retry_at_us"] - expected["at_us"] == 40_000  # doubled back-off
    assert actual["retry_at_us"] - actual["at_us"] == 20_000


def test_a_hidden_edit_is_caught_by_the_decisions(recording: Recording) -> None:
    """Someone edits a record and recomputes the digest chain: the digests agree, the
    re-decided run does not."""
    (dead,) = [
        p
        for p in positions(recording.path, "mail.dead_lettered")
        if record_data(recording.path, p)["reason"] == "recipient_unknown"
    ]
    set_field(recording.path, dead, "reason", "recipient_deleted")
    rechain(recording.path, recording.run_id)
    report = verify_file(recording)
    assert report.divergence is not None
    assert report.divergence.position == dead
    assert report.divergence.reason == "the mail should have been routed differently"
    assert report.divergence.expected is not None
    assert report.divergence.expected["data"] == {
        "reason": "recipient_unknown",
        "stage": "outbox",
    }


def test_a_hidden_attempt_edit_is_caught(recording: Recording) -> None:
    finished = positions(recording.path, "event.finished")[0]
    set_field(recording.path, finished, "attempt", 7)
    rechain(recording.path, recording.run_id)
    report = verify_file(recording)
    assert report.divergence is not None
    assert report.divergence.position == finished
    assert "not claimed at that attempt" in report.divergence.reason


def test_verify_runs_no_user_code(recording: Recording, monkeypatch: pytest.MonkeyPatch) -> None:
    from replay_scenarios import DenyOnce, ReplayJob

    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("verify must not call user code")

    monkeypatch.setattr(ReplayJob, "invoke", boom)
    monkeypatch.setattr(DenyOnce, "request_permission", boom)
    assert verify_file(recording).ok


def test_verify_a_fork(recording: Recording) -> None:
    async def fork_and_verify() -> VerifyReport:
        async with lionstore.open(recording.path, run=recording.run_id) as store:
            forked = await store.fork(recording.end - 3, label="forked")
        return await _verify(recording.path, forked.run_id)

    report = asyncio.run(fork_and_verify())
    assert report.ok, report.divergence
    assert report.records == recording.end - 3


def test_a_stream_version_gap_is_caught_even_with_a_rebuilt_chain(recording: Recording) -> None:
    """The last record of a stream moved one version up (as if one before it were lost),
    digests recomputed: verify names the jump."""
    finished = positions(recording.path, "event.finished")[0]
    ((stream_no,),) = query(
        recording.path, "SELECT stream_no FROM lionstore_records WHERE position = ?", finished
    )
    ((last, version),) = query(
        recording.path,
        "SELECT position, stream_version FROM lionstore_records WHERE stream_no = ?"
        " ORDER BY stream_version DESC LIMIT 1",
        stream_no,
    )
    changed = execute(
        recording.path,
        "UPDATE lionstore_records SET stream_version = ? WHERE position = ?",
        version + 1,
        last,
    )
    assert changed == 1
    rechain(recording.path, recording.run_id)
    report = verify_file(recording)
    assert report.divergence is not None
    assert report.divergence.position == last
    assert f"jumps from version {version - 1} to {version + 1}" in report.divergence.reason


class _Nap(lionstore.Event):
    async def invoke(self) -> None:
        self.response = "ok"


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _record_a_take_over(path: str, max_attempts: int = 2) -> str:
    """A claim never finished (its owner "crashed"), taken over once its lease expired,
    then run to completion: event.claimed, event.requeued, event.claimed, event.finished."""
    clock = _Clock()
    async with lionstore.open(path, run="lease", clock=clock) as store:
        config = {"queue_capacity": 10, "capacity_refresh_time": 0.01, "lease_seconds": 10.0}
        executor = lionstore.Executor(
            {**config, "max_attempts": max_attempts}, store=store, name="ex"
        )
        await executor.start()
        assert executor.processor is not None
        event = _Nap()
        await executor.processor.enqueue(event)
        assert await asyncio.wait_for(executor.processor.dequeue(), 30) is event
        clock.now += timedelta(seconds=11)
        await asyncio.wait_for(executor.processor.process(), 30)
        done = lionstore.EventStatus.COMPLETED if max_attempts > 1 else lionstore.EventStatus.FAILED
        assert event.status is done
        await executor.stop()
        return str(store.run_id)


@pytest.mark.parametrize("tamper", ["none", "early", "abandoned"])
def test_a_lease_take_over_verifies_and_a_wrong_one_is_caught(tmp_path: Any, tamper: str) -> None:
    path = str(tmp_path / "lease.db")
    run_id = asyncio.run(_record_a_take_over(path))
    (requeued,) = positions(path, "event.requeued")
    if tamper == "early":  # the first claim's lease made to run past the take-over
        first_claim = positions(path, "event.claimed")[0]
        lease = record_data(path, first_claim)["lease_expires_us"]
        set_field(path, first_claim, "lease_expires_us", lease + 60_000_000)
    elif tamper == "abandoned":  # attempt 1 of max 2 recorded as abandoned
        execute(
            path,
            "UPDATE lionstore_records SET kind = ? WHERE position = ?",
            "event.abandoned",
            requeued,
        )
    rechain(path, run_id)
    report = asyncio.run(_verify(path, "lease"))
    if tamper == "none":
        assert report.ok, report.divergence
        return
    assert report.divergence is not None
    assert report.divergence.position == requeued
    if tamper == "early":
        assert report.divergence.reason == "a lease was taken over before it expired"
    else:
        assert report.divergence.reason == "attempt 1 of max 2 should be event.requeued"
        assert report.divergence.expected is not None
        assert report.divergence.expected["kind"] == "event.requeued"


def test_a_last_attempt_abandoned_at_its_take_over_verifies(tmp_path: Any) -> None:
    path = str(tmp_path / "abandoned.db")
    asyncio.run(_record_a_take_over(path, max_attempts=1))
    assert positions(path, "event.requeued") == []
    assert len(positions(path, "event.abandoned")) == 1
    report = asyncio.run(_verify(path, "lease"))
    assert report.ok, report.divergence
