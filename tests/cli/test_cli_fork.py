"""``lionstore fork``: a new run from the first records of a run; the source is untouched."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import lionstore
from lionstore.cli.fork import fork_run

if TYPE_CHECKING:
    from cli_scenarios import WorkDb
    from conftest import Cli


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """A ``show --json`` state without what differs between a fork and its source: the
    run, the bound asked for and positions (a fork's copies get new positions)."""
    skip = ("run_id", "label", "parent_run_id", "forked_at_position", "at", "position")
    state = {k: v for k, v in state.items() if k not in skip}
    for router in state["routers"].values():
        for letter in router["dead_letters"]:
            letter.pop("position")
    return state


def show(cli: Cli, *args: Any) -> dict[str, Any]:
    result = cli("show", *args, "--json")
    assert result.code == 0, result.err
    state: dict[str, Any] = json.loads(result.out)
    return state


def test_a_fork_shows_what_its_source_showed_at_p(cli: Cli, work_db: WorkDb) -> None:
    before = work_db.path.stat().st_size
    at = work_db.end - 2  # two mails delivered, one still in the buffer
    result = cli("fork", work_db.path, "--run", "work", "--at", at, "--label", "retry")
    assert result.code == 0, result.err
    first = result.out.splitlines()[0]
    assert first.startswith(f"forked run work ({work_db.run_id}) at position {at}: new run retry (")
    assert first.endswith(f" with {at} records")

    source_at_p = show(cli, work_db.path, "--run", "work", "--at", at)
    fork = show(cli, work_db.path, "--run", "retry")
    assert fork["label"] == "retry" and fork["run_id"] != work_db.run_id
    assert comparable(fork) == comparable(source_at_p)
    assert sum(len(m) for m in fork["routers"]["post"]["buffer"].values()) == 2
    assert fork["records"] == at

    # the source run is untouched
    assert show(cli, work_db.path, "--run", "work")["records"] == work_db.end
    assert cli("verify", work_db.path, "--run", "work").code == 0
    assert work_db.path.stat().st_size >= before

    runs = [json.loads(line) for line in cli("runs", work_db.path, "--json").out.splitlines()]
    assert [(r["label"], r["parent_run_id"], r["forked_at_position"]) for r in runs] == [
        ("work", None, None),
        ("retry", work_db.run_id, at),
    ]


def test_a_fork_continues_live(cli: Cli, work_db: WorkDb) -> None:
    """Fork before the mail was routed; open the fork and route it there."""
    at = work_db.end - 7  # every mail sent, none collected
    result = cli("fork", work_db.path, "--run", "work", "--at", at, "--label", "again", "--json")
    assert result.code == 0
    info = json.loads(result.out)
    assert info["label"] == "again"
    assert (info["parent_run_id"], info["forked_at_position"]) == (work_db.run_id, at)
    assert info["records"] == at

    async def carry_on() -> tuple[int, int]:
        async with lionstore.open(work_db.path, run="again") as store:
            exchange = lionstore.Exchange(store=store, name="post")
            return await exchange.collect_all(), await exchange.deliver_all()

    assert asyncio.run(carry_on()) == (4, 3)
    forked = show(cli, work_db.path, "--run", "again")
    source = show(cli, work_db.path, "--run", "work")
    assert comparable(forked)["routers"] == comparable(source)["routers"]
    assert forked["records"] == source["records"]
    assert cli("verify", work_db.path, "--run", "again").code == 0


def test_fork_refuses_a_taken_label_and_an_unknown_run(cli: Cli, work_db: WorkDb) -> None:
    taken = cli("fork", work_db.path, "--run", "work", "--at", "3", "--label", "work")
    assert taken.code == 1
    assert len(taken.err.splitlines()) == 1
    assert "already exists" in taken.err
    unknown = cli("fork", work_db.path, "--run", "nope", "--at", "3")
    assert unknown.code == 1
    assert unknown.err == "lionstore: error: no run with id or label 'nope'\n"
    runs = cli("runs", work_db.path, "--json").out.splitlines()
    assert len(runs) == 1  # nothing was created
    assert cli("fork", work_db.path, "--run", "work").code == 2  # --at is required


def test_fork_run_is_the_library_behind_the_command(work_db: WorkDb) -> None:
    result = asyncio.run(fork_run(work_db.path, run=work_db.run_id, at=work_db.appended))
    assert result.run.label is None
    assert result.source.run_id == work_db.run_id
    assert result.records == work_db.appended
