"""The stop request and wake-up shared by lionstore's two loops, ``Processor.execute``
and ``MailRouter.execute`` (and so ``Executor`` and ``Exchange``)."""

from __future__ import annotations

import asyncio

__all__ = ["Stoppable"]


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
