"""A recorded run as OpenTelemetry spans, after the fact.

The log holds more than a live tracer sees: every enqueue, claim, denial, lease
takeover, outcome, send, collect, delivery and dead letter, with its commit time. This
module folds a run's records into spans, so a run recorded with no tracing at all can
be looked at in Jaeger, Tempo, Phoenix or any OTLP consumer.

The tree of a run::

    run <label>                          the first record to the last
    ├── executor <name>                  per executor of the run
    │   └── <EventClass>                 one event: appended to its final outcome
    │       └── <EventClass> attempt N   one claim: claimed to its outcome (or takeover)
    └── mail <router>                    per mail router
        └── mail <category>              one mail: sent to delivered / dead-lettered

Times are the records' ``recorded_at`` (commit times). Trace and span ids are derived
from the run id and the records' streams (:mod:`lionstore.otel._attrs`), so exporting
a run twice sends the same ids: a backend sees the same trace, not a second copy.

Denials, queueing and collection are span events on the span they concern; a failed
outcome, an abandoned event and a dead letter set the span's status to ERROR with
the reason. Model calls (an event whose fields carry an OpenAI-style request) get the
GenAI semantic-convention attributes (operation, request model, usage tokens).

Nothing here imports OpenTelemetry: :func:`recorded_spans` returns plain
:class:`SpanRecord` values; :mod:`lionstore.otel.export` turns them into the SDK's
spans and OTLP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from typing import Any

from lionstore.domain.event_records import (
    EventAbandoned,
    EventAppended,
    EventClaimed,
    EventDeferred,
    EventFinished,
    EventQueued,
    EventRequeued,
    EventRetried,
)
from lionstore.domain.mail_records import (
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailExcluded,
    MailPlaced,
    MailReceived,
    SourceAdded,
    SourceDeleted,
)
from lionstore.domain.records import Recorded
from lionstore.log.backend import RunInfo
from lionstore.log.store import Store
from lionstore.otel._attrs import Redactor, genai_attributes, value_attr

__all__ = ["SpanEvent", "SpanRecord", "format_tree", "recorded_spans", "spans_from_records"]


@dataclasses.dataclass
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SpanRecord:
    """One span, independent of any OpenTelemetry package.

    ``key`` names what the span is about within the run (``"run"``,
    ``"event:<id>"``, ``"attempt:<id>:<n>"``, ...); ids are derived from it.
    ``error`` set means the span's status is ERROR with that description.
    """

    key: str
    name: str
    parent: str | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[SpanEvent] = dataclasses.field(default_factory=list)
    error: str | None = None
    ended: bool = True  # False: still open at the end of the log (its end is the last record)


def _ns(us: int) -> int:
    return us * 1000


def _given_name(fields: dict[str, Any]) -> str:
    """`` <name>`` when the event has a short ``name`` or ``label`` field, else empty:
    a span list reads better as "DemoTask split the bill" than as ten "DemoTask"s."""
    for key in ("name", "label"):
        value = fields.get(key)
        if isinstance(value, str) and 0 < len(value) <= 60:
            return f" {value}"
    return ""


class _Fold:
    """Folds one run's records into spans."""

    def __init__(self, info: RunInfo, redact: Redactor | None) -> None:
        self.info = info
        self.redact = redact
        self.spans: dict[str, SpanRecord] = {}
        self.event_executor: dict[str, str] = {}
        self.event_class: dict[str, str] = {}
        self.event_fields: dict[str, dict[str, Any]] = {}
        self.open_attempt: dict[str, str] = {}
        self.mail_router: dict[str, str] = {}
        self.source_names: dict[str, str] = {}
        self.first_ns = 0
        self.last_ns = 0
        self.records = 0

    # -- helpers -------------------------------------------------------------------

    def _set(self, span: SpanRecord, name: str, value: Any) -> None:
        if value is None:
            return
        if self.redact is not None:
            value = self.redact(name, value)
            if value is None:
                return
        span.attributes[name] = value_attr(value)

    def _open(self, key: str, name: str, parent: str | None, at_ns: int) -> SpanRecord:
        span = SpanRecord(key, name, parent, at_ns, at_ns, ended=False)
        self.spans[key] = span
        return span

    def _close(self, span: SpanRecord, at_ns: int) -> None:
        span.end_ns = max(span.start_ns, at_ns)
        span.ended = True

    def _container(self, key: str, name: str, at_ns: int, **attrs: Any) -> str:
        span = self.spans.get(key)
        if span is None:
            span = self._open(key, name, "run", at_ns)
            span.attributes.update(attrs)
        span.end_ns = max(span.end_ns, at_ns)
        return key

    def _source(self, sid: str) -> str:
        return self.source_names.get(sid, sid)

    # -- the fold ------------------------------------------------------------------

    def add(self, record: Recorded) -> None:
        at = _ns(record.recorded_at_us)
        if not self.records:
            self.first_ns = at
        self.last_ns = max(self.last_ns, at)
        self.records += 1
        d: Any = record.data
        sid = str(record.stream_id)
        if isinstance(d, EventAppended):
            self._appended(sid, d, at, record.position)
        elif isinstance(d, (EventQueued, EventDeferred, EventRetried)):
            self._event_note(sid, d, at)
        elif isinstance(d, EventClaimed):
            self._claimed(sid, d, at)
        elif isinstance(d, EventFinished):
            self._finished(sid, d, at)
        elif isinstance(d, (EventRequeued, EventAbandoned)):
            self._taken_over(sid, d, at)
        elif isinstance(d, SourceAdded):
            name = (d.fields or {}).get("name")
            if isinstance(name, str) and name:
                self.source_names[sid] = name
        elif isinstance(d, MailPlaced):
            self._mail_placed(sid, d, at)
        elif isinstance(d, (MailCollected, MailDelivered, MailDeadLettered, MailExcluded)):
            self._mail_step(sid, d, at)
        elif isinstance(d, SourceDeleted):
            pass

    def _appended(self, sid: str, d: EventAppended, at: int, position: int) -> None:
        parent = self._container(
            f"executor:{d.executor}",
            f"executor {d.executor}",
            at,
            **{"lionstore.executor": d.executor},
        )
        cls = d.event_class.rsplit(".", 1)[-1]
        self.event_executor[sid] = d.executor
        self.event_class[sid] = cls
        self.event_fields[sid] = d.fields
        span = self._open(f"event:{sid}", cls + _given_name(d.fields), parent, at)
        span.attributes.update(
            {
                "lionstore.event.id": sid,
                "lionstore.event.class": d.event_class,
                "lionstore.executor": d.executor,
                "lionstore.position.appended": position,
            }
        )
        self._set(span, "lionstore.event.fields", d.fields or None)

    def _event_note(self, sid: str, d: Any, at: int) -> None:
        span = self.spans.get(f"event:{sid}")
        if span is None:
            return
        attrs: dict[str, Any] = {}
        if isinstance(d, EventDeferred):
            attrs = {"lionstore.reason": d.reason, "lionstore.denials": d.denials}
            span.events.append(SpanEvent("denied", at, attrs))
        elif isinstance(d, EventRetried):
            span.events.append(SpanEvent("retried", at, {"lionstore.attempt": d.attempt}))
            span.error, span.ended = None, False
        else:
            span.events.append(SpanEvent("queued", at, attrs))

    def _claimed(self, sid: str, d: EventClaimed, at: int) -> None:
        event = self.spans.get(f"event:{sid}")
        if event is None:
            return
        key = f"attempt:{sid}:{d.attempt}"
        span = self._open(key, f"{self.event_class[sid]} attempt {d.attempt}", event.key, at)
        span.attributes.update(
            {
                "lionstore.event.id": sid,
                "lionstore.executor": self.event_executor[sid],
                "lionstore.attempt": d.attempt,
                "lionstore.owner": d.owner,
                "lionstore.lease_expires_us": d.lease_expires_us,
            }
        )
        self.open_attempt[sid] = key

    def _finished(self, sid: str, d: EventFinished, at: int) -> None:
        event = self.spans.get(f"event:{sid}")
        if event is None:
            return
        key = self.open_attempt.pop(sid, None)
        attempt = self.spans.get(key) if key is not None else None
        target = attempt if attempt is not None else event
        status = str(d.status)
        target.attributes["lionstore.status"] = status
        if d.duration_us is not None:
            target.attributes["lionstore.duration_us"] = d.duration_us
        self._set(target, "lionstore.event.response", d.response)
        self._set(target, "lionstore.event.error", d.error)
        fields = dict(self.event_fields.get(sid, {}))
        fields.update(d.fields or {})
        for name, value in genai_attributes(fields, d.response).items():
            self._set(target, name, value)
            self._set(event, name, value)
        if status == "failed":
            target.error = d.error or "failed"
        if attempt is not None:
            self._close(attempt, at)
        event.attributes["lionstore.status"] = status
        event.attributes["lionstore.attempts"] = d.attempt
        event.error = target.error
        self._close(event, at)

    def _taken_over(self, sid: str, d: Any, at: int) -> None:
        event = self.spans.get(f"event:{sid}")
        if event is None:
            return
        key = self.open_attempt.pop(sid, None)
        if key is not None and key in self.spans:
            attempt = self.spans[key]
            attempt.error = f"lease taken over: {d.reason}"
            attempt.attributes["lionstore.taken_over_by"] = d.by
            self._close(attempt, at)
        if isinstance(d, EventAbandoned):
            event.attributes["lionstore.status"] = "failed"
            event.error = f"abandoned: {d.reason}"
            self._close(event, at)
        else:
            event.events.append(SpanEvent("requeued", at, {"lionstore.reason": d.reason}))

    def _mail_placed(self, sid: str, d: MailPlaced, at: int) -> None:
        parent = self._container(
            f"router:{d.router}", f"mail {d.router}", at, **{"lionstore.router": d.router}
        )
        self.mail_router[sid] = d.router
        span = self._open(f"mail:{sid}", f"mail {d.package.category}", parent, at)
        sender, recipient = str(d.sender), str(d.recipient)
        span.attributes.update(
            {
                "lionstore.mail.id": sid,
                "lionstore.mail.sender": self._source(sender),
                "lionstore.mail.recipient": self._source(recipient),
                "lionstore.mail.category": str(d.package.category),
                "lionstore.router": d.router,
            }
        )
        self._set(span, "lionstore.mail.item", d.package.item)
        if isinstance(d, MailReceived):  # placed straight in the recipient's inbox
            span.events.append(SpanEvent("delivered", at))
            self._close(span, at)

    def _mail_step(self, sid: str, d: Any, at: int) -> None:
        span = self.spans.get(f"mail:{sid}")
        if span is None:
            return
        if isinstance(d, MailCollected):
            span.events.append(SpanEvent("collected", at))
        elif isinstance(d, MailDelivered):
            span.events.append(SpanEvent("delivered", at))
            span.attributes["lionstore.mail.state"] = "delivered"
            self._close(span, at)
        elif isinstance(d, MailDeadLettered):
            attrs = {"lionstore.reason": d.reason, "lionstore.stage": d.stage}
            span.events.append(SpanEvent("dead_lettered", at, attrs))
            span.attributes["lionstore.mail.state"] = "dead_lettered"
            span.error = f"dead letter: {d.reason}"
            self._close(span, at)
        else:
            span.events.append(SpanEvent("excluded", at))
            self._close(span, at)

    def finish(self) -> list[SpanRecord]:
        info = self.info
        root = SpanRecord(
            "run",
            f"run {info.label}" if info.label else f"run {info.run_id}",
            None,
            self.first_ns,
            self.last_ns,
            {
                "lionstore.run.id": str(info.run_id),
                "lionstore.records": self.records,
            },
        )
        if info.label:
            root.attributes["lionstore.run.label"] = info.label
        if info.parent_run_id is not None:
            root.attributes["lionstore.run.parent"] = str(info.parent_run_id)
            root.attributes["lionstore.run.forked_at"] = info.forked_at_position or 0
        out = [root]
        for span in self.spans.values():
            if not span.ended:  # still open when the log ends: it ends there, marked
                span.end_ns = max(span.start_ns, self.last_ns)
                span.attributes["lionstore.unfinished"] = True
            out.append(span)
        return out


