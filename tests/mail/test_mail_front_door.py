"""The front door of the mail system: reopened routers read at once, the seed's
``MySource`` with its synchronous ``send``, one source in two routers, delete_source
and the seed's stop flags. Every test runs on SQLite and PostgreSQL (real files, real
servers); the examples run as real subprocesses."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore import (
    Communicatable,
    Exchange,
    IDType,
    Mail,
    Mailbox,
    MailManager,
    PackageCategory,
    Source,
)
from lionstore.domain.mail_records import SourceAdded
from lionstore.errors import RecordTooLargeError, SourceError

from .mailtools import kinds_by_mail, log_records, wait_for

REPO = Path(__file__).resolve().parents[2]
ONCE = ["mail.sent", "mail.collected", "mail.delivered"]


class MySource(Communicatable):
    """The seed's source: a plain class whose ``send`` is synchronous."""

    # Must define 'mailbox' and 'send' method for Communicatable
    def __init__(self) -> None:
        self.id = IDType.create()
        self.mailbox = Mailbox()

    def send(self, mail: Mail) -> None:
        self.mailbox.append_out(mail)


def snapshot(router: Any) -> dict[str, Any]:
    """What a router shows, as ids in order."""
    boxes = {
        sid: (
            [m.id for m in box.pile_],
            list(box.pending_outs),
            {s: list(p) for s, p in box.pending_ins.items()},
        )
        for sid, box in router.mailboxes.items()
    }
    return {
        "sources": [s.id for s in router.sources],
        "mailboxes": boxes,
        "dead": [(d.mail.id, d.reason, d.stage) for d in router.dead_letters],
    }


def items(box: Mailbox) -> list[Any]:
    return [m.package.item for m in box.pile_]


async def _mail_history(store: lionstore.Store) -> dict[str, Any]:
    """An Exchange "ex" and a MailManager "mm" with mail in every place."""
    a, b = Source(), Source()
    ex = Exchange([a, b], store=store, name="ex")
    await a.send(ex.create_mail(a, b, "message", "delivered"))
    await ex.collect_all()
    await ex.deliver_all()
    await a.send(ex.create_mail(a, b, "message", "buffered"))
    await a.send(ex.create_mail(a, IDType.create(), "message", "to nobody"))
    await ex.collect_all()
    await b.send(ex.create_mail(b, a, "message", "in the outbox"))
    mm = MailManager([a, b], store=store, name="mm")
    await mm.sync()
    await mm.mailboxes[a.id].append_out(mm.create_mail(a, b, "message", "queued in mm"))
    await mm.collect_all()
    return {
        "ex": snapshot(ex),
        "buffer": {r: [m.id for m in q] for r, q in ex.buffer.items()},
        "mm": snapshot(mm),
        "mails": {r: {s: [m.id for m in q] for s, q in by.items()} for r, by in mm.mails.items()},
        "ids": (a.id, b.id),
    }


# -- 1. reopen without ceremony ----------------------------------------------------------


async def test_reopened_routers_read_their_history_right_after_the_constructor(
    open_store: Any,
) -> None:
    async with open_store(run="mail") as store:
        before = await _mail_history(store)
    async with open_store(run="mail") as store:
        ex = Exchange(store=store, name="ex")
        mm = MailManager(store=store, name="mm")
        assert snapshot(ex) == before["ex"]
        assert {r: [m.id for m in q] for r, q in ex.buffer.items()} == before["buffer"]
        assert snapshot(mm) == before["mm"]
        mails = {r: {s: [m.id for m in q] for s, q in by.items()} for r, by in mm.mails.items()}
        assert mails == before["mails"]
        assert len(ex.dead_letters) == 1 and ex.dead_letters[0].reason == "recipient_unknown"
        # ... and they carry on
        assert await ex.deliver_all() == 1 and await mm.send_all() == 1


