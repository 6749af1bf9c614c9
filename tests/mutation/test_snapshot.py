"""Projection snapshots (lionstore/projections/snapshot.py): a state folded in memory,
written as snapshot text and restored into a fresh state, must be the folded state
item by item; a snapshot that does not describe a state is refused with the reason
a reopen logs when it ignores the checkpoint. The fold is pure in-memory code (no
database: the records are the data a store decodes). Written from mutmut's
survivors (docs/mutation.md)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from foldlog import FoldLog
from pydantic import BaseModel, ConfigDict

import lionstore
from lionstore.domain.element import Element, class_path
from lionstore.domain.event import Event, EventStatus
from lionstore.domain.event_records import (
    EventAppended,
    EventClaimed,
    EventDeferred,
    EventFinished,
    EventQueued,
    EventReleased,
    EventRetried,
    EventSkipped,
    ProcessorStarted,
)
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.lazy import LazyDict
from lionstore.domain.mail import Mail, item_to_json
from lionstore.domain.mail_records import (
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailExcluded,
    MailSent,
    PackageData,
    SourceAdded,
    SourceDeleted,
)
from lionstore.projections import snapshot
from lionstore.projections.executor import (
    ExecutorState,
    RecordedEvent,
    class_materializer,
    raw_materializer,
)
from lionstore.projections.mail import MailState, element_source_materializer, mail_from_record

EXECUTOR = "ex"


def _id() -> IDType:
    return to_id(uuid.uuid4())


class SnapTask(Event):
    """An event with fields of its own (named in its snapshot line)."""

    n: int
    label: str = ""
    tags: list[str] = []


class BareTask(Event):
    """An event without fields of its own."""


# -- executor ----------------------------------------------------------------------------


def _append(log: FoldLog, cls: type[Event] = SnapTask, **fields: Any) -> IDType:
    sid = _id()
    log.fold(
        sid,
        EventAppended(
            executor=EXECUTOR,
            event_class=class_path(cls),
            created_at=1.25 + log.position,
            metadata={"k": log.position},
            fields=fields,
        ),
    )
    return sid


def _run(log: FoldLog, sid: IDType, status: str, attempt: int = 1, **outcome: Any) -> None:
    log.fold(sid, EventQueued())
    log.fold(sid, EventClaimed(owner="p1", attempt=attempt, lease_expires_us=9_000, cycle=4))
    log.fold(sid, EventFinished(status=status, attempt=attempt, **outcome))


def _executor_state() -> ExecutorState:
    return ExecutorState(EXECUTOR, class_materializer(Event), item_type=SnapTask)


def _executor_scenario(log: FoldLog) -> dict[str, IDType]:
    """Events in every status and place an executor's decisions read."""
    s: dict[str, IDType] = {}
    log.fold(
        _id(),
        ProcessorStarted(
            executor=EXECUTOR,
            executor_class="some.Executor",
            processor_class="some.Processor",
            owner="p1",
            queue_capacity=3,
            capacity_refresh_time=0.5,
            max_attempts=2,
            lease_seconds=30.0,
            max_backoff=4.0,
        ),
    )
    s["completed"] = _append(log, n=1, label="done", tags=["a"])
    _run(log, s["completed"], "completed", duration_us=1_500_000, response={"r": [1, 2]})
    s["failed"] = _append(log, n=2)
    _run(log, s["failed"], "failed", duration_us=7, error="ZeroDivisionError: no")
    s["changed"] = _append(log, n=3)  # its fields changed by its invocation
    _run(log, s["changed"], "completed", response="ok", fields={"n": 30, "label": "new"})
    s["cancelled"] = _append(log, n=4)
    _run(log, s["cancelled"], "cancelled")
    s["aborted"] = _append(log, BareTask)
    _run(log, s["aborted"], "aborted", error="gave up")
    s["skipped"] = _append(log, n=5)
    log.fold(s["skipped"], EventQueued())
    log.fold(s["skipped"], EventSkipped())
    s["retried"] = _append(log, n=6)  # failed, then pending again
    _run(log, s["retried"], "failed", error="once")
    log.fold(s["retried"], EventRetried(attempt=1))
    s["deferred"] = _append(log, n=7)
    log.fold(s["deferred"], EventQueued())
    log.fold(s["deferred"], EventDeferred(reason="permission_denied", retry_at_us=5_000, denials=2))
    s["queued"] = _append(log, BareTask)
    log.fold(s["queued"], EventQueued())
    s["claimed"] = _append(log, n=8)  # in flight
    log.fold(s["claimed"], EventQueued())
    log.fold(s["claimed"], EventClaimed(owner="p2", attempt=2, lease_expires_us=8_000, cycle=6))
    s["pending"] = _append(log, n=9)
    s["released"] = _append(log, n=10)
    _run(log, s["released"], "completed")
    log.fold(s["released"], EventReleased())
    s["last_completed"] = _append(log, BareTask)
    _run(log, s["last_completed"], "completed", response=3)
    return s


def _event_view(event: Event) -> tuple[Any, ...]:
    return (type(event), event.model_dump())


def _executor_view(state: ExecutorState) -> dict[str, Any]:
    """What an executor's reader sees, statuses first (read without building)."""
    ids = list(state.pile._items)
    return {
        "ids": ids,
        "statuses": [state.status(i) for i in ids],
        "events": [_event_view(state.pile[i]) for i in ids],
        "pending": list(state.pending),
        "queue": list(state.queue),
        "released": state.released,
        "not_before_us": state.not_before_us,
        "denials": state.denials,
        "claims": state.claims,
        "attempts": state.attempts,
        "versions": list(state.versions.items()),
        "position": state.position,
        "processors": {o: p.model_dump() for o, p in state.processors.items()},
        "eligible": state.eligible(10_000),
        "wakeup": state.next_wakeup_us(),
    }


def _folded_executor() -> tuple[ExecutorState, dict[str, IDType]]:
    state = _executor_state()
    return state, _executor_scenario(FoldLog(state))


