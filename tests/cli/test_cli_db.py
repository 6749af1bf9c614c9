"""``lionstore db upgrade|check|current`` on real files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lionstore.cli.db import inspect_database, upgrade_database
from lionstore.errors import NotALionstoreDatabaseError, SchemaTooNewError
from lionstore.log import migrate
from lionstore.log.schema import VERSION_TABLE

if TYPE_CHECKING:
    from conftest import Cli, SampleDb

HEAD = migrate.head_revision()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lionstore: error: ")
    assert "Traceback" not in err
    return lines[0]


# -- files in every state -----------------------------------------------------------------


@pytest.fixture
def foreign_db(tmp_path: Path) -> Path:
    path = tmp_path / "foreign.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.close()
    return path


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    path.write_text("these are not the tables you are looking for\n")
    return path


@pytest.fixture
def corrupt_db(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    return path


@pytest.fixture
def newer_db(tmp_path: Path) -> Path:
    path = tmp_path / "newer.db"
    asyncio.run(migrate.upgrade(path))
    with sqlite3.connect(path) as conn:
        conn.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    conn.close()
    return path


# -- upgrade ----------------------------------------------------------------------------


def test_upgrade_creates_a_missing_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    result = cli("db", "upgrade", path)
    assert result.code == 0, result.err
    assert result.out.strip() == f"{path}: created a lionstore database at {HEAD} (head)"
    assert cli("db", "check", path).code == 0


def test_upgrade_twice_does_nothing_the_second_time(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    assert cli("db", "upgrade", path).code == 0
    before = digest(path)
    result = cli("db", "upgrade", path)
    assert result.code == 0
    assert "nothing to do" in result.out
    assert digest(path) == before


def test_upgrade_from_an_empty_schema(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "down.db"
    asyncio.run(migrate.upgrade(path))
    asyncio.run(migrate.downgrade(path, "base"))
    assert cli("db", "current", path).out.strip() == f"none (no lionstore schema; head is {HEAD})"
    assert cli("db", "check", path).code == 1
    result = cli("db", "upgrade", path)
    assert result.code == 0, result.err
    assert result.out.strip() == f"{path}: upgraded empty -> {HEAD} (head)"
    assert cli("db", "check", path).code == 0


def test_upgrade_accepts_a_sqlite_url(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "url.db"
    url = f"sqlite:///{path}"
    assert cli("db", "upgrade", url).code == 0
    assert path.exists()
    assert cli("db", "check", url).code == 0
    assert cli("db", "check", path).code == 0


def test_upgrade_to_an_explicit_revision(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "rev.db"
    assert cli("db", "upgrade", path, "--revision", HEAD).code == 0
    assert cli("db", "current", path).out.strip() == f"{HEAD} (head)"


def test_upgrade_to_an_unknown_revision_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "rev.db"
    result = cli("db", "upgrade", path, "--revision", "nope")
    assert result.code == 1
    assert "unknown schema revision 'nope'" in one_error_line(result.err)
    assert not path.exists()


@pytest.mark.parametrize("fixture", ["foreign_db", "text_file", "corrupt_db", "newer_db"])
def test_upgrade_refuses_and_leaves_the_file_unchanged(
    cli: Cli, request: pytest.FixtureRequest, fixture: str
) -> None:
    path: Path = request.getfixturevalue(fixture)
    before = digest(path)
    result = cli("db", "upgrade", path)
    assert result.code == 1
    assert str(path) in one_error_line(result.err)
    assert digest(path) == before


def test_upgrade_in_a_missing_directory(cli: Cli, tmp_path: Path) -> None:
    result = cli("db", "upgrade", tmp_path / "nowhere" / "x.db")
    assert result.code == 1
    assert "does not exist" in one_error_line(result.err)


# -- check -------------------------------------------------------------------------------


def test_check_a_database_at_head(cli: Cli, sample_db: SampleDb) -> None:
    result = cli("db", "check", sample_db.path)
    assert result.code == 0
    assert result.out.strip() == f"{sample_db.path}: ok, a lionstore database at head ({HEAD})"
    assert result.err == ""


@pytest.mark.parametrize(
    ("fixture", "words"),
    [
        ("foreign_db", "did not create"),
        ("text_file", "not a SQLite database"),
        ("corrupt_db", "damaged"),
        ("newer_db", "newer lionstore"),
    ],
)
def test_check_fails_with_one_clear_line(
    cli: Cli, request: pytest.FixtureRequest, fixture: str, words: str
) -> None:
    path: Path = request.getfixturevalue(fixture)
    before = digest(path)
    result = cli("db", "check", path)
    assert result.code == 1
    assert result.out == ""
    line = one_error_line(result.err)
    assert words in line
    assert str(path) in line
    assert digest(path) == before


def test_check_a_missing_file_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    result = cli("db", "check", path)
    assert result.code == 1
    assert "no such file" in one_error_line(result.err)
    assert not path.exists()


def test_check_a_directory(cli: Cli, tmp_path: Path) -> None:
    result = cli("db", "check", tmp_path)
    assert result.code == 1
    assert "directory" in one_error_line(result.err)


def test_check_json(cli: Cli, sample_db: SampleDb, foreign_db: Path) -> None:
    good = cli("db", "check", sample_db.path, "--json")
    assert good.code == 0
    assert json.loads(good.out) == {
        "target": str(sample_db.path),
        "ok": True,
        "state": "current",
        "revision": HEAD,
        "head": HEAD,
        "is_head": True,
        "reason": None,
    }
    bad = cli("db", "check", foreign_db, "--json")
    assert bad.code == 1
    status = json.loads(bad.out)
    assert status["ok"] is False
    assert status["state"] == "foreign"
    assert "did not create" in status["reason"]


# -- current -----------------------------------------------------------------------------


def test_current_at_head(cli: Cli, sample_db: SampleDb) -> None:
    result = cli("db", "current", sample_db.path)
    assert result.code == 0
    assert result.out.strip() == f"{HEAD} (head)"


def test_current_of_a_newer_schema(cli: Cli, newer_db: Path) -> None:
    result = cli("db", "current", newer_db)
    assert result.code == 0
    assert result.out.strip() == f"9999 (newer than this lionstore's head {HEAD})"
    as_json = json.loads(cli("db", "current", newer_db, "--json").out)
    assert as_json["revision"] == "9999"
    assert as_json["is_head"] is False
    assert as_json["state"] == "newer"


def test_current_json_at_head(cli: Cli, sample_db: SampleDb) -> None:
    status = json.loads(cli("db", "current", sample_db.path, "--json").out)
    assert status["revision"] == HEAD
    assert status["is_head"] is True


def test_current_of_a_foreign_file_is_an_error(cli: Cli, foreign_db: Path) -> None:
    result = cli("db", "current", foreign_db)
    assert result.code == 1
    assert "did not create" in one_error_line(result.err)


# -- the library functions behind the commands ------------------------------------------


def test_inspect_database_never_raises_for_what_it_finds(
    foreign_db: Path, newer_db: Path, tmp_path: Path
) -> None:
    assert asyncio.run(inspect_database(foreign_db)).state == "foreign"
    newer = asyncio.run(inspect_database(newer_db))
    assert newer.state == "newer"
    assert isinstance(newer.error, SchemaTooNewError)
    assert asyncio.run(inspect_database(tmp_path / "none.db")).state == "missing"


def test_upgrade_database_returns_before_and_after(tmp_path: Path, foreign_db: Path) -> None:
    before, after = asyncio.run(upgrade_database(tmp_path / "lib.db"))
    assert (before.state, after.state) == ("missing", "current")
    assert after.revision == HEAD
    with pytest.raises(NotALionstoreDatabaseError):
        asyncio.run(upgrade_database(foreign_db))
