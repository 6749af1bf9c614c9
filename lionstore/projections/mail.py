"""The mail projection: records -> sources, mailboxes, the router buffer, dead letters.

One ``MailState`` per router (an Exchange or a MailManager, by name). Every mail
is in exactly one place: a sender's outbox, the buffer, a recipient's inbox,
the dead letters, or gone (excluded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lionstore.domain.element import Element, resolve_class
from lionstore.domain.ids import IDType
from lionstore.domain.lazy import LazyDict
from lionstore.domain.lazy import set_raw_unchecked as _set_raw
from lionstore.domain.mail import Mail, Package, _check_json, item_from_json, validate_category
from lionstore.domain.mail_records import (
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailExcluded,
    MailReceived,
    MailSent,
    SourceAdded,
    SourceDeleted,
)
from lionstore.domain.records import Recorded
from lionstore.projections._build import fields_set, unchecked

__all__ = [
    "BoxState",
    "DeadLetter",
    "MailState",
    "SourceMaterializer",
    "compact_delivered",
    "mail_from_record",
]

SourceMaterializer = Callable[[IDType, SourceAdded], Any]


@dataclass(slots=True)
class BoxState:
    """One source's mailbox: inbound mail per sender and the outbox, both FIFO."""

    ins: dict[IDType, dict[IDType, None]] = field(default_factory=dict)
    outs: dict[IDType, None] = field(default_factory=dict)
    mails: dict[IDType, Mail] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    mail: Mail
    reason: str
    stage: str
    position: int


def mail_from_record(
    mail_id: IDType,
    data: MailSent | MailReceived,
    *,
    raw: bool = False,
    ids: dict[IDType, IDType] | None = None,
) -> Mail:
    """The Mail a ``mail.sent``/``mail.received`` record describes. With ``raw``, a
    pydantic item stays as its recorded JSON (its class named in the package's
    metadata as ``item_class``) and no class is looked up; ``ids`` then keeps one
    object per sender and recipient id (a replay holds thousands of mails between a
    few sources)."""
    if raw:
        parts = raw_mail_parts(mail_id, data, {} if ids is None else ids)
        if parts is not None:
            return _unchecked_mail(parts)
    p = data.package
    package = Package(
        p.category,
        p.item if raw else item_from_json(p.item, p.item_class),
        p.request_source,
        id=p.id,
        created_at=p.created_at,
        metadata={"item_class": p.item_class} if raw and p.item_class else {},
    )
    return Mail(
        id=mail_id,
        created_at=data.created_at,
        metadata=data.metadata,
        sender=data.sender,
        recipient=data.recipient,
        package=package,
    )


_MAIL_FIELDS = fields_set(Mail)
_PACKAGE_FIELDS = fields_set(Package)


def raw_mail_parts(
    mail_id: IDType, data: MailSent | MailReceived, ids: dict[IDType, IDType]
) -> tuple[Any, ...] | None:
    """The values :func:`_unchecked_mail` builds a record's raw Mail from: what the
    validated path of :func:`mail_from_record` builds, without validating again what
    decoding the record checked (ids are canonical IDTypes, times floats, metadata a
    dict). The checks a Package makes beyond its recorded types (a known category, a
    JSON item) still run. None for a record whose metadata names a class: that Mail
    is built through validation, which checks the name against the class."""
    if data.metadata and Element._lion_class_key in data.metadata:
        return None
    p = data.package
    item = p.item
    _check_json(item)
    return (
        mail_id,
        data.created_at,
        data.metadata or None,
        ids.setdefault(data.sender, data.sender),
        ids.setdefault(data.recipient, data.recipient),
        p.id,
        p.created_at,
        p.item_class,
        validate_category(p.category),  # a PackageCategory member
        item,
        p.request_source,
    )


def _unchecked_mail(parts: tuple[Any, ...]) -> Mail:
    """An unchecked Mail and Package from :func:`_mail_parts`' values."""
    mail_id, created_at, metadata, sender, recipient = parts[:5]
    package_id, package_created_at, item_class, category, item, request_source = parts[5:]
    package = unchecked(
        Package,
        _PACKAGE_FIELDS,
        {
            "id": package_id,
            "created_at": package_created_at,
            "metadata": {"item_class": item_class} if item_class else {},
            "category": category,
            "item": item,
            "request_source": request_source,
        },
    )
    return unchecked(
        Mail,
        _MAIL_FIELDS,
        {
            "id": mail_id,
            "created_at": created_at,
            "metadata": {} if metadata is None else metadata,
            "sender": sender,
            "recipient": recipient,
            "package": package,
        },
    )


def _mail_parts(mail: Mail) -> tuple[Any, ...] | None:
    """A replay's unchecked mail as a tuple :func:`_unchecked_mail` rebuilds it from
    (None for any other mail)."""
    package = mail.package
    if (
        mail.__pydantic_fields_set__ is not _MAIL_FIELDS
        or package.__pydantic_fields_set__ is not _PACKAGE_FIELDS
    ):
        return None
    meta = package.metadata
    if meta and meta.keys() != {"item_class"}:
        return None
    return (
        mail.id,
        mail.created_at,
        mail.metadata or None,
        mail.sender,
        mail.recipient,
        package.id,
        package.created_at,
        meta["item_class"] if meta else None,
        package.category,
        package.item,
        package.request_source,
    )


