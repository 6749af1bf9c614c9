"""What only PostgreSQL has: the migrations and schema checks on a server database, the
``alembic`` and ``lionstore db`` commands with a URL, errors for an unreachable or
foreign server database, and how the test suite behaves without a server.

(The Store contract, the executor, mail and replay tests run on PostgreSQL through
the ``backend`` fixture; the concurrency tests are in test_multiprocess.py and the
worker tests of tests/processing and tests/mail.)
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from dbtools import execute, query
from pg_cluster import Cluster

import lionstore
from lionstore.cli.db import inspect_database, upgrade_database
from lionstore.log import migrate
from lionstore.log.schema import TABLE_NAMES, VERSION_TABLE, metadata

from ._kinds import Ping
from .logtools import ROOT, new_id, records, subprocess_env

CLI = "from lionstore.cli import main; main()"


@pytest.fixture
def empty_db(pg_cluster: Cluster) -> Iterator[str]:
    """A PostgreSQL database without a table, dropped after the test."""
    url = pg_cluster.create_database(schema=False)
    yield url
    pg_cluster.drop_database(url)


def tables(url: str) -> set[str]:
    rows = query(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {name for (name,) in rows}


async def schema_diff(url: str) -> list[object]:
    engine = migrate.make_async_engine(url)
    try:
        async with engine.connect() as conn:

            def compare(sync_conn: object) -> list[object]:
                context = MigrationContext.configure(
                    sync_conn,  # type: ignore[arg-type]
                    opts={"version_table": VERSION_TABLE, "compare_type": True},
                )
                return list(compare_metadata(context, metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def test_open_creates_the_schema_in_an_empty_database(empty_db: str) -> None:
    async with lionstore.open(empty_db, run="first") as store:
        assert await store.append([(new_id(), Ping(n=1))]) == [2]
    assert tables(empty_db) == {*TABLE_NAMES, VERSION_TABLE}
    assert await schema_diff(empty_db) == []  # the migrations made what the metadata says
    assert await migrate.current_revision(empty_db) == migrate.head_revision()


async def test_readonly_open_of_an_empty_database_creates_nothing(empty_db: str) -> None:
    with pytest.raises(lionstore.StorePathError, match="no lionstore schema"):
        await lionstore.open(empty_db, readonly=True)
    assert tables(empty_db) == set()


async def test_a_database_with_other_tables_is_refused_untouched(empty_db: str) -> None:
    execute(empty_db, "CREATE TABLE invoices (id int)")
    with pytest.raises(lionstore.NotALionstoreDatabaseError, match="did not create"):
        await lionstore.open(empty_db, run="x")
    assert tables(empty_db) == {"invoices"}
    status = await inspect_database(empty_db)
    assert status.state == "foreign"


async def test_a_newer_schema_is_refused(pg_database: str) -> None:
    execute(pg_database, f"UPDATE {VERSION_TABLE} SET version_num = 'ffff_future'")
    with pytest.raises(lionstore.SchemaTooNewError):
        await lionstore.open(pg_database, run="x")
    assert (await inspect_database(pg_database)).state == "newer"


async def test_an_older_schema_needs_upgrade(pg_database: str) -> None:
    revisions = [r.revision for r in migrate._script().walk_revisions()]
    if len(revisions) < 2:
        pytest.skip("only one schema revision exists, so no database can be older")
    await migrate.downgrade(pg_database, revisions[1])
    with pytest.raises(lionstore.SchemaOutdatedError):
        await lionstore.open(pg_database, run="x")
    async with lionstore.open(pg_database, run="x", upgrade=True) as store:
        assert await store.head() == 1
    assert await migrate.current_revision(pg_database) == migrate.head_revision()


async def test_an_unreachable_server_is_a_store_error(pg_cluster: Cluster) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    with pytest.raises(lionstore.StoreError, match="cannot connect"):
        await lionstore.open(url, run="x")


async def test_a_missing_database_is_a_store_error(pg_cluster: Cluster) -> None:
    url = pg_cluster.url_for("no_such_database_here")
    with pytest.raises(lionstore.StoreError, match="no_such_database_here"):
        await lionstore.open(url, run="x")


async def test_an_unknown_url_scheme_is_refused() -> None:
    with pytest.raises(lionstore.StoreError, match="postgresql"):
        await lionstore.open("mysql://u@h/db", run="x")


async def test_a_password_never_shows_in_errors(pg_cluster: Cluster) -> None:
    url = "postgresql+asyncpg://postgres:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(lionstore.StoreError) as caught:
        await lionstore.open(url, run="x")
    assert "s3cret" not in str(caught.value)


async def test_db_upgrade_check_and_current_take_a_url(empty_db: str) -> None:
    before, after = await upgrade_database(empty_db)
    assert before.state == "empty" and after.state == "current"
    env = subprocess_env()
    for command in (["check"], ["current"]):
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", CLI, "db", *command, empty_db],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert migrate.head_revision() in done.stdout


async def test_alembic_command_with_a_postgres_url(empty_db: str) -> None:
    def alembic(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"url={empty_db}", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=subprocess_env(),
            timeout=120,
        )

    done = await asyncio.to_thread(alembic, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert tables(empty_db) == {*TABLE_NAMES, VERSION_TABLE}
    assert await schema_diff(empty_db) == []
    async with lionstore.open(empty_db, run="from-alembic") as store:
        await store.append([(new_id(), Ping(n=1))])
        assert [r.data for r in await records(store, kinds=["logtest.ping"])] == [Ping(n=1)]
    down = await asyncio.to_thread(alembic, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert tables(empty_db) == {VERSION_TABLE}


# -- the suite without a server ---------------------------------------------------------


SUBSET = ("tests/log/test_store_conformance.py", "-k", "read_of_an_unknown_run")


def _pytest_without_server(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    env.pop("LIONSTORE_TEST_PG_URL", None)
    env["LIONSTORE_TEST_PG_BINDIR"] = str(tmp_path)  # no initdb in there
    env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *SUBSET],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


@pytest.mark.skipif(os.name != "posix", reason="starts pytest in a subprocess with POSIX paths")
def test_without_postgres_the_tests_skip_and_say_so(tmp_path: Path) -> None:
    done = _pytest_without_server(tmp_path, ci="")
    assert done.returncode == 0, done.stdout + done.stderr
    # sqlite ran, postgres skipped
    assert re.search(r"\b1 passed, 1 skipped, \d+ deselected", done.stdout)
    assert "PostgreSQL tests skipped: no PostgreSQL binaries" in done.stdout


@pytest.mark.skipif(os.name != "posix", reason="starts pytest in a subprocess with POSIX paths")
def test_under_ci_a_missing_server_fails_the_run(tmp_path: Path) -> None:
    done = _pytest_without_server(tmp_path, ci="true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"\b1 passed, \d+ deselected, 1 error", done.stdout)
    assert "CI=true needs a PostgreSQL server" in done.stdout
