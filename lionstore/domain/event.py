"""Event, EventStatus and Execution, as in lionagi, with a status that cannot be set
to garbage and an execution that validates back from its own dump."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lionstore.domain.element import Element

__all__ = ["Event", "EventStatus", "Execution", "TERMINAL_STATUSES", "notify_terminal"]


class EventStatus(StrEnum):
    """Where an event is in its life: PENDING -> PROCESSING -> COMPLETED | FAILED.

    As in current lionagi, three more ends: CANCELLED (its invocation was cancelled),
    ABORTED (the event gave up itself) and SKIPPED (``handle_denied`` ended it
    without running it)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ABORTED = "aborted"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES = frozenset(
    {
        EventStatus.COMPLETED,
        EventStatus.FAILED,
        EventStatus.CANCELLED,
        EventStatus.ABORTED,
        EventStatus.SKIPPED,
    }
)

# Event id -> the asyncio.Event handed out by ``Event.completion_event``, until the
# event ends (Event keeps no private attributes: replay builds events unchecked).
_completions: dict[Any, asyncio.Event] = {}


def notify_terminal(event: Event) -> None:
    """Set (and forget) the completion event of an event that has ended."""
    waiter = _completions.pop(event.id, None)
    if waiter is not None:
        waiter.set()


class Execution(BaseModel):
    """The outcome of an event: status, duration (seconds), response and error text."""

    model_config = ConfigDict(validate_assignment=True, arbitrary_types_allowed=True)

    status: EventStatus = EventStatus.PENDING
    duration: float | None = None
    response: Any = None
    error: str | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> EventStatus:
        if isinstance(value, EventStatus):
            return value
        try:
            return EventStatus(value)
        except ValueError:
            allowed = ", ".join(s.value for s in EventStatus)
            raise ValueError(f"invalid event status {value!r}; expected one of {allowed}") from None

    def __str__(self) -> str:
        """Printed as lionagi prints it: ``Execution(status=completed, duration=1.2,
        response=ok, error=None)`` (values shown with ``str``)."""
        return (
            f"Execution(status={self.status.value}, duration={self.duration}, "
            f"response={self.response}, error={self.error})"
        )


class Event(Element):
    """An invokable unit of work. Subclass it: add pydantic fields, and either
    override ``invoke`` (the seed's way) or ``_invoke`` (current lionagi's way: its
    return value becomes the response). A ``streaming`` event overrides ``_stream``.

    The fields are what lionstore records when the event is appended; whatever
    the invocation leaves in ``execution`` (response, error, duration) and in the
    fields is recorded with the outcome.
    """

    # A streaming subclass declares ``streaming: bool = True`` (a field, as in
    # lionagi; not declared here, where pydantic would warn about the override).

    execution: Execution = Field(default_factory=Execution)

    @property
    def status(self) -> EventStatus:
        return self.execution.status

    @status.setter
    def status(self, value: EventStatus | str) -> None:
        self.execution.status = value  # type: ignore[assignment]
        if self.execution.status in TERMINAL_STATUSES:
            notify_terminal(self)

    @property
    def response(self) -> Any:
        return self.execution.response

    @response.setter
    def response(self, value: Any) -> None:
        self.execution.response = value

    @property
    def request(self) -> dict[str, Any]:
        """Keyword arguments handed to ``Processor.request_permission``."""
        return {}

    @property
    def completion_event(self) -> asyncio.Event:
        """An ``asyncio.Event`` set once this event has ended (any terminal status)."""
        waiter = _completions.get(self.id)
        if waiter is None:
            waiter = _completions[self.id] = asyncio.Event()
        if self.execution.status in TERMINAL_STATUSES:
            _completions.pop(self.id, None)
            waiter.set()
        return waiter

    async def invoke(self) -> None:
        """Do the work. The default is current lionagi's template: it runs only a
        PENDING event, calls ``_invoke()`` and records its return value as the
        response (COMPLETED), an exception as FAILED, a cancellation as CANCELLED
        (re-raised), and the duration. Seed-style subclasses override ``invoke``
        itself: set ``self.response`` (or raise: the failure is recorded)."""
        if type(self)._invoke is Event._invoke:  # neither invoke nor _invoke: the seed's error
            raise NotImplementedError("Override in subclass (invoke() or _invoke()).")
        if self.execution.status != EventStatus.PENDING:
            return
        await self._run_template()

    async def _run_template(self) -> None:
        self.execution.status = EventStatus.PROCESSING
        started = time.perf_counter()
        try:
            result = await self._invoke()
        except Exception as exc:
            self.execution.error = f"{type(exc).__name__}: {exc}"
            self.status = EventStatus.FAILED
        except BaseException:
            self.execution.error = "cancelled"
            self.status = EventStatus.CANCELLED
            raise
        else:
            self.execution.response = result
            self.status = EventStatus.COMPLETED
        finally:
            self.execution.duration = time.perf_counter() - started

    async def _invoke(self) -> Any:
        """Override in a subclass (current lionagi's protocol); the result is the response."""
        raise NotImplementedError("Override invoke() or _invoke() in a subclass.")

    async def stream(self) -> AsyncIterator[Any]:
        """The streaming variant of ``invoke``: yields the chunks of ``_stream()``,
        with the same outcome contract (COMPLETED, FAILED, CANCELLED, duration)."""
        if self.execution.status in TERMINAL_STATUSES:
            return
        self.execution.status = EventStatus.PROCESSING
        started = time.perf_counter()
        source = self._stream()
        try:
            async for chunk in source:
                yield chunk
        except Exception as exc:
            self.execution.error = f"{type(exc).__name__}: {exc}"
            self.status = EventStatus.FAILED
        except BaseException:
            self.execution.error = "cancelled"
            self.status = EventStatus.CANCELLED
            raise
        else:
            self.status = EventStatus.COMPLETED
        finally:
            await source.aclose()
            self.execution.duration = time.perf_counter() - started

    async def _stream(self) -> AsyncGenerator[Any, None]:
        """Override in a streaming subclass: yield the chunks."""
        raise NotImplementedError("Override _stream() in a streaming subclass.")
        yield  # pragma: no cover  (makes this an async generator)
