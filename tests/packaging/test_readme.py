"""README.md stays true: two Quick start commands, .ci/run runs the second, the example runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def test_quick_start_is_exactly_two_one_line_commands() -> None:
    blocks = code_blocks(section("Quick start"), "sh")
    assert len(blocks) == 2
    demo, tests = (block.strip() for block in blocks)
    assert "\n" not in demo and "\n" not in tests
    assert demo.endswith("lionstore demo")
    assert tests.endswith("python -m pytest")
    assert 'pip install -e ".[test]"' in tests


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_runs_the_readme_test_command() -> None:
    tests = code_blocks(section("Quick start"), "sh")[1].strip()
    printed = subprocess.run(
        ["bash", str(REPO / ".ci" / "run"), "--print-command"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert printed == tests.replace(".venv", ".venv-ci")
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_python_example_runs(tmp_path: Path) -> None:
    (example,) = code_blocks(section("Using the log from Python"), "python")
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "committed at positions [2, 3]",
        "2 1 example.note_added hello",
        "3 2 example.note_added world",
    ]
    assert (tmp_path / "example.db").exists()


def test_placeholder_sections_exist() -> None:
    for title in ("Executor", "Mail", "Durability", "The `lionstore` command", "Development"):
        assert section(title).strip()
