"""Projection snapshots: an ExecutorState or MailState as text, and back.

A snapshot is a cache of ``fold(log)`` up to a position, kept so that reopening a
large run folds only the records after it (``lionstore.repositories.base``). It
holds what the state holds, in plain JSON: for each event its recorded class
name, its fields, and its outcome; for each mail the data of the record that
placed it and where it is now. Restoring goes through the state's own
materializers, the same code that turns ``event.appended`` and ``mail.sent``
records into objects, so classes are found as they are for the log (among those
defined in the process; nothing is imported) and user fields are validated by
their own class again.

Layout (:data:`FORMAT_VERSION` 2): a first line of JSON, the header, with what
the projection's decisions need (ids in order, statuses, places, versions,
queues, claims), then one line per event (or mail), in pile (or arrival) order:

* event: ``<status code><class path>\\t<JSON row>``; the code is one letter
  (``P`` pending, ``R`` processing, ``C`` completed, ``F`` failed);
* mail: ``<item class path, or nothing>\\t<JSON row>``.

Reopening costs what is live, not the run's history: the header is parsed, live
events (not COMPLETED/FAILED) and undelivered mail (in an outbox or the buffer)
are built, and every other event or mail stays its line of text in a
:class:`~lionstore.domain.lazy.LazyDict` until something reads it (an event's
status is read from its code, without building it). One item of each class the
lazy part names is built at restore, so a class that is no longer defined makes
the snapshot unusable then (and the fold raises the usual error naming it),
not later. A lazy line that does not build when it is read raises
:class:`SnapshotError` naming the item (never a wrong object), and no snapshot is
written from that state afterwards.

One difference from a fold, by design: a source is snapshotted with its field
values at that moment (the router keeps the caller's own source objects), where
a fold rebuilds it from the fields recorded when it was added.

A snapshot is untrusted input, like the file it is in: JSON (never pickle), a
SHA-256 over its whole text (lazy lines included), and a :data:`FORMAT_VERSION`
naming the layout. Any mismatch or any error while restoring makes the caller
ignore it and fold the log from the start.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, cast

from pydantic import BaseModel

from lionstore._gcpause import gc_paused
from lionstore.domain.element import class_path
from lionstore.domain.event import Event, EventStatus, Execution
from lionstore.domain.event_records import EventAppended, ProcessorStarted
from lionstore.domain.ids import IDType
from lionstore.domain.lazy import LazyDict
from lionstore.domain.mail import Mail, item_to_json
from lionstore.domain.mail_records import MailSent, PackageData, SourceAdded
from lionstore.errors import LionstoreError
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

FORMAT_VERSION = 3
"""The layout of snapshots this code writes and reads. Bump it whenever the layout,
or the meaning of a state the fold builds, changes: older snapshots are then
ignored and rebuilt. (2: a header line, then one line per event or mail, built
on first read. 3: the statuses cancelled, aborted, skipped and released events.)"""

State = ExecutorState | MailState

_BASE_FIELDS = frozenset({"id", "created_at", "metadata", "execution"})
_STATUS_CODE = {
    EventStatus.PENDING: "P",
    EventStatus.PROCESSING: "R",
    EventStatus.COMPLETED: "C",
    EventStatus.FAILED: "F",
    EventStatus.CANCELLED: "X",
    EventStatus.ABORTED: "A",
    EventStatus.SKIPPED: "S",
}
_CODE_STATUS = {code: status for status, code in _STATUS_CODE.items()}
_TERMINAL_CODES = frozenset("CFXAS")
_PLACE_CODE = {"outbox": "o", "buffer": "b", "inbox": "i", "dead": "d", "gone": "g"}
_CODE_PLACE = {code: place for place, code in _PLACE_CODE.items()}
_new_id = str.__new__


class SnapshotError(LionstoreError, ValueError):
    """A snapshot that does not describe a state this code can restore (at restore,
    or when one of its lazily kept events or mails is read and does not build)."""


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


def _lazy_parts(state: ExecutorState | MailState) -> list[Any]:
    if isinstance(state, ExecutorState):
        return [state.pile._items]
    return [state.mails, state.dead, *(box.mails for box in state.boxes.values())]


def snapshot_ready(state: ExecutorState | MailState) -> bool:
    """Whether the state is what the log says, so a snapshot of it is exact. Not while
    an executor has events claimed (an event being invoked may have changed its own
    fields and outcome in memory before the outcome is recorded), and not once a
    lazily kept item failed to build (its line would be written again)."""
    if isinstance(state, ExecutorState) and state.claims:
        return False
    return not any(
        isinstance(part, LazyDict) and part.damaged is not None for part in _lazy_parts(state)
    )


def _stored(items: dict[IDType, Any]) -> Any:
    """The (id, value) pairs as stored: a lazy dict's unread values stay raw when they
    are a snapshot's own (lines, str; dead letters, list), which are written back as
    they were read; a replay's compact values (tuples) are built."""
    if isinstance(items, LazyDict) and items.raw_type is not str and items.raw_type is not list:
        items.build_all()
    return dict.items(items)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _class_prefix(name: str) -> str:
    if "\t" in name or "\n" in name:
        raise ValueError(f"a class name with a tab or newline cannot be snapshotted: {name!r}")
    return name


