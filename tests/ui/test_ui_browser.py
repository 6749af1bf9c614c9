"""``lionstore ui`` in a real Chromium: the runs list, a killed-and-resumed run's
timeline, an event, verify (OK and on a tampered copy), a live run, and the token
off loopback. Screenshots of the main pages go to $LIONSTORE_UI_SHOTS (/tmp/ui-shots)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("selenium") is None:  # the test extra is not installed
    if os.environ.get("CI"):
        raise ImportError("CI: the browser tests need selenium (pip install -e '.[test]')")
    pytest.skip("selenium is not installed (pip install -e '.[test]')", allow_module_level=True)

# isort: off
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import Select, WebDriverWait
from ui_browser import ui_server
from ui_helpers import scenario, timeline_of
# isort: on

JOBS = ["load-orders", "fetch-prices", "bad-budget", "archive", "render-charts", "email-report"]


def open_page(driver: Any, url: str, route: str) -> None:
    """Load ``route`` and wait until the page says it has drawn it."""
    driver.get(url.split("?")[0].rstrip("/") + "/" + route)
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script(
            "return !!(window.lionstoreUi && window.lionstoreUi.ready"
            " && window.lionstoreUi.route === location.hash)"
        )
    )


def svg_texts(driver: Any) -> list[str]:
    texts: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#timeline svg text'))"
        ".map(t => t.textContent.trim())"
    )
    return texts


def shows_text(text: str) -> Callable[[Any], bool]:
    """A WebDriverWait condition: the timeline draws ``text``."""
    return lambda d: text in svg_texts(d)


def test_runs_list(browser: Any, server: str, shots: Path) -> None:
    open_page(browser, server, "#/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert len(rows) == 1
    text = rows[0].text
    assert text.startswith("nightly-report")
    for chip in ("completed 5", "failed 1", "dead 1"):
        assert chip in text
    browser.save_screenshot(str(shots / "runs.png"))
    box = browser.find_element(By.ID, "f-label")
    box.send_keys("no-such-run")
    WebDriverWait(browser, 5).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    )
    box.clear()
    box.send_keys("nightly")
    Select(browser.find_element(By.ID, "f-status")).select_by_visible_text("failed")
    WebDriverWait(browser, 5).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) == 1
    )
    Select(browser.find_element(By.ID, "f-status")).select_by_visible_text("processing")
    WebDriverWait(browser, 5).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    )


def test_timeline_shows_the_crash_and_the_resume(
    browser: Any, server: str, shots: Path, crashed_db: Path
) -> None:
    open_page(browser, server, "#/run/nightly-report")
    assert browser.find_element(By.ID, "run-title").text == "Run nightly-report"
    texts = svg_texts(browser)
    assert "⚙ executor reports" in texts
    for job in JOBS:
        assert job in texts  # the names the user gave, not ids
    for agent in ("planner", "worker", "reviewer"):
        assert f"✉ {agent}" in texts
    assert "killed" in texts and "resumed" in texts
    assert any("dead letter: recipient_unknown" in t for t in texts)
    bars = browser.execute_script(
        "return window.lionstoreUi.timeline.items[0].map(b => [b.kind, b.text || ''])"
    )
    kinds = [k for k, _ in bars]
    assert kinds.count("expired") == 2  # the two slow jobs' first attempts
    # a gap (lease expired, not yet taken over) only where the takeover came after the
    # lease ran out; the resumed process saw the killed one gone and did not wait
    tl = timeline_of(crashed_db, "nightly-report")
    late = [
        a
        for e in tl.events.values()
        for a in e.attempts
        if a.taken_over_us is not None and a.end_us is not None and a.taken_over_us > a.end_us
    ]
    assert kinds.count("gap") == len(late)  # fmt: skip
    assert kinds.count("completed") == 5  # 3 quick (one after a denial) + 2 second attempts
    assert kinds.count("failed") == 1
    assert kinds.count("backoff") == 1
    assert kinds.count("session-died") == 1 and kinds.count("session") == 1
    arrows = browser.execute_script("return window.lionstoreUi.timeline.items[1].length")
    assert arrows == 3
    story = browser.find_element(By.CSS_SELECTOR, ".story").text
    assert "stopped here" in story and "(resumed)" in story and "bad-budget failed" in story
    browser.save_screenshot(str(shots / "timeline-crash-resume.png"))


def test_clicking_an_event_opens_it(browser: Any, server: str, shots: Path) -> None:
    open_page(browser, server, "#/run/nightly-report")
    # Click the second attempt of render-charts, where the chart drew it.
    x, y, w, h = browser.execute_script(
        """
        const tl = window.lionstoreUi.timeline;
        const i = tl.items[0].findIndex(b => b.kind === 'completed' && b.text === 'attempt 2 ✓'
            && b.href.includes(tl.win.events.find(e => e.name === 'render-charts').id));
        const v = tl.items[0][i].value;
        const p = tl.chart.convertToPixel(
            {xAxisIndex: 0, yAxisIndex: 0}, [(v[1] + v[2]) / 2, v[0]]);
        const r = document.getElementById('timeline').getBoundingClientRect();
        return [p[0], p[1], r.width, r.height];
        """
    )
    element = browser.find_element(By.ID, "timeline")
    ActionChains(browser).move_to_element_with_offset(
        element, int(x - w / 2), int(y - h / 2)
    ).click().perform()
    WebDriverWait(browser, 10).until(lambda d: "/event/" in d.current_url)
    WebDriverWait(browser, 10).until(
        lambda d: (
            d.find_elements(By.ID, "event-title")
            and d.find_element(By.ID, "event-title").text == "Event render-charts"
        )
    )
    attempts = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")]
    assert len(attempts) == 2
    assert "process gone" in attempts[0] and "taken over" in attempts[0]
    assert attempts[1].endswith("completed")
    records = browser.find_element(By.CSS_SELECTOR, "table.records").text
    for kind in ("event.appended", "event.claimed", "event.requeued", "event.finished"):
        assert kind in records
    assert '"square": 25' in browser.find_element(By.TAG_NAME, "main").text.replace(":25", ": 25")
    browser.save_screenshot(str(shots / "event.png"))


def test_state_at_a_position(browser: Any, server: str, crashed_db: Path) -> None:
    with sqlite3.connect(crashed_db) as db:  # where the fourth event was appended
        (fourth,) = db.execute(
            "SELECT position FROM lionstore_records WHERE kind = 'event.appended' "
            "ORDER BY position LIMIT 1 OFFSET 3"
        ).fetchone()
        (claimed,) = db.execute(
            "SELECT min(position) FROM lionstore_records WHERE kind = 'event.claimed'"
        ).fetchone()
    assert fourth < claimed
    open_page(browser, server, f"#/run/nightly-report/state/{fourth}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#state-events tbody tr")
    assert len(rows) == 4  # four quick jobs appended by then, none claimed yet
    assert all("pending" in r.text for r in rows)
    open_page(browser, server, "#/run/nightly-report/state")
    rows = browser.find_elements(By.CSS_SELECTOR, "#state-events tbody tr")
    assert len(rows) == 6


def test_verify_ok(browser: Any, server: str) -> None:
    open_page(browser, server, "#/run/nightly-report/verify")
    assert browser.find_element(By.ID, "verdict").text.startswith("OK")


def test_verify_a_tampered_copy(
    browser: Any, crashed_db: Path, tmp_path: Path, shots: Path
) -> None:
    copy = tmp_path / "tampered.db"
    shutil.copy(crashed_db, copy)
    with sqlite3.connect(copy) as db:
        (position,) = db.execute(
            "SELECT position FROM lionstore_records WHERE kind = 'event.finished' "
            "AND data LIKE '%\"square\":9%'"
        ).fetchone()
        db.execute(
            "UPDATE lionstore_records SET data = replace(data, '\"square\":9', '\"square\":10') "
            "WHERE position = ?",
            (position,),
        )
    with ui_server(str(copy)) as url:
        open_page(browser, url, "#/run/nightly-report/verify")
        verdict = browser.find_element(By.ID, "verdict").text
        assert verdict == f"DIVERGES at position {position}"
        assert "digest mismatch" in browser.find_element(By.TAG_NAME, "main").text
        expected, actual = browser.find_elements(By.CSS_SELECTOR, ".cols > div")
        assert expected.text.startswith("expected\nno record the code would write")
        assert '"square": 10' in actual.text  # the record as it is in the file
        browser.save_screenshot(str(shots / "verify-divergence.png"))


def test_a_live_run_updates_without_a_reload(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    writer = scenario(
        "live", str(path), "live-run", "3", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "READY"
        with ui_server(str(path)) as url:
            open_page(browser, url, "#/run/live-run")
            browser.execute_script("window.lionstoreUiLoads = (window.lionstoreUiLoads || 0) + 1")
            for i in range(2):
                writer.stdin.write("go\n")
                writer.stdin.flush()
                assert writer.stdout.readline().strip() == f"WROTE {i}"
                WebDriverWait(browser, 10).until(shows_text(f"live-{i}"))
            # the same page (no reload): the marker set after the first load is still there
            assert browser.execute_script("return window.lionstoreUiLoads") == 1
            bars = browser.execute_script(
                "return window.lionstoreUi.timeline.items[0].filter(b => b.kind === 'completed')"
                ".length"
            )
            assert bars == 2
    finally:
        if writer.stdin is not None:
            writer.stdin.close()
        writer.wait(timeout=30)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_off_loopback_needs_a_token(browser: Any, crashed_db: Path, shots: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; from lionstore.cli import main; sys.exit(main())"]
    refused = subprocess.run(
        [*cmd, "ui", str(crashed_db), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "needs --token" in refused.stderr
    with ui_server(str(crashed_db), "--host", "0.0.0.0", "--token", "s3cret") as url:
        assert url.endswith("/?token=s3cret")
        base = url.replace("0.0.0.0", "127.0.0.1").split("?")[0]  # test traffic stays local
        status, body = _get(base + "api/runs")
        assert status == 401 and "token is required" in body
        assert _get(base + "api/runs", {"Authorization": "Bearer wrong"})[0] == 401
        status, body = _get(base + "api/runs", {"Authorization": "Bearer s3cret"})
        assert status == 200 and json.loads(body)["runs"][0]["label"] == "nightly-report"
        browser.delete_all_cookies()
        browser.get(base)
        assert "token is required" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(base + "?token=s3cret#/")  # sets the cookie the page's own calls carry
        WebDriverWait(browser, 20).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
        )
        post = urllib.request.Request(
            base + "api/runs", data=b"{}", headers={"Authorization": "Bearer s3cret"}
        )
        try:
            urllib.request.urlopen(post, timeout=10)
            raise AssertionError("a POST was accepted by a read-only server")
        except urllib.error.HTTPError as exc:
            assert exc.code == 405


def test_a_mail_links_its_sender_and_recipient(browser: Any, server: str) -> None:
    open_page(browser, server, "#/run/nightly-report")
    href = browser.execute_script(
        "return window.lionstoreUi.timeline.items[1].find(a => a.dead).href"
    )
    open_page(browser, server, href)
    title = browser.find_element(By.ID, "mail-title").text
    assert title.startswith("Mail message from worker to unknown recipient ")
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "dead letter recipient_unknown" in main
    assert '"item": "cc the CFO"' in main
    assert "mail.dead_lettered" in browser.find_element(By.CSS_SELECTOR, "table.records").text
    browser.find_elements(By.CSS_SELECTOR, "a.source-link")[0].click()  # the sender
    WebDriverWait(browser, 10).until(
        lambda d: (
            d.find_elements(By.ID, "source-title")
            and d.find_element(By.ID, "source-title").text == "Source worker"
        )
    )
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#source-mails tbody tr")]
    assert len(rows) == 3  # from the planner, to the reviewer, to the stranger
    assert sum("recipient_unknown" in r for r in rows) == 1


def test_a_fork_against_its_parent(browser: Any, crashed_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "forked.db"
    shutil.copy(crashed_db, copy)
    cmd = [sys.executable, "-c", "import sys; from lionstore.cli import main; sys.exit(main())"]
    forked = subprocess.run(
        [*cmd, "fork", str(copy), "--run", "nightly-report", "--at", "20", "--label", "retry"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forked.returncode == 0, forked.stderr
    with ui_server(str(copy)) as url:
        open_page(browser, url, "#/")
        tree = browser.find_element(By.ID, "tree").text
        assert tree.splitlines() == ["nightly-report", "retry forked at 20"]
        row = browser.find_element(By.CSS_SELECTOR, "#runs tbody tr").text  # newest first
        assert row.startswith("retry") and row.endswith("nightly-report @ 20")
        open_page(browser, url, "#/run/retry/compare")
        verdict = browser.find_element(By.ID, "first-difference").text
        assert verdict == "first difference at record 20: the fork ends here, the parent goes on"


def test_a_big_run_is_drawn_as_counts_until_zoomed_in(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    assert scenario("many", str(path), "bulk-run", "2000").wait(timeout=180) == 0
    with ui_server(str(path)) as url:
        open_page(browser, url, "#/run/bulk-run")
        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script("return window.lionstoreUi.summary.complete")
        )
        drawn = browser.execute_script(
            "const tl = window.lionstoreUi.timeline;"
            "return [tl.items[0].length, tl.items[2].length, tl.win.aggregates.length]"
        )
        bars, buckets, aggregates = drawn
        assert aggregates == 1 and buckets > 0  # 2,000 events: counts per time bucket
        assert bars == 1  # only the processor's session is drawn as a bar
        assert "events (counts)" in svg_texts(browser)
        # Click the busiest bucket of counts: the chart zooms in on it. A run recorded
        # quickly can put most events in one bucket, so zoom in again on the busiest
        # bucket of the new window until the events are drawn one by one (bounded).
        for _ in range(8):
            browser.execute_script("window.__shown = window.lionstoreUi.timeline.win")
            # The busiest buckets, most events first, each as its centre in pixels from
            # the chart's centre: a bucket can be two or three pixels wide, so a click
            # that lands beside the first is tried on the next (a miss is the mouse's,
            # not the viewer's: the test waits for the zoomed window either way).
            targets = browser.execute_script(
                """
                const tl = window.lionstoreUi.timeline, buckets = tl.items[2];
                const total = b => b.parts.reduce((n, p) => n + p[1], 0);
                const r = document.getElementById('timeline').getBoundingClientRect();
                return buckets.slice().sort((a, b) => total(b) - total(a)).slice(0, 3)
                  .map(b => {
                    const v = b.value;
                    const p = tl.chart.convertToPixel(
                        {xAxisIndex: 0, yAxisIndex: 0}, [(v[1] + v[2]) / 2, v[0]]);
                    return [Math.round(p[0] - r.width / 2), Math.round(p[1] - r.height / 2)];
                  });
                """
            )
            element = browser.find_element(By.ID, "timeline")
            for dx, dy in targets:
                ActionChains(browser).move_to_element_with_offset(element, dx, dy).click().perform()
                try:
                    WebDriverWait(browser, 15).until(  # the zoomed window fetched and drawn
                        lambda d: d.execute_script(
                            "const tl = window.lionstoreUi.timeline;"
                            "return tl.range !== null && tl.win !== window.__shown"
                        )
                    )
                    break
                except TimeoutException:
                    continue
            else:
                raise AssertionError(f"no click on the busiest buckets zoomed in: {targets}")
            if browser.execute_script(
                "return window.lionstoreUi.timeline.win.aggregates.length === 0"
            ):
                break
        WebDriverWait(browser, 60).until(
            lambda d: d.execute_script(
                "const tl = window.lionstoreUi.timeline;"
                "return tl.range !== null && tl.win.aggregates.length === 0"
                " && tl.items[0].some(b => b.kind === 'completed')"
            )
        )
        events = browser.execute_script("return window.lionstoreUi.timeline.win.events.length")
        assert 0 < events <= 1500  # the events of the window, each drawn


def test_markup_in_the_file_is_shown_as_text(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "hostile.db"
    label = '<b id="bold">run</b>'
    name = '<img id="pwn" src="x">'
    code = (
        "import asyncio, sys, lionstore, ui_scenario\n"
        "async def main():\n"
        "    async with lionstore.open(sys.argv[1], run=sys.argv[2]):\n"
        "        ex = lionstore.Executor({'queue_capacity': 5, 'capacity_refresh_time': 0.01})\n"
        "        await ex.start()\n"
        "        await ex.append(ui_scenario.Job(name=sys.argv[3], n=-2))\n"
        "        await ex.forward()\n"
        "        await ex.join()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(path), label, name],
        cwd=Path(__file__).parent,
        check=True,
        timeout=60,
    )
    with ui_server(str(path)) as url:
        open_page(browser, url, "#/")
        link = browser.find_element(By.CSS_SELECTOR, "#runs tbody tr a")
        assert link.text == label
        link.click()  # runs are linked by id: a label may hold any character
        WebDriverWait(browser, 20).until(
            lambda d: (
                d.find_elements(By.ID, "run-title")
                and d.find_element(By.ID, "run-title").text == f"Run {label}"
            )
        )
        WebDriverWait(browser, 20).until(lambda d: name in svg_texts(d))
        assert f"event {name} failed" in browser.find_element(By.CSS_SELECTOR, ".story").text
        assert not browser.find_elements(By.ID, "bold")
        assert not browser.find_elements(By.ID, "pwn")