@pytest.mark.parametrize("view", ["sources", "mailboxes", "buffer", "dead_letters", "box"])
async def test_each_router_view_read_first_folds_the_history(open_store: Any, view: str) -> None:
    async with open_store(run="mail") as store:
        before = await _mail_history(store)
    a_id, _ = before["ids"]
    async with open_store(run="mail") as store:
        ex = Exchange(store=store, name="ex")
        if view == "box":
            same_a = Source(id=a_id)
            ex = Exchange([same_a], store=store, name="ex")
            assert len(same_a.mailbox) == len(before["ex"]["mailboxes"][a_id][0])
        else:
            getattr(ex, view)
        assert snapshot(ex) == before["ex"]


async def test_a_new_manager_with_sources_on_a_run_with_history_shows_its_mailboxes(
    open_store: Any,
) -> None:
    async with open_store(run="mail") as store:
        await _mail_history(store)
    async with open_store(run="mail") as store:
        a, b = Source(), Source()
        manager = MailManager([a, b], store=store, name="new")
        # today's NotLoadedError "has history in the log" is gone
        assert manager.mailboxes[a.id] is a.mailbox and len(manager.mailboxes[b.id]) == 0
        assert [s.id for s in manager.sources] == [a.id, b.id]
        assert manager.mails == {} and manager.dead_letters == []
        a.mailbox.append_out(manager.create_mail(a, b, "message", "hi"))  # sync, as lionagi
        assert await manager.collect_all() == 1 and await manager.send_all() == 1
        assert items(b.mailbox) == ["hi"]
        added = [r for r in await log_records(store, kinds=["source.added"])]
        assert all(isinstance(r.data, SourceAdded) for r in added)
        new = [r for r in added if isinstance(r.data, SourceAdded) and r.data.router == "new"]
        assert [r.stream_id for r in new] == [a.id, b.id]


async def test_the_ambient_store_reads_a_reopened_run(db_target: str) -> None:
    async with lionstore.open(db_target, run="mail") as store:
        before = await _mail_history(store)
    async with lionstore.open(db_target, run="mail"):
        ex = Exchange(name="ex")  # no store=: the store this block opened
        mm = MailManager(name="mm")
        assert snapshot(ex) == before["ex"] and snapshot(mm) == before["mm"]
        a_id, b_id = before["ids"]
        box = Exchange([Source(id=a_id), Source(id=b_id)], name="ex").mailboxes[a_id]
        ins = {s: list(p) for s, p in box.pending_ins.items()}
        shown = ([m.id for m in box.pile_], list(box.pending_outs), ins)
        assert shown == before["ex"]["mailboxes"][a_id]


# -- 2. the seed's MySource: a synchronous send --------------------------------------------


