"""Crash loop: run the mixed workload in a child, SIGKILL it at a random moment while it
works, resume, check every guarantee; many times over one file and one run.

``LIONSTORE_SOAK=500`` runs 500 iterations instead of the default 50.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rel_workload import fixed_source_ids, processor_config, read_lines

import lionstore
from lionstore.replay import resume

from .checks import Checked, check_run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHILD = HERE / "_child.py"
RUN = "crash-loop"
LEASE = 0.3  # short, so resume takes over a killed child's claims quickly
SEED = int(os.environ.get("LIONSTORE_CRASH_SEED", "20261121"))
TIMEOUT = 60.0


def iterations() -> int:
    soak = os.environ.get("LIONSTORE_SOAK", "")
    return int(soak) if soak.strip() else 50


# 50 iterations take about 40 s, a 500-iteration soak about 1300 s (the checks grow with
# the log): ten seconds an iteration, and never under ten minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(max(600, 10 * iterations()))]


def spawn(config: dict[str, object]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )


async def kill_while_working(
    child: subprocess.Popen[bytes], ack: Path, side: Path, rng: random.Random
) -> None:
    """Wait until the child has made some progress (new acknowledged writes or
    invocations: it is mid-workload), then SIGKILL it after a random pause."""
    start = len(read_lines(ack)) + len(read_lines(side))
    target = start + rng.randint(1, 40)
    deadline = time.monotonic() + TIMEOUT
    while len(read_lines(ack)) + len(read_lines(side)) < target:
        if child.poll() is not None:
            err = child.stderr.read().decode() if child.stderr else ""
            raise AssertionError(f"the child ended on its own ({child.returncode}): {err}")
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError("the child made no progress")
        await asyncio.sleep(0.002)  # polling the side files for the progress condition
    # The kill point: a random moment in the work that follows (not synchronisation).
    await asyncio.sleep(rng.uniform(0, 0.08))
    assert child.poll() is None, "the child stopped before it was killed"
    os.kill(child.pid, signal.SIGKILL)
    await asyncio.to_thread(child.wait, TIMEOUT)
    assert child.returncode == -signal.SIGKILL
    if child.stderr:
        child.stderr.close()


async def test_crash_loop(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    db, ack, side = tmp_path / "crash.db", tmp_path / "ack.log", tmp_path / "invoked.log"
    rng = random.Random(SEED)
    sources = fixed_source_ids(f"{SEED}-sources")
    total = Checked()
    records_checked = 0
    started = time.monotonic()
    n = iterations()
    for i in range(n):
        child = spawn(
            {
                "db": str(db),
                "run": RUN,
                "seed": rng.randrange(2**32),
                "ack": str(ack),
                "side": str(side),
                "sources": sources,
                "lease": LEASE,
                "rounds": None,
            }
        )
        try:
            await kill_while_working(child, ack, side, rng)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
        async with lionstore.open(db, run=RUN) as store:
            await asyncio.wait_for(resume(store), TIMEOUT)
        checked = await check_run(
            db, RUN, side=side, ack=ack, max_attempts=processor_config(LEASE)["max_attempts"]
        )
        records_checked += checked.records
        total = checked
        assert checked.events > 0 and checked.mails > 0, (i, checked)
    summary = (
        f"crash loop: {n} iterations, {n} SIGKILLs, {records_checked} records checked "
        f"({total.records} in the final log), {total.events} events "
        f"({total.failed} failed on purpose, {total.abandoned} abandoned), "
        f"{total.invocations} invocations, {total.mails} mails ({total.delivered} delivered, "
        f"{total.dead} dead-lettered: {dict(sorted(total.reasons.items()))}), "
        f"{total.acks} acknowledged writes found, {time.monotonic() - started:.0f} s"
    )
    print(summary)
    record_property("reliability", summary)
