"""Projection snapshots: an ExecutorState or MailState as JSON, and back.

A snapshot is a cache of ``fold(log)`` up to a position, kept so that reopening a
large run folds only the records after it (``lionstore.repositories.base``). It
holds what the state holds, in plain JSON: for each event its recorded class
name, its fields, and its outcome; for each mail the data of the record that
placed it and where it is now. Restoring goes through the state's own
materializers, the same code that turns ``event.appended`` and ``mail.sent``
records into objects, so classes are found as they are for the log (among those
defined in the process; nothing is imported) and user fields are validated by
their own class again.

One difference from a fold, by design: a source is snapshotted with its field
values at that moment (the router keeps the caller's own source objects), where
a fold rebuilds it from the fields recorded when it was added.

A snapshot is untrusted input, like the file it is in: JSON (never pickle), a
SHA-256 over its text, and a :data:`FORMAT_VERSION` naming the layout. Any
mismatch or any error while restoring makes the caller ignore it and fold the
log from the start.
"""

from __future__ import annotations

import gc
import hashlib
import json
from typing import Any, cast

from pydantic import BaseModel

from lionstore.domain.element import class_path
from lionstore.domain.event import Event, EventStatus, Execution
from lionstore.domain.event_records import EventAppended, ProcessorStarted
from lionstore.domain.ids import IDType
from lionstore.domain.mail import Mail, item_to_json
from lionstore.domain.mail_records import MailSent, PackageData, SourceAdded
from lionstore.projections.executor import Claim, ExecutorState, RecordedEvent
from lionstore.projections.mail import BoxState, DeadLetter, MailState

__all__ = [
    "FORMAT_VERSION",
    "Claim",
    "SnapshotError",
    "checkpoint_name",
    "checksum",
    "dump_state",
    "sealed",
    "verified_text",
    "empty_like",
    "load_state",
    "snapshot_ready",
]

FORMAT_VERSION = 1
"""The layout of snapshots this code writes and reads. Bump it whenever the layout,
or the meaning of a state the fold builds, changes: older snapshots are then
ignored and rebuilt."""

State = ExecutorState | MailState

_BASE_FIELDS = frozenset({"id", "created_at", "metadata", "execution"})


class SnapshotError(ValueError):
    """A snapshot that does not describe a state this code can restore."""


def checksum(text: str) -> str:
    """SHA-256 of a snapshot's text (hex)."""
    return hashlib.sha256(text.encode()).hexdigest()


def sealed(text: str) -> str:
    """What is stored: the checksum of ``text``, a newline, then ``text``."""
    return f"{checksum(text)}\n{text}"


def verified_text(stored: str) -> str | None:
    """The snapshot text of a stored value whose checksum matches (None otherwise)."""
    digest, sep, text = stored.partition("\n")
    if not sep or checksum(text) != digest:
        return None
    return text


def checkpoint_name(state: object) -> str | None:
    """The name a state's checkpoints are kept under in its run (None: not snapshotted)."""
    if isinstance(state, ExecutorState):
        return f"executor:{state.name}"
    if isinstance(state, MailState):
        return f"mail:{state.router}"
    return None


def empty_like(state: ExecutorState | MailState) -> ExecutorState | MailState:
    """A state like ``state`` (same name and materializers) with nothing applied."""
    if isinstance(state, ExecutorState):
        pile = state.pile
        return ExecutorState(
            state.name,
            state.materialize,
            item_type=cast(Any, pile._item_type),
            strict_type=pile._strict,
        )
    return MailState(state.router, state.materialize_source, state.materialize_mail)


def snapshot_ready(state: ExecutorState | MailState) -> bool:
    """Whether the state is what the log says, so a snapshot of it is exact. Not while
    an executor has events claimed: an event being invoked may have changed its own
    fields and outcome in memory before the outcome is recorded."""
    return not (isinstance(state, ExecutorState) and state.claims)


