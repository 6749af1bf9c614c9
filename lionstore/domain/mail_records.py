"""Record kinds of the mail system. Streams: one per mail, one per source.

::

    source.added       a source joins a router (an Exchange or a MailManager)
    source.deleted     it leaves; its undelivered mail is dead-lettered with it
    mail.sent          in the sender's outbox (Mailbox.append_out / source.send)
    mail.received      put straight into a recipient's inbox (Mailbox.append_in)
    mail.collected     moved from the outbox to the router's buffer
    mail.delivered     moved from the buffer to the recipient's inbox
    mail.dead_lettered undeliverable, with the reason; never silently dropped
    mail.excluded      removed from a mailbox (Mailbox.exclude)
"""

from __future__ import annotations

from typing import Any, ClassVar

from lionstore.domain.ids import IDType
from lionstore.domain.records import RecordData

__all__ = [
    "MAIL_KINDS",
    "MailCollected",
    "MailDeadLettered",
    "MailDelivered",
    "MailExcluded",
    "MailPlaced",
    "MailReceived",
    "MailSent",
    "PackageData",
    "SourceAdded",
    "SourceDeleted",
]


class PackageData(RecordData):
    """A package as recorded (not a record kind on its own)."""

    id: IDType
    created_at: float
    category: str
    item: Any = None
    item_class: str | None = None
    request_source: IDType | None = None


class SourceAdded(RecordData):
    kind: ClassVar[str] = "source.added"
    router: str
    source_class: str
    fields: dict[str, Any] | None = None


class SourceDeleted(RecordData):
    kind: ClassVar[str] = "source.deleted"
    router: str


class MailPlaced(RecordData):
    """A whole mail entering a mailbox (base of mail.sent and mail.received)."""

    router: str
    sender: IDType
    recipient: IDType
    created_at: float
    metadata: dict[str, Any] = {}
    package: PackageData


class MailSent(MailPlaced):
    kind: ClassVar[str] = "mail.sent"


class MailReceived(MailPlaced):
    kind: ClassVar[str] = "mail.received"


class MailCollected(RecordData):
    kind: ClassVar[str] = "mail.collected"


class MailDelivered(RecordData):
    kind: ClassVar[str] = "mail.delivered"


class MailDeadLettered(RecordData):
    kind: ClassVar[str] = "mail.dead_lettered"
    reason: str
    stage: str


class MailExcluded(RecordData):
    kind: ClassVar[str] = "mail.excluded"


MAIL_KINDS = tuple(
    cls.kind
    for cls in (
        SourceAdded,
        SourceDeleted,
        MailSent,
        MailReceived,
        MailCollected,
        MailDelivered,
        MailDeadLettered,
        MailExcluded,
    )
)
