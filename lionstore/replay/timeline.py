"""Timeline: draw a run so a person can look instead of read.

:class:`TimelineBuilder` folds a run's records (in position order, incrementally,
so a live run can be followed) into lanes and marks on a time axis:

* an executor lane with its processors' sessions (each ``processor.started`` to the
  processor's last record) and the moments a processor died (its claims were taken
  over after their lease expired) and the run was resumed;
* event rows: each event from its append, through its waits, every claim (attempt)
  and denial back-off, to its outcome, or to the lease expiry of an attempt whose
  process died;
* source lanes, with a mail per arrow from sender to recipient, and dead letters
  with their reason.

Nothing in the file is imported or executed: classes are names, items are JSON.
Three renderings use it: :meth:`Timeline.window` (the JSON the ``lionstore ui``
page draws, aggregated into buckets when a window holds too much to draw),
:func:`to_mermaid` and :func:`to_html` (one self-contained page, the UI's own
drawing code and data inlined).
"""

from __future__ import annotations

import bisect
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from lionstore._gcpause import gc_paused
from lionstore.domain.event_records import (
    EventAbandoned,
    EventAppended,
    EventClaimed,
    EventDeferred,
    EventFinished,
    EventQueued,
    EventRequeued,
    EventRetried,
    EventSkipped,
    ProcessorStarted,
)
from lionstore.domain.mail_records import (
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailReceived,
    MailSent,
    SourceAdded,
)
from lionstore.domain.records import Recorded
from lionstore.log.backend import RunInfo
from lionstore.log.store import Store

__all__ = [
    "Timeline",
    "TimelineBuilder",
    "collect_timeline",
    "to_html",
    "to_mermaid",
]

Progress = Callable[[int], None]

# Idle stretches longer than this are kept (the longest few), so the page can
# shorten them on the time axis instead of squeezing the activity to the edges.
_MIN_GAP_US = 20_000
_KEEP_GAPS = 50
# A window with more events (or mails) than this is drawn as buckets of counts.
MAX_ITEMS = 1500
# An executor with at most this many events gets one labelled row per event.
ROW_PER_EVENT = 40
# Packed rows for a larger executor's events (drawn from their first claim, the wait
# before it left out), before the window is aggregated.
MAX_PACKED_ROWS = 30


def _short(ident: str) -> str:
    return ident[:8]


def _json_text(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _given_name(fields: dict[str, Any] | None) -> str | None:
    """The name or label the user gave an event or source, if any."""
    for key in ("name", "label", "title"):
        value = (fields or {}).get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:60]
    return None


@dataclass
class Attempt:
    """One claim of an event: who, when, how it ended."""

    n: int
    owner: str
    claimed_us: int
    lease_expires_us: int
    end_us: int | None = None
    # completed | failed | lease expired | process gone (each maybe ", abandoned") | running
    outcome: str = "running"
    taken_over_us: int | None = None  # when another processor took the expired claim

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "owner": self.owner,
            "claimed_us": self.claimed_us,
            "lease_expires_us": self.lease_expires_us,
            "end_us": self.end_us,
            "outcome": self.outcome,
            "taken_over_us": self.taken_over_us,
        }


@dataclass
class EventLine:
    """One event's life on the timeline."""

    id: str
    executor: str
    cls: str
    name: str
    appended_us: int
    position: int
    queued_us: int | None = None
    end_us: int | None = None
    status: str = "pending"
    attempts: list[Attempt] = field(default_factory=list)
    deferrals: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    response: Any = None  # as recorded; shown as JSON text
    row: int = 0

    def last_us(self, now_us: int) -> int:
        return self.end_us if self.end_us is not None else now_us

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "executor": self.executor,
            "class": self.cls,
            "name": self.name,
            "appended_us": self.appended_us,
            "queued_us": self.queued_us,
            "end_us": self.end_us,
            "status": self.status,
            "attempts": [a.to_json() for a in self.attempts],
            "deferrals": self.deferrals,
            "error": self.error,
            "response": None if self.response is None else _json_text(self.response),
            "position": self.position,
        }