def dump_state(state: ExecutorState | MailState) -> str:
    """The state as snapshot text. Raises ValueError if a value is not JSON. Lazily
    kept items that were never read are written back as they were read."""
    if isinstance(state, ExecutorState):
        header, lines = _dump_executor(state)
    elif isinstance(state, MailState):
        header, lines = _dump_mail(state)
    else:
        raise TypeError(f"no snapshot for {type(state).__name__}")
    return "\n".join([_dumps(header), *lines])


def load_state(empty: ExecutorState | MailState, text: str) -> None:
    """Fill ``empty`` (a state nothing was applied to) from snapshot ``text``.

    Raises :class:`SnapshotError` (or whatever a materializer raises) if the text
    does not describe a state; ``empty`` is then in an undefined state and must
    be thrown away.
    """
    first, _, rest = text.partition("\n")
    try:
        body = json.loads(first)
    except ValueError as exc:
        raise SnapshotError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise SnapshotError("not a JSON object")
    lines = rest.split("\n") if rest else []
    del rest
    # Restoring allocates many objects that all live on and none that are garbage
    # cycles: the cyclic collector would only re-walk them (measured: about half the
    # restore time of a large pile). Paused here, and back as it was afterwards.
    with gc_paused():
        if isinstance(empty, ExecutorState):
            _load_executor(empty, body, lines)
        else:
            _load_mail(empty, body, lines)


def _ids(value: Any) -> list[IDType]:
    if not isinstance(value, list) or not {*map(type, value)} <= {str}:
        raise SnapshotError("expected a list of ids")
    return [_new_id(IDType, v) for v in value]


def _ints(value: Any, count: int) -> list[int]:
    if not isinstance(value, list) or len(value) != count or not {*map(type, value)} <= {int}:
        raise SnapshotError(f"expected a list of {count} integers")
    return value


def _int_map(value: Any) -> dict[IDType, int]:
    if not isinstance(value, dict) or not all(type(v) is int for v in value.values()):
        raise SnapshotError("expected a map of ids to integers")
    return {_new_id(IDType, k): v for k, v in value.items()}


