"""Projection checkpoints: written at close, restored at open with only the tail
folded, and ignored (then rebuilt) whenever they do not check out."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from bounds import bounded
from fixture_kinds import FixtureExecutor, FixtureTask

import lionstore
from lionstore.log.digest import chain_start, record_digest
from lionstore.projections import snapshot
from lionstore.replay import verify

CONFIG = {"queue_capacity": 10, "capacity_refresh_time": 0.01}


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        found = conn.execute(sql, args).fetchall()
        conn.commit()
        return found
    finally:
        conn.close()


def executor_view(executor: lionstore.Executor) -> list[tuple[Any, ...]]:
    return [
        (
            e.id,
            type(e).__name__,
            e.status.value,
            e.execution.response,
            e.execution.error,
            e.execution.duration,
            e.name,  # type: ignore[attr-defined]  # a FixtureTask
            executor.attempts(e.id),
        )
        for e in executor.pile
    ]


def router_view(exchange: lionstore.Exchange) -> dict[str, Any]:
    boxes = {
        sid: (list(box.pending_outs), {s: list(q) for s, q in box.pending_ins.items()})
        for sid, box in exchange.mailboxes.items()
    }
    dead = [(d.mail.id, d.reason, d.stage, d.position) for d in exchange.dead_letters]
    return {"sources": sorted(s.id for s in exchange.sources), "boxes": boxes, "dead": dead}


async def open_state(path: Path, checkpoints: bool = True) -> tuple[Any, Any, Any, Any]:
    """Open run ``fixture``; load its executor and exchange; return their views and the
    positions their checkpoints restored to."""
    async with lionstore.open(path, run="fixture", checkpoints=checkpoints) as store:
        executor = FixtureExecutor(CONFIG, store=store, name="worker")
        exchange = lionstore.Exchange(store=store, name="post")
        await executor.load()
        await exchange.load()
        return (
            executor_view(executor),
            router_view(exchange),
            executor._repo.restored_from,
            exchange._repo.restored_from,
        )


def checkpoint_rows(path: Path) -> dict[str, tuple[int, str, int, str]]:
    found = rows(
        path,
        "SELECT name, position, digest, format_version, snapshot FROM lionstore_checkpoints",
    )
    return {name: (pos, digest, fmt, snap) for name, pos, digest, fmt, snap in found}


@pytest.fixture
async def checkpointed(upgraded: Path) -> Path:
    """The fixture with checkpoints of run ``fixture``'s executor and exchange."""
    await open_state(upgraded)  # no checkpoint yet: folds, then writes them at close
    assert set(checkpoint_rows(upgraded)) == {"executor:worker", "mail:post"}
    return upgraded


async def test_a_checkpoint_restores_the_same_state_and_only_the_tail_is_folded(
    checkpointed: Path,
) -> None:
    full = await open_state(checkpointed, checkpoints=False)
    assert full[2:] == (None, None)
    restored = await open_state(checkpointed)
    head = rows(checkpointed, "SELECT max(position) FROM lionstore_records")[0][0]
    assert restored[2:] == (head, head)
    assert restored[:2] == full[:2]
    # the tail after the checkpoint is folded on top of it
    async with lionstore.open(checkpointed, run="fixture") as store:
        executor = FixtureExecutor(CONFIG, store=store, name="worker")
        await executor.start()
        await executor.append(FixtureTask(name="tail", numerator=10, denominator=5))
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        await executor.stop()
        executor.close()  # no checkpoint at close: the tail stays a tail
        assert (await verify(store, run="fixture")).ok
    after = await open_state(checkpointed)
    assert after[2] == head
    assert [v[3] for v in after[0]] == [v[3] for v in full[0]] + [2]
    assert after[:2] == (await open_state(checkpointed, checkpoints=False))[:2]


async def test_checkpoints_are_not_written_with_checkpoints_off(upgraded: Path) -> None:
    await open_state(upgraded, checkpoints=False)
    assert checkpoint_rows(upgraded) == {}


def tamper(path: Path, name: str, change: Any) -> None:
    pos, digest, fmt, snap = checkpoint_rows(path)[name]
    new = change(pos, digest, fmt, snap)
    rows(
        path,
        "UPDATE lionstore_checkpoints SET position = ?, digest = ?, format_version = ?,"
        " snapshot = ? WHERE name = ?",
        *new,
        name,
    )


def _reseal(text: str, edit: Any) -> str:
    """The snapshot with its header (first line) edited, sealed again."""
    first, _, lines = (snapshot.verified_text(text) or "").partition("\n")
    body = json.loads(first)
    edit(body)
    return snapshot.sealed(f"{json.dumps(body)}\n{lines}")


def _reseal_cut_header(text: str) -> str:
    first, _, lines = (snapshot.verified_text(text) or "").partition("\n")
    return snapshot.sealed(f"{first[:-7]}\n{lines}")


def _drop_event(body: dict[str, Any]) -> None:
    body["ids"].pop()