@dataclass
class MailLine:
    """One mail: sender to recipient, sent to delivered (or dead-lettered)."""

    id: str
    router: str
    sender: str
    recipient: str
    category: str
    item: Any  # as recorded; shown as JSON text
    sent_us: int
    position: int
    collected_us: int | None = None
    end_us: int | None = None
    outcome: str = "in flight"
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "router": self.router,
            "sender": self.sender,
            "recipient": self.recipient,
            "category": self.category,
            "item": _json_text(self.item),
            "sent_us": self.sent_us,
            "collected_us": self.collected_us,
            "end_us": self.end_us,
            "outcome": self.outcome,
            "reason": self.reason,
            "position": self.position,
        }


@dataclass
class Session:
    """A processor of an executor, from its start to its last record."""

    executor: str
    owner: str
    started_us: int
    last_us: int  # its start; the last record is in Timeline.owner_last
    died_us: int | None = None  # set when its claims were taken over after a lease expiry

    def to_json(self, owner_last: dict[str, int]) -> dict[str, Any]:
        return {
            "executor": self.executor,
            "owner": self.owner,
            "started_us": self.started_us,
            "last_us": max(self.started_us, owner_last.get(self.owner, self.started_us)),
            "died": self.died_us is not None,
        }


@dataclass
class Source:
    id: str
    router: str
    name: str


