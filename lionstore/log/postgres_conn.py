"""Reaching a PostgreSQL server: its URL, its errors, and a server that goes away.

A connection the server dropped (a restart, a fast shutdown, a failover, a
network cut) is not an error a caller sees until ``reconnect_timeout`` (an
option of ``lionstore.open``, 60 s by default) has passed: :func:`is_disconnect`
tells such errors (SQLSTATE class 08, 57P01-57P03, a socket error, asyncpg's
"connection is closed" and "another operation is in progress" on a connection
left broken) from the rest, the connection is dropped, and the call is tried
again after a back-off of 0.05 s doubling up to 2 s. Reads are simply read
again. A write transaction is redone only when it is known to be whole or
absent: cut off before its COMMIT was sent, the server rolled it back; cut off
during the COMMIT, its outcome is unknown, so it is first looked for (an
append by the digest of its last record at the position it took, a new run by
its id) and redone only if absent. A record is never appended twice. A
:class:`PostgresRunScan` (one snapshot) cut off is not resumed: it raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from lionstore.errors import StoreError, StoreLockedError

__all__ = [
    "Backoff",
    "asyncpg_dsn",
    "display_url",
    "is_disconnect",
    "raiser",
    "require_asyncpg",
    "translate_error",
    "with_reconnect",
]

T = TypeVar("T")
log = logging.getLogger("lionstore.postgres")

_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 2.0
# SQLSTATEs that mean the session (not the statement) is gone: admin_shutdown,
# crash_shutdown, cannot_connect_now; class 08 is connection exceptions.
_GONE_STATES = frozenset({"57P01", "57P02", "57P03"})
_GONE_MESSAGES = (
    "connection is closed",
    "connection was closed",
    "another operation",  # "cannot switch to state N; another operation (M) is in progress"
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
)


def asyncpg_dsn(url: str) -> str:
    """The libpq-style DSN asyncpg takes, from a SQLAlchemy URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return f"postgresql://{rest}"


def display_url(url: str) -> str:
    """``url`` as shown in messages: the password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: shown as given, it holds no recognisable password
        return url


def require_asyncpg() -> None:
    """Raise StoreError naming the extra to install when asyncpg is missing."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        raise StoreError("PostgreSQL needs asyncpg: pip install 'lionstore[postgres]'") from None


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection or the server went away (so the call may
    succeed on a new connection), rather than that the statement failed."""
    import asyncpg

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the error or its causes
        seen.add(id(current))
        if isinstance(current, asyncpg.PostgresConnectionError | OSError | EOFError):
            return True
        if isinstance(current, asyncpg.PostgresError):
            state = str(getattr(current, "sqlstate", "") or "")
            if state in _GONE_STATES or state.startswith("08"):
                return True
        if type(current).__module__.startswith("asyncpg"):  # InterfaceError, InternalClientError
            text = str(current).lower()
            if any(m in text for m in _GONE_MESSAGES):
                return True
        current = current.__cause__ or current.__context__
    return False


class Backoff:
    """Waits between attempts on a lost connection, until ``timeout`` has passed since
    the first loss; then the last error is raised."""

    def __init__(self, timeout: float, label: str) -> None:
        self.timeout = timeout
        self.label = label
        self.deadline: float | None = None
        self.delay = _FIRST_BACKOFF
        self.attempts = 0

    async def wait(self, exc: BaseException) -> None:
        """Sleep before the next attempt, or re-raise ``exc`` past the deadline."""
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.timeout
            log.warning(
                "%s: lost the connection to PostgreSQL (%s); reconnecting for up to %.0f s",
                self.label,
                " ".join(str(exc).split()) or type(exc).__name__,
                self.timeout,
            )
        if now >= self.deadline:
            raise exc
        self.attempts += 1
        await asyncio.sleep(min(self.delay, max(self.deadline - now, 0.0)))
        self.delay = min(self.delay * 2, _MAX_BACKOFF)

    def recovered(self) -> None:
        if self.deadline is not None:
            log.warning("%s: reconnected to PostgreSQL after %d retries", self.label, self.attempts)


async def with_reconnect(call: Callable[[], Awaitable[T]], timeout: float, label: str) -> T:
    """``await call()``, made again after a lost connection or a server that is not
    accepting connections yet (back-off, for up to ``timeout`` seconds; then the last
    error). For calls that only read, or that are whole or absent (opening a store)."""
    backoff = Backoff(timeout, label)
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not is_disconnect(exc):
                raise
            await backoff.wait(exc)
            continue
        backoff.recovered()
        return result


def raiser(exc: BaseException) -> Callable[[], Awaitable[Any]]:
    """A call that raises ``exc`` (to translate it as :meth:`PostgresBackend._call` does)."""

    async def fn() -> Any:
        raise exc

    return fn


def translate_error(exc: BaseException, label: str) -> BaseException:
    import asyncpg

    if isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        return StoreLockedError(f"{label}: another writer held the log lock past the timeout")
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return StoreError(f"{label}: the store was opened read-only")
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
        return StoreError(f"{label}: {exc}")
    return exc
