"""Bugs the reliability harness found, each pinned by the smallest scenario."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lionstore
from lionstore import Exchange, Source
from lionstore.replay import verify


async def test_verify_accepts_delete_source_dead_lettering_mail_behind_an_outbox_head(
    open_store: Callable[..., Any],
) -> None:
    """delete_source dead-letters mail *to* the deleted source wherever it waits in
    another source's outbox; verify reported that as "collected out of FIFO order"
    when the mail was not at the head of the outbox (found by the crash loop)."""
    async with open_store(run="r") as store:
        alice, bob, doomed = Source(), Source(), Source()
        exchange = Exchange(store=store, name="post")
        await exchange.add_source([alice, bob, doomed])
        await alice.send(exchange.create_mail(alice, bob, "message", "first"))
        await alice.send(exchange.create_mail(alice, doomed, "message", "second"))
        await bob.send(exchange.create_mail(bob, doomed, "message", "third"))
        await exchange.delete_source(doomed)
        assert [d.reason for d in exchange.dead_letters] == ["recipient_deleted"] * 2
        await exchange.collect_all()
        await exchange.deliver_all()
        report = await verify(store)
        assert report.ok, repr(report.divergence)


class Step(lionstore.Event):
    async def invoke(self) -> None:
        self.response = "ok"


async def test_verify_accepts_a_cycle_that_lost_a_race_and_claimed_fewer(
    db_target: str,
) -> None:
    """Processor A chose the queue head [e1, e2] (capacity 2); B (capacity 1) claimed e1 first; A's
    append lost the race, decided again and claimed e2 alone, still recording the
    position it had first seen. verify expected A to claim e2 *and* e3 (found by the
    four-process test)."""
    config = {"queue_capacity": 2, "capacity_refresh_time": 0.01}
    async with (
        lionstore.open(db_target, run="race") as store_a,
        lionstore.open(db_target, run="race") as store_b,
    ):
        a = lionstore.Executor(config, store=store_a, name="x")
        await a.start()
        events = [Step(), Step(), Step()]
        await a.extend(events)
        await a._repo.queue([e.id for e in events])
        b = lionstore.Executor({**config, "queue_capacity": 1}, store=store_b, name="x")
        await b.start()
        assert a.processor is not None and b.processor is not None
        await store_a.sync()
        await a._repo.sync()
        seen_by_a = a._repo.state.position
        won_b = await b._repo.claim(
            [events[0].id],
            [],
            owner=b.processor.owner,
            lease_seconds=b.processor.lease_seconds,
            cycle=1,
            backoff=b.processor._backoff,
            seen=b._repo.state.position,
        )
        assert [e.id for e, _, _ in won_b] == [events[0].id]
        won_a = await a._repo.claim(
            [events[0].id, events[1].id],
            [],
            owner=a.processor.owner,
            lease_seconds=a.processor.lease_seconds,
            cycle=1,
            backoff=a.processor._backoff,
            seen=seen_by_a,
        )
        assert [e.id for e, _, _ in won_a] == [events[1].id]  # e1 was taken meanwhile
        report = await verify(store_a)
        assert report.ok, repr(report.divergence)
