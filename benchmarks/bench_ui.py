"""``lionstore ui`` speed: the run page of a 1,000,000-record run, the runs list of a
file with 1,000 runs, measured in a real headless Chromium.

    python benchmarks/bench_ui.py [--rounds N] [--n N] [--runs N] [--file PATH] [--dir DIR]

Builds (or reuses, ``--file``) the run of ``bench_replay.py`` (about N records,
default 1,000,000, by the real Executor and Exchange) and a second file of
``--runs`` runs (default 1,000; three events and one mail each), then for each round
starts ``lionstore ui`` afresh (nothing cached) and measures in Chromium:

* run page, first draw: from navigation to the page's first drawn timeline (the
  page then fills in the rest of a long run while it is shown);
* run page, complete: until every record is folded and drawn;
* runs list: from navigation to the drawn table of every run (the server folds the
  runs list from its start, so this is the page a person opens);
* ``/api/runs`` cold: requested the moment the server is up (the whole first fold).

Targets (issue: ``lionstore ui``, Speed): the run page first drawn in < 2 s, the runs
list in < 1 s. Needs the ``ui`` and ``test`` extras and Debian's chromium +
chromium-driver (``bash .ci/install-browser``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
sys.path.insert(2, str(HERE.parent / "tests" / "ui"))

from _common import add_smoke_argument, machine_line  # noqa: E402
from bench_replay import RUN_LABEL, build_run  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from ui_browser import chromium, ui_server  # noqa: E402

import lionstore  # noqa: E402
from lionstore.processing.executor import Executor  # noqa: E402
from lionstore.processing.processor import Processor  # noqa: E402


class Tick(lionstore.Event):
    async def invoke(self) -> None:
        self.response = 1


class TickProcessor(Processor):
    event_type = Tick


class TickExecutor(Executor):
    processor_type = TickProcessor


async def build_many_runs(path: Path, runs: int) -> None:
    from lionstore.mail.exchange import Exchange
    from lionstore.mail.source import Source

    for i in range(runs):
        async with lionstore.open(path, run=f"run-{i:04d}", durability="normal") as store:
            ex = TickExecutor({"queue_capacity": 10, "capacity_refresh_time": 0.001}, store=store)
            await ex.start()
            await ex.extend([Tick() for _ in range(3)])
            await ex.forward()
            await ex.stop()
            ex.close()
            a, b = Source(), Source()
            exchange = Exchange([a, b], store=store, name="x")
            await a.send(exchange.create_mail(a, b, "message", {"i": i}))
            await exchange.collect_all()
            await exchange.deliver_all()


def wait_ready(driver: Any, complete: bool, timeout: float = 600) -> None:
    script = (
        "return !!(window.lionstoreUi && window.lionstoreUi.ready && location.hash"
        " === window.lionstoreUi.route"
        + (
            " && window.lionstoreUi.summary && window.lionstoreUi.summary.complete"
            if complete
            else ""
        )
        + ")"
    )
    WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: d.execute_script(script))


def measure_run_page(path: Path) -> tuple[float, float]:
    with ui_server(str(path)) as url, chromium() as driver:
        driver.get(url + "#/none")  # load the scripts first: the page, not the browser
        wait_ready(driver, False)
        t0 = time.perf_counter()
        driver.execute_script(f"location.hash = '#/run/{RUN_LABEL}'")
        wait_ready(driver, False)
        first = time.perf_counter() - t0
        wait_ready(driver, True)
        full = time.perf_counter() - t0
        shot = Path(tempfile.gettempdir()) / "ui-shots" / "bench-1m-run.png"
        shot.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(shot))
    return first, full


def measure_runs_api_cold(path: Path) -> float:
    """GET /api/runs the moment the server is up: the whole first fold of the file."""
    with ui_server(str(path)) as url:
        t0 = time.perf_counter()
        with urllib.request.urlopen(url + "api/runs", timeout=600) as response:
            response.read()
        return time.perf_counter() - t0


def measure_runs_list(path: Path) -> tuple[float, int]:
    with ui_server(str(path)) as url, chromium() as driver:
        driver.get(url + "#/run/none")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return !!window.lionstoreUi"))
        t0 = time.perf_counter()
        driver.execute_script("location.hash = '#/'")
        wait_ready(driver, False)
        seconds = time.perf_counter() - t0
        rows = driver.execute_script("return document.querySelectorAll('#runs tbody tr').length")
    return seconds, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--file", type=Path, help="reuse (or build once into) this run file")
    parser.add_argument("--runs-file", type=Path, help="reuse (or build once into) this file")
    parser.add_argument("--dir", type=Path, default=None)
    add_smoke_argument(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.n, args.runs = 1, 2_000, 20
    work = Path(tempfile.mkdtemp(prefix="bench-ui-", dir=args.dir))
    big = args.file or work / "big.db"
    many = args.runs_file or work / "many.db"
    if not big.exists():
        print(f"building a run of about {args.n:,} records in {big} ...", flush=True)
        asyncio.run(build_run(big, args.n))
    if not many.exists():
        print(f"building {args.runs:,} runs in {many} ...", flush=True)
        asyncio.run(build_many_runs(many, args.runs))
    print(machine_line())
    firsts, fulls, lists, colds = [], [], [], []
    for r in range(args.rounds):
        first, full = measure_run_page(big)
        seconds, rows = measure_runs_list(many)
        cold = measure_runs_api_cold(many)
        firsts.append(first)
        fulls.append(full)
        lists.append(seconds)
        colds.append(cold)
        print(
            f"round {r + 1}: run page first drawn {first:.2f} s, complete {full:.2f} s; "
            f"runs list ({rows} runs) drawn {seconds:.2f} s, /api/runs cold {cold:.2f} s",
            flush=True,
        )
    med = statistics.median
    print(
        f"median of {args.rounds}: run page of {args.n:,} records first drawn "
        f"{med(firsts):.2f} s (target < 2 s), complete {med(fulls):.2f} s; runs list of "
        f"{args.runs:,} runs drawn {med(lists):.2f} s (target < 1 s), its API cold at "
        f"server start {med(colds):.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
