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

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BULK", "gc_paused"]

#: Work on at least this many rows or events is worth a pause.
BULK = 1000

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused(size: int = BULK) -> Iterator[None]:
    """Pause the collector for the block if ``size`` reaches :data:`BULK`."""
    global _depth, _was_enabled
    if size < BULK:
        yield
        return
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