@dataclass
class Timeline:
    """A run's timeline; built by :class:`TimelineBuilder`."""

    run_id: str
    label: str | None = None
    started_us: int = 0
    end_us: int = 0
    records: int = 0
    position: int = 0
    parent_run_id: str | None = None
    forked_at_position: int | None = None
    executors: list[str] = field(default_factory=list)
    events: dict[str, EventLine] = field(default_factory=dict)
    events_by_executor: dict[str, list[EventLine]] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    mails: dict[str, MailLine] = field(default_factory=dict)
    sessions: list[Session] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    # The time of each processor's last record (by owner).
    owner_last: dict[str, int] = field(default_factory=dict)
    # False while the records are still being folded (a deadline cut the fold short).
    complete: bool = True
    # Idle stretches (no record written), the longest ones: [start_us, end_us].
    gaps: list[tuple[int, int]] = field(default_factory=list)

    # -- names -------------------------------------------------------------------------

    @property
    def title(self) -> str:
        """The run's label, else its id."""
        return self.label or self.run_id

    def source_name(self, sid: str) -> str:
        source = self.sources.get(sid)
        if source is not None:
            return source.name
        return f"unknown recipient {_short(sid)}"

    # -- lanes -------------------------------------------------------------------------

    def lanes(self) -> list[dict[str, Any]]:
        """Lanes top to bottom: per executor its processors then its events (one row
        per event when few, packed rows otherwise); then one lane per source."""
        out: list[dict[str, Any]] = []
        for name in self.executors:
            out.append({"key": f"x:{name}", "kind": "executor", "title": f"executor {name}"})
            events = self.events_by_executor.get(name, [])
            if len(events) <= ROW_PER_EVENT:
                for event in events:
                    out.append(
                        {
                            "key": f"e:{event.id}",
                            "kind": "event",
                            "title": event.name,
                            "executor": name,
                            "event": event.id,
                        }
                    )
            else:
                out.append(
                    {
                        "key": f"g:{name}",
                        "kind": "events",
                        "title": "events",
                        "executor": name,
                    }
                )
        for sid in self._source_order():
            out.append(
                {"key": f"s:{sid}", "kind": "source", "title": self.source_name(sid), "source": sid}
            )
        return out

    def _source_order(self) -> list[str]:
        order = list(self.sources)
        for mail in self.mails.values():
            for sid in (mail.sender, mail.recipient):
                if sid not in self.sources and sid not in order:
                    order.append(sid)
        return order

    # -- the drawable window -------------------------------------------------------------

    def summary_head(self) -> dict[str, Any]:
        """The run's id, label and title."""
        return {"run_id": self.run_id, "label": self.label, "title": self.title}

    def _resumes(self) -> list[dict[str, Any]]:
        """A processor that started after an earlier one of its executor had stopped
        (its claims were taken over) resumed the run; one that started while the
        others ran is just another worker, and gets no mark."""
        out = []
        for i, session in enumerate(self.sessions):
            before = [s for s in self.sessions[:i] if s.executor == session.executor]
            died = [s for s in before if s.died_us is not None]
            last = [self.owner_last.get(s.owner, s.started_us) for s in died]
            if died and all(t <= session.started_us for t in last):
                out.append(
                    {
                        "at_us": session.started_us,
                        "kind": "resume",
                        "lane": f"x:{session.executor}",
                        "text": f"processor {_short(session.owner)} started (resumed)",
                    }
                )
        return out

    def summary(self) -> dict[str, Any]:
        """The run and its lanes, without items: what the page draws first."""
        statuses: dict[str, int] = {}
        for event in self.events.values():
            statuses[event.status] = statuses.get(event.status, 0) + 1
        outcomes: dict[str, int] = {}
        for mail in self.mails.values():
            key = "dead letter" if mail.outcome.startswith("dead") else mail.outcome
            outcomes[key] = outcomes.get(key, 0) + 1
        return {
            "run_id": self.run_id,
            "label": self.label,
            "title": self.title,
            "started_us": self.started_us,
            "end_us": self.end_us,
            "records": self.records,
            "position": self.position,
            "complete": self.complete,
            "parent_run_id": self.parent_run_id,
            "forked_at_position": self.forked_at_position,
            "events": statuses,
            "mail": outcomes,
            "lanes": self.lanes(),
            "sessions": [s.to_json(self.owner_last) for s in self.sessions],
            "marks": sorted([*self.marks, *self._resumes()], key=lambda m: int(m["at_us"])),
            "gaps": sorted(self.gaps),
            "dead_letters": [
                {
                    "id": m.id,
                    "at_us": m.end_us,
                    "sender": self.source_name(m.sender),
                    "recipient": self.source_name(m.recipient),
                    "reason": m.reason,
                }
                for m in self.mails.values()
                if m.outcome == "dead letter"
            ][:20],
            "failed": [
                {"id": e.id, "name": e.name, "at_us": e.end_us, "error": e.error}
                for e in self.events.values()
                if e.status == "failed"
            ][:20],
            "sources": {sid: s.name for sid, s in self.sources.items()},
        }

    def window(
        self, start_us: int | None = None, end_us: int | None = None, *, buckets: int = 600
    ) -> dict[str, Any]:
        """What to draw between ``start_us`` and ``end_us`` (default: the whole run):
        every event and mail overlapping it, or, when more than :data:`MAX_ITEMS`
        overlap, per lane at most ``buckets`` buckets of counts by status."""
        lo = self.started_us if start_us is None else start_us
        hi = self.end_us if end_us is None else end_us
        hi = max(hi, lo + 1)
        buckets = max(10, min(buckets, 4000))
        out: dict[str, Any] = {"start_us": lo, "end_us": hi, "events": [], "mails": []}
        out["aggregates"] = []
        for name in self.executors:
            events = self.events_by_executor.get(name, [])
            few = len(events) <= ROW_PER_EVENT
            visible = _overlapping(events, lo, hi, self.end_us)
            if few or len(visible) <= MAX_ITEMS:
                rows = None if few else _pack(visible, self.end_us, MAX_PACKED_ROWS)
                if rows is not None or few:
                    for event in visible:
                        item = event.to_json()
                        item["lane"] = f"e:{event.id}" if few else f"g:{name}"
                        item["row"] = 0 if few else event.row
                        out["events"].append(item)
                    if rows is not None:
                        out.setdefault("rows", {})[f"g:{name}"] = rows
                    continue
            out["aggregates"].append(
                _aggregate(f"g:{name}", visible, lo, hi, buckets, self.end_us, _event_key)
            )
        mails = [m for m in self.mails.values() if m.sent_us <= hi and (m.end_us or hi) >= lo]
        if len(mails) <= MAX_ITEMS:
            out["mails"] = [m.to_json() for m in mails]
        else:
            by_sender: dict[str, list[MailLine]] = {}
            for mail in mails:
                by_sender.setdefault(mail.sender, []).append(mail)
            for sid, sent in by_sender.items():
                out["aggregates"].append(
                    _aggregate(f"s:{sid}", sent, lo, hi, buckets, self.end_us, _mail_key)
                )
        return out