def _restored(state: Any, text: str | None = None) -> Any:
    fresh = snapshot.empty_like(state)
    snapshot.load_state(fresh, snapshot.dump_state(state) if text is None else text)
    return fresh


def test_a_restored_executor_state_is_the_folded_one_item_by_item() -> None:
    state, s = _folded_executor()
    folded = _executor_view(state)
    done, failed = EventStatus.COMPLETED, EventStatus.FAILED
    assert folded["statuses"][:3] == [done, failed, done]
    assert s["released"] in state.released and s["claimed"] in state.claims
    text = snapshot.dump_state(state)
    fresh = _restored(state, text)
    assert type(fresh) is ExecutorState and fresh.name == EXECUTOR
    assert fresh.pile.item_type == state.pile.item_type
    assert _executor_view(fresh) == folded
    # a restored state written again, read or not, is the same text
    assert snapshot.dump_state(_restored(state, text)) == text
    assert snapshot.dump_state(fresh) == text


# -- mail --------------------------------------------------------------------------------

ROUTER = "post"


class Note(BaseModel):
    """A pydantic package item (its class is named in the snapshot's mail line)."""

    text: str
    stars: int = 0


class Desk(lionstore.Source):
    """A source with a field of its own."""

    room: str = ""


def _mail_state() -> MailState:
    return MailState(
        ROUTER, element_source_materializer(Element, lambda sid: lionstore.Source(id=sid))
    )


def _sent(sender: IDType, recipient: IDType, item: Any = "hi", **over: Any) -> MailSent:
    value, item_class = item_to_json(item)
    package = PackageData(
        id=_id(),
        created_at=2.5,
        category=over.pop("category", "message"),
        item=value,
        item_class=item_class,
        request_source=over.pop("request_source", None),
    )
    return MailSent(
        router=ROUTER, sender=sender, recipient=recipient, created_at=1.5, package=package, **over
    )


def _mail_scenario(log: FoldLog) -> dict[str, Any]:
    """Sources (one of a class with fields, one deleted) and mail in every place."""
    a, b, c, gone_source = _id(), _id(), _id(), _id()
    log.fold(a, SourceAdded(router=ROUTER, source_class=class_path(lionstore.Source)))
    log.fold(b, SourceAdded(router=ROUTER, source_class=class_path(Desk), fields={"room": "9"}))
    for sid in (c, gone_source):
        log.fold(sid, SourceAdded(router=ROUTER, source_class=class_path(lionstore.Source)))
    # another router's record on a shared source stream: its version is followed
    log.fold(c, SourceAdded(router="other", source_class=class_path(lionstore.Source)))

    def send(sender: IDType, recipient: IDType, *moves: Any, **over: Any) -> IDType:
        mid = _id()
        log.fold(mid, _sent(sender, recipient, **over))
        for move in moves:
            log.fold(mid, move)
        return mid

    collected, delivered = MailCollected(), MailDelivered()
    s = {
        "sources": (a, b, c),
        "out": send(a, b, metadata={"m": 1}),
        "out_note": send(a, c, item=Note(text="n", stars=2), request_source=b),
        "buffered": send(b, c, collected, item=Note(text="wait")),
        "in1": send(a, b, collected, delivered, item={"x": [1, 2]}),
        "in2": send(c, b, collected, delivered, category="signal", item=None),
        "in3": send(a, b, collected, delivered, item=Note(text="read")),
        "dead": send(c, a, collected, MailDeadLettered(reason="recipient_deleted", stage="buffer")),
        "dead_at": log.position,
        "gone": send(b, a, collected, delivered, MailExcluded()),
    }
    log.fold(gone_source, SourceDeleted(router=ROUTER))
    s["deleted"] = gone_source
    return s


def _mail_view(mail: Mail) -> tuple[Any, ...]:
    item = mail.package.item
    return (type(mail), mail.model_dump(), type(item), item)


def _source_view(source: Any) -> tuple[Any, ...]:
    return (type(source), source.model_dump())


def _router_view(state: MailState) -> dict[str, Any]:
    return {
        "sources": {i: _source_view(s) for i, s in state.sources.items()},
        "deleted": state.deleted,
        "order": list(state.mails),
        "where": list(state.where.items()),
        "versions": state.versions,
        "boxes": {
            sid: (
                list(box.outs),
                {s: list(q) for s, q in box.ins.items()},
                list(box.mails),
                [_mail_view(m) for m in box.mails.values()],
            )
            for sid, box in state.boxes.items()
        },
        "buffer": {r: list(q) for r, q in state.buffer.items()},
        "mails": {i: _mail_view(m) for i, m in state.mails.items()},
        "dead": {
            i: (_mail_view(d.mail), d.reason, d.stage, d.position) for i, d in state.dead.items()
        },
        "position": state.position,
    }


def _folded_router() -> tuple[MailState, dict[str, Any]]:
    state = _mail_state()
    return state, _mail_scenario(FoldLog(state))


def test_a_restored_mail_state_is_the_folded_one_mail_by_mail() -> None:
    state, s = _folded_router()
    folded = _router_view(state)
    assert folded["dead"][s["dead"]][1:] == ("recipient_deleted", "buffer", s["dead_at"])
    assert folded["sources"][s["sources"][1]] == (
        Desk,
        {"id": s["sources"][1], **folded["sources"][s["sources"][1]][1], "room": "9"},
    )
    text = snapshot.dump_state(state)
    fresh = _restored(state, text)
    assert type(fresh) is MailState and fresh.router == ROUTER
    assert _router_view(fresh) == folded
    # one object per mail, whichever dict it is read from
    for box in fresh.boxes.values():
        assert all(box.mails[i] is fresh.mails[i] for i in box.mails)
    assert all(d.mail is fresh.mails[i] for i, d in fresh.dead.items())
    assert snapshot.dump_state(_restored(state, text)) == text
    assert snapshot.dump_state(fresh) == text


# -- refusals: the reason a reopen logs when it ignores a checkpoint ----------------------