async def test_a_sync_send_is_recorded_collected_and_survives_a_reopen(db_target: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with lionstore.open(db_target, run="seed") as store:
            src_a, src_b = MySource(), MySource()
            exchange = Exchange([src_a, src_b], store=store, name="ex")
            mail = exchange.create_mail(src_a, src_b, PackageCategory.MESSAGE, "Hello from A!")
            seed_source: Communicatable = src_a  # typed as the router sees it
            assert seed_source.send(mail) is None  # the seed's send returns nothing
            assert await exchange.collect_all() == 1
            assert await exchange.deliver_all() == 1
            assert items(src_b.mailbox) == ["Hello from A!"]
            assert (await kinds_by_mail(store))[mail.id] == ONCE
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught
    async with lionstore.open(db_target, run="seed") as store:
        reopened = Exchange(store=store, name="ex")
        assert items(reopened.mailboxes[src_b.id]) == ["Hello from A!"]


async def test_a_sync_send_left_alone_is_committed_by_the_store_close(db_target: str) -> None:
    async with lionstore.open(db_target, run="seed") as store:
        src_a, src_b = MySource(), MySource()
        exchange = Exchange([src_a, src_b], store=store, name="ex")
        mails = [exchange.create_mail(src_a, src_b, "message", n) for n in range(3)]
        for mail in mails:
            src_a.send(mail)  # and nothing awaited after: the close waits for them
    async with lionstore.open(db_target, run="seed") as store:
        reopened = Exchange(store=store, name="ex")
        assert list(reopened.mailboxes[src_a.id].pending_outs) == [m.id for m in mails]
        assert await reopened.collect_all() == 3 and await reopened.deliver_all() == 3
        assert items(reopened.mailboxes[src_b.id]) == [0, 1, 2]  # in the order sent


async def test_a_mailbox_write_can_be_awaited_and_keeps_the_order_of_the_calls(
    store: lionstore.Store,
) -> None:
    a, b = MySource(), MySource()
    ex = Exchange([a, b], store=store)
    first = ex.create_mail(a, b, "message", "first")
    second = ex.create_mail(a, b, "message", "second")
    a.send(first)
    pending = a.mailbox.append_out(second)
    await asyncio.wait_for(pending, timeout=10)  # waits for the commit
    assert pending.done() and list(a.mailbox.pending_outs) == [first.id, second.id]
    await a.mailbox.exclude(first)
    assert list(a.mailbox.pending_outs) == [second.id]
    direct = ex.create_mail(b, b, "message", "straight in")
    b.mailbox.append_in(direct)
    assert await ex.collect_all() == 1 and await ex.deliver_all() == 1
    assert items(b.mailbox) == ["straight in", "second"]


async def test_a_sync_send_with_no_running_loop_is_refused_and_writes_nothing(
    store: lionstore.Store,
) -> None:
    a, b = MySource(), MySource()
    ex = Exchange([a, b], store=store)
    await ex.sync()
    head = await store.head()
    mail = ex.create_mail(a, b, "message", "from a thread")
    with pytest.raises(SourceError, match="running event loop"):
        await asyncio.to_thread(a.send, mail)
    assert await store.head() == head
    assert await ex.collect_all() == 0


async def test_an_unstorable_mail_is_refused_by_the_sync_call_itself(db_target: str) -> None:
    async with lionstore.open(db_target, run="r", max_record_bytes=1024) as store:
        a, b = MySource(), MySource()
        ex = Exchange([a, b], store=store)
        await ex.sync()
        head = await store.head()
        with pytest.raises(RecordTooLargeError):
            a.send(ex.create_mail(a, b, "message", "x" * 5000))
        with pytest.raises(lionstore.MailError):
            a.send(ex.create_mail(b, a, "message", "not from a"))
        with pytest.raises(TypeError):
            a.mailbox.append_out("not a mail")  # type: ignore[arg-type]
        assert await ex.collect_all() == 0
        assert await store.head() == head


async def test_the_seed_example_as_written_both_approaches_on_the_same_sources(
    db_target: str,
) -> None:
    """seeds/mail-system.txt's usage example with ``await`` on lionstore's async methods;
    MySource.send stays synchronous."""
    async with lionstore.open(db_target, run="seed") as store:
        # Create two sources
        srcA, srcB = MySource(), MySource()  # noqa: N806 - the seed's names

        # Approach 1: Use Exchange
        exchange = Exchange([srcA, srcB])
        mail = exchange.create_mail(
            sender=srcA,
            recipient=srcB,
            category=PackageCategory.MESSAGE,
            item="Hello from A!",
        )
        srcA.send(mail)
        assert await exchange.collect_all() == 1
        assert await exchange.deliver_all() == 1

        # Approach 2: Use MailManager
        manager = MailManager([srcA, srcB])
        mail2 = manager.create_mail(
            sender=srcA.id,
            recipient=srcB.id,
            category=PackageCategory.MESSAGE,
            package="Another greeting",
        )
        # "Normally you'd place mail2 in srcA's mailbox, then manager.collect_all() ->
        # manager.send_all()."
        srcA.send(mail2)
        assert await manager.collect_all() == 1
        assert await manager.send_all() == 1

        assert items(exchange.mailboxes[srcB.id]) == ["Hello from A!"]
        assert items(manager.mailboxes[srcB.id]) == ["Another greeting"]
        assert srcB.mailbox is manager.mailboxes[srcB.id]  # the router joined last
        history = await kinds_by_mail(store)
        assert history[mail.id] == ONCE and history[mail2.id] == ONCE
    async with lionstore.open(db_target, run="seed") as store:
        assert items(Exchange(store=store).mailboxes[srcB.id]) == ["Hello from A!"]
        assert items(MailManager(store=store).mailboxes[srcB.id]) == ["Another greeting"]


async def test_one_source_in_two_routers_sends_through_the_one_it_joined_last(
    store: lionstore.Store,
) -> None:
    a, b = Source(), Source()
    exchange = Exchange([a, b], store=store)
    assert a.mailbox is exchange.mailboxes[a.id]
    manager = MailManager([a, b], store=store)
    assert a.mailbox is manager.mailboxes[a.id]
    await a.send(manager.create_mail(a, b, "message", "via the manager"))
    assert await exchange.collect_all() == 0  # not the exchange's mail
    # through the other router, explicitly
    exchange.mailboxes[a.id].append_out(exchange.create_mail(a, b, "message", "via the exchange"))
    assert await exchange.collect_all() == 1 and await exchange.deliver_all() == 1
    assert await manager.collect_all() == 1 and await manager.send_all() == 1
    assert items(exchange.mailboxes[b.id]) == ["via the exchange"]
    assert items(b.mailbox) == ["via the manager"]
    # re-joining makes the exchange the last one again
    await exchange.add_source(a)
    assert a.mailbox is exchange.mailboxes[a.id]


# -- delete_source -----------------------------------------------------------------------


@pytest.mark.parametrize("router_class", [Exchange, MailManager])
async def test_delete_source_still_delivers_the_mail_it_had_collected(
    store: lionstore.Store, router_class: Any
) -> None:
    a, b, c = Source(), Source(), Source()
    router = router_class([a, b, c], store=store)
    collected = router.create_mail(c, b, "message", "collected before")
    await c.send(collected)
    await router.collect_all()
    unsent = router.create_mail(c, b, "message", "still in c's outbox")
    to_c = router.create_mail(a, c, "message", "to c")
    await c.send(unsent)
    await a.send(to_c)
    await router.delete_source(c)
    assert {(d.mail.id, d.reason) for d in router.dead_letters} == {
        (unsent.id, "sender_deleted"),
        (to_c.id, "recipient_deleted"),
    }
    deliver = router.deliver_all if router_class is Exchange else router.send_all
    assert await deliver() == 1
    assert items(b.mailbox) == ["collected before"]
    after = router.create_mail(c, b, "message", "sent after the deletion")
    await c.send(after)  # recorded, then dead-lettered when collected: never lost
    assert await router.collect_all() == 1
    assert router.dead_letters[-1].mail.id == after.id
    assert (router.dead_letters[-1].reason, router.dead_letters[-1].stage) == (
        "sender_deleted",
        "outbox",
    )


# -- the seed's stop flags -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("router_class", "flag"), [(Exchange, "_execute_stop"), (MailManager, "execute_stop")]
)
async def test_the_seed_stop_flag_ends_execute(
    store: lionstore.Store, router_class: Any, flag: str
) -> None:
    a, b = Source(), Source()
    router = router_class([a, b], store=store)
    assert getattr(router, flag) is False
    loop = asyncio.create_task(router.execute(refresh_time=3600))
    await wait_for(lambda: router.execution_mode, what="the loop to run")
    await a.send(router.create_mail(a, b, "message", "routed by the loop"))
    await wait_for(lambda: len(b.mailbox) == 1, what="the loop to deliver")
    setattr(router, flag, True)  # a refresh time of an hour: the flag wakes the loop
    await asyncio.wait_for(loop, timeout=10)
    assert router.execution_mode is False and router.is_stopped() and getattr(router, flag)
    await asyncio.wait_for(router.execute(refresh_time=3600), timeout=10)  # still stopped
    setattr(router, flag, False)
    assert not router.is_stopped()
    loop = asyncio.create_task(router.execute(refresh_time=3600))
    await wait_for(lambda: router.execution_mode, what="the loop to run")
    await router.stop()
    await asyncio.wait_for(loop, timeout=10)


