"""Hostile values given to every public object: each gets a clear LionstoreError
subclass (or TypeError/ValueError with a message), and a refused write changes no
byte of the database or its WAL.

The store's own ``append``/``read``/``open`` arguments are covered by
tests/log/test_bad_input.py; this file covers the objects built on it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

import lionstore
from lionstore import (
    Event,
    EventStatus,
    Exchange,
    Execution,
    Executor,
    IDError,
    LionstoreError,
    Mail,
    Mailbox,
    MailManager,
    Pile,
    Processor,
    Progression,
    Source,
)

MAX_RECORD_BYTES = 4096


class Loose(Event):
    """An event whose payload can be anything a caller puts there."""

    payload: Any = None

    async def invoke(self) -> None:
        self.response = "ok"


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


class Opaque:
    """Not JSON, not pydantic."""


@dataclass
class World:
    path: Path
    store: lionstore.Store
    executor: Executor
    exchange: Exchange
    manager: MailManager
    alice: Source
    bob: Source
    done: Loose

    def mail(self, item: Any, *, sender: Any = None, recipient: Any = None) -> Mail:
        return self.exchange.create_mail(
            sender or self.alice, recipient or self.bob, "message", item
        )


def fingerprint(path: Path) -> tuple[str, ...]:
    """A hash of the database file and its WAL (a refused write touches neither)."""
    out = []
    for p in (path, Path(f"{path}-wal")):
        out.append(hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-")
    return tuple(out)


@pytest_asyncio.fixture
async def world(db_target: str) -> AsyncIterator[World]:
    async with lionstore.open(db_target, run="hostile", max_record_bytes=MAX_RECORD_BYTES) as store:
        executor = Executor(
            {"queue_capacity": 5, "capacity_refresh_time": 0.01}, store=store, name="hostile"
        )
        await executor.start()
        done = Loose(payload={"fine": True})
        await executor.append(done)
        await executor.forward()
        alice, bob = Source(), Source()
        exchange = Exchange(store=store, name="post")
        await exchange.add_source([alice, bob])
        manager = MailManager(store=store, name="manager")
        await manager.add_sources([Source(), Source()])
        await alice.send(exchange.create_mail(alice, bob, "message", "hello"))
        yield World(Path(db_target), store, executor, exchange, manager, alice, bob, done)


NOT_A_UUID = ["", "not-a-uuid", "1234", 42, 4.2, None, b"\x00" * 16, object(), [], {}]
HUGE = "x" * (MAX_RECORD_BYTES * 2)

# (name, the call, the errors allowed). A call returns a value or an awaitable.
Case = tuple[str, Callable[[World], Any], tuple[type[BaseException], ...]]
BAD_ID = (IDError,)
BAD_ARG = (TypeError, ValueError)

CASES: list[Case] = [
    # -- Executor --------------------------------------------------------------------
    ("Executor(store=str)", lambda w: Executor(store="db"), (TypeError,)),  # type: ignore[arg-type]
    ("Executor(config=list)", lambda w: Executor([1], store=w.store), (TypeError,)),  # type: ignore[arg-type]
    ("Executor(name='')", lambda w: Executor(store=w.store, name=""), (ValueError,)),
    ("Executor(name=5)", lambda w: Executor(store=w.store, name=5), (ValueError,)),  # type: ignore[arg-type]
    ("executor.append(str)", lambda w: w.executor.append("event"), BAD_ARG),  # type: ignore[arg-type]
    ("executor.append(None)", lambda w: w.executor.append(None), BAD_ARG),  # type: ignore[arg-type]
    ("executor.append(mail)", lambda w: w.executor.append(w.mail("x")), BAD_ARG),  # type: ignore[arg-type]
    ("executor.extend(int)", lambda w: w.executor.extend(5), BAD_ARG),  # type: ignore[arg-type]
    (
        "executor.extend(one bad among good)",
        lambda w: w.executor.extend([Loose(), "bad", Loose()]),  # type: ignore[list-item]
        BAD_ARG,
    ),
    ("event with NaN", lambda w: w.executor.append(Loose(payload=math.nan)), BAD_ARG),
    ("event with -inf", lambda w: w.executor.append(Loose(payload=[-math.inf])), BAD_ARG),
    ("event with a huge string", lambda w: w.executor.append(Loose(payload=HUGE)), BAD_ARG),
    (
        "event nested 100,000 deep",
        lambda w: w.executor.append(Loose(payload=deep(100_000))),
        BAD_ARG,
    ),
    ("event with an object", lambda w: w.executor.append(Loose(payload=Opaque())), BAD_ARG),
    ("event with bytes", lambda w: w.executor.append(Loose(payload=b"\xff\xfe")), BAD_ARG),
    (
        "event with a lone surrogate",
        lambda w: w.executor.append(Loose(payload="\udc80")),
        BAD_ARG,
    ),
    ("executor.retry(bad id)", lambda w: w.executor.retry("nope"), BAD_ID),
    (
        "executor.retry(unknown)",
        lambda w: w.executor.retry(lionstore.IDType.create()),
        (LookupError,),
    ),
    ("executor.attempts(bad id)", lambda w: w.executor.attempts(3.5), BAD_ID),
    ("executor.pile.append", lambda w: w.executor.pile.append(Loose()), (TypeError,)),
    ("executor.pending.append", lambda w: w.executor.pending.append(w.done.id), (TypeError,)),
    # -- Processor -------------------------------------------------------------------
    ("Processor(capacity=str)", lambda w: Processor("1", 1.0), (TypeError,)),  # type: ignore[arg-type]
    ("Processor(capacity=0)", lambda w: Processor(0, 1.0), (ValueError,)),
    ("Processor(refresh=-1)", lambda w: Processor(1, -1.0), (ValueError,)),
    ("Processor(refresh=NaN)", lambda w: Processor(1, math.nan), (ValueError,)),
    ("Processor(refresh=inf)", lambda w: Processor(1, math.inf), (ValueError,)),
    ("Processor(lease=NaN)", lambda w: Processor(1, 1.0, lease_seconds=math.nan), (ValueError,)),
    ("Processor(lease=inf)", lambda w: Processor(1, 1.0, lease_seconds=math.inf), (ValueError,)),
    ("Processor(backoff=NaN)", lambda w: Processor(1, 1.0, max_backoff=math.nan), (ValueError,)),
    ("Processor(attempts=True)", lambda w: Processor(1, 1.0, max_attempts=True), (ValueError,)),
    (
        "executor config with NaN",
        lambda w: Executor(
            {"queue_capacity": 1, "capacity_refresh_time": math.nan}, store=w.store, name="nan"
        ).start(),
        (ValueError,),
    ),
    ("processor.enqueue(str)", lambda w: w.executor.processor.enqueue("e"), BAD_ARG),  # type: ignore[union-attr,arg-type]
    # -- enums -----------------------------------------------------------------------
    ("EventStatus('done')", lambda w: EventStatus("done"), (ValueError,)),
    ("Execution(status='done')", lambda w: Execution(status="done"), (ValueError,)),
    ("event.status = 'done'", lambda w: setattr(Loose(), "status", "done"), (ValueError,)),
    (
        "create_mail(category='telegram')",
        lambda w: w.exchange.create_mail(w.alice, w.bob, "telegram", "x"),
        BAD_ARG,
    ),
    (
        "create_mail(category=None)",
        lambda w: w.exchange.create_mail(w.alice, w.bob, None, "x"),
        BAD_ARG,
    ),
    # -- Exchange --------------------------------------------------------------------
    ("Exchange(store=object())", lambda w: Exchange(store=object()), (TypeError,)),  # type: ignore[arg-type]
    ("Exchange(sources=[object])", lambda w: Exchange([object()], store=w.store), (TypeError,)),
    ("Exchange(name='')", lambda w: Exchange(store=w.store, name=""), (ValueError,)),
    ("exchange.add_source(object)", lambda w: w.exchange.add_source(object()), (TypeError,)),
    ("exchange.add_source(str)", lambda w: w.exchange.add_source("alice"), (TypeError,)),
    (
        "exchange.add_source(good and bad)",
        lambda w: w.exchange.add_source([Source(), object()]),
        (TypeError,),
    ),
    (
        "exchange.delete_source(unknown)",
        lambda w: w.exchange.delete_source(Source()),
        (LookupError,),
    ),
    ("exchange.collect(unknown)", lambda w: w.exchange.collect(Source()), (LookupError,)),
    ("exchange.deliver(unknown)", lambda w: w.exchange.deliver(Source()), (LookupError,)),
    ("exchange.execute(str)", lambda w: w.exchange.execute("1"), (TypeError,)),  # type: ignore[arg-type]
    ("exchange.execute(0)", lambda w: w.exchange.execute(0), (ValueError,)),
    ("exchange.execute(NaN)", lambda w: w.exchange.execute(math.nan), (ValueError,)),
    # -- sending ---------------------------------------------------------------------
    ("send(NaN)", lambda w: w.alice.send(w.mail({"x": math.nan})), BAD_ARG),
    ("send(huge)", lambda w: w.alice.send(w.mail(HUGE)), BAD_ARG),
    ("send(deep)", lambda w: w.alice.send(w.mail(deep(100_000))), BAD_ARG),
    ("send(object)", lambda w: w.alice.send(w.mail(Opaque())), BAD_ARG),
    ("send(str)", lambda w: w.alice.send("hello"), BAD_ARG),  # type: ignore[arg-type]
    ("send(someone else's mail)", lambda w: w.alice.send(w.mail("x", sender=w.bob)), BAD_ARG),
    # -- MailManager -----------------------------------------------------------------
    ("manager.add_sources(object)", lambda w: w.manager.add_sources(object()), (TypeError,)),
    ("manager.delete_source(unknown)", lambda w: w.manager.delete_source(Source()), (LookupError,)),
    ("manager.send(unknown)", lambda w: w.manager.send(Source()), (LookupError,)),
    ("manager.collect(unknown)", lambda w: w.manager.collect(Source()), (LookupError,)),
    # -- Mailbox ---------------------------------------------------------------------
    ("unbound mailbox.append_out", lambda w: Mailbox().append_out(w.mail("x")), (LionstoreError,)),
    ("mailbox.append_in(not for it)", lambda w: w.alice.mailbox.append_in(w.mail("x")), BAD_ARG),
    ("mailbox.append_out(str)", lambda w: w.alice.mailbox.append_out("x"), BAD_ARG),  # type: ignore[arg-type]
    ("mailbox.exclude(bad id)", lambda w: w.alice.mailbox.exclude("bad"), BAD_ID),
    ("mailbox.pile_.clear()", lambda w: w.alice.mailbox.pile_.clear(), (TypeError,)),
    ("Mailbox(owner=bad)", lambda w: Mailbox(owner="bad"), BAD_ID),
    # -- Pile and Progression --------------------------------------------------------
    ("Pile([1])", lambda w: Pile([1]), BAD_ARG),
    ("Pile(strict) wrong type", lambda w: Pile([Source()], item_type=Loose), BAD_ARG),
    ("pile.get(bad id)", lambda w: Pile([Loose()]).get("bad"), (IDError, LookupError)),
    ("pile.include(int)", lambda w: Pile([Loose()]).include(5), BAD_ARG),
    ("pile.insert(str index)", lambda w: Pile([Loose()]).insert("0", Loose()), BAD_ARG),  # type: ignore[arg-type]
    ("pile.remove(unknown)", lambda w: Pile([Loose()]).remove(Loose()), (LookupError,)),
    ("pile.pop() empty", lambda w: Pile().pop(), (LookupError,)),
    ("Progression(order=[bad])", lambda w: Progression(order=["bad"]), BAD_ARG),
    ("progression.append(int)", lambda w: Progression().append(5), BAD_ID),
    ("progression.index(bad)", lambda w: Progression().index("bad"), (IDError, LookupError)),
    ("progression.popleft() empty", lambda w: Progression().popleft(), (LookupError,)),
    ("progression.insert(str, id)", lambda w: Progression().insert("0", Loose()), BAD_ARG),  # type: ignore[arg-type]
    ("progression.extend(list)", lambda w: Progression().extend([Loose()]), BAD_ARG),  # type: ignore[arg-type]
    # -- Store -----------------------------------------------------------------------
    ("store.fork(at=-1)", lambda w: w.store.fork(-1), BAD_ARG),
    ("store.fork(at=str)", lambda w: w.store.fork("1"), BAD_ARG),  # type: ignore[arg-type]
    ("store.fork(at=NaN)", lambda w: w.store.fork(math.nan), BAD_ARG),  # type: ignore[arg-type]
    ("store.fork(label=5)", lambda w: w.store.fork(1, label=5), BAD_ARG),  # type: ignore[arg-type]
    ("store.find_run(5)", lambda w: w.store.find_run(5), (*BAD_ARG, LookupError)),  # type: ignore[arg-type]
    ("store.subscribe(5)", lambda w: w.store.subscribe(5), (TypeError,)),  # type: ignore[arg-type]
]

BAD_ID_CASES: list[Case] = [
    case
    for i, bad in enumerate(NOT_A_UUID)
    for case in (
        (f"to_id({bad!r})", lambda w, b=bad: lionstore.to_id(b), BAD_ID),
        (f"exchange.collect({bad!r})", lambda w, b=bad: w.exchange.collect(b), BAD_ID),
        (f"exchange.delete_source({bad!r})", lambda w, b=bad: w.exchange.delete_source(b), BAD_ID),
        (f"manager.send({bad!r})", lambda w, b=bad: w.manager.send(b), BAD_ID),
        (f"executor.retry({bad!r})", lambda w, b=bad: w.executor.retry(b), (*BAD_ID, TypeError)),
        (
            f"create_mail(recipient={bad!r})",
            lambda w, b=bad: w.exchange.create_mail(w.alice, b, "message", "x"),
            BAD_ID,
        ),
        (f"Source(id={bad!r})", lambda w, b=bad: Source(id=b), BAD_ARG),
    )
    # an empty list or None names no source and no event: those calls do nothing
    if not (i == 0 and case[0].startswith("Source"))
    and not (bad in (None, []) and case[0].startswith(("exchange.delete", "executor.retry")))
]


@pytest.mark.parametrize(
    ("name", "call", "errors"), CASES + BAD_ID_CASES, ids=lambda v: v if isinstance(v, str) else ""
)
async def test_hostile_value_is_refused_and_nothing_is_written(
    world: World,
    name: str,
    call: Callable[[World], Any],
    errors: tuple[type[BaseException], ...],
) -> None:
    await world.store.sync()
    before_head = await world.store.head()
    before_files = fingerprint(world.path)
    with pytest.raises(errors) as caught:
        result = call(world)
        if isinstance(result, Awaitable):
            await result
    assert str(caught.value).strip(), f"{name}: {type(caught.value).__name__} without a message"
    assert await world.store.head() == before_head, name
    assert fingerprint(world.path) == before_files, name
    # and the store still works
    await world.executor.append(Loose(payload=name[:50]))