def _parts(text: str) -> tuple[dict[str, Any], list[str]]:
    first, _, rest = text.partition("\n")
    return json.loads(first), rest.split("\n")


def _text(header: dict[str, Any], lines: list[str]) -> str:
    return "\n".join([json.dumps(header), *lines])


def _refused(state: Any, text: str, reason: str) -> None:
    with pytest.raises(snapshot.SnapshotError, match=reason):
        snapshot.load_state(snapshot.empty_like(state), text)


def _edit(key: str, value: Any) -> Any:
    def edit(h: dict[str, Any], lines: list[str], s: dict[str, IDType]) -> None:
        h[key] = value(h, s) if callable(value) else value

    return edit


def _line(h: dict[str, Any], lines: list[str], sid: IDType) -> int:
    return list(h["ids"]).index(sid)


def _status_code(code: str) -> Any:
    def edit(h: dict[str, Any], lines: list[str], s: dict[str, IDType]) -> None:
        at = _line(h, lines, s["completed"])
        lines[at] = code + lines[at][1:] if code else ""

    return edit


def _other_id(h: dict[str, Any], lines: list[str], s: dict[str, IDType]) -> None:
    at = _line(h, lines, s["pending"])
    lines[at] = lines[at].replace(str(s["pending"]), str(_id()))


def _fields_not_a_map(h: dict[str, Any], lines: list[str], s: dict[str, IDType]) -> None:
    at = _line(h, lines, s["pending"])
    prefix, _, row = lines[at].partition("\t")
    values = json.loads(row)
    values[3] = ["n", 9]
    lines[at] = f"{prefix}\t{json.dumps(values)}"


def _twice(h: dict[str, Any], lines: list[str], s: dict[str, IDType]) -> None:
    h["ids"][1] = h["ids"][0]


def _drop_line(h: dict[str, Any], lines: list[str], s: dict[str, IDType]) -> None:
    lines.pop()


EXECUTOR_BAD: dict[str, tuple[Any, str]] = {
    "another executor": (_edit("executor", "other"), "^a snapshot of another executor$"),
    "ids not a list": (_edit("ids", "abc"), "^expected a list of ids$"),
    "an id not a string": (
        _edit("ids", lambda h, s: [1, *h["ids"][1:]]),
        "^expected a list of ids$",
    ),
    "a line missing": (_drop_line, "^the event lines and ids do not add up$"),
    "an unknown status code": (_status_code("Z"), "^an event line without a status$"),
    "an empty line": (_status_code(""), "^an event line without a status$"),
    "an id listed twice": (_twice, "^an event id listed twice$"),
    "versions one short": (
        _edit("versions", lambda h, s: h["versions"][1:]),
        "^expected a list of {n} integers$",
    ),
    "a version not an integer": (
        _edit("versions", lambda h, s: ["1", *h["versions"][1:]]),
        "^expected a list of {n} integers$",
    ),
    "versions not a list": (_edit("versions", {}), "integers$"),
    "a live id not a string": (_edit("live", [3]), "^expected a list of ids$"),
    "samples not a list": (_edit("samples", "x"), "^expected a list of ids$"),
    "pending not ids": (_edit("pending", [None]), "^expected a list of ids$"),
    "queue not ids": (_edit("queue", {"a": 1}), "^expected a list of ids$"),
    "released not ids": (_edit("released", [1.5]), "^expected a list of ids$"),
    "not_before_us not a map": (_edit("not_before_us", [1]), "^expected a map of ids to integers$"),
    "a denial count not an integer": (
        _edit("denials", lambda h, s: {str(s["deferred"]): 2.0}),
        "^expected a map of ids to integers$",
    ),
    "attempts not a list": (
        _edit("attempts", {}),
        r"^expected an attempt count \(or null\) per event$",
    ),
    "attempts one short": (
        _edit("attempts", lambda h, s: h["attempts"][1:]),
        r"^expected an attempt count \(or null\) per event$",
    ),
    "an attempt count not an integer": (
        _edit("attempts", lambda h, s: ["1", *h["attempts"][1:]]),
        r"^expected an attempt count \(or null\) per event$",
    ),
    "claims not a map": (_edit("claims", [["p", 1, 2, 3]]), "^claims must be a map$"),
    "a pending id not held": (
        _edit("pending", lambda h, s: [*h["pending"], str(_id())]),
        "^the event ids do not add up$",
    ),
    "a queued id not held": (
        _edit("queue", lambda h, s: [str(s["released"])]),
        "^the event ids do not add up$",
    ),
    "a claim of an id not held": (
        _edit("claims", lambda h, s: {str(_id()): ["p", 1, 2, 3]}),
        "^the event ids do not add up$",
    ),
    "a negative position": (_edit("position", -1), "^a bad position$"),
    "a position not an integer": (_edit("position", 3.0), "^a bad position$"),
    "a position that is a boolean": (_edit("position", True), "^a bad position$"),
    "a live event with another id": (
        _other_id,
        r"^event \S+ of executor 'ex' does not restore from its checkpoint \(SnapshotError: "
        r"a malformed event row\); reopen with checkpoints=False, or delete the run's rows in"
        r" lionstore_checkpoints, to fold it from the log$",
    ),
    "a live event whose fields are not a map": (
        _fields_not_a_map,
        r"^event \S+ of executor 'ex' does not restore from its checkpoint \(SnapshotError: "
        r"a malformed event row\)",
    ),
}


@pytest.mark.parametrize("case", sorted(EXECUTOR_BAD))
def test_a_bad_executor_snapshot_is_refused_with_its_reason(case: str) -> None:
    state, s = _folded_executor()
    header, lines = _parts(snapshot.dump_state(state))
    edit, reason = EXECUTOR_BAD[case]
    edit(header, lines, s)
    _refused(state, _text(header, lines), reason.replace("{n}", str(len(state.versions))))