def dump_state(state: ExecutorState | MailState) -> str:
    """The state as snapshot JSON text. Raises ValueError if a value is not JSON."""
    if isinstance(state, ExecutorState):
        body = _dump_executor(state)
    elif isinstance(state, MailState):
        body = _dump_mail(state)
    else:
        raise TypeError(f"no snapshot for {type(state).__name__}")
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def load_state(empty: ExecutorState | MailState, text: str) -> None:
    """Fill ``empty`` (a state nothing was applied to) from snapshot ``text``.

    Raises :class:`SnapshotError` (or whatever a materializer raises) if the text
    does not describe a state; ``empty`` is then in an undefined state and must
    be thrown away.
    """
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise SnapshotError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SnapshotError("not a JSON object")
    # Restoring allocates many objects that all live on and none that are garbage
    # cycles: the cyclic collector would only re-walk them (measured: about half the
    # restore time of a large pile). Paused here, and back as it was afterwards.
    paused = gc.isenabled()
    gc.disable()
    try:
        if isinstance(empty, ExecutorState):
            _load_executor(empty, body)
        else:
            _load_mail(empty, body)
    finally:
        if paused:
            gc.enable()


# -- executor --------------------------------------------------------------------------


def _event_fields(event: Event) -> dict[str, Any]:
    if isinstance(event, RecordedEvent):
        return dict(event.fields)
    if type(event).model_fields.keys() <= _BASE_FIELDS and not event.__pydantic_extra__:
        return {}
    return event.model_dump(mode="json", exclude=_BASE_FIELDS)  # type: ignore[arg-type]


def _dump_executor(state: ExecutorState) -> dict[str, Any]:
    events = []
    for event in state.pile._items.values():
        ex = event.execution
        events.append(
            [
                event.id,
                event.event_class if isinstance(event, RecordedEvent) else class_path(type(event)),
                event.created_at,
                event.metadata,
                _event_fields(event),
                ex.status.value,
                ex.duration,
                ex.response,
                ex.error,
            ]
        )
    return {
        "executor": state.name,
        "events": events,
        "pending": list(state.pending),
        "queue": list(state.queue),
        "not_before_us": state.not_before_us,
        "denials": state.denials,
        "claims": {
            i: [c.owner, c.attempt, c.lease_expires_us, c.cycle] for i, c in state.claims.items()
        },
        "attempts": state.attempts,
        "versions": state.versions,
        "position": state.position,
        "processors": {o: p.model_dump(mode="json") for o, p in state.processors.items()},
    }


def _ids(value: Any) -> list[IDType]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SnapshotError("expected a list of ids")
    return [str.__new__(IDType, v) for v in value]


def _int_map(value: Any) -> dict[IDType, int]:
    if not isinstance(value, dict) or not all(type(v) is int for v in value.values()):
        raise SnapshotError("expected a map of ids to integers")
    return {str.__new__(IDType, k): v for k, v in value.items()}


def _load_executor(state: ExecutorState, body: dict[str, Any]) -> None:
    if body.get("executor") != state.name:
        raise SnapshotError("a snapshot of another executor")
    materialize = state.materialize
    put = state.pile._put
    known: set[str] = set()
    for row in body["events"]:
        sid, event_class, created_at, metadata, fields, status, duration, response, error = row
        if not isinstance(sid, str) or not isinstance(fields, dict):
            raise SnapshotError("a malformed event")
        sid = str.__new__(IDType, sid)
        appended = EventAppended.model_construct(
            executor=state.name,
            event_class=event_class,
            created_at=created_at,
            metadata=metadata,
            fields=fields,
        )
        event = materialize(sid, appended)
        if event.id != sid:
            raise SnapshotError("an event whose id does not match")
        event.execution = Execution.model_validate(
            {
                "status": EventStatus(status),
                "duration": duration,
                "response": response,
                "error": error,
            }
        )
        put(event)
        known.add(sid)
    state.pending = dict.fromkeys(_ids(body["pending"]))
    state.queue = dict.fromkeys(_ids(body["queue"]))
    state.not_before_us = _int_map(body["not_before_us"])
    state.denials = _int_map(body["denials"])
    state.attempts = _int_map(body["attempts"])
    state.versions = _int_map(body["versions"])
    claims = body["claims"]
    if not isinstance(claims, dict):
        raise SnapshotError("claims must be a map")
    state.claims = {
        str.__new__(IDType, i): Claim(str(o), int(a), int(lease), int(cycle))
        for i, (o, a, lease, cycle) in claims.items()
    }
    state.processors = {
        str(o): ProcessorStarted.model_validate(p) for o, p in body["processors"].items()
    }
    if not (set(state.versions) == known and set(state.pending) | set(state.queue) <= known):
        raise SnapshotError("the event ids do not add up")
    position = body["position"]
    if type(position) is not int or position < 0:
        raise SnapshotError("a bad position")
    state.position = position


