"""Mail built from its record through validation, for tests that compare a projection's
fast paths (raw or compact mails) with the validated object."""

from __future__ import annotations

from lionstore import IDType
from lionstore.domain.mail import Mail, Package
from lionstore.domain.mail_records import MailReceived, MailSent


def validated_mail(mail_id: IDType, data: MailSent | MailReceived) -> Mail:
    """The Mail a ``mail.sent``/``mail.received`` record describes, through validation
    (the package item as recorded; its class, if any, in the package's metadata)."""
    p = data.package
    package = Package(
        p.category,
        p.item,
        p.request_source,
        id=p.id,
        created_at=p.created_at,
        metadata={"item_class": p.item_class} if p.item_class else {},
    )
    return Mail(
        id=mail_id,
        created_at=data.created_at,
        metadata=data.metadata,
        sender=data.sender,
        recipient=data.recipient,
        package=package,
    )