def _mail_line_of(h: dict[str, Any], lines: list[str], mid: IDType, change: Any) -> None:
    at = list(h["ids"]).index(mid)
    prefix, _, row = lines[at].partition("\t")
    values = json.loads(row)
    change(values)
    lines[at] = f"{prefix}\t{json.dumps(values)}"


def _mail_edit(key: str, value: Any) -> Any:
    def edit(h: dict[str, Any], lines: list[str], s: dict[str, Any]) -> None:
        h[key] = value(h, s) if callable(value) else value

    return edit


def _box_edit(change: Any) -> Any:
    def edit(h: dict[str, Any], lines: list[str], s: dict[str, Any]) -> None:
        change(h["boxes"], h, s)

    return edit


def _at(h: dict[str, Any], mid: IDType) -> int:
    return list(h["ids"]).index(mid)


def _out_of_place(boxes: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    # the outbox names a mail that is in an inbox
    boxes[str(s["sources"][0])]["outs"].append(_at(h, s["in1"]))


def _negative_index(boxes: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    boxes[str(s["sources"][0])]["outs"] = [-1]


def _index_not_int(boxes: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    boxes[str(s["sources"][0])]["outs"] = ["0"]


def _outs_not_a_list(boxes: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    boxes[str(s["sources"][0])]["outs"] = {}


def _inbox_out_of_place(boxes: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    b = boxes[str(s["sources"][1])]
    b["ins"][str(s["sources"][0])].append(_at(h, s["out"]))


def _box_mails_short(boxes: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    boxes[str(s["sources"][1])]["mails"].pop()


def _box_mails_other(boxes: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    mails = boxes[str(s["sources"][1])]["mails"]
    mails[0] = _at(h, s["gone"])


def _buffer_out_of_place(h: dict[str, Any], lines: list[str], s: dict[str, Any]) -> None:
    (queue,) = h["buffer"].values()
    queue.append(_at(h, s["in2"]))


def _dead_edit(change: Any) -> Any:
    def edit(h: dict[str, Any], lines: list[str], s: dict[str, Any]) -> None:
        change(h["dead"], h, s)

    return edit


def _dead_not_dead(dead: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    dead[str(s["in1"])] = ["why", "buffer", 3]


def _dead_short(dead: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    dead[str(s["dead"])] = ["why", "buffer"]


def _dead_not_list(dead: dict[str, Any], h: dict[str, Any], s: dict[str, Any]) -> None:
    dead[str(s["dead"])] = "why"


def _mail_place(code: str) -> Any:
    def edit(h: dict[str, Any], lines: list[str], s: dict[str, Any]) -> None:
        at = _at(h, s["gone"])
        h["where"] = h["where"][:at] + code + h["where"][at + 1 :]

    return edit


def _mail_twice(h: dict[str, Any], lines: list[str], s: dict[str, Any]) -> None:
    h["ids"][1] = h["ids"][0]


def _mail_row_id(h: dict[str, Any], lines: list[str], s: dict[str, Any]) -> None:
    _mail_line_of(h, lines, s["out"], lambda v: v.__setitem__(0, str(_id())))


MAIL_BAD: dict[str, tuple[Any, str]] = {
    "another router": (_mail_edit("router", "other"), "^a snapshot of another router$"),
    "deleted not ids": (_mail_edit("deleted", [5]), "^expected a list of ids$"),
    "ids not ids": (_mail_edit("ids", "x"), "^expected a list of ids$"),
    "a line missing": (_drop_line, "^the mail lines, places and ids do not add up$"),
    "places not a string": (
        _mail_edit("where", lambda h, s: list(h["where"])),
        "^the mail lines, places and ids do not add up$",
    ),
    "a place missing": (
        _mail_edit("where", lambda h, s: h["where"][1:]),
        "^the mail lines, places and ids do not add up$",
    ),
    "an unknown place": (_mail_place("x"), "^mail places do not add up$"),
    "an id listed twice": (_mail_twice, "^mail places do not add up$"),
    "versions one short": (
        _mail_edit("versions", lambda h, s: h["versions"][1:]),
        "^expected a list of {n} integers$",
    ),
    "other versions not a map": (
        _mail_edit("other_versions", ["x"]),
        "^expected a map of ids to integers$",
    ),
    "samples not ids": (_mail_edit("samples", [0]), "^expected a list of ids$"),
    "an outbox naming a mail in an inbox": (
        _box_edit(_out_of_place),
        "^mail places do not add up$",
    ),
    "a negative index": (_box_edit(_negative_index), "^mail places do not add up$"),
    "an index not an integer": (_box_edit(_index_not_int), "^mail places do not add up$"),
    "an outbox not a list": (_box_edit(_outs_not_a_list), "^mail places do not add up$"),
    "an inbox naming a mail in an outbox": (
        _box_edit(_inbox_out_of_place),
        "^mail places do not add up$",
    ),
    "a mailbox missing a mail": (_box_edit(_box_mails_short), "^a mailbox's mails do not add up$"),
    "a mailbox holding another mail": (
        _box_edit(_box_mails_other),
        "^a mailbox's mails do not add up$",
    ),
    "a buffer naming a mail in an inbox": (_buffer_out_of_place, "^mail places do not add up$"),
    "a dead letter of a mail not dead": (
        _dead_edit(_dead_not_dead),
        "^dead letters do not add up$",
    ),
    "a dead letter of two values": (_dead_edit(_dead_short), "^dead letters do not add up$"),
    "a dead letter not a list": (_dead_edit(_dead_not_list), "^dead letters do not add up$"),
    "dead letters not a map": (_mail_edit("dead", []), "^dead letters do not add up$"),
    "a negative position": (_mail_edit("position", -2), "^a bad position$"),
    "an undelivered mail with another id": (
        _mail_row_id,
        r"^mail \S+ of router 'post' does not restore from its checkpoint \(SnapshotError: "
        r"a malformed mail row\); reopen with checkpoints=False, or delete the run's rows in"
        r" lionstore_checkpoints, to fold it from the log$",
    ),
}


@pytest.mark.parametrize("case", sorted(MAIL_BAD))
def test_a_bad_mail_snapshot_is_refused_with_its_reason(case: str) -> None:
    state, s = _folded_router()
    header, lines = _parts(snapshot.dump_state(state))
    edit, reason = MAIL_BAD[case]
    edit(header, lines, s)
    _refused(state, _text(header, lines), reason.replace("{n}", str(len(state.mails))))


@pytest.mark.parametrize("first", ["", "{", "not json", '{"a": 1'])
def test_a_header_that_is_not_json_is_refused(first: str) -> None:
    for state in (_executor_state(), _mail_state()):
        with pytest.raises(snapshot.SnapshotError, match=r"^not JSON: \S"):
            snapshot.load_state(state, f"{first}\nrest")


@pytest.mark.parametrize("first", ["[]", "1", '"text"', "null"])
def test_a_header_that_is_not_an_object_is_refused(first: str) -> None:
    for state in (_executor_state(), _mail_state()):
        with pytest.raises(snapshot.SnapshotError, match=r"^not a JSON object$"):
            snapshot.load_state(state, first)


def test_an_event_a_materializer_builds_with_another_id_is_refused() -> None:
    """A materializer that does not keep the id it is given (a user's own) cannot
    restore a snapshot: the event would be filed under an id that is not its own."""
    state, _ = _folded_executor()
    text = snapshot.dump_state(state)
    wrong = ExecutorState(EXECUTOR, lambda sid, data: SnapTask(n=1), item_type=SnapTask)
    with pytest.raises(
        snapshot.SnapshotError,
        match=r"^event \S+ of executor 'ex' does not restore from its checkpoint \(SnapshotError:"
        r" an event whose id does not match\)",
    ):
        snapshot.load_state(wrong, text)


def test_a_mail_a_materializer_builds_with_another_id_is_refused() -> None:
    state, _ = _folded_router()
    text = snapshot.dump_state(state)

    def other_id(mail_id: IDType, data: Any) -> Mail:
        return mail_from_record(_id(), data)

    wrong = MailState(ROUTER, state.materialize_source, other_id)
    with pytest.raises(
        snapshot.SnapshotError,
        match=r"^mail \S+ of router 'post' does not restore from its checkpoint \(SnapshotError:"
        r" a mail whose id does not match\)",
    ):
        snapshot.load_state(wrong, text)


# -- what a reader of the stored text sees ----------------------------------------------


def test_an_executor_snapshot_lists_live_events_and_one_sample_per_finished_class() -> None:
    state, s = _folded_executor()
    header, lines = _parts(snapshot.dump_state(state))
    ids = list(state.pile._items)
    assert header["executor"] == EXECUTOR and header["ids"] == ids
    assert header["versions"] == [state.versions[i] for i in ids]
    codes = {i: line[0] for i, line in zip(ids, lines, strict=True)}
    assert [codes[s[k]] for k in ("completed", "failed", "cancelled", "aborted", "skipped")] == [
        "C",
        "F",
        "X",
        "A",
        "S",
    ]
    assert [codes[s[k]] for k in ("retried", "deferred", "queued", "pending", "claimed")] == [
        "P",
        "P",
        "P",
        "P",
        "R",
    ]
    task, bare = class_path(SnapTask), class_path(BareTask)
    assert lines[ids.index(s["completed"])].startswith(f"C{task}\t")
    assert lines[ids.index(s["queued"])].startswith(f"P{bare}\t")
    assert header["live"] == [s[k] for k in ("retried", "deferred", "queued", "claimed", "pending")]
    # the first finished event of each class
    assert header["samples"] == [s["completed"], s["aborted"]]
    assert header["pending"] == [s["retried"], s["pending"]]
    assert header["queue"] == [s["deferred"], s["queued"]]
    assert header["released"] == [s["released"]]
    assert header["not_before_us"] == {s["deferred"]: 5_000}
    assert header["denials"] == {s["deferred"]: 2}
    assert header["claims"] == {s["claimed"]: ["p2", 2, 8_000, 6]}
    attempts = dict(zip(ids, header["attempts"], strict=True))
    assert attempts[s["completed"]] == 1 and attempts[s["claimed"]] == 2
    assert attempts[s["pending"]] is None and attempts[s["queued"]] is None
    assert header["position"] == state.position
    assert header["processors"]["p1"]["queue_capacity"] == 3
    row = json.loads(lines[ids.index(s["completed"])].partition("\t")[2])
    assert row == [
        s["completed"],
        state.pile[s["completed"]].created_at,
        state.pile[s["completed"]].metadata,
        {"n": 1, "label": "done", "tags": ["a"]},
        1.5,
        {"r": [1, 2]},
        None,
    ]
    bare_row = json.loads(lines[ids.index(s["aborted"])].partition("\t")[2])
    assert bare_row[3:] == [{}, None, None, "gave up"]


def test_a_restored_executor_builds_only_live_events_and_the_samples() -> None:
    state, s = _folded_executor()
    header, _ = _parts(snapshot.dump_state(state))
    fresh = _restored(state)
    items = fresh.pile._items
    assert isinstance(items, LazyDict)
    built = {i for i in items if items.is_built(i)}
    assert built == set(header["live"]) | {s["completed"], s["aborted"]}
    # statuses are read from the lines, without building
    assert fresh.status(s["failed"]) is EventStatus.FAILED
    assert fresh.status(s["skipped"]) is EventStatus.SKIPPED
    assert not items.is_built(s["failed"])
    assert [e.id for e in fresh.with_status(EventStatus.FAILED)] == [s["failed"]]
    assert items.is_built(s["failed"]) and not items.is_built(s["cancelled"])
    assert fresh.released == {s["released"]} and not fresh.knows(_id())


def test_a_mail_snapshot_lists_places_boxes_and_dead_letters() -> None:
    state, s = _folded_router()
    header, lines = _parts(snapshot.dump_state(state))
    ids = list(state.mails)
    a, b, c = s["sources"]
    assert header["router"] == ROUTER and header["ids"] == ids
    place = dict(zip(ids, header["where"], strict=True))
    assert [place[s[k]] for k in ("out", "buffered", "in1", "dead", "gone")] == list("obidg")
    assert header["sources"] == [
        [sid, class_path(type(source)), source.model_dump(mode="json", exclude={"id"})]
        for sid, source in state.sources.items()
    ]
    assert [row[0] for row in header["sources"]] == [a, b, c]
    assert header["sources"][1][1:] == [
        class_path(Desk),
        {"created_at": state.sources[b].created_at, "metadata": {}, "room": "9"},
    ]
    assert header["deleted"] == [s["deleted"]]
    assert header["versions"] == [state.versions[i] for i in ids]
    assert header["other_versions"] == {
        str(k): v for k, v in state.versions.items() if k not in state.where
    }
    assert header["other_versions"][c] == 2
    at = {m: i for i, m in enumerate(ids)}
    assert header["boxes"][a] == {
        "outs": [at[s["out"]], at[s["out_note"]]],
        "ins": {},
        "mails": [at[s["out"]], at[s["out_note"]]],
    }
    assert header["boxes"][b]["ins"] == {a: [at[s["in1"]], at[s["in3"]]], c: [at[s["in2"]]]}
    assert header["buffer"] == {c: [at[s["buffered"]]]}
    assert header["dead"] == {s["dead"]: ["recipient_deleted", "buffer", s["dead_at"]]}
    assert header["position"] == state.position
    # the first mail of each item class is the sample
    assert header["samples"] == [s["out_note"]]
    note = lines[at[s["out_note"]]]
    assert note.startswith(f"{class_path(Note)}\t")
    assert json.loads(note.partition("\t")[2]) == [
        s["out_note"],
        a,
        c,
        1.5,
        {},
        [state.mails[s["out_note"]].package.id, 2.5, "message", {"text": "n", "stars": 2}, b],
    ]
    assert lines[at[s["out"]]].startswith("\t")


def test_a_restored_router_builds_only_undelivered_mail_and_the_samples() -> None:
    state, s = _folded_router()
    fresh = _restored(state)
    mails = fresh.mails
    assert isinstance(mails, LazyDict)
    built = {i for i in mails if mails.is_built(i)}
    assert built == {s["out"], s["out_note"], s["buffered"]}
    assert mails.unbuilt() == len(mails) - 3
    # the sample's item is built as its class
    assert mails[s["in3"]].package.item == Note(text="read")


def test_a_source_that_is_not_a_model_is_snapshotted_without_fields() -> None:
    made: list[tuple[IDType, str, Any]] = []

    def plain(sid: IDType, data: SourceAdded) -> Any:
        made.append((sid, data.source_class, data.fields))
        return ("source", sid)

    state = MailState(ROUTER, plain)
    a = _id()
    FoldLog(state).fold(a, SourceAdded(router=ROUTER, source_class="x.Y", fields={"k": 1}))
    header, _ = _parts(snapshot.dump_state(state))
    assert header["sources"] == [[a, "builtins.tuple", None]]
    fresh = _restored(state)
    assert fresh.sources == {a: ("source", a)}
    assert made[1] == (a, "builtins.tuple", None)


def test_restoring_hands_the_materializers_the_records_the_fold_did() -> None:
    """Restoring goes through the state's own materializers with the record data the
    fold gave them (as ``event.appended`` and ``mail.sent`` carry it)."""
    seen: dict[str, list[tuple[IDType, dict[str, Any]]]] = {"fold": [], "restore": []}
    phase = "fold"
    materialize = class_materializer(Event)

    def event(sid: IDType, data: EventAppended) -> Event:
        # (a snapshot holds the event's fields with their defaults: compared elsewhere)
        seen[phase].append((sid, data.model_dump(exclude={"fields"})))
        return materialize(sid, data)

    def mail(mail_id: IDType, data: Any) -> Mail:
        seen[phase].append((mail_id, data.model_dump()))
        return mail_from_record(mail_id, data)

    sources = _mail_state().materialize_source

    def source(sid: IDType, data: SourceAdded) -> Any:
        # (a snapshot holds a source's fields as they are now: by design, see snapshot.py)
        seen[phase].append((sid, data.model_dump(include={"router"})))
        return sources(sid, data)

    state = ExecutorState(EXECUTOR, event, item_type=SnapTask)
    _executor_scenario(FoldLog(state))
    router = MailState(ROUTER, source, mail)
    _mail_scenario(FoldLog(router))
    phase = "restore"
    fresh, fresh_router = _restored(state), _restored(router)
    fresh.pile._items.build_all()
    fresh_router.mails.build_all()
    folded = dict(seen["fold"])
    assert len(seen["restore"]) == len(fresh.pile) + len(fresh_router.mails) + 3
    for sid, data in seen["restore"]:
        assert data == folded[sid]


def test_a_header_without_released_events_restores_with_none_released() -> None:
    state, s = _folded_executor()
    header, lines = _parts(snapshot.dump_state(state))
    del header["released"]
    fresh = _restored(state, _text(header, lines))
    assert fresh.released == set() and not fresh.knows(s["released"])
    assert list(fresh.pile._items) == list(state.pile._items)


def test_a_state_whose_every_event_is_live_restores() -> None:
    state = _executor_state()
    log = FoldLog(state)
    pending, queued, claimed = _append(log, n=1), _append(log, n=2), _append(log, n=3)
    for sid in (queued, claimed):
        log.fold(sid, EventQueued())
    log.fold(claimed, EventClaimed(owner="p", attempt=1, lease_expires_us=5, cycle=1))
    fresh = _restored(state)
    assert _executor_view(fresh) == _executor_view(state)
    assert (list(fresh.pending), list(fresh.queue), list(fresh.claims)) == (
        [pending],
        [queued],
        [claimed],
    )


def test_a_damaged_dead_letter_fails_loudly_when_read() -> None:
    state, s = _folded_router()
    header, lines = _parts(snapshot.dump_state(state))
    header["dead"][str(s["dead"])][2] = "late"
    fresh = _restored(state, _text(header, lines))  # dead letters are built when read
    assert s["dead"] in fresh.dead and fresh.where[s["dead"]] == "dead"
    with pytest.raises(
        snapshot.SnapshotError,
        match=r"^dead letter \S+ of router 'post' does not restore from its checkpoint "
        r"\(ValueError: invalid literal",
    ):
        fresh.dead[s["dead"]]
    assert not snapshot.snapshot_ready(fresh)


def test_a_state_with_nothing_applied_restores_at_position_zero() -> None:
    """As a run's checkpoint holds an executor or router it has no records of yet."""
    for state in (_executor_state(), _mail_state()):
        fresh = _restored(state)
        assert fresh.position == 0 and fresh.versions == {}
        assert snapshot.dump_state(fresh) == snapshot.dump_state(state)


# -- values that are not JSON-native, classes kept by name, extra fields -------------------


class WhenTask(Event):
    """An event with a field whose JSON form is not its Python value."""

    at: datetime


class LooseTask(Event):
    """An event without fields of its own that keeps extra ones."""

    model_config = ConfigDict(extra="allow")


class Clock(lionstore.Source):
    """A source with a field whose JSON form is not its Python value."""

    since: datetime


AT = datetime(2026, 12, 7, 13, 5, 30, 250_000, tzinfo=UTC)


def test_an_event_field_that_is_not_json_native_restores_as_its_value() -> None:
    state = _executor_state()
    log = FoldLog(state)
    done = _append(log, WhenTask, at=AT.isoformat())
    _run(log, done, "completed")
    pending = _append(log, WhenTask, at="2027-01-01T00:00:00Z")
    _, lines = _parts(snapshot.dump_state(state))
    assert json.loads(lines[0].partition("\t")[2])[3] == {"at": "2026-12-07T13:05:30.250000Z"}
    fresh = _restored(state)
    assert fresh.pile[done].at == AT and type(fresh.pile[done]) is WhenTask
    assert fresh.pile[pending].at == datetime(2027, 1, 1, tzinfo=UTC)
    assert _executor_view(fresh) == _executor_view(state)


def test_an_event_with_extra_fields_and_none_of_its_own_keeps_them() -> None:
    state = _executor_state()
    log = FoldLog(state)
    sid = _append(log, LooseTask, x=1, note="kept")
    _run(log, sid, "completed")
    assert state.pile[sid].model_extra == {"x": 1, "note": "kept"}
    _, lines = _parts(snapshot.dump_state(state))
    assert json.loads(lines[0].partition("\t")[2])[3] == {"x": 1, "note": "kept"}
    fresh = _restored(state)
    assert fresh.pile[sid].model_extra == {"x": 1, "note": "kept"}
    assert _executor_view(fresh) == _executor_view(state)


def test_events_kept_by_class_name_restore_with_their_recorded_class() -> None:
    """An executor folded without the user's classes (raw_materializer: inspection)
    holds RecordedEvents; its snapshot names each event's recorded class, not
    RecordedEvent, and restores the same class names and fields."""
    state = ExecutorState(EXECUTOR, raw_materializer)
    s = _executor_scenario(FoldLog(state))
    assert type(state.pile[s["completed"]]) is RecordedEvent
    header, lines = _parts(snapshot.dump_state(state))
    at = list(header["ids"]).index(s["completed"])
    assert lines[at].startswith(f"C{class_path(SnapTask)}\t")
    fresh = _restored(state)
    restored = fresh.pile[s["completed"]]
    assert type(restored) is RecordedEvent and restored.event_class == class_path(SnapTask)
    assert restored.fields == {"n": 1, "label": "done", "tags": ["a"]}
    assert fresh.pile[s["aborted"]].event_class == class_path(BareTask)
    assert _executor_view(fresh) == _executor_view(state)


def test_a_source_field_that_is_not_json_native_restores_as_its_value() -> None:
    state = _mail_state()
    a = _id()
    FoldLog(state).fold(
        a, SourceAdded(router=ROUTER, source_class=class_path(Clock), fields={"since": str(AT)})
    )
    header, _ = _parts(snapshot.dump_state(state))
    assert header["sources"][0][2]["since"] == "2026-12-07T13:05:30.250000Z"
    fresh = _restored(state)
    assert type(fresh.sources[a]) is Clock and fresh.sources[a].since == AT
    assert _router_view(fresh) == _router_view(state)


# -- a row is JSON: tabs inside it are JSON whitespace, the prefix ends at the first ----


def _tabbed(lines: list[str], at: int) -> None:
    """The line's JSON row written with tabs as whitespace (as another JSON writer may)."""
    prefix, _, row = lines[at].partition("\t")
    spaced = json.dumps(json.loads(row), separators=(",\t", ":\t"))
    lines[at] = f"{prefix}\t{spaced}"
    assert lines[at].count("\t") > 2


def test_an_event_row_with_tabs_in_its_json_restores_and_is_written_back() -> None:
    state, s = _folded_executor()
    header, lines = _parts(snapshot.dump_state(state))
    _tabbed(lines, _line(header, lines, s["failed"]))  # finished, not its class's sample
    text = _text(header, lines)
    fresh = _restored(state, text)
    # written back unread: the same line, and the same samples (one per class)
    again, again_lines = _parts(snapshot.dump_state(fresh))
    assert again["samples"] == header["samples"] == [s["completed"], s["aborted"]]
    assert again_lines == lines
    # read: the event as folded
    assert _event_view(fresh.pile[s["failed"]]) == _event_view(state.pile[s["failed"]])
    assert _executor_view(fresh) == _executor_view(state)


def test_a_mail_row_with_tabs_in_its_json_restores_and_is_written_back() -> None:
    state, s = _folded_router()
    header, lines = _parts(snapshot.dump_state(state))
    _tabbed(lines, _at(header, s["in2"]))  # delivered, no item class: kept unread
    fresh = _restored(state, _text(header, lines))
    assert not fresh.mails.is_built(s["in2"])
    again, again_lines = _parts(snapshot.dump_state(fresh))
    assert again["samples"] == header["samples"] == [s["out_note"]]
    assert again_lines == lines
    assert _mail_view(fresh.mails[s["in2"]]) == _mail_view(state.mails[s["in2"]])
    assert _router_view(fresh) == _router_view(state)


# -- one sample per item class ------------------------------------------------------------


class Memo(BaseModel):
    """A second package item class."""

    body: str


def _two_item_classes() -> tuple[MailState, dict[str, IDType]]:
    """Mail of two item classes; the first of the second class delivered (kept unread)."""
    state = _mail_state()
    log = FoldLog(state)
    a, b = _id(), _id()
    for sid in (a, b):
        log.fold(sid, SourceAdded(router=ROUTER, source_class=class_path(lionstore.Source)))
    s: dict[str, IDType] = {}
    for name, item, moves in (
        ("note", Note(text="n"), ()),
        ("memo", Memo(body="first"), (MailCollected(), MailDelivered())),
        ("memo2", Memo(body="second"), (MailCollected(), MailDelivered())),
        ("plain", "text", (MailCollected(), MailDelivered())),
    ):
        s[name] = _id()
        log.fold(s[name], _sent(a, b, item=item))
        for move in moves:
            log.fold(s[name], move)
    return state, s


def test_a_mail_snapshot_names_the_first_mail_of_each_item_class() -> None:
    state, s = _two_item_classes()
    header, _ = _parts(snapshot.dump_state(state))
    assert header["samples"] == [s["note"], s["memo"]]
    fresh = _restored(state)
    built = {i for i in fresh.mails if fresh.mails.is_built(i)}
    assert built == {s["note"], s["memo"]}  # the outbox mail and the Memo sample
    assert fresh.mails[s["memo"]].package.item == Memo(body="first")


def test_samples_are_named_again_from_the_lines_whatever_the_header_read_said() -> None:
    """A header that lists no samples restores (nothing but undelivered mail built);
    the state written again names the first mail of each class, read or not."""
    state, s = _two_item_classes()
    header, lines = _parts(snapshot.dump_state(state))
    header["samples"] = []
    fresh = _restored(state, _text(header, lines))
    assert not fresh.mails.is_built(s["memo"])
    again, again_lines = _parts(snapshot.dump_state(fresh))
    assert again["samples"] == [s["note"], s["memo"]] and again_lines == lines


# -- a state that does not add up is not written --------------------------------------------


def _other_version(state: ExecutorState, s: dict[str, IDType]) -> None:
    del state.versions[s["pending"]]
    state.versions[_id()] = 1


def _extra_version(state: ExecutorState, s: dict[str, IDType]) -> None:
    state.versions[_id()] = 1


def _foreign_attempt(state: ExecutorState, s: dict[str, IDType]) -> None:
    state.attempts[_id()] = 1


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_other_version, "^the event ids and their stream versions do not add up$"),
        (_extra_version, "^the event ids and their stream versions do not add up$"),
        (_foreign_attempt, "^attempts of events this executor does not hold$"),
    ],
)
def test_an_executor_state_that_does_not_add_up_is_not_written(damage: Any, reason: str) -> None:
    """A ValueError (what a checkpoint write logs and skips), not a snapshot."""
    state, s = _folded_executor()
    damage(state, s)
    with pytest.raises(ValueError, match=reason):
        snapshot.dump_state(state)


def test_a_mail_state_that_does_not_add_up_is_not_written() -> None:
    state, s = _folded_router()
    del state.versions[s["in1"]]
    with pytest.raises(
        ValueError, match=r"^the mail ids, places and stream versions do not add up$"
    ):
        snapshot.dump_state(state)


@pytest.mark.parametrize("name", ["some.Task\tX", "some.Task\nX"])
def test_an_event_class_name_with_a_tab_or_newline_is_not_written(name: str) -> None:
    """A log can name any class; a state kept by class name (raw_materializer) that
    holds such a name is not snapshotted: its line could not be read back."""
    state = ExecutorState(EXECUTOR, raw_materializer)
    FoldLog(state).fold(_id(), EventAppended(executor=EXECUTOR, event_class=name, created_at=1.0))
    reason = f"a class name with a tab or newline cannot be snapshotted: {name!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        snapshot.dump_state(state)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_value_plain_json_cannot_hold_is_not_written(value: float) -> None:
    """The log keeps such floats; a snapshot is plain JSON, so the state is not
    written (a ValueError, which a checkpoint write logs and skips)."""
    state = _executor_state()
    log = FoldLog(state)
    sid = _append(log, n=1)
    _run(log, sid, "completed", response={"ratio": value})
    with pytest.raises(ValueError):
        snapshot.dump_state(state)


def test_only_executor_and_mail_states_are_snapshotted() -> None:
    other: Any = {"position": 0}
    with pytest.raises(TypeError, match=r"^no snapshot for dict$"):
        snapshot.dump_state(other)


def test_a_dead_letter_never_read_is_written_back_as_it_was_read() -> None:
    """A router restored from a checkpoint and checkpointed again does not build its
    unread dead letters (nor their mail): they are written back as read, and a damaged
    one still fails when it is read, not at the next checkpoint."""
    state, s = _folded_router()
    fresh = _restored(state)
    assert snapshot.dump_state(fresh) == snapshot.dump_state(state)
    assert type(dict.__getitem__(fresh.dead, s["dead"])) is list  # still unread
    header, lines = _parts(snapshot.dump_state(state))
    header["dead"][str(s["dead"])][2] = "late"
    damaged = _restored(state, _text(header, lines))
    again = _parts(snapshot.dump_state(damaged))[0]
    assert again["dead"][str(s["dead"])] == header["dead"][str(s["dead"])]
    assert snapshot.snapshot_ready(damaged)
    with pytest.raises(snapshot.SnapshotError, match="does not restore from its checkpoint"):
        damaged.dead[s["dead"]]
