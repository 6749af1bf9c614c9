"""``lionstore log``: every record, in order, as aligned lines or JSON lines."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import lionstore
from lionstore.cli.log import read_log

if TYPE_CHECKING:
    from conftest import Cli, SampleDb

JSON_KEYS = {
    "position",
    "stream_id",
    "stream_version",
    "run_id",
    "kind",
    "kind_version",
    "data",
    "recorded_at",
}
LINE = re.compile(
    r"^ *(?P<position>\d+)  (?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})  "
    r"(?P<run>\S+) +(?P<kind>\S+) +(?P<stream>[0-9a-f]{8})  (?P<data>.*)$"
)


def parse_lines(out: str) -> list[dict[str, str]]:
    parsed = []
    for line in out.splitlines():
        match = LINE.match(line)
        assert match, f"not a log line: {line!r}"
        parsed.append(match.groupdict())
    return parsed


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def positions(out: str) -> list[int]:
    return [record["position"] for record in json_lines(out)]


def test_human_lines_show_every_record_aligned(cli: Cli, sample_db: SampleDb) -> None:
    result = cli("log", sample_db.path)
    assert result.code == 0, result.err
    assert result.err == ""
    rows = parse_lines(result.out)
    assert [int(r["position"]) for r in rows] == list(range(1, 9))
    assert [r["run"] for r in rows] == ["alpha"] * 5 + ["beta"] * 3
    assert [r["kind"] for r in rows] == [
        "run.started",
        "test.cli.note",
        "test.cli.note",
        "test.cli.note",
        "test.cli.tick",
        "run.started",
        "test.cli.tick",
        "test.cli.tick",
    ]
    assert rows[1]["time"] == "2026-01-01 00:00:01.000"
    assert rows[6]["time"] == "2026-01-01 00:01:03.000"
    assert rows[1]["stream"] == sample_db.notes_stream[:8]
    assert rows[0]["stream"] == sample_db.alpha[:8]
    assert rows[1]["data"] == '{"text":"note 1"}'
    assert rows[7]["data"] == '{"n":2}'
    # aligned: every column starts at the same offset on every line
    lines = result.out.splitlines()
    for column in (sample_db.notes_stream[:8], sample_db.ticks_stream[:8]):
        offsets = {line.index(column) for line in lines if column in line}
        assert len(offsets) == 1
    assert len({line.index("  2026-01-01 ") for line in lines}) == 1


def test_json_lines_have_exactly_the_documented_keys(cli: Cli, sample_db: SampleDb) -> None:
    result = cli("log", sample_db.path, "--json")
    assert result.code == 0, result.err
    records = json_lines(result.out)
    assert len(records) == 8
    assert all(set(record) == JSON_KEYS for record in records)
    assert records[1] == {
        "position": 2,
        "stream_id": sample_db.notes_stream,
        "stream_version": 1,
        "run_id": sample_db.alpha,
        "kind": "test.cli.note",
        "kind_version": 1,
        "data": {"text": "note 1"},
        "recorded_at": "2026-01-01T00:00:01+00:00",
    }
    assert [r["stream_version"] for r in records if r["stream_id"] == sample_db.ticks_stream] == [
        1,
        1,
        2,
    ]  # streams are per run: beta's tick stream starts again at version 1


def test_run_filter_by_label_and_by_id(cli: Cli, sample_db: SampleDb) -> None:
    assert positions(cli("log", sample_db.path, "--run", "alpha", "--json").out) == [1, 2, 3, 4, 5]
    assert positions(cli("log", sample_db.path, "--run", sample_db.beta, "--json").out) == [6, 7, 8]


def test_unknown_run_is_one_error_line(cli: Cli, sample_db: SampleDb) -> None:
    result = cli("log", sample_db.path, "--run", "gamma")
    assert result.code == 1
    (line,) = result.err.splitlines()
    assert line.startswith("lionstore: error: ")
    assert "'gamma'" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "4"], [5, 6, 7, 8]),
        (["--since", "8"], []),
        (["--kind", "test.cli.tick"], [5, 7, 8]),
        (["--kind", "test.cli.tick", "--kind", "run.started"], [1, 5, 6, 7, 8]),
        (["--kind", "no.such.kind"], []),
        (["--limit", "2"], [1, 2]),
        (["--limit", "0"], []),
        (["--run", "beta", "--kind", "test.cli.tick", "--limit", "1"], [7]),
        (["--run", "alpha", "--since", "3", "--kind", "test.cli.note"], [4]),
    ],
)
def test_filters(cli: Cli, sample_db: SampleDb, args: list[str], expected: list[int]) -> None:
    as_json = cli("log", sample_db.path, "--json", *args)
    assert as_json.code == 0, as_json.err
    assert positions(as_json.out) == expected
    human = cli("log", sample_db.path, *args)
    assert [int(r["position"]) for r in parse_lines(human.out)] == expected


def test_records_of_unknown_kinds_are_printed_not_dropped(cli: Cli, sample_db: SampleDb) -> None:
    with sqlite3.connect(sample_db.path) as conn:
        conn.execute("UPDATE lionstore_records SET kind = 'from.the.future' WHERE position = 3")
        conn.execute("UPDATE lionstore_records SET kind_version = 7 WHERE position = 4")
    conn.close()
    records = json_lines(cli("log", sample_db.path, "--json").out)
    assert [r["position"] for r in records] == list(range(1, 9))
    assert records[2]["kind"] == "from.the.future"
    assert records[2]["data"] == {"text": "note 2"}
    assert records[3]["kind_version"] == 7
    assert records[3]["data"] == {"text": "note 3"}
    rows = parse_lines(cli("log", sample_db.path).out)
    assert rows[2]["kind"] == "from.the.future"
    assert rows[2]["data"] == '{"text":"note 2"}'
    assert rows[3]["kind"] == "test.cli.note@v7"
    only = cli("log", sample_db.path, "--kind", "from.the.future", "--json")
    assert positions(only.out) == [3]


def test_long_data_is_truncated_in_lines_but_not_in_json(
    cli: Cli, tmp_path: Path, note_kind: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "long.db"
    text = "lorem ipsum " * 50

    async def write() -> None:
        async with lionstore.open(path, run="long") as store:
            await store.append([(lionstore.IDType.create(), note_kind(text=text))])

    asyncio.run(write())
    monkeypatch.setenv("COLUMNS", "120")
    line = cli("log", path, "--kind", "test.cli.note").out.rstrip("\n")
    assert line.endswith("…")
    assert len(line) <= 120
    assert text not in line
    record = json_lines(cli("log", path, "--json", "--kind", "test.cli.note").out)[0]
    assert record["data"] == {"text": text}


def test_log_does_not_change_the_file(cli: Cli, sample_db: SampleDb) -> None:
    before = hashlib.sha256(sample_db.path.read_bytes()).hexdigest()
    assert cli("log", sample_db.path).code == 0
    assert cli("log", sample_db.path, "--json", "--run", "beta").code == 0
    assert hashlib.sha256(sample_db.path.read_bytes()).hexdigest() == before
    assert positions(cli("log", sample_db.path, "--json").out) == list(range(1, 9))


def test_log_of_a_file_that_is_not_lionstore(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    path.write_text("hello")
    result = cli("log", path)
    assert result.code == 1
    (line,) = result.err.splitlines()
    assert line.startswith(f"lionstore: error: {path}: ")


def test_read_log_streams_with_a_limit(sample_db: SampleDb) -> None:
    async def read() -> list[int]:
        async with lionstore.open(sample_db.path, readonly=True) as store:
            return [r.position async for r in read_log(store, since=1, limit=3)]

    assert asyncio.run(read()) == [2, 3, 4]