def _ends(mail: Mail | tuple[Any, ...]) -> tuple[IDType, IDType, IDType]:
    """(id, sender, recipient) of a mail or of its compact values (not built)."""
    if isinstance(mail, tuple):
        return mail[0], mail[3], mail[4]
    return mail.id, mail.sender, mail.recipient


class _CompactMails(LazyDict[IDType, Mail]):
    """A replay's mails: those in an inbox kept as tuples, built when read."""

    __slots__ = ()


def _build_mail(key: IDType, raw: tuple[Any, ...]) -> Mail:
    return _unchecked_mail(raw)


def compact_delivered(
    state: MailState,
    parts: Callable[[IDType, MailSent | MailReceived], tuple[Any, ...] | None] | None = None,
) -> None:
    """Have a replay's ``state`` (empty) keep each mail that reaches an inbox as a tuple
    of its values, a fraction of the memory of the Mail and Package models, building
    the Mail on first read (from ``state.mails`` or its mailbox: the same object).

    With ``parts`` (the values of a recorded mail, as :func:`raw_mail_parts` gives them,
    or None for one to materialize), every mail is kept so from its ``mail.sent`` or
    ``mail.received`` record on, and the fold moves it between places by its ids
    without building it."""
    if state.versions:
        raise ValueError("compact_delivered needs an empty state")
    state.mails = _CompactMails((), _build_mail, tuple)
    state.compact_parts = parts


