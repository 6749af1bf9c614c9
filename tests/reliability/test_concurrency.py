"""Four processes run the mixed workload on one SQLite file at the same moment: one
shared executor, one shared exchange. No error (``database is locked`` or any other)
reaches a caller, and the totals add up: every event ran exactly once and ended
terminal once, every mail was delivered once or dead-lettered once."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rel_workload import fixed_source_ids, processor_config, read_lines

import lionstore

from .checks import check_run
from .test_crash_loop import spawn

PROCESSES = 4
ROUNDS = 12
RUN = "shared"
LEASE = 120.0  # no claim expires while its owner is alive: each event runs once
TIMEOUT = 120.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_four_processes_share_one_file(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    db, ack, side = tmp_path / "shared.db", tmp_path / "ack.log", tmp_path / "invoked.log"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    rng = random.Random(4)
    sources = fixed_source_ids("concurrency")
    async with lionstore.open(db, run=RUN):
        pass  # the run exists before the children race to open it
    children = [
        spawn(
            {
                "db": str(db),
                "run": RUN,
                "seed": rng.randrange(2**32),
                "ack": str(ack),
                "side": str(side),
                "sources": sources,
                "lease": LEASE,
                "rounds": ROUNDS,
                "barrier": str(barrier),
                "index": i,
            }
        )
        for i in range(PROCESSES)
    ]
    started = time.monotonic()
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(list(barrier.iterdir())) < PROCESSES:
            assert all(c.poll() is None for c in children), "a child ended before the start"
            assert time.monotonic() < deadline, "the children did not get ready"
            await asyncio.sleep(0.01)  # polling the barrier directory
        (barrier / "go").touch()
        errors = []
        for child in children:
            await asyncio.to_thread(child.wait, max(1.0, deadline - time.monotonic()))
            err = child.stderr.read().decode() if child.stderr else ""
            if child.returncode != 0 or err.strip():
                errors.append((child.returncode, err))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
            if child.stderr:
                child.stderr.close()
    assert not errors, errors
    assert not any("locked" in err for _, err in errors)

    checked = await check_run(
        db,
        RUN,
        side=side,
        ack=ack,
        max_attempts=processor_config(LEASE)["max_attempts"],
        exact_invocations=True,
    )
    acked_events = [line for line in read_lines(ack) if line.startswith("event ")]
    acked_mails = [line for line in read_lines(ack) if line.startswith("mail ")]
    assert checked.events == len(acked_events) > 0
    assert checked.invocations == checked.events
    assert checked.mails == len(acked_mails) > 0
    assert checked.delivered + checked.dead == checked.mails
    assert checked.abandoned == 0
    joined = sum(1 for line in read_lines(ack) if line.startswith("joined "))
    assert joined == PROCESSES * ROUNDS
    summary = (
        f"concurrency: {PROCESSES} processes x {ROUNDS} rounds on one file, "
        f"{checked.records} records, {checked.events} events each invoked once, "
        f"{checked.mails} mails ({checked.delivered} delivered, {checked.dead} dead-lettered), "
        f"no errors, {time.monotonic() - started:.0f} s"
    )
    print(summary)
    record_property("reliability", summary)
