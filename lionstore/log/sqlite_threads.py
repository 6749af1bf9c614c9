"""Running stdlib ``sqlite3`` from asyncio: one thread per connection, and what its
errors mean to a user.

A :class:`ConnectionThread` owns one connection and runs the calls it is given on it, one at a
time and in order; the backend's writer and reader each have one
(``sqlite_commit.py`` says when a write runs inline instead). The error functions
turn sqlite3's messages into the :class:`~lionstore.errors.StoreError` family, with
the file's name.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import queue
import shutil
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lionstore.errors import CorruptDatabaseError, StoreError, StoreLockedError

__all__ = ["BusyError", "ConnectionThread", "io_error", "translate_sqlite_error"]

T = TypeVar("T")

_FULL_BELOW = 1 << 20  # bytes free: a disk I/O error with less room than this is a full disk


def translate_sqlite_error(exc: sqlite3.Error, path: str) -> StoreError:
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in message or "busy" in message):
        return StoreLockedError(
            f"{path}: another process held the database lock past the timeout ({message})"
        )
    if isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in message or "not a database" in message
    ):
        return CorruptDatabaseError(f"{path}: the database file is damaged ({message})")
    return io_error(path, message) or StoreError(f"{path}: {message}")


def io_error(path: str, message: str) -> StoreError | None:
    """The error for a SQLite failure to write or read at all (None for other failures).

    SQLite says "database or disk is full" when a write finds no room, but only
    "disk I/O error" when it cannot even create the ``-shm`` index of the WAL, which
    opening a healthy file on a full disk does: with (almost) no room left on the
    file's disk, that is the disk being full too. Neither says anything about the
    file, which is never called damaged for it.
    """
    if "database or disk is full" in message or ("disk I/O error" in message and _disk_full(path)):
        return StoreError(f"{path}: disk full, no room to write ({message})")
    if "disk I/O error" in message:
        return StoreError(f"{path}: input/output error from the operating system ({message})")
    return None


def _disk_full(path: str) -> bool:
    try:
        return shutil.disk_usage(Path(path).parent).free < _FULL_BELOW
    except (OSError, ValueError):
        return False


class BusyError(Exception):
    """The write lock is held elsewhere and this attempt may not wait."""


# A call for a ConnectionThread: the loop and future to answer, the thread, and what to run.
_Call = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[Any]", "ConnectionThread", Callable[..., Any], Any
]
_Calls = queue.SimpleQueue[_Call | None]

_SERVING: set[tuple[threading.Thread, _Calls]] = set()


@atexit.register
def _finish_at_exit() -> None:
    """Let every ConnectionThread run the calls it was given before the interpreter goes: its
    thread is a daemon, so nothing else waits for it (as concurrent.futures waits for
    its workers)."""
    serving = list(_SERVING)
    for _, calls in serving:
        calls.put(None)
    for thread, _ in serving:
        thread.join()


def _serve(calls: _Calls) -> None:
    """A ConnectionThread's thread: run calls until told to stop (None)."""
    try:
        while (call := calls.get()) is not None:
            _run_call(*call)
            del call
    finally:
        for entry in list(_SERVING):
            if entry[1] is calls:
                _SERVING.discard(entry)


def _run_call(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    owner: ConnectionThread,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    if future.cancelled():  # its caller stopped waiting before it began
        return
    result: Any = None
    error: BaseException | None = None
    try:
        result = fn(owner.connection(), *args)
    except BaseException as exc:
        error = exc
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ConnectionThread:
    """One thread running calls on one sqlite3 connection, one at a time, in order.

    A plain daemon thread fed through a SimpleQueue: a call costs the two thread
    wake-ups and little else. (run_in_executor adds a concurrent Future, its locks
    and callbacks and the executor's bookkeeping: some 25 µs more per call here,
    which a commit at durability="full" paid on top of its fsync.)
    """

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._name = name
        self._connect = connect
        self._calls: _Calls = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._shut = False
        self.conn: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = self._connect()
        return self.conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``fn(connection, *args)`` and return the future of its result (on the
        running loop), without waiting for it."""
        if self._shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            thread = threading.Thread(
                target=_serve, args=(self._calls,), name=self._name, daemon=True
            )
            _SERVING.add((thread, self._calls))
            thread.start()
            self._thread = thread
            # A ConnectionThread dropped without close() stops its thread.
            weakref.finalize(self, self._calls.put, None)
        self._calls.put((loop, future, self, fn, args))
        return future

    async def close(self) -> None:
        def _close(conn: sqlite3.Connection) -> None:
            conn.close()

        if self.conn is not None:
            await self.run(_close)
            self.conn = None
        self._shut = True
        if self._thread is not None:
            self._calls.put(None)
            self._thread.join()
            self._thread = None
