"""The ``lionstore ui`` JSON API (lionstore.ui.api.RunViewer) on SQLite and PostgreSQL:
the same answers from a file path and from a URL."""

from __future__ import annotations

import asyncio
from typing import Any

import lionstore
from lionstore.mail.exchange import Exchange
from lionstore.mail.source import Source
from lionstore.ui.api import NotFoundError, RunViewer


class Halve(lionstore.Event):
    """Halves ``n``; an odd ``n`` fails."""

    name: str
    n: int

    async def invoke(self) -> None:
        if self.n % 2:
            raise ValueError(f"{self.n} is odd")
        self.response = self.n // 2


class Named(Source):
    name: str


async def _record(target: str) -> None:
    async with lionstore.open(target, run="halving") as store:
        executor = lionstore.Executor({"queue_capacity": 5, "capacity_refresh_time": 0.01})
        await executor.start()
        await executor.extend([Halve(name=f"halve-{n}", n=n) for n in (4, 7, 10)])
        await executor.forward()
        await asyncio.wait_for(executor.join(), timeout=30)
        a, b = Named(name="alice"), Named(name="bob")
        exchange = Exchange(store=store, name="post")
        await exchange.add_source([a, b])
        await a.send(exchange.create_mail(a, b, "message", {"hi": "bob"}))
        await a.send(exchange.create_mail(a, lionstore.IDType.create(), "message", "void"))
        await exchange.collect_all()
        await exchange.deliver_all()


async def test_the_viewer_answers_from_a_path_or_a_url(db_target: str) -> None:
    await _record(db_target)
    viewer = RunViewer(db_target)
    await viewer.open()
    try:
        (run,) = await viewer.runs()
        assert run["label"] == "halving"
        assert run["events"] == {"completed": 2, "failed": 1}
        assert run["mail"] == {"inbox": 1, "dead": 1}
        assert run["duration_us"] > 0 and run["records"] == run["position"]
        tl = await viewer.timeline("halving")
        summary = tl.summary()
        lanes = summary["lanes"]
        assert lanes[0] == {"key": f"x:{tl.executors[0]}", "kind": "executor",
                            "title": f"executor {tl.executors[0]}"}  # fmt: skip
        assert [lane["title"] for lane in lanes[1:4]] == ["halve-4", "halve-7", "halve-10"]
        assert [lane["title"] for lane in summary["lanes"] if lane["kind"] == "source"][:2] == [
            "alice",
            "bob",
        ]
        failed = next(e for e in tl.events.values() if e.name == "halve-7")
        event: dict[str, Any] = await viewer.event("halving", failed.id)
        assert event["event"]["error"] == "ValueError: 7 is odd"
        assert event["fields"] == {"name": "halve-7", "n": 7}
        assert event["records"][0]["kind"] == "event.appended"
        assert [r["position"] for r in event["records"]] == sorted(
            r["position"] for r in event["records"]
        )
        dead = next(m for m in tl.mails.values() if m.outcome == "dead letter")
        mail = await viewer.mail("halving", dead.id)
        assert mail["sender_name"] == "alice" and mail["mail"]["reason"] == "recipient_unknown"
        state = await viewer.state("halving", event["records"][0]["position"])
        assert len(state["executors"][failed.executor]["events"]) >= 1
        verified = await viewer.verify("halving")
        assert verified["ok"] is True and verified["divergence"] is None
        try:
            await viewer.event("halving", "no-such-event")
            raise AssertionError("an unknown event was found")
        except NotFoundError as exc:
            assert "no event" in str(exc)
    finally:
        await viewer.close()