def _position(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise SnapshotError("a bad position")
    return value


def _split(line: str) -> tuple[str, Any]:
    """A lazy line's prefix (before the tab) and its parsed JSON row."""
    cut = line.index("\t")
    return line[:cut], json.loads(line[cut + 1 :])


def _lazy(
    kind: str, owner: str, build: Callable[[IDType, Any], Any]
) -> Callable[[IDType, Any], Any]:
    """``build`` with any failure reported as a SnapshotError naming the item."""

    def checked(item_id: IDType, raw: Any) -> Any:
        try:
            return build(item_id, raw)
        except Exception as exc:
            raise SnapshotError(
                f"{kind} {item_id} of {owner} does not restore from its checkpoint "
                f"({type(exc).__name__}: {exc}); reopen with checkpoints=False, or delete "
                "the run's rows in lionstore_checkpoints, to fold it from the log"
            ) from exc

    return checked


# -- executor --------------------------------------------------------------------------


def _event_fields(event: Event) -> dict[str, Any]:
    if isinstance(event, RecordedEvent):
        return dict(event.fields)
    if type(event).model_fields.keys() <= _BASE_FIELDS and not event.__pydantic_extra__:
        return {}
    return event.model_dump(mode="json", exclude=_BASE_FIELDS)  # type: ignore[arg-type]


def _event_line(event: Event) -> tuple[str, str]:
    """``(class path, line)`` of a built event."""
    name = _class_prefix(
        event.event_class if isinstance(event, RecordedEvent) else class_path(type(event))
    )
    ex = event.execution
    row = [
        event.id,
        event.created_at,
        event.metadata,
        _event_fields(event),
        ex.duration,
        ex.response,
        ex.error,
    ]
    return name, f"{_STATUS_CODE[ex.status]}{name}\t{_dumps(row)}"


def _dump_executor(state: ExecutorState) -> tuple[dict[str, Any], list[str]]:
    items = state.pile._items
    lines: list[str] = []
    live: list[IDType] = []
    samples: dict[str, IDType] = {}
    for sid, value in _stored(items):
        if type(value) is str:  # never read since a restore: written back as it was
            line = value
            name = line[1 : line.index("\t")]
        else:
            name, line = _event_line(value)
        lines.append(line)
        if line[0] in _TERMINAL_CODES:
            samples.setdefault(name, sid)
        else:
            live.append(sid)
    ids = list(items)
    versions, attempts = state.versions, state.attempts
    if len(versions) != len(ids) or not all(i in versions for i in ids):
        raise ValueError("the event ids and their stream versions do not add up")
    if not attempts.keys() <= versions.keys():
        raise ValueError("attempts of events this executor does not hold")
    header = {
        "executor": state.name,
        "ids": ids,
        "versions": [versions[i] for i in ids],
        "live": live,
        "samples": list(samples.values()),
        "pending": list(state.pending),
        "released": list(state.released),
        "queue": list(state.queue),
        "not_before_us": state.not_before_us,
        "denials": state.denials,
        "claims": {
            i: [c.owner, c.attempt, c.lease_expires_us, c.cycle] for i, c in state.claims.items()
        },
        "attempts": [attempts.get(i) for i in ids],  # null: never claimed
        "position": state.position,
        "processors": {o: p.model_dump(mode="json") for o, p in state.processors.items()},
    }
    return header, lines


def _event_builder(state: ExecutorState) -> Callable[[IDType, str], Event]:
    materialize = state.materialize
    name = state.name

    def build(sid: IDType, line: str) -> Event:
        status = _CODE_STATUS[line[0]]
        event_class, row = _split(line)
        rid, created_at, metadata, fields, duration, response, error = row
        if rid != sid or not isinstance(fields, dict):
            raise SnapshotError("a malformed event row")
        appended = EventAppended.model_construct(
            executor=name,
            event_class=event_class[1:],
            created_at=created_at,
            metadata=metadata,
            fields=fields,
        )
        event = materialize(sid, appended)
        if event.id != sid:
            raise SnapshotError("an event whose id does not match")
        event.execution = Execution.model_validate(
            {"status": status, "duration": duration, "response": response, "error": error}
        )
        return event

    return _lazy("event", f"executor {name!r}", build)


def _event_status(event: Event) -> EventStatus:
    return event.execution.status


def _line_status(line: str) -> EventStatus:
    return _CODE_STATUS[line[0]]


def _load_executor(state: ExecutorState, body: dict[str, Any], lines: list[str]) -> None:
    if body.get("executor") != state.name:
        raise SnapshotError("a snapshot of another executor")
    ids = _ids(body["ids"])
    if len(lines) != len(ids):
        raise SnapshotError("the event lines and ids do not add up")
    if not {line[:1] for line in lines} <= _CODE_STATUS.keys():
        raise SnapshotError("an event line without a status")  # statuses are read unbuilt
    items: LazyDict[IDType, Event] = LazyDict(
        zip(ids, lines, strict=True),
        _event_builder(state),
        str,
        tag=_event_status,
        raw_tag=_line_status,
    )
    if len(items) != len(ids):
        raise SnapshotError("an event id listed twice")
    state.pile._items = items
    state.versions = dict(zip(ids, _ints(body["versions"], len(ids)), strict=True))
    # Built now: live events (decisions read them) and one event of each class the
    # lazy ones name (a class no longer defined fails the restore, not a later read).
    for sid in (*_ids(body["live"]), *_ids(body["samples"])):
        items[sid]
    state.pending = dict.fromkeys(_ids(body["pending"]))
    state.released = set(_ids(body.get("released", [])))
    state.queue = dict.fromkeys(_ids(body["queue"]))
    state.not_before_us = _int_map(body["not_before_us"])
    state.denials = _int_map(body["denials"])
    attempts = body["attempts"]
    if (
        not isinstance(attempts, list)
        or len(attempts) != len(ids)
        or not {*map(type, attempts)} <= {int, type(None)}
    ):
        raise SnapshotError("expected an attempt count (or null) per event")
    state.attempts = dict(zip(ids, attempts, strict=True))
    if None in attempts:
        state.attempts = {i: a for i, a in state.attempts.items() if a is not None}
    claims = body["claims"]
    if not isinstance(claims, dict):
        raise SnapshotError("claims must be a map")
    state.claims = {
        _new_id(IDType, i): Claim(str(o), int(a), int(lease), int(cycle))
        for i, (o, a, lease, cycle) in claims.items()
    }
    state.processors = {
        str(o): ProcessorStarted.model_validate(p) for o, p in body["processors"].items()
    }
    if not set(state.pending) | set(state.queue) | set(state.claims) <= items.keys():
        raise SnapshotError("the event ids do not add up")
    state.position = _position(body["position"])


# -- mail ------------------------------------------------------------------------------


def _mail_line(mail: Mail) -> tuple[str, str]:
    """``(item class path or "", line)`` of a built mail."""
    p = mail.package
    item, item_class = item_to_json(p.item)
    name = _class_prefix(item_class or "")
    row = [
        mail.id,
        mail.sender,
        mail.recipient,
        mail.created_at,
        mail.metadata,
        [p.id, p.created_at, p.category.value, item, p.request_source],
    ]
    return name, f"{name}\t{_dumps(row)}"


def _dump_mail(state: MailState) -> tuple[dict[str, Any], list[str]]:
    lines: list[str] = []
    samples: dict[str, IDType] = {}
    for mail_id, value in _stored(state.mails):
        if type(value) is str:  # never read since a restore: written back as it was
            line = value
            name = line[: line.index("\t")]
        else:
            name, line = _mail_line(value)
        lines.append(line)
        if name:
            samples.setdefault(name, mail_id)
    ids = list(state.mails)
    at = {m: i for i, m in enumerate(ids)}
    where, versions = state.where, state.versions
    if len(where) != len(ids) or not all(i in where and i in versions for i in ids):
        raise ValueError("the mail ids, places and stream versions do not add up")
    sources = []
    for sid, source in state.sources.items():
        fields = (
            source.model_dump(mode="json", exclude={"id"})
            if isinstance(source, BaseModel)
            else None
        )
        sources.append([sid, class_path(type(source)), fields])
    dead: dict[IDType, Any] = {}
    for mail_id, letter in _stored(state.dead):
        dead[mail_id] = (
            letter if type(letter) is list else [letter.reason, letter.stage, letter.position]
        )
    header = {
        "router": state.router,
        "sources": sources,
        "deleted": sorted(state.deleted),
        "ids": ids,
        "where": "".join(_PLACE_CODE[where[i]] for i in ids),
        "versions": [versions[i] for i in ids],
        "other_versions": {k: v for k, v in versions.items() if k not in where},
        "samples": list(samples.values()),
        # Mail in boxes and the buffer as indices into "ids" (restored without new ids).
        "boxes": {
            sid: {
                "outs": [at[m] for m in box.outs],
                "ins": {s: [at[m] for m in q] for s, q in box.ins.items()},
                "mails": [at[m] for m in box.mails],
            }
            for sid, box in state.boxes.items()
        },
        "buffer": {r: [at[m] for m in q] for r, q in state.buffer.items()},
        "dead": dead,
        "position": state.position,
    }
    return header, lines


def _mail_builder(state: MailState) -> Callable[[IDType, str], Mail]:
    materialize = state.materialize_mail
    router = state.router

    def build(mail_id: IDType, line: str) -> Mail:
        item_class, row = _split(line)
        rid, sender, recipient, created_at, metadata, package = row
        pid, p_created, category, item, request_source = package
        if rid != mail_id:
            raise SnapshotError("a malformed mail row")
        sent = MailSent.model_construct(
            router=router,
            sender=sender,
            recipient=recipient,
            created_at=created_at,
            metadata=metadata,
            package=PackageData.model_construct(
                id=pid,
                created_at=p_created,
                category=category,
                item=item,
                item_class=item_class or None,
                request_source=request_source,
            ),
        )
        mail = materialize(mail_id, sent)
        if mail.id != mail_id:
            raise SnapshotError("a mail whose id does not match")
        return mail

    return _lazy("mail", f"router {router!r}", build)


def _load_mail(state: MailState, body: dict[str, Any], lines: list[str]) -> None:
    if body.get("router") != state.router:
        raise SnapshotError("a snapshot of another router")
    for sid, source_class, fields in body["sources"]:
        sid = _new_id(IDType, sid)
        added = SourceAdded.model_construct(
            router=state.router, source_class=source_class, fields=fields
        )
        state.sources[sid] = state.materialize_source(sid, added)
    state.deleted = set(_ids(body["deleted"]))
    ids = _ids(body["ids"])
    codes = body["where"]
    if len(lines) != len(ids) or not isinstance(codes, str) or len(codes) != len(ids):
        raise SnapshotError("the mail lines, places and ids do not add up")
    mails: LazyDict[IDType, Mail] = LazyDict(
        zip(ids, lines, strict=True), _mail_builder(state), str
    )
    if len(mails) != len(ids) or not set(codes) <= _CODE_PLACE.keys():
        raise SnapshotError("mail places do not add up")
    state.mails = mails
    state.where = dict(zip(ids, map(_CODE_PLACE.__getitem__, codes), strict=True))
    state.versions = dict(zip(ids, _ints(body["versions"], len(ids)), strict=True))
    state.versions.update(_int_map(body["other_versions"]))
    for mail_id in _ids(body["samples"]):
        mails[mail_id]  # built now: a class no longer defined fails the restore

    def from_mails(mail_id: IDType, raw: str) -> Mail:
        return mails[mail_id]  # one object, whichever dict it is read from

    def placed(value: Any, code: str) -> list[IDType]:
        """The mail ids at indices ``value``, each of which must be in place ``code``."""
        if (
            not isinstance(value, list)
            or not {*map(type, value)} <= {int}
            or (value and min(value) < 0)
            or any(codes[i] != code for i in value)
        ):
            raise SnapshotError("mail places do not add up")
        return list(map(ids.__getitem__, value))

    for sid, box in body["boxes"].items():
        restored = BoxState()
        restored.outs = dict.fromkeys(placed(box["outs"], "o"))
        restored.ins = {
            _new_id(IDType, s): dict.fromkeys(placed(q, "i")) for s, q in box["ins"].items()
        }
        order = list(map(ids.__getitem__, box["mails"]))
        held = [*restored.outs, *(m for q in restored.ins.values() for m in q)]
        if len(order) != len(held) or set(order) != set(held):
            raise SnapshotError("a mailbox's mails do not add up")
        for mail_id in restored.outs:
            mails[mail_id]  # undelivered: built now
        # Every value raw (""): whichever it is, it is read from ``mails``.
        restored.mails = LazyDict(dict.fromkeys(order, "").items(), from_mails, str)
        state.boxes[_new_id(IDType, sid)] = restored
    state.buffer = {
        _new_id(IDType, r): dict.fromkeys(placed(q, "b")) for r, q in body["buffer"].items()
    }
    for queue in state.buffer.values():
        for mail_id in queue:
            mails[mail_id]  # undelivered: built now

    def dead_letter(mail_id: IDType, raw: list[Any]) -> DeadLetter:
        reason, stage, position = raw
        return DeadLetter(mails[mail_id], str(reason), str(stage), int(position))

    dead, where = body["dead"], state.where
    if not isinstance(dead, dict) or not all(
        where.get(m) == "dead" and isinstance(v, list) and len(v) == 3 for m, v in dead.items()
    ):
        raise SnapshotError("dead letters do not add up")
    state.dead = LazyDict(
        ((_new_id(IDType, m), v) for m, v in dead.items()),
        _lazy("dead letter", f"router {state.router!r}", dead_letter),
        list,
    )
    state.position = _position(body["position"])
