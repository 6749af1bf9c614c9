"""Runs the command tests inspect: written by the library, into real files.

A module of its own (not conftest) so tests can import it by a name no other test
directory uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bounds import bounded

import lionstore
from lionstore.domain.ids import IDType


class Square(lionstore.Event):
    """Squares ``n``; a negative ``n`` makes ``invoke`` raise (the event ends FAILED)."""

    n: int

    async def invoke(self) -> None:
        if self.n < 0:
            raise ValueError(f"cannot square {self.n} here")
        self.response = self.n * self.n


@dataclass(frozen=True)
class WorkDb:
    """A run ``work``: executor ``calc`` squares 2, 3 and -1 (capacity 2: two cycles),
    then exchange ``post`` routes three mails among sources a, b, c and dead-letters a
    fourth to an unknown recipient.

    ``appended`` is the position after the events were appended (all pending),
    ``events_done`` after the executor finished, ``end`` the run's last position."""

    path: Path
    run_id: IDType
    events: list[IDType]
    sources: list[IDType]
    stranger: IDType
    appended: int
    events_done: int
    end: int


async def write_work_run(path: Path, label: str = "work") -> WorkDb:
    async with lionstore.open(path, run=label) as store:
        executor = lionstore.Executor(
            {"queue_capacity": 2, "capacity_refresh_time": 0.01}, store=store, name="calc"
        )
        await executor.start()
        events = [Square(n=2), Square(n=3), Square(n=-1)]
        await executor.extend(events)
        appended = await store.head()
        await executor.forward()
        await bounded(executor.join(), "executor.join()")
        events_done = await store.head()
        executor.close()
        a, b, c = lionstore.Source(), lionstore.Source(), lionstore.Source()
        exchange = lionstore.Exchange(store=store, name="post")
        await exchange.add_source([a, b, c])
        stranger = IDType.create()
        await a.send(exchange.create_mail(a, b, "message", "hi b"))
        await b.send(exchange.create_mail(b, c, "message", {"n": 1}))
        await a.send(exchange.create_mail(a, c, "signal", "ping"))
        await c.send(exchange.create_mail(c, stranger, "message", "lost"))
        await exchange.collect_all()
        await exchange.deliver_all()
        end = await store.head()
        return WorkDb(
            path,
            store.run_id,
            [e.id for e in events],
            [a.id, b.id, c.id],
            stranger,
            appended,
            events_done,
            end,
        )