def _event_key(event: EventLine, end_us: int) -> tuple[int, int, str]:
    return event.appended_us, event.last_us(end_us), event.status


def _mail_key(mail: MailLine, end_us: int) -> tuple[int, int, str]:
    outcome = "dead letter" if mail.outcome.startswith("dead") else mail.outcome
    return mail.sent_us, mail.end_us or end_us, outcome


def _overlapping(events: list[EventLine], lo: int, hi: int, now_us: int) -> list[EventLine]:
    """Events (sorted by append time) that overlap [lo, hi]."""
    stop = bisect.bisect_right(events, hi, key=lambda e: e.appended_us)
    return [e for e in events[:stop] if e.last_us(now_us) >= lo]


def _pack(events: list[EventLine], now_us: int, limit: int) -> int | None:
    """Give each event a row so that their bars (from the first claim, or the append
    of an event never claimed, to the outcome) do not overlap on a row; the number
    of rows, or None when more than ``limit`` would be needed."""
    ends: list[int] = []
    for event in sorted(events, key=_drawn_from):
        start = _drawn_from(event)
        for row, end in enumerate(ends):
            if end < start:
                event.row = row
                ends[row] = event.last_us(now_us)
                break
        else:
            if len(ends) >= limit:
                return None
            event.row = len(ends)
            ends.append(event.last_us(now_us))
    return max(1, len(ends))


def _drawn_from(event: EventLine) -> int:
    return event.attempts[0].claimed_us if event.attempts else event.appended_us


def _aggregate(
    lane: str,
    items: list[Any],
    lo: int,
    hi: int,
    buckets: int,
    now_us: int,
    key: Callable[[Any, int], tuple[int, int, str]],
) -> dict[str, Any]:
    """Counts by status of the items active in each of ``buckets`` slices of [lo, hi]
    (a difference array per status: one pass over the items, one over the buckets)."""
    width = max((hi - lo) / buckets, 1.0)
    deltas: dict[str, list[int]] = {}
    last_bucket = buckets - 1
    for item in items:
        start, end, status = key(item, now_us)
        first = int((start - lo) / width)
        last = int((end - lo) / width)
        first = 0 if first < 0 else first
        last = last_bucket if last > last_bucket else last
        if last < first:
            continue
        row = deltas.get(status)
        if row is None:
            row = deltas[status] = [0] * (buckets + 1)
        row[first] += 1
        row[last + 1] -= 1
    counts: dict[str, list[int]] = {}
    for status, row in deltas.items():
        running, out = 0, [0] * buckets
        for b in range(buckets):
            running += row[b]
            out[b] = running
        counts[status] = out
    return {"lane": lane, "start_us": lo, "width_us": width, "counts": counts}


