"""Pause Python's cyclic garbage collector around lionstore's own bulk work.

A large cycle or commit allocates tens of thousands of short-lived objects that
hold no reference cycles (rows, records, digests). Each allocation burst makes the
collector run, and its full collections walk the whole heap, which in an
application holding many events costs more than the work itself. Around such
work (never around user code such as ``Event.invoke``) the collector is paused;
it runs again, as usual, on the next allocations after the pause.

Pauses nest and may come from several threads (the event loop and the writer
thread); the collector is re-enabled only by the last one to end, and only if it
was enabled when the first began.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from contextlib import AbstractContextManager

__all__ = ["BULK", "gc_paused"]

#: Work on at least this many rows or events is worth a pause.
BULK = 1000


class _Pause:
    """The pause itself: one shared, re-entrant, thread-safe context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.enable()


_PAUSE = _Pause()
_NO_PAUSE: AbstractContextManager[None] = contextlib.nullcontext()


def gc_paused(size: int = BULK) -> AbstractContextManager[None]:
    """A context manager pausing the collector if ``size`` reaches :data:`BULK`
    (small work, the common case, gets one that does nothing and costs nothing)."""
    return _PAUSE if size >= BULK else _NO_PAUSE