# -- the examples, as real processes -------------------------------------------------------


def _run_example(name: str, *args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(REPO / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr, done.stderr
    return done.stdout


def test_the_seed_mail_example_runs_as_written(tmp_path: Path) -> None:
    out = _run_example("seed_mail.py", str(tmp_path / "mail.db")).splitlines()
    assert out[:4] == [
        "exchange: collected 1, delivered 1",
        "manager: collected 1, sent 1",
        "B's inbox in the exchange: ['Hello from A!']",
        "B's inbox in the manager: ['Another greeting']",
    ]
    assert out[4].startswith("run ")


def test_the_reopen_example_reads_back_in_a_second_process(tmp_path: Path) -> None:
    path = str(tmp_path / "work.db")
    assert _run_example("reopen.py", path).splitlines() == ["0 0", "recorded 3 3"]
    assert _run_example("reopen.py", path).splitlines() == ["3 3", "responses [2, 4, 6]"]


async def test_a_failed_write_nobody_awaited_is_raised_by_the_next_await(
    db_target: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with lionstore.open(db_target, run="r") as store:
        a, b = MySource(), MySource()
        ex = Exchange([a, b], store=store, name="ex")
        await ex.sync()
    async with lionstore.open(db_target, run="r", readonly=True) as store:
        a2, b2 = MySource(), MySource()
        # the constructor starts recording these sources; a read-only store refuses it
        ex = Exchange([a2, b2], store=store, name="other")
        with pytest.raises(lionstore.StoreError):
            await ex.collect_all()
        assert "not awaited failed" in caplog.text
        await ex._settle()  # (the first step of every router await): reported once
        mail = ex.create_mail(a2, b2, "message", "refused")
        pending = a2.mailbox.append_out(mail)
        with pytest.raises(lionstore.StoreError):
            await pending  # awaited: raised here ...
        await ex._settle()  # ... and not again
        head = await store.head()
    async with lionstore.open(db_target, run="r") as store:
        assert await store.head() == head
        assert [s.id for s in Exchange(store=store, name="other").sources] == []


_KILLED_SENDER = """
import asyncio, sys
import lionstore
from lionstore import Communicatable, Exchange, IDType, Mailbox

class MySource(Communicatable):
    def __init__(self):
        self.id = IDType.create()
        self.mailbox = Mailbox()

    def send(self, mail):
        self.mailbox.append_out(mail)

async def main(target):
    async with lionstore.open(target, run="killed"):
        a, b = MySource(), MySource()
        ex = Exchange([a, b], name="ex")
        mail = ex.create_mail(a, b, "message", "acknowledged")
        a.send(mail)
        await ex.sync()  # the router's next await: the send is committed now
        print(a.id, b.id, mail.id, flush=True)
        await asyncio.Event().wait()  # killed here

asyncio.run(main(sys.argv[1]))
"""


async def test_a_sync_send_acknowledged_by_the_routers_next_await_survives_sigkill(
    db_target: str,
) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_SENDER,
        db_target,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line, (await proc.stderr.read()).decode() if proc.stderr else ""
        a_id, b_id, mail_id = line.decode().split()
    finally:
        proc.kill()  # SIGKILL: no close, no cleanup
        await asyncio.wait_for(proc.wait(), timeout=30)
    assert proc.returncode == -9
    async with lionstore.open(db_target, run="killed") as store:
        ex = Exchange(store=store, name="ex")
        assert [str(m) for m in ex.mailboxes[IDType(a_id)].pending_outs] == [mail_id]
        assert await ex.collect_all() == 1 and await ex.deliver_all() == 1
        assert items(ex.mailboxes[IDType(b_id)]) == ["acknowledged"]