class TimelineBuilder:
    """Folds a run's records, in position order, into a :class:`Timeline`."""

    def __init__(self, info: RunInfo) -> None:
        self.timeline = Timeline(
            run_id=str(info.run_id),
            label=info.label,
            started_us=info.started_at_us,
            end_us=info.started_at_us,
            parent_run_id=str(info.parent_run_id) if info.parent_run_id else None,
            forked_at_position=info.forked_at_position,
        )
        self._sessions: dict[str, Session] = {}  # processor owner -> its session
        self._claims: dict[str, Attempt] = {}  # event id -> its open attempt
        # One method per record class (type lookups cost less than an isinstance chain).
        self._run_records: dict[type, Callable[[str, Any, int, int], None]] = {
            EventAppended: self._appended,
            ProcessorStarted: self._processor_started,
            SourceAdded: self._source_added,
            MailSent: self._mail_placed,
            MailReceived: self._mail_placed,
            MailCollected: self._mail_moved,
            MailDelivered: self._mail_moved,
            MailDeadLettered: self._mail_moved,
        }
        self._event_records: dict[type, Callable[[EventLine, Any, int], None]] = {
            EventQueued: self._queued,
            EventDeferred: self._deferred,
            EventClaimed: self._claimed,
            EventFinished: self._finished,
            EventRetried: self._retried,
            EventSkipped: self._skipped,
            EventRequeued: self._taken_over,
            EventAbandoned: self._taken_over,
        }

    @property
    def position(self) -> int:
        return self.timeline.position

    def apply(self, r: Recorded) -> None:
        """Fold one record."""
        tl = self.timeline
        t = r.recorded_at_us
        if not tl.records:
            tl.started_us = min(tl.started_us, t) if tl.started_us else t
        tl.records += 1
        tl.position = r.position
        if t > tl.end_us:
            if t - tl.end_us > _MIN_GAP_US and tl.records > 1:
                tl.gaps.append((tl.end_us, t))
                if len(tl.gaps) > 2 * _KEEP_GAPS:
                    tl.gaps.sort(key=lambda g: g[0] - g[1])
                    del tl.gaps[_KEEP_GAPS:]
            tl.end_us = t
        d = r.data
        sid = r.stream_id
        event = tl.events.get(sid)
        if event is not None:
            handle = self._event_records.get(type(d))
            if handle is not None:
                handle(event, d, t)
            return
        run_handler = self._run_records.get(type(d))
        if run_handler is not None:
            run_handler(sid, d, t, r.position)

    # -- run-level records -------------------------------------------------------------

    def _executor(self, name: str) -> None:
        tl = self.timeline
        if name not in tl.events_by_executor:
            tl.executors.append(name)
            tl.events_by_executor[name] = []

    def _appended(self, sid: str, d: EventAppended, t: int, position: int) -> None:
        tl = self.timeline
        self._executor(d.executor)
        name = _given_name(d.fields)
        cls = d.event_class.rsplit(".", 1)[-1]
        event = EventLine(sid, d.executor, cls, name or f"{cls} {_short(sid)}", t, position)
        tl.events[sid] = event
        tl.events_by_executor[d.executor].append(event)

    def _processor_started(self, sid: str, d: ProcessorStarted, t: int, position: int) -> None:
        tl = self.timeline
        self._executor(d.executor)
        session = Session(d.executor, d.owner, t, t)
        self._sessions[d.owner] = session
        tl.sessions.append(session)

    def _source_added(self, sid: str, d: SourceAdded, t: int, position: int) -> None:
        name = _given_name(d.fields) or f"{d.source_class.rsplit('.', 1)[-1]} {_short(sid)}"
        self.timeline.sources[sid] = Source(sid, d.router, name)

    def _mail_placed(self, sid: str, d: MailSent | MailReceived, t: int, position: int) -> None:
        package = d.package
        mail = MailLine(
            sid, d.router, d.sender, d.recipient, package.category, package.item, t, position
        )
        if type(d) is MailReceived:
            mail.end_us, mail.outcome = t, "delivered"
        self.timeline.mails[sid] = mail

    def _mail_moved(self, sid: str, d: Any, t: int, position: int) -> None:
        mail = self.timeline.mails.get(sid)
        if mail is None:
            return
        if type(d) is MailCollected:
            mail.collected_us = t
        elif type(d) is MailDelivered:
            mail.end_us, mail.outcome = t, "delivered"
        elif type(d) is MailDeadLettered:
            mail.end_us, mail.outcome, mail.reason = t, "dead letter", d.reason

    # -- an event's records --------------------------------------------------------------

    def _seen(self, owner: str | None, t: int) -> None:
        if owner:
            self.timeline.owner_last[owner] = t

    def _queued(self, event: EventLine, d: EventQueued, t: int) -> None:
        if event.queued_us is None:
            event.queued_us = t
        if event.status == "pending":
            event.status = "queued"
        self._seen(d.owner, t)

    def _deferred(self, event: EventLine, d: EventDeferred, t: int) -> None:
        event.deferrals.append(
            {"at_us": t, "retry_at_us": d.retry_at_us, "reason": d.reason, "denials": d.denials}
        )
        event.status = "deferred"
        self._seen(d.owner, t)

    def _claimed(self, event: EventLine, d: EventClaimed, t: int) -> None:
        claim = Attempt(d.attempt, d.owner, t, d.lease_expires_us)
        event.attempts.append(claim)
        self._claims[event.id] = claim
        event.status = "processing"
        self.timeline.owner_last[d.owner] = t

    def _finished(self, event: EventLine, d: EventFinished, t: int) -> None:
        done = self._claims.pop(event.id, None)
        if done is not None:
            done.end_us, done.outcome = t, d.status
            self.timeline.owner_last[done.owner] = t
        event.status = d.status
        event.end_us = t
        event.error = d.error
        event.response = d.response

    def _retried(self, event: EventLine, d: EventRetried, t: int) -> None:
        event.status = "queued"

    def _skipped(self, event: EventLine, d: EventSkipped, t: int) -> None:
        """Denied, and the processor's ``handle_denied`` ended it unrun."""
        event.status, event.end_us = "skipped", t

    def _taken_over(self, event: EventLine, d: EventRequeued | EventAbandoned, t: int) -> None:
        abandoned = type(d) is EventAbandoned
        lost = self._claims.pop(event.id, None)
        if lost is not None:
            lost.end_us = min(lost.lease_expires_us, t)
            # owner_gone: taken over at once, its process seen gone (before its lease ran out)
            why = "process gone" if d.reason == "owner_gone" else "lease expired"
            lost.outcome = f"{why}, abandoned" if abandoned else why
            lost.taken_over_us = t
        if abandoned:
            event.status, event.end_us = "failed", t
            event.error = event.error or d.reason
        else:
            event.status = "queued"
        self._died(event.executor, d.previous_owner, d.by, t)
        self._seen(d.by, t)

    def _died(self, executor: str, owner: str, by: str, t: int) -> None:
        """``owner``'s claim was taken over by ``by`` after its lease expired: the
        processor ``owner`` stopped (its process died) at its last record."""
        session = self._sessions.get(owner)
        if session is None or session.died_us is not None or owner == by:
            return
        session.died_us = t
        last = self.timeline.owner_last.get(owner, session.started_us)
        self.timeline.marks.append(
            {
                "at_us": last,
                "kind": "crash",
                "lane": f"x:{executor}",
                "text": f"processor {_short(owner)} stopped here (its claims expired, taken over)",
            }
        )


