"""Opening a lionstore database: the target checked, created or upgraded, a backend
chosen (a SQLite path or a PostgreSQL URL) and a run attached, giving a :class:`Store`.

Nothing is written to an existing file before it has been checked: an older schema is
upgraded only when asked, a newer one, a foreign database or a damaged file is
refused with its own :class:`~lionstore.errors.StoreError` subclass.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from lionstore.domain.ids import is_id
from lionstore.domain.records import DEFAULT_MAX_RECORD_BYTES
from lionstore.errors import LionstoreError, RunNotFoundError, StoreError, StorePathError
from lionstore.log import migrate
from lionstore.log.backend import LogBackend, RunInfo
from lionstore.log.store import DURABILITY_LEVELS, Clock, Store, to_us, utcnow

__all__ = ["delete_run", "open"]


def _creation_error(path: Path, exc: Exception) -> StoreError:
    """What creating a new database file failed on (a full disk, most often)."""
    from lionstore.log.sqlite import translate_sqlite_error

    reason = getattr(exc, "orig", None) or exc
    if isinstance(reason, sqlite3.Error):
        return translate_sqlite_error(reason, str(path))
    return StorePathError(f"{path}: cannot create the database file ({reason})")


class open:  # noqa: N801 - used as `async with lionstore.open(...)`
    """Open (or create) a lionstore database; an async context manager yielding a Store.

    ``target`` is a file path (SQLite) or a SQLAlchemy URL. ``run`` names the run
    to attach to: an existing run id or label continues that run, a new label
    starts a run with that label, ``None`` starts a fresh run. ``readonly=True``
    attaches to ``run`` only if given, never creates anything, and refuses writes.

    ``reconnect_timeout`` (PostgreSQL; default 60 s): how long a call keeps trying
    when the server drops the connection (a restart) before it raises; 0 never
    retries. See ``lionstore.log.postgres``.

    ``checkpoints`` (default True) lets repositories start from the projection
    snapshots stored in the file and store new ones (see
    ``lionstore.projections.snapshot``); False folds every projection from the
    start and writes none.

    A new file gets the schema through Alembic. An existing file is checked
    without being changed: an older schema raises :class:`SchemaOutdatedError`
    unless ``upgrade=True`` (``readonly=True`` opens the revisions in
    ``migrate.READABLE_AS_IS`` as they are); a newer schema, a foreign database, or
    a damaged file raise their own :class:`StoreError` subclasses.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        run: str | None = None,
        durability: str = "normal",
        upgrade: bool = False,
        readonly: bool = False,
        clock: Clock | None = None,
        lock_timeout: float = 30.0,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        checkpoints: bool = True,
        reconnect_timeout: float = 60.0,
    ) -> None:
        if durability not in DURABILITY_LEVELS:
            raise ValueError(f"durability must be one of {DURABILITY_LEVELS}, not {durability!r}")
        if not isinstance(target, (str, os.PathLike)):
            raise TypeError(f"target must be a path or URL, not {type(target).__name__}")
        if run is not None and (not isinstance(run, str) or not run.strip() or len(run) > 200):
            raise ValueError("run must be a non-empty string of at most 200 characters")
        if lock_timeout <= 0:
            raise ValueError("lock_timeout must be > 0")
        if max_record_bytes < 1024:
            raise ValueError("max_record_bytes must be at least 1024")
        if (
            isinstance(reconnect_timeout, bool)
            or not isinstance(reconnect_timeout, (int, float))
            or not reconnect_timeout >= 0
            or reconnect_timeout == float("inf")
        ):
            raise ValueError(
                f"reconnect_timeout must be a finite number >= 0, not {reconnect_timeout!r}"
            )
        self._reconnect_timeout = float(reconnect_timeout)
        self._target = os.fspath(target)
        self._run = run
        self._durability = durability
        self._upgrade = upgrade
        self._readonly = readonly
        self._clock = clock or utcnow
        self._lock_timeout = lock_timeout
        self._max_record_bytes = max_record_bytes
        self._checkpoints = bool(checkpoints)
        self._store: Store | None = None

    def __await__(self) -> Any:
        return self._open().__await__()

    async def __aenter__(self) -> Store:
        self._store = await self._open()
        return await self._store.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.__aexit__(*exc)

    async def _open(self) -> Store:
        backend, shown = await self._open_backend()
        return await self._attached_store(backend, shown)

    async def _open_backend(self) -> tuple[LogBackend, str]:
        """The checked (and, as asked, created or upgraded) database, attached to no run."""
        path = migrate.sqlite_path(self._target)
        if path is None:
            if self._target.startswith(("postgresql://", "postgresql+asyncpg://")):
                return await self._open_postgres(self._target)
            raise StoreError(f"{self._target}: not a SQLite path or a postgresql+asyncpg:// URL")
        return await self._open_sqlite(path), str(path)

    async def _open_postgres(self, url: str) -> tuple[LogBackend, str]:
        from lionstore.log.postgres import (
            PostgresBackend,
            display_url,
            require_asyncpg,
            with_reconnect,
        )

        require_asyncpg()
        shown = display_url(url)

        def inspect() -> Awaitable[migrate.FileState]:
            return migrate.inspect_postgres(url, shown)

        # A worker (re)started while the server restarts waits for it, as a running
        # store's calls do (reconnect_timeout), instead of failing at the door.
        state = await with_reconnect(inspect, self._reconnect_timeout, shown)
        if state.status == "new" and not self._readonly:
            await migrate.upgrade(migrate.to_url(url))
            state = await with_reconnect(inspect, self._reconnect_timeout, shown)
        if self._readonly and state.status == "new":
            raise StorePathError(f"{shown}: no lionstore schema in this database")
        state.require_current(
            upgrade_allowed=self._upgrade and not self._readonly, reading=self._readonly
        )
        if state.status == "outdated" and not self._readonly:
            await migrate.upgrade(migrate.to_url(url))
        backend = PostgresBackend(
            url,
            label=shown,
            durability=self._durability,
            lock_timeout=self._lock_timeout,
            readonly=self._readonly,
            reconnect_timeout=self._reconnect_timeout,
        )
        return backend, shown

    async def _open_sqlite(self, path: Path) -> LogBackend:
        from lionstore.log.sqlite import SQLiteBackend

        state = migrate.inspect_sqlite_file(path)
        if self._readonly:
            if state.status == "new":
                raise StorePathError(f"{path}: no lionstore database here")
            state.require_current(upgrade_allowed=False, reading=True)
        else:
            state.require_current(upgrade_allowed=self._upgrade)
            if not state.exists:
                if not os.access(path.parent if str(path.parent) else ".", os.W_OK):
                    raise StorePathError(f"{path}: directory {path.parent} is not writable")
                try:
                    await migrate.create_sqlite(path)
                except LionstoreError:
                    raise
                except Exception as exc:  # sqlalchemy's wrapper of the sqlite3 error
                    raise _creation_error(path, exc) from exc
                # ours, or one another process created a moment before: check it again
                state = migrate.inspect_sqlite_file(path)
                state.require_current(upgrade_allowed=self._upgrade)
            if state.status != "current":
                if not os.access(path.parent if str(path.parent) else ".", os.W_OK):
                    raise StorePathError(f"{path}: directory {path.parent} is not writable")
                if state.exists and not os.access(path, os.W_OK):
                    raise StorePathError(f"{path}: the file is read-only")
                try:
                    await migrate.upgrade(path)
                except LionstoreError:
                    raise
                except Exception as exc:  # e.g. root in a directory no one can create files in
                    reason = getattr(exc, "orig", None) or exc
                    if not state.exists:
                        raise StorePathError(
                            f"{path}: cannot create the database file ({reason})"
                        ) from exc
                    raise StoreError(f"{path}: cannot upgrade the schema ({reason})") from exc
            elif not os.access(path, os.W_OK):
                raise StorePathError(f"{path}: the file is read-only (open with readonly=True)")
        return SQLiteBackend(
            path,
            durability=self._durability,
            lock_timeout=self._lock_timeout,
            readonly=self._readonly,
        )

    async def _attached_store(self, backend: LogBackend, target: str) -> Store:
        try:
            await backend.check_head()
            run, created = await self._attach(backend)
            seen = await backend.head_position()
        except BaseException:
            await backend.close()
            raise
        store = Store(
            backend,
            run,
            target=target,
            seen=seen,
            clock=self._clock,
            max_record_bytes=self._max_record_bytes,
            durability=self._durability,
            created_run=created,
            checkpoints=self._checkpoints,
        )
        if run is not None:
            path = migrate.sqlite_path(self._target)
            reader = open(
                self._target if path is None else str(path.absolute()),  # even after a chdir
                run=str(run.run_id),
                readonly=True,
                lock_timeout=self._lock_timeout,
                max_record_bytes=self._max_record_bytes,
                checkpoints=self._checkpoints,
            )
            store._reader_opener = reader._open
        return store

    async def _attach(self, backend: LogBackend) -> tuple[RunInfo | None, bool]:
        now_us = to_us(self._clock())
        if self._run is None:
            if self._readonly:
                return None, False
            return await backend.create_run(None, now_us), True
        found = await backend.find_run(self._run)
        if found is not None:
            return found, False
        if self._readonly:
            raise RunNotFoundError(f"no run with id or label {self._run!r}")
        if is_id(self._run):
            raise RunNotFoundError(
                f"no run with id {self._run!r}; pass a label (not a UUID) to start a new run"
            )
        try:
            return await backend.create_run(self._run, now_us), True
        except StoreError:
            # Another process (or another open in this one) started the label meanwhile.
            found = await backend.find_run(self._run)
            if found is None:
                raise
            return found, False


async def delete_run(target: str | os.PathLike[str], run_no: int) -> int | None:
    """Delete run ``run_no`` whole from the database at ``target`` (a SQLite path or a
    PostgreSQL URL), in one transaction; the number of records removed, or None when
    there is no such run. The retention layer (``lionstore.replay.retention``) decides
    whether a run may go; this only does it."""
    backend, _ = await open(target)._open_backend()
    try:
        return await backend.delete_run(run_no)
    finally:
        await backend.close()
