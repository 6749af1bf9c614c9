"""``lionstore timeline``: the run drawn as Mermaid or as an HTML page with SVG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli_scenarios import WorkDb
    from conftest import Cli


def test_mermaid(cli: Cli, work_db: WorkDb) -> None:
    result = cli("timeline", work_db.path, "--run", "work", "--format", "mermaid")
    assert result.code == 0, result.err
    out = result.out
    assert "sequenceDiagram" in out and "gantt" in out
    assert out.count("```mermaid") == 2
    a, b, c = (s[:8] for s in work_db.sources)
    assert f"S{a}->>S{b}" in out  # a delivered mail
    assert f"S{c}-xS{work_db.stranger[:8]}" in out  # the dead letter
    assert "recipient_unknown" in out
    assert out.count("Square ") == 3
    assert "(failed) :crit" in out
    assert cli("timeline", work_db.path, "--run", "work").out == out  # mermaid by default


def test_html(cli: Cli, work_db: WorkDb, tmp_path: Path) -> None:
    result = cli("timeline", work_db.path, "--run", "work", "--format", "html")
    assert result.code == 0, result.err
    page = result.out
    assert page.startswith("<!doctype html>")
    assert "<svg" in page and "</svg>" in page
    assert "<script" not in page  # self-contained, nothing runs
    assert f"Run {work_db.run_id}" in page

    target = tmp_path / "run.html"
    written = cli("timeline", work_db.path, "--run", "work", "--output", target)
    assert written.code == 0
    assert written.out.startswith("wrote the html timeline of run work")  # from the suffix
    assert "<svg" in target.read_text()


def test_timeline_of_a_run_without_events_or_mail(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    assert cli("demo", path).code == 0
    result = cli("timeline", path, "--run", "demo-1", "--format", "mermaid")
    assert "sequenceDiagram" in result.out  # the demo has mail and events
    assert cli("timeline", path, "--run", "demo-1", "--format", "svg").code == 2
    assert cli("timeline", path, "--run", "nope").code == 1
