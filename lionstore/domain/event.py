"""Event, EventStatus and Execution, as in lionagi, with a status that cannot be set
to garbage and an execution that validates back from its own dump."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lionstore.domain.element import Element

__all__ = ["Event", "EventStatus", "Execution", "TERMINAL_STATUSES"]


class EventStatus(StrEnum):
    """Where an event is in its life: PENDING -> PROCESSING -> COMPLETED | FAILED."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES = frozenset({EventStatus.COMPLETED, EventStatus.FAILED})


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
    """An invokable unit of work. Subclass it: add pydantic fields, override ``invoke``.

    The fields are what lionstore records when the event is appended; whatever
    ``invoke`` leaves in ``execution`` (response, error, duration) and in the
    fields is recorded with the outcome.
    """

    execution: Execution = Field(default_factory=Execution)

    @property
    def status(self) -> EventStatus:
        return self.execution.status

    @status.setter
    def status(self, value: EventStatus | str) -> None:
        self.execution.status = value  # type: ignore[assignment]

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

    async def invoke(self) -> None:
        """Do the work. Set ``self.response`` (or raise: the failure is recorded)."""
        raise NotImplementedError("Override in subclass.")
