"""Model-based test: random sequences of executor and mail operations, closing and
reopening the store, and rebuilding at earlier positions, checked after every step
against a small in-memory model of what the seeds promise. The state rebuilt from the
log (``replay.rebuild``) must equal the live objects' state and the model's, at every
step; rebuilding at an earlier position must give that step's state back.

Example counts are modest by default; ``LIONSTORE_SOAK`` raises them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import lionstore
from lionstore import Event, Exchange, Executor, IDType, Source
from lionstore.replay import RunProjection, rebuild

SOAK = bool(os.environ.get("LIONSTORE_SOAK", "").strip())
settings.register_profile(
    "reliability-ci",
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "reliability-soak",
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = settings.get_profile("reliability-soak" if SOAK else "reliability-ci")
pytestmark = pytest.mark.timeout(3600 if SOAK else 600)
RUN, EXECUTOR, ROUTER = "model", "model-executor", "model-post"


class Flip(Event):
    """Completes, or fails when ``fail`` is set."""

    fail: bool = False

    async def invoke(self) -> None:
        if self.fail:
            raise RuntimeError("failing on purpose")
        self.response = "done"


@dataclass
class Snapshot:
    """What the model, the live objects and a rebuild are compared on."""

    events: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> status, attempts
    active: frozenset[str] = frozenset()
    outboxes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # active sender
    buffer: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (to, from)
    inboxes: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (to, from)
    dead: dict[str, str] = field(default_factory=dict)  # mail id -> reason


def _clean(groups: dict[Any, list[str]] | dict[Any, tuple[str, ...]]) -> dict[Any, tuple[str, ...]]:
    return {k: tuple(v) for k, v in groups.items() if v}


def projection_snapshot(p: RunProjection) -> Snapshot:
    snap = Snapshot()
    ex = p.executors.get(EXECUTOR)
    if ex is not None:
        snap.events = {
            str(e.id): (ex.status(e.id).value, ex.attempts.get(e.id, 0)) for e in ex.pile
        }
    mail = p.routers.get(ROUTER)
    if mail is not None:
        snap.active = frozenset(str(s) for s in mail.sources)
        snap.outboxes = _clean({str(s): list(map(str, mail.box(s).outs)) for s in mail.sources})
        buffer: dict[tuple[str, str], list[str]] = defaultdict(list)
        for recipient, queue in mail.buffer.items():
            for m in queue:
                buffer[(str(recipient), str(mail.mails[m].sender))].append(str(m))
        snap.buffer = _clean(buffer)
        snap.inboxes = _clean(
            {
                (str(r), str(s)): list(map(str, q))
                for r in mail.sources
                for s, q in mail.box(r).ins.items()
            }
        )
        snap.dead = {str(m): d.reason for m, d in mail.dead.items()}
    return snap


def live_snapshot(executor: Executor, exchange: Exchange) -> Snapshot:
    snap = Snapshot()
    snap.events = {str(e.id): (e.status.value, executor.attempts(e.id)) for e in executor.pile}
    boxes = exchange.mailboxes
    snap.active = frozenset(str(s) for s in boxes)
    snap.outboxes = _clean({str(s): list(map(str, b.pending_outs)) for s, b in boxes.items()})
    buffer: dict[tuple[str, str], list[str]] = defaultdict(list)
    for recipient, mails in exchange.buffer.items():
        for m in mails:
            buffer[(str(recipient), str(m.sender))].append(str(m.id))
    snap.buffer = _clean(buffer)
    snap.inboxes = _clean(
        {
            (str(r), str(s)): list(map(str, q))
            for r, b in boxes.items()
            for s, q in b.pending_ins.items()
        }
    )
    snap.dead = {str(d.mail.id): d.reason for d in exchange.dead_letters}
    return snap


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="lionstore-model-")
        self.path = Path(self.dir, "model.db")
        self.loop = asyncio.new_event_loop()
        self.store: lionstore.Store | None = None
        # the model
        self.fails: dict[str, bool] = {}
        self.status: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.active: list[str] = []
        self.deleted: list[str] = []
        self.outbox: dict[str, list[tuple[str, str]]] = defaultdict(list)  # sender -> (mail, to)
        self.buffer: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.inbox: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.dead: dict[str, str] = {}
        self.history: list[tuple[int, Snapshot]] = []
        self.run(self.open())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 60))

    async def open(self) -> None:
        self.store = await lionstore.open(self.path, run=RUN)
        self.executor = Executor(
            {"queue_capacity": 3, "capacity_refresh_time": 0.01}, store=self.store, name=EXECUTOR
        )
        await self.executor.start()
        self.exchange = Exchange(store=self.store, name=ROUTER)
        await self.exchange.load()

    def teardown(self) -> None:
        if self.store is not None:
            self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- executor ----------------------------------------------------------------------

    def _added(self, events: list[Flip]) -> None:
        for e in events:
            self.fails[e.id], self.status[e.id], self.attempts[e.id] = e.fail, "pending", 0

    @rule(fail=st.booleans())
    def append(self, fail: bool) -> None:
        event = Flip(fail=fail)
        self.run(self.executor.append(event))
        self._added([event])

    @rule(fails=st.lists(st.booleans(), min_size=1, max_size=5))
    def extend(self, fails: list[bool]) -> None:
        events = [Flip(fail=f) for f in fails]
        self.run(self.executor.extend(events))
        self._added(events)

    @rule()
    def forward(self) -> None:
        self.run(self.executor.forward())
        for i, status in self.status.items():
            if status == "pending":
                self.status[i] = "failed" if self.fails[i] else "completed"
                self.attempts[i] += 1

    @precondition(lambda self: any(s != "pending" for s in self.status.values()))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        done = sorted(i for i, s in self.status.items() if s != "pending")
        chosen = data.draw(st.sampled_from(done))
        self.run(self.executor.retry(chosen))
        self.status[chosen] = "pending"

    # -- mail --------------------------------------------------------------------------

    @rule()
    def add_source(self) -> None:
        source = Source()
        self.run(self.exchange.add_source(source))
        self.active.append(source.id)

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data())
    def delete_source(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(self.active))
        self.run(self.exchange.delete_source(sid))
        self.active.remove(sid)
        self.deleted.append(sid)
        for mail, _ in self.outbox.pop(sid, []):
            self.dead[mail] = "sender_deleted"
        for (to, frm), queue in list(self.buffer.items()):
            if to == sid:  # its own mail already collected stays, to be delivered
                for mail in queue:
                    self.dead[mail] = "recipient_deleted"
                del self.buffer[(to, frm)]
        for outgoing in self.outbox.values():
            for mail, to in [m for m in outgoing if m[1] == sid]:
                self.dead[mail] = "recipient_deleted"
                outgoing.remove((mail, to))
        for key in [k for k in self.inbox if k[0] == sid]:
            del self.inbox[key]  # a deleted source's inbox is no longer shown

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data())
    def send(self, data: st.DataObject) -> None:
        sender = data.draw(st.sampled_from(self.active))
        kinds = ["active"] + (["deleted"] if self.deleted else []) + ["unknown"]
        kind = data.draw(st.sampled_from(kinds))
        if kind == "active":
            to = data.draw(st.sampled_from(self.active))
        elif kind == "deleted":
            to = data.draw(st.sampled_from(self.deleted))
        else:
            to = IDType.create()
        mail = self.exchange.create_mail(sender, to, "message", {"n": len(self.dead)})
        box = self.exchange.mailboxes[IDType.validate(sender)]

        async def send() -> None:  # a mailbox write starts on the running loop
            await box.append_out(mail)

        self.run(send())
        self.outbox[sender].append((mail.id, to))

    def _collect_model(self, sender: str) -> None:
        for mail, to in self.outbox.pop(sender, []):
            if to in self.active:
                self.buffer[(to, sender)].append(mail)
            else:
                self.dead[mail] = "recipient_deleted" if to in self.deleted else "recipient_unknown"

    def _deliver_model(self, recipient: str) -> None:
        for key in [k for k in self.buffer if k[0] == recipient]:
            self.inbox[key].extend(self.buffer.pop(key))

    @rule()
    def collect_all(self) -> None:
        self.run(self.exchange.collect_all())
        for sender in list(self.outbox):
            self._collect_model(sender)

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data())
    def collect_one(self, data: st.DataObject) -> None:
        sender = data.draw(st.sampled_from(self.active))
        self.run(self.exchange.collect(sender))
        self._collect_model(sender)

    @rule()
    def deliver_all(self) -> None:
        self.run(self.exchange.deliver_all())
        for recipient in {k[0] for k in self.buffer}:
            self._deliver_model(recipient)

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data())
    def deliver_one(self, data: st.DataObject) -> None:
        recipient = data.draw(st.sampled_from(self.active))
        self.run(self.exchange.deliver(recipient))
        self._deliver_model(recipient)

    # -- the store ---------------------------------------------------------------------

    @rule()
    def reopen(self) -> None:
        assert self.store is not None
        self.executor.close()
        self.run(self.store.close())
        self.run(self.open())

    @precondition(lambda self: bool(self.history))
    @rule(data=st.data())
    def rebuild_at_an_earlier_position(self, data: st.DataObject) -> None:
        position, expected = data.draw(st.sampled_from(self.history))
        assert self.store is not None
        rebuilt = self.run(rebuild(self.store, at=position))
        assert projection_snapshot(rebuilt) == expected

    # -- the check ---------------------------------------------------------------------

    def model_snapshot(self) -> Snapshot:
        return Snapshot(
            events={i: (s, self.attempts[i]) for i, s in self.status.items()},
            active=frozenset(self.active),
            outboxes=_clean({s: [m for m, _ in q] for s, q in self.outbox.items()}),
            buffer=_clean(self.buffer),
            inboxes=_clean(self.inbox),
            dead=dict(self.dead),
        )

    @invariant()
    def live_rebuilt_and_model_agree(self) -> None:
        assert self.store is not None
        model = self.model_snapshot()
        live = live_snapshot(self.executor, self.exchange)
        rebuilt = projection_snapshot(self.run(rebuild(self.store)))
        assert live == model
        assert rebuilt == live
        self.history.append((self.run(self.store.head()), rebuilt))


LogMachine.TestCase.settings = PROFILE
test_log_model = LogMachine.TestCase