def _set_mail_place(body: dict[str, Any]) -> None:
    body["where"] = "x" + body["where"][1:]


BAD = {
    "older format": lambda p, d, f, s: (p, d, f - 1, s),
    "newer format": lambda p, d, f, s: (p, d, f + 1, s),
    "tampered header": lambda p, d, f, s: (p, d, f, s.replace('"live":', '"livE":', 1)),
    "tampered event line": lambda p, d, f, s: (p, d, f, s.replace('"name":"ok"', '"name":"ko"')),
    "truncated json": lambda p, d, f, s: (p, d, f, s[: len(s) // 2]),
    "truncated header, resealed": lambda p, d, f, s: (p, d, f, _reseal_cut_header(s)),
    "digest of another log": lambda p, d, f, s: (p, "0" * 32, f, s),
    "position before the run": lambda p, d, f, s: (0, d, f, s),
    "position past the head": lambda p, d, f, s: (p + 1000, d, f, s),
    "inconsistent, resealed": lambda p, d, f, s: (p, d, f, _reseal(s, _drop_event)),
    "not a list, resealed": lambda p, d, f, s: (p, d, f, snapshot.sealed("[1, 2]")),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_a_bad_executor_checkpoint_is_ignored_and_rebuilt(
    checkpointed: Path, case: str
) -> None:
    full = await open_state(checkpointed, checkpoints=False)
    tamper(checkpointed, "executor:worker", BAD[case])
    opened = await open_state(checkpointed)
    assert opened[2] is None  # not restored from
    assert opened[:2] == full[:2]
    # ... and the checkpoint written at that close is a good one again
    assert (await open_state(checkpointed))[2] is not None


async def test_a_bad_mail_checkpoint_is_ignored_and_rebuilt(checkpointed: Path) -> None:
    full = await open_state(checkpointed, checkpoints=False)
    tamper(checkpointed, "mail:post", lambda p, d, f, s: (p, d, f, _reseal(s, _set_mail_place)))
    opened = await open_state(checkpointed)
    assert opened[3] is None and opened[:2] == full[:2]


async def test_a_checkpoint_whose_log_changed_is_ignored(checkpointed: Path) -> None:
    """The record at the checkpoint's position was rewritten (digest recomputed or not):
    the stored fingerprint no longer matches the log."""
    pos = checkpoint_rows(checkpointed)["executor:worker"][0]
    # the fingerprint is the run's last record at or before the position (59 is the fork's)
    ((anchor,),) = rows(
        checkpointed,
        "SELECT max(r.position) FROM lionstore_records r JOIN lionstore_runs u"
        " ON u.run_no = r.run_no WHERE u.label = 'fixture' AND r.position <= ?",
        pos,
    )
    assert anchor == 43 < pos
    # the record's time moved and the run's chain recomputed, as someone hiding an edit
    # would: the chain holds, but not at the checkpoint's digest
    rows(
        checkpointed,
        "UPDATE lionstore_records SET recorded_at_us = recorded_at_us + 1 WHERE position = ?",
        anchor,
    )
    _rechain(checkpointed, "fixture")
    opened = await open_state(checkpointed)
    assert opened[2] is None and opened[3] is None


async def test_a_log_whose_chain_is_broken_does_not_load(checkpointed: Path) -> None:
    """Only the digest rewritten (the chain broken there): the checkpoint is ignored and
    folding the log from the start stops at that record with a CorruptDatabaseError,
    rather than returning a state the log does not vouch for."""
    rows(checkpointed, "UPDATE lionstore_records SET digest = ? WHERE position = 43", "f" * 32)
    with pytest.raises(lionstore.CorruptDatabaseError, match="position 43 does not chain"):
        await open_state(checkpointed)


def _rechain(path: Path, label: str) -> None:
    """Recompute run ``label``'s digest chain over the stored bytes."""
    ((run_no, run_id),) = rows(
        path, "SELECT run_no, run_id FROM lionstore_runs WHERE label = ?", label
    )
    tip = chain_start(run_id)
    for row in rows(
        path,
        "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version,"
        " r.recorded_at_us, r.data FROM lionstore_records r JOIN lionstore_streams s"
        " ON s.stream_no = r.stream_no WHERE r.run_no = ? ORDER BY r.position",
        run_no,
    ):
        tip = record_digest(tip, *row)
        rows(path, "UPDATE lionstore_records SET digest = ? WHERE position = ?", tip, row[0])


async def test_no_checkpoint_while_an_event_is_in_flight(upgraded: Path) -> None:
    async with lionstore.open(upgraded, run="fixture") as store:
        executor = FixtureExecutor(CONFIG, store=store, name="worker")
        await executor.load()
        state = executor._repo.state
        assert snapshot.snapshot_ready(state)
        some = next(iter(state.versions))
        state.claims[some] = snapshot.Claim("someone", 1, 0, 1)
        assert not snapshot.snapshot_ready(state)
        assert await executor._repo.checkpoint() is False
        del state.claims[some]
        assert await executor._repo.checkpoint() is True