async def collect_timeline(
    store: Store,
    *,
    run: str | None = None,
    progress: Progress | None = None,
    builder: TimelineBuilder | None = None,
) -> Timeline:
    """The timeline of ``run`` (id or label; default: the store's run). Pass the
    ``builder`` of an earlier call to fold only the records written since; while
    the fold runs, its timeline says it is not ``complete``."""
    if builder is None:
        info = store.run if run is None else await store.find_run(run)
        builder = TimelineBuilder(info)
    tl = builder.timeline
    tl.complete = False
    seen = 0
    apply = builder.apply
    # The fold allocates many long-lived objects and almost no cyclic garbage (as
    # rebuild's): full collections would only re-walk the growing timeline.
    with gc_paused():
        records = await store.read(run=tl.run_id, after=builder.position, page_size=5000)
        async for r in records:
            apply(r)
            seen += 1
            if progress is not None and seen % 10_000 == 0:
                progress(seen)
    tl.complete = True
    return tl


# -- Mermaid -------------------------------------------------------------------------------


def _mermaid_text(text: str, *, task: bool = False) -> str:
    """Text safe in a Mermaid message (or, with ``task``, a Gantt task name, where a
    colon would end the name): ``#`` and ``;`` become Mermaid entity codes."""
    text = text.replace("#", "#35;").replace(";", "#59;").replace("\n", " ")
    return text.replace(":", "#58;") if task else text


