"""Several OS processes run one Exchange over one database while this test sends mail:
each mail is collected once and delivered once, none is lost, and per-sender order
holds; also when one of them is SIGKILLed in the middle of its sweeps."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore import Exchange, IDType, Source

from .mailtools import kinds_by_mail, log_records, wait_for

WORKER = Path(__file__).with_name("mp_worker.py")
ROOT = Path(__file__).resolve().parents[2]
RUN = "shared-run"
NAME = "shared-exchange"
SENDERS = 3
RECIPIENTS = 2
ROUNDS = 20  # each round: every sender mails every recipient
TIMEOUT = 30.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _spawn(config: dict[str, Any]) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


async def test_two_processes_share_one_exchange(db_target: str, tmp_path: Path) -> None:
    await _share_one_exchange(db_target, tmp_path, workers=2, killed=None)


async def test_a_sigkilled_exchange_process_loses_and_repeats_nothing(
    db_target: str, tmp_path: Path
) -> None:
    """Three processes sweep; one is killed with SIGKILL once mail is moving. Its
    sweeps were whole transactions: the others carry on from what it committed."""
    await _share_one_exchange(db_target, tmp_path, workers=3, killed=0)


async def _share_one_exchange(
    db_target: str, tmp_path: Path, *, workers: int, killed: int | None
) -> None:
    senders = [Source(id=uuid.uuid4()) for _ in range(SENDERS)]
    recipients = [Source(id=uuid.uuid4()) for _ in range(RECIPIENTS)]
    ids = [s.id for s in (*senders, *recipients)]
    expected_total = SENDERS * RECIPIENTS * ROUNDS
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    async with lionstore.open(db_target, run=RUN) as store:  # creates the shared run
        procs = [
            _spawn(
                {
                    "db": db_target,
                    "run": RUN,
                    "name": NAME,
                    "ids": ids,
                    "expected": expected_total,
                    "barrier": str(barrier),
                    "index": i,
                    "timeout": TIMEOUT,
                }
            )
            for i in range(workers)
        ]
        try:
            await wait_for(
                lambda: (
                    all((barrier / f"ready-{i}").exists() for i in range(workers))
                    or any(w.poll() is not None for w in procs)
                ),
                timeout=TIMEOUT,
                what="every worker to be ready",
            )
            assert all(w.poll() is None for w in procs), [w.communicate() for w in procs]
            (barrier / "go").touch()

            # this process registers the same sources by id, then sends while they sweep
            ex = Exchange(store=store, name=NAME)
            await ex.add_source(senders + recipients)
            sent: dict[tuple[str, str], list[str]] = {}
            for round_no in range(ROUNDS):
                for s in senders:
                    for r in recipients:
                        mail = ex.create_mail(s, r, "message", {"round": round_no})
                        await s.send(mail)
                        sent.setdefault((r.id, s.id), []).append(mail.id)
                if round_no % 5 == 4:
                    await asyncio.sleep(0.01)  # let the workers interleave with sends
                if killed is not None and round_no == ROUNDS // 2:

                    async def mail_is_moving() -> bool:
                        return bool(await log_records(store, kinds=["mail.delivered"]))

                    await wait_for(mail_is_moving, timeout=TIMEOUT, what="a delivery")
                    procs[killed].send_signal(signal.SIGKILL)
                    await asyncio.to_thread(procs[killed].wait, TIMEOUT)
                    assert procs[killed].returncode == -signal.SIGKILL

            outputs = []
            deadline = time.monotonic() + TIMEOUT
            for i, worker in enumerate(procs):
                if i == killed:
                    continue
                out, err = await asyncio.to_thread(
                    worker.communicate, timeout=max(1.0, deadline - time.monotonic())
                )
                assert worker.returncode == 0, (out, err)
                outputs.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for worker in procs:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait(timeout=30)

        if killed is None:  # the workers' own sweeps moved every mail exactly once
            assert sum(o["collected"] for o in outputs) == expected_total, outputs
            assert sum(o["delivered"] for o in outputs) == expected_total, outputs

    async with lionstore.open(db_target, run=RUN) as store:
        history = await kinds_by_mail(store)
        assert len(history) == expected_total
        assert all(
            kinds == ["mail.sent", "mail.collected", "mail.delivered"] for kinds in history.values()
        ), history
        assert await log_records(store, kinds=["mail.dead_lettered"]) == []
        added = [r.stream_id for r in await log_records(store, kinds=["source.added"])]
        assert sorted(added) == sorted(ids)  # registered once, by whichever came first

        # per-sender order in each inbox, as a fresh Exchange rebuilds it from the file
        rebuilt = Exchange(store=store, name=NAME)
        await rebuilt.load()
        for r in recipients:
            box = rebuilt.mailboxes[r.id]
            assert {s: list(p) for s, p in box.pending_ins.items()} == {
                s.id: sent[(r.id, s.id)] for s in senders
            }
        # and in delivery order in the log
        delivered_at = {
            rec.stream_id: rec.position
            for rec in await log_records(store, kinds=["mail.delivered"])
        }
        for ids_in_order in sent.values():
            positions = [delivered_at[IDType(i)] for i in ids_in_order]
            assert positions == sorted(positions)
