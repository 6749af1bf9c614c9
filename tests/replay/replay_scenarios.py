"""A recorded run for the replay tests: an executor with a denial, a failure and a
retry, and an exchange with a dead letter and a deleted source, written with a
snapshot of the live objects' state after every commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bounds import bounded
from dbtools import query

import lionstore
from lionstore.domain.ids import IDType
from lionstore.domain.records import Recorded
from lionstore.replay import RunProjection

EXECUTOR = "jobs"
ROUTER = "post"


class ReplayJob(lionstore.Event):
    """Returns ``value`` squared; a negative value raises (FAILED)."""

    value: int
    label: str = ""

    @property
    def request(self) -> dict[str, Any]:
        return {"label": self.label}

    async def invoke(self) -> None:
        if self.value < 0:
            raise ValueError(f"negative: {self.value}")
        self.response = self.value * self.value


class DenyOnce(lionstore.Processor):
    """Denies the first request of the job labelled ``slow``."""

    event_type: ClassVar[type[lionstore.Event]] = ReplayJob

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.denied = False

    async def request_permission(self, **kwargs: Any) -> bool:
        if kwargs.get("label") == "slow" and not self.denied:
            self.denied = True
            return False
        return True


class JobExecutor(lionstore.Executor):
    processor_type: ClassVar[type[lionstore.Processor]] = DenyOnce


def live_state(executor: lionstore.Executor, exchange: lionstore.Exchange) -> dict[str, Any]:
    """What the live objects show, in the shape :func:`rebuilt_state` gives."""
    assert executor.processor is not None
    events = [
        (e.id, e.status.value, e.execution.response, e.execution.error, executor.attempts(e))
        for e in executor.pile
    ]
    active = [s.id for s in exchange.sources]
    boxes = exchange.mailboxes
    return {
        "events": events,
        "pending": list(executor.pending),
        "queue": list(executor.processor.queue),
        "sources": sorted(active),
        "boxes": {
            sid: (
                list(boxes[sid].pending_outs),
                {s: list(q) for s, q in boxes[sid].pending_ins.items() if len(q)},
            )
            for sid in sorted(active)
        },
        "buffer": {r: [m.id for m in mails] for r, mails in exchange.buffer.items() if mails},
        "dead": [(d.mail.id, d.reason, d.stage) for d in exchange.dead_letters],
    }


def rebuilt_state(projection: RunProjection) -> dict[str, Any]:
    """The same view, from a projection :func:`lionstore.replay.rebuild` made."""
    executor = projection.executors[EXECUTOR]
    events = [
        (
            e.id,
            e.status.value,
            e.execution.response,
            e.execution.error,
            executor.attempts.get(e.id, 0),
        )
        for e in executor.pile
    ]
    router = projection.routers.get(ROUTER)
    if router is None:
        return {
            "events": events,
            "pending": list(executor.pending),
            "queue": list(executor.queue),
            "sources": [],
            "boxes": {},
            "buffer": {},
            "dead": [],
        }
    active = sorted(router.sources)
    return {
        "events": events,
        "pending": list(executor.pending),
        "queue": list(executor.queue),
        "sources": active,
        "boxes": {
            sid: (
                list(router.boxes[sid].outs) if sid in router.boxes else [],
                {s: list(q) for s, q in router.boxes[sid].ins.items() if q}
                if sid in router.boxes
                else {},
            )
            for sid in active
        },
        "buffer": {r: list(q) for r, q in router.buffer.items() if q},
        "dead": [
            (d.mail.id, d.reason, d.stage)
            for d in sorted(router.dead.values(), key=lambda d: d.position)
        ],
    }


@dataclass
class Recording:
    """The run and, per commit, the live state right after it: position -> state."""

    path: str  # the database: a SQLite file or a PostgreSQL URL
    run_id: IDType
    label: str
    jobs: list[IDType] = field(default_factory=list)
    sources: list[IDType] = field(default_factory=list)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    commit_times: dict[int, int] = field(default_factory=dict)  # position -> recorded_at_us
    end: int = 0


async def record_run(path: str, label: str = "replay") -> Recording:
    async with lionstore.open(path, run=label) as store:
        recording = Recording(path, store.run_id, label)
        executor = JobExecutor(
            {"queue_capacity": 2, "capacity_refresh_time": 0.02}, store=store, name=EXECUTOR
        )
        await executor.start()
        exchange = lionstore.Exchange(store=store, name=ROUTER)
        await exchange.load()

        def snapshot(records: list[Recorded] | Any) -> None:
            last = records[-1]
            recording.snapshots[last.position] = live_state(executor, exchange)
            recording.commit_times[last.position] = last.recorded_at_us

        subscription = store.subscribe(snapshot)
        jobs = [
            ReplayJob(value=2, label="fast"),
            ReplayJob(value=3, label="slow"),
            ReplayJob(value=-1, label="bad"),
        ]
        recording.jobs = [j.id for j in jobs]
        await executor.extend(jobs)
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        await executor.retry(jobs[2])  # a FAILED job, explicitly run again
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        a, b, c = lionstore.Source(), lionstore.Source(), lionstore.Source()
        recording.sources = [a.id, b.id, c.id]
        await exchange.add_source([a, b, c])
        await a.send(exchange.create_mail(a, b, "message", "one"))
        await b.send(exchange.create_mail(b, a, "message", {"two": 2}))
        await a.send(exchange.create_mail(a, IDType.create(), "signal", "nobody"))
        await exchange.collect(a)
        await exchange.deliver(b)
        await c.send(exchange.create_mail(c, a, "message", "from c"))
        await exchange.collect_all()  # "from c" is collected: delivered after c is deleted
        await c.send(exchange.create_mail(c, b, "message", "still in c's outbox"))
        await exchange.delete_source(c)
        await a.send(exchange.create_mail(a, c, "message", "to a deleted source"))
        await exchange.collect_all()
        await exchange.deliver_all()
        subscription.close()
        executor.close()
        recording.end = await store.head()
    return recording


# -- editing a database behind lionstore's back ------------------------------------------


def positions(target: str, kind: str) -> list[int]:
    rows = query(
        target, "SELECT position FROM lionstore_records WHERE kind = ? ORDER BY position", kind
    )
    return [p for (p,) in rows]
