"""Fixtures of the replay tests (the scenario itself is in replay_scenarios.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from replay_scenarios import Recording, record_run


@pytest.fixture
def recording(tmp_path: Path) -> Recording:
    return asyncio.run(record_run(tmp_path / "replay.db"))
