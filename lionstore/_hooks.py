"""Observation points for instrumentation (``lionstore.otel``), at no cost when unused.

The processing loops and the store call these only when something is registered:
an empty list costs one truth test per invocation or commit, nothing more. The
observers must not raise (an observer that does is logged and skipped) and must not
write to the store: they watch, they never decide.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

__all__ = [
    "CommitObserver",
    "InvocationObserver",
    "commit_observers",
    "invocation_observers",
    "notify_appended",
    "notify_commit",
    "start_invocation",
]

log = logging.getLogger("lionstore.hooks")


class InvocationObserver(Protocol):
    """Told when events are appended, and when each invocation starts and ends."""

    def appended(self, event: Any, executor: str) -> None: ...

    def started(self, event: Any, executor: str, attempt: int) -> Any:
        """Return a token handed back to :meth:`finished`."""

    def finished(
        self, token: Any, status: str, error: str | None, duration: float | None
    ) -> None: ...


class CommitObserver(Protocol):
    def __call__(self, seconds: float, records: int) -> None: ...


invocation_observers: list[InvocationObserver] = []
commit_observers: list[CommitObserver] = []


def notify_appended(events: Any, executor: str) -> None:
    for observer in invocation_observers:
        for event in events:
            try:
                observer.appended(event, executor)
            except Exception:
                log.warning("an invocation observer failed", exc_info=True)


def start_invocation(event: Any, executor: str, attempt: int) -> list[tuple[Any, Any]]:
    """Tell every observer an invocation starts; the (observer, token) pairs to finish."""
    started: list[tuple[Any, Any]] = []
    for observer in invocation_observers:
        try:
            started.append((observer, observer.started(event, executor, attempt)))
        except Exception:
            log.warning("an invocation observer failed", exc_info=True)
    return started


def finish_invocation(
    started: list[tuple[Any, Any]], status: str, error: str | None, duration: float | None
) -> None:
    for observer, token in started:
        try:
            observer.finished(token, status, error, duration)
        except Exception:
            log.warning("an invocation observer failed", exc_info=True)


def notify_commit(seconds: float, records: int) -> None:
    for observer in commit_observers:
        try:
            observer(seconds, records)
        except Exception:
            log.warning("a commit observer failed", exc_info=True)