class MailState:
    """Everything one router knows, folded from its records."""

    def __init__(
        self,
        router: str,
        materialize_source: SourceMaterializer,
        materialize_mail: Callable[[IDType, MailSent | MailReceived], Mail] = mail_from_record,
    ) -> None:
        self.router = router
        self.materialize_source = materialize_source
        self.materialize_mail = materialize_mail
        self.sources: dict[IDType, Any] = {}
        self.deleted: set[IDType] = set()
        self.boxes: dict[IDType, BoxState] = {}
        self.buffer: dict[IDType, dict[IDType, None]] = {}  # recipient -> mail ids, FIFO
        self.where: dict[IDType, str] = {}  # mail id -> outbox|buffer|inbox|dead|gone
        self.mails: dict[IDType, Mail] = {}
        self.dead: dict[IDType, DeadLetter] = {}
        self.versions: dict[IDType, int] = {}
        self.live_sources: dict[IDType, Any] = {}
        self.live_mail: dict[IDType, Mail] = {}
        self.compact_parts: (
            Callable[[IDType, MailSent | MailReceived], tuple[Any, ...] | None] | None
        ) = None  # see compact_delivered
        self.position = 0

    def box(self, source_id: IDType) -> BoxState:
        box = self.boxes.get(source_id)
        if box is None:
            box = self.boxes[source_id] = BoxState()
            if type(self.mails) is _CompactMails:
                mails = self.mails

                def from_mails(mail_id: IDType, raw: tuple[Any, ...]) -> Mail:
                    return mails[mail_id]  # one object, whichever dict it is read from

                box.mails = LazyDict((), from_mails, tuple)
        return box

    def is_active(self, source_id: IDType) -> bool:
        return source_id in self.sources

    def apply(self, record: Recorded) -> None:
        self.fold(record.stream_id, record.stream_version, record.position, record.data)

    def fold(self, sid: IDType, version: int, position: int, data: Any) -> None:
        """Apply one record given by its parts (what :meth:`apply` takes from a Recorded)."""
        step = _STEPS.get(type(data)) or _step_for(type(data))
        if step is _SOURCE_ADDED or step is _SOURCE_DELETED:
            if data.router != self.router:
                # A source's stream is shared by every router it joins: follow its
                # version, or this router's next append to it would expect a stale one.
                self.versions[sid] = version
                return
            if step is _SOURCE_ADDED:
                source = self.live_sources.pop(sid, None)
                if source is None:
                    source = self.sources.get(sid) or self.materialize_source(sid, data)
                self.sources[sid] = source
                self.deleted.discard(sid)
                self.box(sid)
            else:
                self.sources.pop(sid, None)
                self.deleted.add(sid)
        elif step is _SENT or step is _RECEIVED:
            if data.router != self.router or sid in self.where:
                return
            parts = None
            if self.compact_parts is not None and not self.live_mail:
                parts = self.compact_parts(sid, data)
            mail: Mail | tuple[Any, ...]
            if parts is None:
                mail = self.live_mail.pop(sid, None) or self.materialize_mail(sid, data)
                self.mails[sid] = mail
                sender = mail.sender
            else:
                mail = parts
                _set_raw(self.mails, sid, parts)
                sender = parts[3]
            if step is _SENT:
                box = self.box(sender)
                box.outs[sid] = None
                _set_raw(box.mails, sid, mail)  # the Mail or its compact values
                self.where[sid] = "outbox"
            else:
                self._into_inbox(mail)
        elif sid in self.where:
            if step is not None:
                self._move(sid, step, data, position)
        else:
            return
        self.versions[sid] = version
        self.position = position

    def _into_inbox(self, mail: Mail | tuple[Any, ...]) -> None:
        mid, sender, recipient = _ends(mail)
        box = self.box(recipient)
        box.ins.setdefault(sender, {})[mid] = None
        self.where[mid] = "inbox"
        if type(self.mails) is _CompactMails:
            parts = mail if isinstance(mail, tuple) else _mail_parts(mail)
            if parts is not None:  # the same tuple in both: either read builds it
                _set_raw(self.mails, mid, parts)
                _set_raw(box.mails, mid, parts)
                return
        _set_raw(box.mails, mid, mail)  # a Mail (compact values went above)

    def _leave(self, mid: IDType, sender: IDType, recipient: IDType) -> None:
        """Take the mail out of wherever it is now (unread mail stays unbuilt)."""
        place = self.where.get(mid)
        if place == "outbox":
            box = self.boxes[sender]
            box.outs.pop(mid, None)
            dict.pop(box.mails, mid, None)
        elif place == "buffer":
            queue = self.buffer.get(recipient)
            if queue is not None:
                queue.pop(mid, None)
                if not queue:
                    del self.buffer[recipient]
        elif place == "inbox":
            box = self.boxes[recipient]
            queue = box.ins.get(sender)
            if queue is not None:
                queue.pop(mid, None)
                if not queue:
                    del box.ins[sender]
            dict.pop(box.mails, mid, None)

    def _move(self, sid: IDType, step: str, data: Any, position: int) -> None:
        # Keys are the mail's own id object (the one its mail.sent record brought).
        mail = dict.__getitem__(self.mails, sid)  # a compact mail stays unbuilt
        mid, sender, recipient = _ends(mail)
        self._leave(mid, sender, recipient)
        if step is _COLLECTED:
            self.buffer.setdefault(recipient, {})[mid] = None
            self.where[mid] = "buffer"
        elif step is _DELIVERED:
            self._into_inbox(mail)
        elif step is _DEAD_LETTERED:
            self.where[mid] = "dead"
            self.dead[mid] = DeadLetter(self.mails[mid], data.reason, data.stage, position)
        else:
            self.where[mid] = "gone"

    # -- queries -------------------------------------------------------------------------

    def outbox(self, source_id: IDType) -> list[IDType]:
        box = self.boxes.get(source_id)
        return list(box.outs) if box else []

    def buffered_for(self, recipient: IDType) -> list[IDType]:
        return list(self.buffer.get(recipient, ()))

    def undelivered_involving(self, source_id: IDType) -> list[tuple[IDType, str, str]]:
        """``(mail_id, reason, stage)`` for the mail ``delete_source`` dead-letters: the
        source's outbox and every undelivered mail to it (its mail already in the buffer
        is left to be delivered)."""
        found: list[tuple[IDType, str, str]] = []
        for mail_id in self.outbox(source_id):
            found.append((mail_id, "sender_deleted", "outbox"))
        for mail_id in self.buffer.get(source_id, ()):
            found.append((mail_id, "recipient_deleted", "buffer"))
        for sender, box in self.boxes.items():
            if sender == source_id:
                continue
            for mail_id in box.outs:
                if self.mails[mail_id].recipient == source_id:
                    found.append((mail_id, "recipient_deleted", "outbox"))
        return found


# What each record class does, found by type(data); _step_for resolves other classes
# by isinstance (in this order), once.
_SOURCE_ADDED = "source_added"
_SOURCE_DELETED = "source_deleted"
_SENT = "sent"
_RECEIVED = "received"
_COLLECTED = "collected"
_DELIVERED = "delivered"
_DEAD_LETTERED = "dead_lettered"
_EXCLUDED = "excluded"
_BY_CLASS: tuple[tuple[type, str], ...] = (
    (SourceAdded, _SOURCE_ADDED),
    (SourceDeleted, _SOURCE_DELETED),
    (MailSent, _SENT),
    (MailReceived, _RECEIVED),
    (MailCollected, _COLLECTED),
    (MailDelivered, _DELIVERED),
    (MailDeadLettered, _DEAD_LETTERED),
    (MailExcluded, _EXCLUDED),
)
_STEPS: dict[type, str | None] = dict(_BY_CLASS)


def _step_for(cls: type) -> str | None:
    step = next((s for base, s in _BY_CLASS if issubclass(cls, base)), None)
    _STEPS[cls] = step
    return step


def element_source_materializer(
    base: type[Element], fallback: Callable[[IDType], Any]
) -> SourceMaterializer:
    """Rebuild sources as their own Element class when it is defined in this process,
    else as ``fallback(id)`` (a plain Source)."""

    def materialize(source_id: IDType, data: SourceAdded) -> Any:
        if data.fields is not None:
            try:
                cls = resolve_class(data.source_class, base)
            except LookupError:
                return fallback(source_id)
            return cls.model_validate({**data.fields, "id": source_id})
        return fallback(source_id)

    return materialize
