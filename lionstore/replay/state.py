"""Rebuild: every projection of a run, at any position or time, without user classes.

``rebuild`` folds a run's records through the same ``ExecutorState`` and
``MailState`` code the live objects use, with materializers that keep user
data raw (events as ``RecordedEvent``, package items as their JSON). Nothing in
the file is imported or executed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from lionstore.domain.event_records import EventAppended, ProcessorStarted
from lionstore.domain.ids import IDType
from lionstore.domain.mail import Mail
from lionstore.domain.mail_records import MailReceived, MailSent, SourceAdded, SourceDeleted
from lionstore.domain.records import Recorded, UnknownRecord
from lionstore.log.store import Store
from lionstore.mail.source import Source
from lionstore.projections.executor import ExecutorState, RecordedEvent, raw_materializer
from lionstore.projections.mail import MailState, mail_from_record

__all__ = ["RunProjection", "rebuild", "raw_mail"]

Progress = Callable[[int], None]


def raw_mail(mail_id: IDType, data: MailSent | MailReceived) -> Mail:
    """A Mail whose package item stays as recorded JSON."""
    return mail_from_record(mail_id, data, raw=True)


def _raw_source(source_id: IDType, data: SourceAdded) -> Any:
    return Source(id=source_id, metadata={"source_class": data.source_class})


class RunProjection:
    """All executors and mail routers of one run, folded from its records."""

    def __init__(self) -> None:
        self.executors: dict[str, ExecutorState] = {}
        self.routers: dict[str, MailState] = {}
        self.owner_of: dict[IDType, tuple[str, str]] = {}  # stream -> (kind of owner, name)
        self.position = 0
        self.records = 0
        self.unknown = 0

    def executor(self, name: str) -> ExecutorState:
        state = self.executors.get(name)
        if state is None:
            state = self.executors[name] = ExecutorState(name, raw_materializer)
        return state

    def router(self, name: str) -> MailState:
        state = self.routers.get(name)
        if state is None:
            state = self.routers[name] = MailState(name, _raw_source, raw_mail)
        return state

    def apply(self, record: Recorded) -> None:
        self.records += 1
        self.position = record.position
        data = record.data
        if isinstance(data, UnknownRecord):
            self.unknown += 1
            return
        sid = record.stream_id
        if isinstance(data, EventAppended):
            self.owner_of.setdefault(sid, ("executor", data.executor))
            self.executor(data.executor).apply(record)
        elif isinstance(data, ProcessorStarted):
            self.executor(data.executor).apply(record)
        elif isinstance(data, (SourceAdded, SourceDeleted, MailSent, MailReceived)):
            self.owner_of.setdefault(sid, ("router", data.router))
            self.router(data.router).apply(record)
        else:
            owner = self.owner_of.get(sid)
            if owner is None:
                return
            kind, name = owner
            if kind == "executor":
                self.executors[name].apply(record)
            else:
                self.routers[name].apply(record)

    # -- summaries -----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description of the run's state."""
        return {
            "position": self.position,
            "records": self.records,
            "unknown_records": self.unknown,
            "executors": {name: _executor_summary(s) for name, s in self.executors.items()},
            "routers": {name: _router_summary(s) for name, s in self.routers.items()},
        }

    def counts(self) -> dict[str, dict[str, int]]:
        """Events by status and mail by state, over every executor and router."""
        events: dict[str, int] = {}
        for state in self.executors.values():
            for event in state.pile:
                key = event.status.value
                events[key] = events.get(key, 0) + 1
        mail: dict[str, int] = {}
        for router in self.routers.values():
            for place in router.where.values():
                mail[place] = mail.get(place, 0) + 1
        return {"events": events, "mail": mail}


def _executor_summary(state: ExecutorState) -> dict[str, Any]:
    events = []
    for event in state.pile:
        claim = state.claims.get(event.id)
        events.append(
            {
                "id": event.id,
                "class": event.event_class if isinstance(event, RecordedEvent) else None,
                "status": event.status.value,
                "attempts": state.attempts.get(event.id, 0),
                "response": event.execution.response,
                "error": event.execution.error,
                "duration": event.execution.duration,
                "fields": event.fields if isinstance(event, RecordedEvent) else None,
                "owner": claim.owner if claim else None,
                "in": "pending"
                if event.id in state.pending
                else "queue"
                if event.id in state.queue
                else None,
            }
        )
    return {
        "events": events,
        "pending": list(state.pending),
        "queue": list(state.queue),
        "processors": {o: p.model_dump() for o, p in state.processors.items()},
    }


def _mail_summary(mail: Mail) -> dict[str, Any]:
    return {
        "id": mail.id,
        "sender": mail.sender,
        "recipient": mail.recipient,
        "category": mail.category.value,
        "item": mail.package.item,
    }


def _router_summary(state: MailState) -> dict[str, Any]:
    return {
        "sources": list(state.sources),
        "deleted_sources": sorted(state.deleted),
        "mailboxes": {
            sid: {
                "outbox": [_mail_summary(box.mails[m]) for m in box.outs],
                "inbox": {
                    sender: [_mail_summary(box.mails[m]) for m in queue]
                    for sender, queue in box.ins.items()
                },
            }
            for sid, box in state.boxes.items()
        },
        "buffer": {r: [_mail_summary(state.mails[m]) for m in q] for r, q in state.buffer.items()},
        "dead_letters": [
            {**_mail_summary(d.mail), "reason": d.reason, "stage": d.stage, "position": d.position}
            for d in sorted(state.dead.values(), key=lambda d: d.position)
        ],
    }


async def rebuild(
    store: Store,
    *,
    run: str | None = None,
    at: int | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
    page_size: int = 2000,
) -> RunProjection:
    """The state of a run at position ``at`` (inclusive) or time ``until``; the end
    by default. ``run`` is an id or label (default: the store's run)."""
    projection = RunProjection()
    apply = projection.apply
    count = 0
    async for record in await store.read(
        run=run if run is not None else True,
        upto=at,
        until=until,
        page_size=page_size,
    ):
        apply(record)
        count += 1
        if progress is not None and count % 10_000 == 0:
            progress(count)
    return projection
