"""A throwaway PostgreSQL server for the tests and benchmarks, and fresh databases on it.

``LIONSTORE_TEST_PG_URL`` (a server URL, any database) is used when set. Otherwise a
cluster is made with initdb in a temporary directory and started with pg_ctl on
127.0.0.1 and a free port, with a private socket directory; initdb and pg_ctl
refuse to run as root, so as root they run as the ``postgres`` user. The cluster
trades durability for speed (fsync off): it is thrown away at the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

ENV_URL = "LIONSTORE_TEST_PG_URL"
BINDIR_ENV = "LIONSTORE_TEST_PG_BINDIR"


class UnavailableError(Exception):
    """No PostgreSQL server can be had here (the message says why)."""


def _bin_dir() -> Path | None:
    chosen = os.environ.get(BINDIR_ENV)  # the tests of the no-server case point it elsewhere
    if chosen:
        return Path(chosen) if (Path(chosen) / "initdb").exists() else None
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    return Path(found[-1]).parent if found else None


def _version_key(path: str) -> tuple[int, ...]:
    parts = Path(path).parts
    return tuple(int(p) for p in parts if p.isdigit())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion on a fresh loop in another thread (safe from inside a
    running loop and from sync fixtures alike)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Cluster:
    """A server: ``url`` reaches its ``postgres`` database as a superuser."""

    def __init__(
        self,
        url: str,
        root: Path | None = None,
        bin_dir: Path | None = None,
        options: str = "",
    ) -> None:
        self.url = url
        self._root = root
        self._bin = bin_dir
        self._options = options
        self._template: str | None = None
        self.restarts = 0

    @classmethod
    def start(cls, *, own: bool = False, durable: bool = False) -> Cluster:
        """The server named by $LIONSTORE_TEST_PG_URL, or a new throwaway one (always a
        new one with ``own``: a test that restarts its server needs one of its own).
        A throwaway server neither fsyncs nor waits for its WAL, unless ``durable``
        (always a new one then): it runs as a server ships, fsync and
        synchronous_commit on."""
        url = os.environ.get(ENV_URL)
        if url and not own and not durable:
            return cls(url)
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            raise UnavailableError("asyncpg is not installed (pip install -e '.[test]')") from None
        bin_dir = _bin_dir()
        if bin_dir is None:
            raise UnavailableError(f"no PostgreSQL binaries (initdb) and ${ENV_URL} is not set")
        root = Path(tempfile.mkdtemp(prefix="lionstore-pg-"))
        as_postgres = os.geteuid() == 0
        if as_postgres:
            shutil.chown(root, "postgres", "postgres")
        port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=200"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        data = f"{root}/data"
        initdb = [str(bin_dir / "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-N"]
        pg_ctl = [str(bin_dir / "pg_ctl"), "-D", data, "-l", f"{root}/log", "-w", "-o", options]
        commands = [[*initdb, "-E", "UTF8", "--locale=C.UTF-8"], [*pg_ctl, "start"]]
        try:
            for command in commands:
                cls._run(command, as_postgres)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            shutil.rmtree(root, ignore_errors=True)
            raise UnavailableError(f"cannot start a PostgreSQL cluster: {exc} {detail}") from exc
        return cls(
            f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres", root, bin_dir, options
        )

    @staticmethod
    def _run(command: list[str], as_postgres: bool) -> None:
        if as_postgres:
            command = ["su", "postgres", "-c", subprocess.list2cmdline(command)]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def _pg_ctl(self, *args: str) -> None:
        if self._root is None or self._bin is None:
            raise UnavailableError("only a throwaway cluster can be stopped and restarted")
        data = f"{self._root}/data"
        command = [str(self._bin / "pg_ctl"), "-D", data, "-l", f"{self._root}/log", "-w"]
        self._run([*command, "-o", self._options, *args], os.geteuid() == 0)

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m MODE`` (waits until the server accepts connections
        again): every session is cut, as in a server restart in production. Only a
        throwaway cluster can be restarted."""
        self._pg_ctl("-m", mode, "restart")
        self.restarts += 1

    def stop_server(self, mode: str = "fast") -> None:
        """Shut the server down (``pg_ctl stop -m MODE``) until :meth:`start_server`."""
        self._pg_ctl("-m", mode, "stop")

    def start_server(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        if self._root is None or self._bin is None:
            return
        command = [str(self._bin / "pg_ctl"), "-D", f"{self._root}/data", "-m", "immediate", "stop"]
        try:
            self._run(command, os.geteuid() == 0)
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

    def url_for(self, database: str) -> str:
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{database}"

    async def _admin(self, *statements: str) -> None:
        import asyncpg

        from lionstore.log.postgres import asyncpg_dsn

        conn = await asyncpg.connect(asyncpg_dsn(self.url))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def create_database(self, *, schema: bool = True) -> str:
        """A new database; with ``schema``, copied from a template that holds the
        lionstore schema at head (about 0.1 s here, against 0.35 s for an empty
        database plus the migrations)."""
        name = f"lionstore_test_{uuid.uuid4().hex[:12]}"
        template = "template0"
        if schema:
            template = self._schema_template()
        run_async(self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'))
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        name = url.rpartition("/")[2]
        run_async(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def _schema_template(self) -> str:
        if self._template is None:
            from lionstore.log import migrate

            name = f"lionstore_template_{uuid.uuid4().hex[:8]}"
            run_async(self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0'))
            run_async(migrate.upgrade(self.url_for(name)))
            self._template = name
        return self._template

    def drop_template(self) -> None:
        if self._template is not None:
            self.drop_database(self.url_for(self._template))
            self._template = None