# -- mail ------------------------------------------------------------------------------


def _dump_mail(state: MailState) -> dict[str, Any]:
    mails = []
    for mail in state.mails.values():
        p = mail.package
        item, item_class = item_to_json(p.item)
        mails.append(
            [
                mail.id,
                mail.sender,
                mail.recipient,
                mail.created_at,
                mail.metadata,
                [p.id, p.created_at, p.category.value, item, item_class, p.request_source],
            ]
        )
    sources = []
    for sid, source in state.sources.items():
        fields = (
            source.model_dump(mode="json", exclude={"id"})
            if isinstance(source, BaseModel)
            else None
        )
        sources.append([sid, class_path(type(source)), fields])
    return {
        "router": state.router,
        "sources": sources,
        "deleted": sorted(state.deleted),
        "mails": mails,
        "where": state.where,
        "boxes": {
            sid: {"outs": list(box.outs), "ins": {s: list(q) for s, q in box.ins.items()}}
            for sid, box in state.boxes.items()
        },
        "buffer": {r: list(q) for r, q in state.buffer.items()},
        "dead": {i: [d.reason, d.stage, d.position] for i, d in state.dead.items()},
        "versions": state.versions,
        "position": state.position,
    }


def _load_mail(state: MailState, body: dict[str, Any]) -> None:
    if body.get("router") != state.router:
        raise SnapshotError("a snapshot of another router")
    for sid, source_class, fields in body["sources"]:
        sid = str.__new__(IDType, sid)
        added = SourceAdded.model_construct(
            router=state.router, source_class=source_class, fields=fields
        )
        state.sources[sid] = state.materialize_source(sid, added)
    state.deleted = set(_ids(body["deleted"]))
    for mail_id, sender, recipient, created_at, metadata, package in body["mails"]:
        pid, p_created, category, item, item_class, request_source = package
        sent = MailSent.model_construct(
            router=state.router,
            sender=sender,
            recipient=recipient,
            created_at=created_at,
            metadata=metadata,
            package=PackageData.model_construct(
                id=pid,
                created_at=p_created,
                category=category,
                item=item,
                item_class=item_class,
                request_source=request_source,
            ),
        )
        mail_id = str.__new__(IDType, mail_id)
        mail: Mail = state.materialize_mail(mail_id, sent)
        state.mails[mail_id] = mail
    mails = state.mails
    places = {"outbox", "buffer", "inbox", "dead", "gone"}
    where = body["where"]
    if set(where) != set(mails) or not set(where.values()) <= places:
        raise SnapshotError("mail places do not add up")
    state.where = {str.__new__(IDType, k): v for k, v in where.items()}
    for sid, box in body["boxes"].items():
        restored = BoxState()
        restored.outs = dict.fromkeys(_ids(box["outs"]))
        restored.ins = {
            str.__new__(IDType, s): dict.fromkeys(_ids(q)) for s, q in box["ins"].items()
        }
        for mail_id in [*restored.outs, *(m for q in restored.ins.values() for m in q)]:
            restored.mails[mail_id] = mails[mail_id]
        state.boxes[str.__new__(IDType, sid)] = restored
    state.buffer = {
        str.__new__(IDType, r): dict.fromkeys(_ids(q)) for r, q in body["buffer"].items()
    }
    state.dead = {
        str.__new__(IDType, i): DeadLetter(mails[i], str(reason), str(stage), int(position))
        for i, (reason, stage, position) in body["dead"].items()
    }
    state.versions = _int_map(body["versions"])
    position = body["position"]
    if type(position) is not int or position < 0:
        raise SnapshotError("a bad position")
    state.position = position
