"""Fixtures of the replay tests (the scenario itself is in replay_scenarios.py)."""

from __future__ import annotations

import asyncio

import pytest
from replay_scenarios import Recording, record_run


@pytest.fixture
def recording(db_target: str) -> Recording:
    return asyncio.run(record_run(db_target))
