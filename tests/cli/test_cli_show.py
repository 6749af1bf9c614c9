"""``lionstore show``: the state of a run at its end, at a position or at a time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbtools import rechain

import lionstore
from lionstore.cli.show import format_state, show_run

if TYPE_CHECKING:
    from cli_scenarios import WorkDb
    from conftest import Cli, SampleDb


def show_json(cli: Cli, *args: Any) -> dict[str, Any]:
    result = cli("show", *args, "--json")
    assert result.code == 0, result.err
    assert result.err == ""
    (line,) = result.out.splitlines()  # one JSON object, one line
    state: dict[str, Any] = json.loads(line)
    return state


def test_show_json_structure(cli: Cli, work_db: WorkDb) -> None:
    state = show_json(cli, work_db.path, "--run", "work")
    assert set(state) == {
        "run_id",
        "label",
        "parent_run_id",
        "forked_at_position",
        "at",
        "time",
        "position",
        "records",
        "unknown_records",
        "executors",
        "routers",
    }
    assert (state["run_id"], state["label"], state["at"], state["time"]) == (
        work_db.run_id,
        "work",
        None,
        None,
    )
    assert state["position"] == state["records"] == work_db.end
    assert state["unknown_records"] == 0

    (calc,) = state["executors"].values()
    assert list(state["executors"]) == ["calc"]
    assert set(calc) == {"events", "pending", "queue", "processors", "released"}
    assert calc["pending"] == [] and calc["queue"] == []
    (config,) = calc["processors"].values()
    assert config["queue_capacity"] == 2
    events = calc["events"]
    assert [e["id"] for e in events] == work_db.events
    assert {k for e in events for k in e} == {
        "id",
        "class",
        "status",
        "attempts",
        "response",
        "error",
        "duration",
        "fields",
        "owner",
        "in",
    }
    assert [(e["status"], e["attempts"], e["response"]) for e in events] == [
        ("completed", 1, 4),
        ("completed", 1, 9),
        ("failed", 1, None),
    ]
    assert events[2]["error"] == "ValueError: cannot square -1 here"
    assert events[0]["class"] == "cli_scenarios.Square"
    assert events[0]["fields"] == {"n": 2}

    post = state["routers"]["post"]
    assert set(post) == {"sources", "deleted_sources", "mailboxes", "buffer", "dead_letters"}
    a, b, c = work_db.sources
    assert post["sources"] == [a, b, c]
    assert post["buffer"] == {}
    boxes = post["mailboxes"]
    assert {sender: len(m) for sender, m in boxes[c]["inbox"].items()} == {a: 1, b: 1}
    assert [m["item"] for m in boxes[b]["inbox"][a]] == ["hi b"]
    assert all(box["outbox"] == [] for box in boxes.values())
    (dead,) = post["dead_letters"]
    assert (dead["sender"], dead["recipient"], dead["item"]) == (c, work_db.stranger, "lost")
    assert (dead["reason"], dead["stage"]) == ("recipient_unknown", "outbox")


def test_show_at_a_position_shows_the_earlier_state(cli: Cli, work_db: WorkDb) -> None:
    appended = show_json(cli, work_db.path, "--run", "work", "--at", work_db.appended)
    assert appended["at"] == work_db.appended
    assert appended["position"] == appended["records"] == work_db.appended
    calc = appended["executors"]["calc"]
    assert [e["status"] for e in calc["events"]] == ["pending"] * 3
    assert [e["in"] for e in calc["events"]] == ["pending"] * 3
    assert calc["pending"] == work_db.events
    assert appended["routers"] == {}

    done = show_json(cli, work_db.path, "--run", "work", "--at", work_db.events_done)
    assert [e["status"] for e in done["executors"]["calc"]["events"]] == [
        "completed",
        "completed",
        "failed",
    ]
    assert done["routers"] == {}

    # In the middle of the first cycle: two events claimed, one still queued.
    first_claims = work_db.appended + 5  # 3 queued, 2 claimed
    middle = show_json(cli, work_db.path, "--run", "work", "--at", first_claims)
    events = middle["executors"]["calc"]["events"]
    assert [e["status"] for e in events] == ["processing", "processing", "pending"]
    assert events[0]["owner"] is not None
    assert middle["executors"]["calc"]["queue"] == [work_db.events[2]]

    human = cli("show", work_db.path, "--run", "work", "--at", first_claims)
    assert human.code == 0
    assert f"up to position {first_claims}" in human.out
    assert "processing" in human.out and "claimed by" in human.out
    assert "router" not in human.out


def test_show_at_a_time(cli: Cli, sample_db: SampleDb, work_db: WorkDb) -> None:
    state = show_json(cli, work_db.path, "--run", "work", "--time", "2000-01-01T00:00:00")
    assert state["records"] == 0 and state["executors"] == {}
    assert state["time"] == "2000-01-01T00:00:00+00:00"
    later = datetime.now(UTC) + timedelta(days=1)
    assert show_json(cli, work_db.path, "--time", later.isoformat())["records"] == work_db.end
    # sample_db's clock: alpha started at 2026-01-01 00:00:00, its notes a second later.
    early = show_json(cli, sample_db.path, "--run", "alpha", "--time", "2026-01-01 00:00:00.5")
    assert early["records"] == 1


def test_show_human_output(cli: Cli, work_db: WorkDb) -> None:
    result = cli("show", work_db.path)  # no --run: the newest run
    assert result.code == 0, result.err
    assert result.err == ""
    out = result.out
    assert out.startswith(f"run work ({work_db.run_id}) at its end: {work_db.end} records")
    assert "executor calc: 3 events (completed 2, failed 1)" in out
    assert "EVENT" in out and "ATTEMPTS" in out and "RESPONSE / ERROR" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("    ")}
    first, second, third = (rows[e[:8]] for e in work_db.events)
    assert first[1:5] == ["Square", "completed", "1", "4"]
    assert second[1:5] == ["Square", "completed", "1", "9"]
    assert third[1:4] == ["Square", "failed", "1"]
    assert "error: ValueError: cannot square -1 here" in out
    a, b, c = (s[:8] for s in work_db.sources)
    assert "router post: 3 sources" in out
    assert rows[c][1:] == ["0", a, "1,", b, "1"]
    assert rows[a][1:] == ["0", "-"]
    assert "buffer: empty" in out
    assert "dead letters: 1" in out
    assert "recipient_unknown (at outbox, position" in out


def test_show_without_the_event_classes(cli: Cli, work_db: WorkDb) -> None:
    """The event class is looked up nowhere: a class path nobody defines shows the same."""
    import sqlite3

    with sqlite3.connect(work_db.path) as conn:
        conn.execute(
            "UPDATE lionstore_records SET data = replace(data, 'cli_scenarios.Square', "
            "'nowhere.to.be.Found') WHERE kind = 'event.appended'"
        )
    rechain(work_db.path, "work")  # past the digest check show makes
    state = show_json(cli, work_db.path, "--run", "work")
    events = state["executors"]["calc"]["events"]
    assert {e["class"] for e in events} == {"nowhere.to.be.Found"}
    assert [e["response"] for e in events] == [4, 9, None]
    assert "Found  completed" in cli("show", work_db.path).out


def test_show_an_empty_run_and_unknown_kinds(cli: Cli, sample_db: SampleDb) -> None:
    state = show_json(cli, sample_db.path, "--run", "alpha")
    assert state["records"] == 5
    assert state["unknown_records"] == 0  # the test kinds are known in this process
    result = cli("show", sample_db.path, "--run", "beta")
    assert result.code == 0
    assert "no events and no mail (yet) in this run" in result.out


def test_show_errors_are_one_line(cli: Cli, work_db: WorkDb, tmp_path: Path) -> None:
    missing_run = cli("show", work_db.path, "--run", "nope")
    assert missing_run.code == 1
    assert missing_run.err == "lionstore: error: no run with id or label 'nope'\n"
    missing_file = cli("show", tmp_path / "none.db")
    assert missing_file.code == 1
    assert len(missing_file.err.splitlines()) == 1
    assert not (tmp_path / "none.db").exists()
    both = cli("show", work_db.path, "--at", "3", "--time", "2026-01-01")
    assert both.code == 2
    assert "not allowed with argument" in both.err
    assert cli("show", work_db.path, "--at", "-1").code == 2
    assert cli("show", work_db.path, "--time", "yesterday").code == 2


def test_show_of_a_database_without_runs(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    assert cli("db", "upgrade", path).code == 0
    result = cli("show", path)
    assert result.code == 1
    assert "holds no runs" in result.err


def test_show_run_is_the_library_behind_the_command(work_db: WorkDb) -> None:
    state = asyncio.run(show_run(work_db.path, run="work", at=work_db.events_done))
    assert state.run.run_id == work_db.run_id
    assert state.projection.counts() == {"events": {"completed": 2, "failed": 1}, "mail": {}}
    lines = format_state(state, width=100)
    assert lines[0].startswith("run work ")
    assert all(len(line) <= 100 for line in lines)


def test_show_does_not_write(work_db: WorkDb, cli: Cli) -> None:
    before = work_db.path.read_bytes()
    assert cli("show", work_db.path).code == 0
    assert cli("show", work_db.path, "--json").code == 0

    async def head() -> int:
        async with lionstore.open(work_db.path, readonly=True) as store:
            return await store.head()

    assert asyncio.run(head()) == work_db.end
    assert work_db.path.read_bytes() == before
