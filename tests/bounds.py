"""A bound on every wait in the tests: a regression fails with a message, never hangs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

#: Generous: a join that takes a second on a loaded 2-core machine returns well within it.
WAIT = 60.0


async def bounded(awaitable: Awaitable[T], what: str, timeout: float = WAIT) -> T:
    """``await awaitable``, failing the test (not hanging it) after ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"{what} did not return within {timeout:g} s") from None


async def cancelled(task: asyncio.Future[Any], what: str, timeout: float = WAIT) -> None:
    """Cancel ``task`` and wait, bounded, until it has ended cancelled: a task that
    swallows the cancellation (returns or raises otherwise) fails the test."""
    task.cancel()
    try:
        await bounded(task, what, timeout)
    except asyncio.CancelledError:
        return
    raise AssertionError(f"{what} was not cancelled: it returned")
