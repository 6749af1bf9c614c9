"""The reliability tests import ``rel_workload`` as a top-level module, as their child
processes do, so recorded class paths (``rel_workload.Task``) match in both."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the ``reliability`` lines tests recorded with ``record_property`` (the
    figures the README quotes)."""
    lines = [
        str(value)
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", [])
        if name == "reliability"
    ]
    if lines:
        terminalreporter.section("reliability")
        for line in lines:
            terminalreporter.write_line(line)
