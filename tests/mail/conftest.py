"""Fixtures of the mail tests (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest


@pytest.fixture
def ticking(clock: Any) -> Callable[[], datetime]:
    """The FakeClock fixture, advanced by a millisecond at every reading: two commits
    never share a recorded_at, so equal recorded_at means one commit."""

    def now() -> datetime:
        clock.advance(0.001)
        reading: datetime = clock()
        return reading

    return now
