"""The stop request and wake-up shared by lionstore's two loops, ``Processor.execute``
and ``MailRouter.execute`` (and so ``Executor`` and ``Exchange``)."""

from __future__ import annotations

import asyncio

__all__ = ["Stoppable", "others_ready"]


class Stoppable:
    """``stop``/``start``/``is_stopped`` of a loop object, as lionagi names them.

    A stop request is sticky: ``execute`` returns at once while it stands, and only
    ``start`` clears it. ``stop`` also sets the wake-up event a waiting loop sleeps
    on, so the loop ends without waiting out its refresh time.
    """

    def __init__(self) -> None:
        self._stop_requested = False
        self._wakeup: asyncio.Event | None = None

    def _set_stop(self, requested: bool) -> None:
        """What ``stop``/``start`` do, for the seed's synchronous stop flags
        (``exchange._execute_stop``, ``manager.execute_stop``)."""
        self._stop_requested = requested
        if requested and self._wakeup is not None:
            self._wakeup.set()

    async def stop(self) -> None:
        """Ask the ``execute`` loop to stop after its current pass (sticky until
        :meth:`start`)."""
        self._set_stop(True)

    async def start(self) -> None:
        """Clear a stop request."""
        self._stop_requested = False

    def is_stopped(self) -> bool:
        """Whether a stop was requested (and not cleared by :meth:`start`)."""
        return self._stop_requested


def others_ready(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether other callbacks (tasks that may append too) wait to run on ``loop``.

    An append yields to them once before it commits, so that their appends join
    the commit (group commit); and a commit that must fsync goes to the writer
    thread only when they would otherwise wait for it. When nothing waits, the
    yield or the thread hop would only cost a turn of the event loop. Only
    CPython's own loops show their ready queue; on any other loop this says True.
    """
    ready = getattr(loop, "_ready", None)
    return ready is None or len(ready) > 0
