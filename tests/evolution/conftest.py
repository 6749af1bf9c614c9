"""Fixtures over the file kept in tests/fixtures (written by lionstore 0.1 at schema
0001). Tests read copies; the kept file is never opened for writing."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest
from evo_helpers import FIXTURE, FIXTURES

from lionstore.log import migrate

if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))


@pytest.fixture
def v1_copy(tmp_path: Path) -> Path:
    """A copy of the schema-0001 fixture in this test's directory."""
    target = tmp_path / "v1.db"
    shutil.copyfile(FIXTURE, target)
    return target


@pytest.fixture
def upgraded(v1_copy: Path) -> Path:
    """The copy brought to the current schema."""
    asyncio.run(migrate.upgrade(v1_copy))
    return v1_copy
