"""``lionstore timeline``: the run drawn as Mermaid or as one self-contained HTML page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli_scenarios import WorkDb
    from conftest import Cli


def test_mermaid(cli: Cli, work_db: WorkDb) -> None:
    result = cli("timeline", work_db.path, "--run", "work", "--format", "mermaid")
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith("# Run work\n")  # the label, not the id, is the title
    assert "sequenceDiagram" in out and "gantt" in out
    assert out.count("```mermaid") == 2
    assert "participant S3 as unknown recipient" in out  # the stranger never joined
    assert "S0->>S1" in out  # a delivered mail
    assert "-xS3" in out  # the dead letter, with its reason
    assert "dead letter, recipient_unknown" in out
    assert '{"n":1}' in out  # items as JSON, not Python reprs
    assert "'n'" not in out
    assert "section executor calc" in out
    assert out.count(" attempt 1 ") == 3  # one task per attempt
    assert re.search(r"attempt 1 failed :crit, \d+, \d+", out)
    assert cli("timeline", work_db.path, "--run", "work").out == out  # mermaid by default


def test_html(cli: Cli, work_db: WorkDb, tmp_path: Path) -> None:
    result = cli("timeline", work_db.path, "--run", "work", "--format", "html")
    assert result.code == 0, result.err
    page = result.out
    assert page.startswith("<!doctype html>")
    assert "<title>lionstore run work</title>" in page
    assert "<script src" not in page and "<link" not in page  # nothing fetched: all inlined
    assert "echarts" in page  # the charting library is in the page
    data = json.loads(page.split("LionstoreTimeline.standalone(", 1)[1].split(");</script>")[0])
    lanes = [lane["title"] for lane in data["summary"]["lanes"]]
    assert lanes[0] == "executor calc"
    assert len(data["window"]["events"]) == 3
    assert len(data["window"]["mails"]) == 4
    target = tmp_path / "run.html"
    written = cli("timeline", work_db.path, "--run", "work", "--output", str(target))
    assert written.code == 0
    assert written.out.startswith("wrote the html timeline of run work")  # from the suffix
    assert "LionstoreTimeline.standalone" in target.read_text()


def test_timeline_of_a_run_without_events_or_mail(cli: Cli, tmp_path: Path) -> None:
    path = str(tmp_path / "demo.db")
    assert cli("demo", path).code == 0
    result = cli("timeline", path, "--run", "demo-1")
    assert "sequenceDiagram" in result.out  # the demo has mail and events
    assert cli("timeline", path, "--run", "demo-1", "--format", "svg").code == 2
    assert cli("timeline", path, "--run", "nope").code == 1
