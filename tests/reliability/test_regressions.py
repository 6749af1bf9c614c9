"""Bugs the reliability harness found, each pinned by the smallest scenario."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        assert report.ok, report.to_dict()