def to_mermaid(tl: Timeline) -> str:
    """A Markdown document: a sequence diagram of the mail, a Gantt chart of the events
    (a section per executor, a task per attempt and denial back-off)."""
    out = [f"# Run {tl.title}", ""]
    if tl.label:
        out += [f"Run id `{tl.run_id}`.", ""]
    if tl.mails:
        out += ["```mermaid", "sequenceDiagram"]
        aliases = {sid: f"S{i}" for i, sid in enumerate(tl._source_order())}
        for sid, alias in aliases.items():
            out.append(f"    participant {alias} as {_mermaid_text(tl.source_name(sid))}")
        for mail in sorted(tl.mails.values(), key=lambda m: m.sent_us):
            line = "->>"
            if mail.outcome == "dead letter":
                line = "-x"
            elif mail.outcome == "in flight":
                line = "--)"
            outcome = f"dead letter, {mail.reason}" if mail.reason else mail.outcome
            out.append(
                f"    {aliases[mail.sender]}{line}{aliases[mail.recipient]}: "
                f"{_mermaid_text(mail.category)} {_mermaid_text(_json_text(mail.item))} "
                f"({_mermaid_text(outcome)})"
            )
        out += ["```", ""]
    if tl.events:
        out += ["```mermaid", "gantt", "    dateFormat x", "    axisFormat %S.%L s"]
        base = tl.started_us // 1000
        for name in tl.executors:
            out.append(f"    section executor {_mermaid_text(name)}")
            for event in tl.events_by_executor[name]:
                label = _mermaid_text(event.name, task=True)
                start = event.appended_us // 1000 - base
                first_claim = event.attempts[0].claimed_us if event.attempts else None
                end = max((first_claim or event.last_us(tl.end_us)) // 1000 - base, start + 1)
                out.append(f"    {label} waits :{start}, {end}")
                for d in event.deferrals:
                    ds = d["at_us"] // 1000 - base
                    de = max(d["retry_at_us"] // 1000 - base, ds + 1)
                    out.append(f"    {label} denied, back-off :{ds}, {de}")
                for a in event.attempts:
                    tag = {
                        "completed": "done, ",
                        "failed": "crit, ",
                        "running": "active, ",
                    }.get(a.outcome, "crit, ")
                    s = a.claimed_us // 1000 - base
                    e = max((a.end_us or tl.end_us) // 1000 - base, s + 1)
                    outcome = _mermaid_text(a.outcome, task=True)
                    out.append(f"    {label} attempt {a.n} {outcome} :{tag}{s}, {e}")
        out += ["```", ""]
    if not tl.mails and not tl.events:
        out.append("(this run has no events and no mail)")
    return "\n".join(out)


# -- one self-contained page ---------------------------------------------------------------


def _asset(name: str) -> str:
    return (resources.files("lionstore.ui") / "static" / name).read_text(encoding="utf-8")


def to_html(tl: Timeline) -> str:
    """One self-contained HTML page: the ``lionstore ui`` timeline with its scripts,
    styles and the run's data inlined (nothing is fetched). Long runs are exported
    as their aggregated overview."""
    data = {"summary": tl.summary(), "window": tl.window()}
    payload = json.dumps(data, separators=(",", ":"), default=str).replace("</", "<\\/")
    title = html.escape(tl.title)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>lionstore run {title}</title>
<style>{_asset("app.css")}</style></head>
<body class="export"><header><h1>Run {title}</h1></header>
<main><section id="run-head"></section><div id="timeline" class="timeline"></div>
<div id="legend"></div></main>
<script>{_asset("echarts.min.js")}</script>
<script>{_asset("timeline.js")}</script>
<script>window.LionstoreTimeline.standalone({payload});</script>
</body></html>
"""
