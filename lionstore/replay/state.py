"""Rebuild: every projection of a run, at any position or time, without user classes.

``rebuild`` folds a run's records through the same ``ExecutorState`` and
``MailState`` code the live objects use, with materializers that keep user
data raw (events as ``RecordedEvent``, package items as their JSON). Nothing in
the file is imported or executed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from hashlib import sha256
from typing import Any

from pydantic import ValidationError

from lionstore._gcpause import gc_paused
from lionstore.domain.event_records import EventAppended, ProcessorStarted
from lionstore.domain.ids import IDType
from lionstore.domain.mail import Mail
from lionstore.domain.mail_records import MailReceived, MailSent, SourceAdded, SourceDeleted
from lionstore.domain.records import Recorded, UnknownRecord, decode_data, record_kinds
from lionstore.errors import CorruptDatabaseError, LionstoreError, RecordError
from lionstore.log.backend import ReadQuery
from lionstore.log.digest import chain_start
from lionstore.log.store import Store, check_run_end, to_us
from lionstore.mail.source import Source
from lionstore.projections.executor import (
    ExecutorState,
    RecordedEvent,
    compact_finished,
    raw_materializer,
)
from lionstore.projections.mail import (
    MailState,
    compact_delivered,
    mail_from_record,
    raw_mail_parts,
)

__all__ = ["RunProjection", "rebuild", "raw_mail"]

Progress = Callable[[int], None]
Fold = Callable[[IDType, int, int, Any], None]


def raw_mail(mail_id: IDType, data: MailSent | MailReceived) -> Mail:
    """A Mail whose package item stays as recorded JSON."""
    return mail_from_record(mail_id, data, raw=True)


def _raw_source(source_id: IDType, data: SourceAdded) -> Any:
    return Source(id=source_id, metadata={"source_class": data.source_class})


Owner = tuple[str, str]  # ("executor" | "router", name)
_UNKNOWN, _APPENDED, _PROCESSOR, _MAIL_ENTRY, _OTHER = range(5)
# How RunProjection routes each record class, in isinstance order; other classes are
# resolved once by isinstance and remembered (type() lookups cost less than the chain).
_ROUTE_BY_CLASS: tuple[tuple[type, int], ...] = (
    (UnknownRecord, _UNKNOWN),
    (EventAppended, _APPENDED),
    (ProcessorStarted, _PROCESSOR),
    (SourceAdded, _MAIL_ENTRY),
    (SourceDeleted, _MAIL_ENTRY),
    (MailSent, _MAIL_ENTRY),
    (MailReceived, _MAIL_ENTRY),
)
_ROUTES: dict[type, int] = dict(_ROUTE_BY_CLASS)


def _route_for(cls: type) -> int:
    route = next((r for base, r in _ROUTE_BY_CLASS if issubclass(cls, base)), _OTHER)
    _ROUTES[cls] = route
    return route


class RunProjection:
    """All executors and mail routers of one run, folded from its records."""

    def __init__(self) -> None:
        self.executors: dict[str, ExecutorState] = {}
        self.routers: dict[str, MailState] = {}
        self.owner_of: dict[IDType, Owner] = {}  # stream -> (kind of owner, name)
        self.position = 0
        self.records = 0
        self.unknown = 0
        # One owner tuple per executor or router, shared by all its streams.
        self._owners: dict[Owner, Fold] = {}  # owner -> its state's fold
        self._executor_owner: dict[str, Owner] = {}
        self._router_owner: dict[str, Owner] = {}
        self._ids: dict[IDType, IDType] = {}  # one object per sender/recipient id
        # The digest chain as _fold_page checks it: the last record's digest (set to the
        # run's chain start by rebuild) and the file, for the error.
        self.tip = ""
        self.label = ""
        # False while another process checks the chain (lionstore.log.chaincheck)
        self.hash_chain = True
        # stream number -> its id as a plain str: formatting the IDType subclass into
        # the digest's text costs a fifth of the hash.
        self._id_texts: dict[int, str] = {}

    def _raw_mail(self, mail_id: IDType, data: MailSent | MailReceived) -> Mail:
        return mail_from_record(mail_id, data, raw=True, ids=self._ids)

    def _raw_parts(self, mail_id: IDType, data: MailSent | MailReceived) -> tuple[Any, ...] | None:
        return raw_mail_parts(mail_id, data, self._ids)

    def executor(self, name: str) -> ExecutorState:
        state = self.executors.get(name)
        if state is None:
            state = self.executors[name] = ExecutorState(name, raw_materializer)
            compact_finished(state)
            owner = self._executor_owner[name] = ("executor", name)
            self._owners[owner] = state.fold
        return state

    def router(self, name: str) -> MailState:
        state = self.routers.get(name)
        if state is None:
            state = self.routers[name] = MailState(name, _raw_source, self._raw_mail)
            compact_delivered(state, self._raw_parts)
            owner = self._router_owner[name] = ("router", name)
            self._owners[owner] = state.fold
        return state

    def apply(self, record: Recorded) -> None:
        """Fold one record; a record the fold cannot take (its data names a class that
        is not its own, say) raises :class:`RecordError` naming its position."""
        try:
            self.fold(record.stream_id, record.stream_version, record.position, record.data)
        except LionstoreError:
            raise
        except (ValueError, TypeError, LookupError) as exc:
            raise _unfoldable(record.kind, record.position, exc) from exc

    def fold(self, sid: IDType, version: int, position: int, data: Any) -> None:
        """Apply one record given by its parts (what :meth:`apply` takes from a Recorded)."""
        self.records += 1
        self.position = position
        route = _ROUTES.get(type(data))
        if route is None:
            route = _route_for(type(data))
        if route == _OTHER:
            owner = self.owner_of.get(sid)
            if owner is not None:
                self._owners[owner](sid, version, position, data)
        else:
            self._enter(route, sid, version, position, data)

    def _enter(self, route: int, sid: IDType, version: int, position: int, data: Any) -> None:
        """A record naming its executor or router (or an unknown one)."""
        state: ExecutorState | MailState
        if route == _APPENDED:
            state = self.executor(data.executor)
            self.owner_of.setdefault(sid, self._executor_owner[data.executor])
        elif route == _MAIL_ENTRY:
            state = self.router(data.router)
            self.owner_of.setdefault(sid, self._router_owner[data.router])
        elif route == _PROCESSOR:
            state = self.executor(data.executor)
        else:
            self.unknown += 1
            return
        state.fold(sid, version, position, data)

    def _fold_page(
        self,
        rows: list[Any],
        kinds: dict[str, list[Any]],
        ids: dict[int, IDType],
        stream_id: Callable[[int], IDType],
    ) -> None:
        """:meth:`fold` of a page of :class:`~lionstore.log.backend.RunScan` rows,
        decoding each as ``SQLiteBackend.decode_row`` does, without building a
        Recorded per row. ``kinds`` holds what :func:`_kind_decoder` gives, per kind,
        and ``ids`` one stream id object per stream number, across pages;
        ``stream_id`` finds the id of a stream whose row did not bring it."""
        new_id = str.__new__
        new_hash = sha256
        routes = _ROUTES
        owner_of = self.owner_of
        owners = self._owners
        tip = self.tip
        hash_chain = self.hash_chain
        id_texts = self._id_texts
        # "|kind|kind_version|recorded_at_us|" of the last row: a commit's records share
        # the time, and a run of them often the kind, so it is rarely formatted again.
        tail_kind = tail_kv = tail_at = None
        tail = ""
        row: Any = None
        try:
            for row in rows:
                kind = row[3]
                text = row[5]
                stream_no = row[1]
                sid = ids.get(stream_no)
                if sid is None:
                    first = row[6]
                    sid = ids[stream_no] = (
                        stream_id(stream_no) if first is None else new_id(IDType, first)
                    )
                # The digest chain (lionstore.log.digest), checked before the record is
                # folded: the state returned is the logged one, or rebuild raises (unless
                # another process checks it meanwhile: _fold_rows).
                if hash_chain:
                    id_text = id_texts.get(stream_no)
                    if id_text is None:
                        id_text = id_texts[stream_no] = str(sid)
                    if row[7] != tail_at or kind != tail_kind or row[4] != tail_kv:
                        tail_kind, tail_kv, tail_at = kind, row[4], row[7]
                        tail = f"|{kind}|{tail_kv}|{tail_at}|"
                    h = new_hash(f"{tip}|{row[0]}|{id_text}|{row[2]}{tail}".encode())
                    h.update(text.encode())
                    tip = h.hexdigest()[:32]
                    if tip != row[8]:
                        raise _broken_chain(self.label, row[0])
                decoder = kinds.get(kind)
                if decoder is None:
                    decoder = kinds[kind] = _kind_decoder(kind)
                route = decoder[5]  # the route of the kind's class
                if row[4] != decoder[0]:  # an older version, or a kind this code doesn't know
                    data = decode_data(kind, row[4], text)
                    route = None
                elif text == decoder[3]:  # the shareable JSON decoded last time
                    data = decoder[4]
                else:
                    try:
                        data = decoder[1](text)
                    except ValidationError:
                        data = decode_data(kind, row[4], text)  # its UnknownRecord
                        route = None
                    if decoder[2]:
                        decoder[3] = text
                        decoder[4] = data
                if route is None:
                    route = routes.get(type(data))
                    if route is None:
                        route = _route_for(type(data))
                if route == _OTHER:  # the common case, inline
                    owner = owner_of.get(sid)
                    if owner is not None:
                        owners[owner](sid, row[2], row[0], data)
                else:
                    self._enter(route, sid, row[2], row[0], data)
        except LionstoreError:
            raise
        except (ValueError, TypeError, LookupError) as exc:
            raise _unfoldable(row[3], row[0], exc) from exc
        finally:
            self.tip = tip
        if rows:
            self.records += len(rows)
            self.position = rows[-1][0]

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
            for event_id in state.pile._items:  # statuses read without building events
                key = state.status(event_id).value
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
        # finished events let go of by pile.pop / cleanup_completed (records kept)
        "released": sorted(state.released),
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


# Record kinds whose decoded data may be shared by several records with the same JSON:
# the fold keeps nothing mutable from them (event.appended, event.finished, mail.sent,
# mail.received and source.added hand dicts or responses to the objects it builds).
_SHAREABLE_KINDS = frozenset(
    {
        "event.queued",
        "event.deferred",
        "event.claimed",
        "event.lease_renewed",
        "event.requeued",
        "event.abandoned",
        "event.retried",
        "processor.started",
        "processor.identity",
        "mail.collected",
        "mail.delivered",
        "mail.dead_lettered",
        "mail.excluded",
        "source.deleted",
        "run.started",
    }
)


def _unfoldable(kind: str, position: int, exc: BaseException) -> RecordError:
    """The error for a record that decodes but cannot be folded (e.g. its metadata
    names a class that is not its own, so building its element fails validation)."""
    return RecordError(
        f"the {kind} record at position {position} cannot be applied: {type(exc).__name__}: {exc}"
    )


#: From which head position a rebuild checks the digest chain in a second process
#: (lionstore.log.chaincheck) rather than in the folding thread: below it, starting a
#: process (tens of milliseconds) costs more than hashing does.
PARALLEL_CHECK_AT = 100_000


def _broken_chain(label: str, position: int) -> CorruptDatabaseError:
    return CorruptDatabaseError(
        f"{label}: the record at position {position} does not chain to the run's record"
        " before it (digest mismatch): a record was changed or deleted behind lionstore's"
        " back, or an index of the file is damaged; `lionstore verify` reports where"
    )


def _kind_decoder(kind: str) -> list[Any]:
    """``[kind_version, validate_json, shareable, last JSON, its data, route]`` for a kind:
    records at the current version are validated as ``decode_data`` validates them
    (the record class's own validator; a failure goes to ``decode_data`` for its
    UnknownRecord); the others go through ``decode_data`` (upcasters, unknown kinds).
    A shareable kind's record whose JSON is the last one decoded gets the same data:
    decoding is a function of (kind, kind_version, JSON) and the data is frozen."""
    cls = record_kinds().get(kind)
    if cls is None:
        return [None, None, False, None, None, None]
    route = _ROUTES.get(cls)
    return [
        cls.kind_version,
        cls.__pydantic_validator__.validate_json,
        kind in _SHAREABLE_KINDS,
        None,
        None,
        route if route is not None else _route_for(cls),
    ]


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
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    projection = RunProjection()
    # A rebuild allocates hundreds of thousands of long-lived objects and almost no
    # cyclic garbage: full collections would only re-walk the growing projection.
    with gc_paused():
        await _fold_rows(store, projection, run, at, until, progress, page_size)
    return projection


async def _fold_rows(
    store: Store,
    projection: RunProjection,
    run: str | None,
    at: int | None,
    until: datetime | None,
    progress: Progress | None,
    page_size: int,
) -> None:
    """Fold the backend's :class:`~lionstore.log.backend.RunScan` of the run a page at
    a time, decoding each row as ``decode_row`` does, but without building a Recorded
    per row, and decoding a shareable record whose JSON repeats the previous one of
    its kind once. Other tasks on the loop run between pages."""
    store._ensure_open()
    info = store.run if run is None else await store.find_run(run)
    run_no = info.run_no
    projection.tip = chain_start(info.run_id)
    projection.label = store.target
    until_us = to_us(until) if until is not None else None
    # Bounded by the head as it is now: what the scan reads is then fixed (committed
    # and append-only), and the run's end can be checked apart from the scan.
    upto = await store._backend.head_position()
    if at is not None:
        upto = min(at, upto)
    query = ReadQuery(run_no=run_no, upto=upto, until_us=until_us)
    fold_page = projection._fold_page
    kinds: dict[str, list[Any]] = {}
    ids: dict[int, IDType] = {}
    mark = 10_000
    # A large run's chain is checked by another process on another core while the fold
    # runs (lionstore.log.chaincheck): hashing here would cost a third of the fold.
    checker = None
    if upto >= PARALLEL_CHECK_AT:
        checker = await store._backend.start_chain_check(query, projection.tip)
    projection.hash_chain = checker is None
    try:
        async with store._backend.scan_run(query, page_size) as scan:
            while rows := await scan.next_page():
                fold_page(rows, kinds, ids, scan.stream_id)
                while progress is not None and projection.records >= mark:
                    progress(mark)
                    mark += 10_000
                await asyncio.sleep(0)  # a page at a time, the loop's other tasks between
        if checker is not None:
            checked, checker = await checker.result(), None
            if not checked.ok:
                raise _broken_chain(store.target, checked.position)
            if (checked.rows, checked.last) != (projection.records, projection.position):
                raise CorruptDatabaseError(
                    f"{store.target}: the digest check read {checked.rows} records up to "
                    f"position {checked.last}, the fold {projection.records} up to "
                    f"{projection.position}: the run's records do not read the same twice"
                )
            projection.tip = checked.tip
    finally:
        projection.hash_chain = True
        if checker is not None:  # the fold failed first: the check is not needed
            await checker.cancel()
    await check_run_end(store._backend, store.target, run_no, upto, projection.position, until_us)