def spans_from_records(
    info: RunInfo, records: Iterable[Recorded], *, redact: Redactor | None = None
) -> list[SpanRecord]:
    """Spans of run ``info`` from its records (in position order)."""
    fold = _Fold(info, redact)
    for record in records:
        fold.add(record)
    return fold.finish()


async def recorded_spans(
    store: Store, run: str | None = None, *, redact: Redactor | None = None
) -> list[SpanRecord]:
    """Spans of run ``run`` (id or label; default: the store's run, else the newest).

    ``redact(name, value)`` sees every value attribute before it is kept (event
    fields, responses, errors, mail items, GenAI attributes) and returns the value to
    export or None to leave it out; see :func:`lionstore.otel.make_redactor`.
    """
    if run is not None:
        info = await store.find_run(run)
    elif store.has_run:
        info = store.run
    else:
        runs = await store.runs()
        if not runs:
            from lionstore.errors import RunNotFoundError

            raise RunNotFoundError(f"{store.target}: the database holds no runs yet")
        info = runs[-1]
    fold = _Fold(info, redact)
    records: AsyncIterator[Recorded] = await store.read(run=info.run_id, page_size=2000)
    async for record in records:
        fold.add(record)
    return fold.finish()


def format_tree(spans: list[SpanRecord]) -> str:
    """The spans as an indented tree, one line each: name, start offset from the run's
    start and duration in milliseconds, ``ERROR: ...`` where the status is an error,
    and span events in brackets (what ``lionstore export --format spans`` prints)."""
    children: dict[str | None, list[SpanRecord]] = {}
    for span in spans:
        children.setdefault(span.parent, []).append(span)
    origin = min((s.start_ns for s in spans), default=0)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: (s.start_ns, s.key)):
            start = (span.start_ns - origin) / 1e6
            took = (span.end_ns - span.start_ns) / 1e6
            line = f"{'  ' * depth}{span.name}  +{start:.1f} ms  {took:.1f} ms"
            status = span.attributes.get("lionstore.status")
            if status is not None and span.error is None:
                line += f"  {status}"
            if span.error is not None:
                line += f"  ERROR: {span.error}"
            if span.events:
                line += "  [" + ", ".join(e.name for e in span.events) + "]"
            lines.append(line)
            walk(span.key, depth + 1)

    walk(None, 0)
    return "\n".join(lines)
