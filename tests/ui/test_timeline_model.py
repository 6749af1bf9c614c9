"""The timeline a run is drawn from (lionstore.replay.timeline), on the run that was
SIGKILLed and resumed: no browser needed."""

from __future__ import annotations

from pathlib import Path

from ui_helpers import timeline_of as _timeline

from lionstore.replay.timeline import (
    MAX_ITEMS,
    EventLine,
    Session,
    Timeline,
    to_mermaid,
)


def test_the_crash_and_the_resume_are_in_the_timeline(crashed_db: Path) -> None:
    tl = _timeline(crashed_db, "nightly-report")
    assert tl.title == "nightly-report" and tl.complete
    assert [e.name for e in tl.events.values()] == [
        "load-orders", "fetch-prices", "bad-budget", "archive", "render-charts", "email-report"
    ]  # fmt: skip
    first, second = tl.sessions
    assert first.died_us is not None and second.died_us is None
    assert [m["kind"] for m in tl.summary()["marks"]] == ["crash", "resume"]
    crash, resume = tl.summary()["marks"]
    assert crash["at_us"] < resume["at_us"]
    for name in ("render-charts", "email-report"):
        event = next(e for e in tl.events.values() if e.name == name)
        lost, done = event.attempts
        # the resumed process saw the killed one gone and took its claims over at once
        assert (lost.n, lost.outcome, done.n, done.outcome) == (
            1, "process gone", 2, "completed"
        )  # fmt: skip
        assert lost.taken_over_us is not None
        assert lost.end_us == min(lost.lease_expires_us, lost.taken_over_us)
        assert lost.owner == first.owner and done.owner == second.owner
    denied = next(e for e in tl.events.values() if e.name == "fetch-prices")
    assert [d["reason"] for d in denied.deferrals] == ["permission_denied"]
    failed = next(e for e in tl.events.values() if e.name == "bad-budget")
    assert failed.status == "failed" and "negative budget" in (failed.error or "")
    dead = [m for m in tl.mails.values() if m.outcome == "dead letter"]
    assert [(tl.source_name(m.sender), m.reason) for m in dead] == [("worker", "recipient_unknown")]
    assert tl.source_name(dead[0].recipient).startswith("unknown recipient ")


def test_mermaid_names_sections_attempts_and_items(crashed_db: Path) -> None:
    text = to_mermaid(_timeline(crashed_db, "nightly-report"))
    assert text.startswith("# Run nightly-report\n")
    assert "participant S0 as planner" in text
    assert 'S0->>S1: message {"task":"build the report"} (delivered)' in text
    assert '-xS3: message "cc the CFO" (dead letter, recipient_unknown)' in text
    assert "section executor reports" in text
    assert "render-charts attempt 1 process gone :crit," in text
    assert "render-charts attempt 2 completed :done," in text
    assert "fetch-prices denied, back-off :" in text


def test_a_window_with_too_many_events_becomes_counts() -> None:
    tl = Timeline(run_id="r", started_us=0, end_us=3_000_000)
    tl.executors.append("x")
    events = [
        EventLine(f"e{i}", "x", "Job", f"job-{i}", i * 1000, i, end_us=i * 1000 + 900)
        for i in range(3000)
    ]
    for event in events:
        event.status = "completed" if event.position % 3 else "failed"
        tl.events[event.id] = event
    tl.events_by_executor["x"] = events
    whole = tl.window(buckets=100)
    assert len(events) > MAX_ITEMS and whole["events"] == []
    (counts,) = whole["aggregates"]
    assert counts["lane"] == "g:x" and len(counts["counts"]["completed"]) == 100
    # every event in exactly one 30 ms bucket (30 events each: 10 failed, 20 completed)
    assert set(counts["counts"]["failed"]) == {10} and set(counts["counts"]["completed"]) == {20}
    zoomed = tl.window(1_000_000, 1_099_999)
    assert [e["name"] for e in zoomed["events"]] == [f"job-{i}" for i in range(1000, 1100)]
    assert zoomed["rows"] == {"g:x": 1} and not zoomed["aggregates"]  # no overlaps: one row


def test_only_a_processor_started_after_one_stopped_is_a_resume() -> None:
    tl = Timeline(run_id="r", started_us=0, end_us=10_000)
    first, other, late = (
        Session("x", "p1", 0, 0),
        Session("x", "p2", 100, 100),  # a second worker, while p1 ran
        Session("x", "p3", 5_000, 5_000),  # after p1 stopped
    )
    tl.sessions += [first, other, late]
    tl.owner_last.update({"p1": 1_000, "p2": 9_000, "p3": 9_500})
    assert tl.summary()["marks"] == []  # nobody died: no resume
    first.died_us = 4_000  # p1's claims were taken over: it had stopped at 1,000
    marks = tl.summary()["marks"]
    assert [(m["kind"], m["at_us"]) for m in marks] == [("resume", 5_000)]
    assert "p3" in marks[0]["text"]
