"""``lionstore runs``: id, label, start and record count of every run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from cli_scenarios import Square

import lionstore
from lionstore.cli.runs import summarize_runs

if TYPE_CHECKING:
    from cli_scenarios import WorkDb
    from conftest import Cli, SampleDb


def test_runs_table(cli: Cli, sample_db: SampleDb) -> None:
    result = cli("runs", sample_db.path)
    assert result.code == 0, result.err
    header, alpha, beta = result.out.splitlines()
    assert header.split() == ["RUN", "ID", "LABEL", "STARTED", "(UTC)", "RECORDS", "EVENTS", "MAIL"]
    assert alpha.split() == [sample_db.alpha, "alpha", "2026-01-01", "00:00:00.000", "5", "-", "-"]
    assert beta.split() == [sample_db.beta, "beta", "2026-01-01", "00:01:02.000", "3", "-", "-"]
    started = header.index("STARTED")
    assert alpha.index("  2026-01-01") + 2 == started  # run ids are hex: no spaces in them
    assert beta.index("  2026-01-01") + 2 == started


def test_runs_json(cli: Cli, sample_db: SampleDb) -> None:
    result = cli("runs", sample_db.path, "--json")
    assert result.code == 0
    runs = [json.loads(line) for line in result.out.splitlines()]
    assert runs == [
        {
            "run_id": sample_db.alpha,
            "label": "alpha",
            "started_at": "2026-01-01T00:00:00+00:00",
            "records": 5,
            "parent_run_id": None,
            "forked_at_position": None,
            "events": {},
            "mail": {},
        },
        {
            "run_id": sample_db.beta,
            "label": "beta",
            "started_at": "2026-01-01T00:01:02+00:00",
            "records": 3,
            "parent_run_id": None,
            "forked_at_position": None,
            "events": {},
            "mail": {},
        },
    ]


def test_unlabelled_and_forked_runs(cli: Cli, sample_db: SampleDb) -> None:
    async def fork() -> lionstore.RunInfo:
        async with lionstore.open(sample_db.path, run="alpha") as store:
            return await store.fork(3, label="alpha-fork")

    forked = asyncio.run(fork())

    async def unlabelled() -> None:
        async with lionstore.open(sample_db.path):
            pass

    asyncio.run(unlabelled())
    runs = [json.loads(line) for line in cli("runs", sample_db.path, "--json").out.splitlines()]
    assert [r["label"] for r in runs] == ["alpha", "beta", "alpha-fork", None]
    assert runs[2]["run_id"] == forked.run_id
    assert runs[2]["parent_run_id"] == sample_db.alpha
    assert runs[2]["forked_at_position"] == 3
    assert runs[2]["records"] == 3  # its own run.started and alpha's notes 1-2
    assert runs[3]["records"] == 1
    table = cli("runs", sample_db.path).out.splitlines()
    assert table[4].split()[1] == "-"


def test_runs_of_a_missing_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("runs", tmp_path / "none.db")
    assert result.code == 1
    assert len(result.err.splitlines()) == 1
    assert not (tmp_path / "none.db").exists()


def test_summarize_runs(sample_db: SampleDb) -> None:
    runs = asyncio.run(summarize_runs(sample_db.path))
    assert [(r.label, r.records) for r in runs] == [("alpha", 5), ("beta", 3)]


def test_runs_count_events_by_status_and_mail_by_state(cli: Cli, work_db: WorkDb) -> None:
    async def more() -> None:
        # a second run: one event left pending, one mail left in an outbox
        async with lionstore.open(work_db.path, run="second") as store:
            executor = lionstore.Executor(store=store, name="calc")
            await executor.append(Square(n=5))
            a, b = lionstore.Source(), lionstore.Source()
            exchange = lionstore.Exchange(store=store, name="post")
            await exchange.add_source([a, b])
            await a.send(exchange.create_mail(a, b, "message", "later"))

    asyncio.run(more())
    runs = [json.loads(line) for line in cli("runs", work_db.path, "--json").out.splitlines()]
    assert [(r["label"], r["events"], r["mail"]) for r in runs] == [
        ("work", {"completed": 2, "failed": 1}, {"inbox": 3, "dead": 1}),
        ("second", {"pending": 1}, {"outbox": 1}),
    ]
    assert runs[0]["records"] == work_db.end
    table = cli("runs", work_db.path)
    assert table.code == 0 and table.err == ""
    header, work, second = table.out.splitlines()
    assert header.split()[-2:] == ["EVENTS", "MAIL"]
    assert work.split()[-2:] == ["completed=2,failed=1", "inbox=3,dead=1"]
    assert second.split()[-2:] == ["pending=1", "outbox=1"]
