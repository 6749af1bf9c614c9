"""``lionstore ui`` is read-only, fetches nothing and runs nothing the file names."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from importlib import resources
from pathlib import Path

import pytest
from ui_browser import ui_server
from ui_helpers import HERE, missing_server

STATIC = resources.files("lionstore.ui") / "static"


def test_every_script_and_style_ships_with_its_licence() -> None:
    names = {p.name for p in STATIC.iterdir()}
    assert {"index.html", "app.js", "timeline.js", "app.css", "echarts.min.js"} <= names
    licences = {p.name for p in (STATIC / "licenses").iterdir()}
    assert {"echarts-LICENSE", "echarts-NOTICE", "zrender-LICENSE", "d3-LICENSE"} <= licences
    assert "Apache License" in (STATIC / "licenses" / "echarts-LICENSE").read_text()
    page = (STATIC / "index.html").read_text()
    assert (
        "http://" not in page
        and "https://" not in page
        and "//" not in page.replace("<!doctype", "").split("<body>")[0].replace("://", "")
    )  # every script and style is local
    for script in ("app.js", "timeline.js"):
        text = (STATIC / script).read_text()
        assert "http" not in text and "import(" not in text


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_ui_neither_writes_nor_imports_what_the_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = missing_server()
    if absent is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI: the ui tests must run, but {absent}")
        pytest.skip(absent)
    path = tmp_path / "trap.db"
    code = "import asyncio, sys, ui_trap; asyncio.run(ui_trap.record(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=HERE, check=True, timeout=60)
    marker = tmp_path / "imported"
    before = {p.name: _sha256(p) for p in tmp_path.iterdir() if p.name.startswith("trap.db")}
    # The server inherits both: it could import ui_trap, and would leave the marker.
    monkeypatch.setenv("LIONSTORE_UI_TRAP", str(marker))
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    with ui_server(str(path)) as url:

        def get(route: str) -> dict[str, object]:
            with urllib.request.urlopen(url + route, timeout=30) as response:
                body: dict[str, object] = json.loads(response.read())
                return body

        runs = get("api/runs")["runs"]
        assert isinstance(runs, list) and runs[0]["label"] == "trap"
        timeline = get("api/runs/trap/timeline")
        events = timeline["window"]["events"]  # type: ignore[index]
        assert [e["class"] for e in events] == ["Trap"] * 3
        get(f"api/runs/trap/events/{events[0]['id']}")
        get("api/runs/trap/state?at=5")
        assert get("api/runs/trap/verify")["ok"] is True
    assert not marker.exists()  # ui_trap was never imported
    after = {p.name: _sha256(p) for p in tmp_path.iterdir() if p.name.startswith("trap.db")}
    assert after["trap.db"] == before["trap.db"]  # nothing written
