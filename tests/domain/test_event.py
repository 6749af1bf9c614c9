"""EventStatus, Execution and Event (lionagi 0.8.7 section 2.4, with a validated
status and an execution that round-trips)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from lionstore.domain.element import Element
from lionstore.domain.event import TERMINAL_STATUSES, Event, EventStatus, Execution


class Fetch(Event):
    url: str = ""
    retries: int = 0

    async def invoke(self) -> None:
        self.response = {"url": self.url}


def test_event_status_has_exactly_current_lionagis_values() -> None:
    assert [(s.name, s.value) for s in EventStatus] == [
        ("PENDING", "pending"),
        ("PROCESSING", "processing"),
        ("COMPLETED", "completed"),
        ("FAILED", "failed"),
        ("CANCELLED", "cancelled"),
        ("ABORTED", "aborted"),
        ("SKIPPED", "skipped"),
    ]
    assert EventStatus.PENDING == "pending"  # type: ignore[comparison-overlap]
    assert EventStatus("completed") is EventStatus.COMPLETED
    assert str(EventStatus.FAILED) == "failed"
    with pytest.raises(ValueError):
        EventStatus("PENDING")  # values are lowercase, as in lionagi
    assert (
        frozenset(EventStatus)
        - {
            EventStatus.PENDING,
            EventStatus.PROCESSING,
        }
        == TERMINAL_STATUSES
    )


def test_execution_defaults_and_str() -> None:
    execution = Execution()
    assert execution.status is EventStatus.PENDING
    assert execution.duration is None
    assert execution.response is None
    assert execution.error is None
    text = str(Execution(status="failed", duration=1.5, response=[1], error="Boom: x"))
    for part in ("failed", "1.5", "[1]", "Boom: x"):
        assert part in text


@pytest.mark.parametrize("bogus", ["bogus", "PENDING", 3, None])
def test_execution_validates_status(bogus: Any) -> None:
    """lionagi accepted ``event.status = "bogus"`` and then failed to dump it."""
    with pytest.raises(ValidationError, match="invalid event status"):
        Execution(status=bogus)
    execution = Execution()
    with pytest.raises(ValidationError):
        execution.status = bogus
    assert execution.status is EventStatus.PENDING


def test_execution_accepts_status_text() -> None:
    execution = Execution(status="processing")
    assert execution.status is EventStatus.PROCESSING
    execution.status = "completed"  # type: ignore[assignment]
    assert execution.status is EventStatus.COMPLETED


def test_execution_round_trips() -> None:
    """lionagi's Execution could not be validated from its own dump."""
    execution = Execution(status="failed", duration=0.25, response={"a": [1, 2]}, error="E: x")
    assert Execution.model_validate(execution.model_dump()) == execution
    text = execution.model_dump_json()
    assert json.loads(text)["status"] == "failed"
    assert Execution.model_validate_json(text) == execution


def test_event_status_and_response_properties() -> None:
    event = Fetch(url="u")
    assert event.status is EventStatus.PENDING
    assert event.response is None
    event.status = EventStatus.PROCESSING
    assert event.execution.status is EventStatus.PROCESSING
    event.status = "completed"
    assert event.status is EventStatus.COMPLETED
    event.response = {"ok": True}
    assert event.execution.response == {"ok": True}
    with pytest.raises(ValidationError):
        event.status = "bogus"
    assert event.status is EventStatus.COMPLETED
    assert event.request == {}


async def test_base_invoke_is_abstract_and_subclass_invoke_runs() -> None:
    with pytest.raises(NotImplementedError, match="Override in subclass"):
        await Event().invoke()
    event = Fetch(url="x")
    await event.invoke()
    assert event.response == {"url": "x"}


def test_event_round_trips_with_its_class_fields_and_execution() -> None:
    """lionagi's ``Event.from_dict`` raised "Cannot recreate an event once it's done"."""
    event = Fetch(url="https://example.org", retries=2)
    event.execution = Execution(status="completed", duration=0.5, response={"n": 1})
    data = json.loads(json.dumps(event.to_dict()))
    back = Element.from_dict(data)
    assert type(back) is Fetch
    assert back == event
    assert back.url == "https://example.org"
    assert back.retries == 2
    assert back.execution == event.execution
    assert Fetch.model_validate(event.model_dump()).execution.status is EventStatus.COMPLETED


def test_each_event_gets_its_own_execution() -> None:
    first, second = Fetch(), Fetch()
    first.status = EventStatus.FAILED
    assert second.status is EventStatus.PENDING
