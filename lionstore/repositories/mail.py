"""The mail repository: mail commands as records, with compare-and-set per mail.

Each command expects the mail streams it touches at the versions the projection
shows, so a mail is collected once and delivered once even when several
processes run the same router over one file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from lionstore.domain.element import class_path
from lionstore.domain.ids import IDType
from lionstore.domain.mail import Mail, item_to_json
from lionstore.domain.mail_records import (
    MAIL_KINDS,
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailExcluded,
    MailReceived,
    MailSent,
    PackageData,
    SourceAdded,
    SourceDeleted,
)
from lionstore.domain.records import NewRecord, Recorded, encode_data
from lionstore.errors import MailError
from lionstore.log.store import Store
from lionstore.projections.mail import MailState, SourceMaterializer
from lionstore.repositories.base import Decision, Repository

__all__ = ["MailRepository"]

# Records without fields are immutable: one instance and its JSON serve every mail.
_COLLECTED = MailCollected()
_DELIVERED = MailDelivered()
_EXCLUDED = MailExcluded()
_EMPTY = "{}"


def _mail_fields(mail: Mail) -> dict[str, Any]:
    item, item_class = item_to_json(mail.package.item)
    p = mail.package
    return {
        "sender": mail.sender,
        "recipient": mail.recipient,
        "created_at": mail.created_at,
        "metadata": mail.metadata,
        "package": PackageData(
            id=p.id,
            created_at=p.created_at,
            category=p.category.value,
            item=item,
            item_class=item_class,
            request_source=p.request_source,
        ),
    }


class MailRepository(Repository):
    kinds = MAIL_KINDS

    def __init__(self, store: Store, router: str, materialize_source: SourceMaterializer) -> None:
        self.state = MailState(router, materialize_source)
        super().__init__(store)

    def apply(self, record: Recorded) -> None:
        self.state.apply(record)

    def _encoded(self, stream: IDType, data: Any) -> NewRecord:
        return NewRecord(stream, data, encode_data(data, self.store.max_record_bytes))

    # -- sources -------------------------------------------------------------------------

    async def add_sources(self, sources: Sequence[Any]) -> list[IDType]:
        """Register sources not yet active; already active ones are left alone."""
        prepared: list[tuple[Any, NewRecord]] = []
        for source in sources:
            fields = None
            if isinstance(source, BaseModel):
                fields = source.model_dump(mode="json", exclude={"id"})
            data = SourceAdded(
                router=self.state.router, source_class=class_path(type(source)), fields=fields
            )
            prepared.append((source, self._encoded(source.id, data)))

        def decide() -> Decision | None:
            state = self.state
            fresh = [(s, r) for s, r in prepared if not state.is_active(s.id)]
            for source, _ in fresh:
                state.live_sources[source.id] = source
            return [r for _, r in fresh], {s.id: state.versions.get(s.id, 0) for s, _ in fresh}

        try:
            committed = await self.decide_and_append(decide)
        finally:
            for source, _ in prepared:
                self.state.live_sources.pop(source.id, None)
        return [r.stream_id for r in committed]

    async def delete_sources(self, ids: Sequence[IDType]) -> list[IDType]:
        """Remove sources; in the same transaction the mail in their outboxes and every
        undelivered mail to them is dead-lettered (their mail already collected stays
        in the buffer, to be delivered)."""

        def decide() -> Decision | None:
            state = self.state
            records: list[NewRecord] = []
            expected: dict[IDType, int] = {}
            for sid in ids:
                if not state.is_active(sid):
                    continue
                records.append(NewRecord(sid, SourceDeleted(router=state.router)))
                expected[sid] = state.versions[sid]
                for mail_id, reason, stage in state.undelivered_involving(sid):
                    if mail_id in expected:
                        continue
                    records.append(NewRecord(mail_id, MailDeadLettered(reason=reason, stage=stage)))
                    expected[mail_id] = state.versions[mail_id]
            return records, expected

        committed = await self.decide_and_append(decide)
        return [r.stream_id for r in committed if r.kind == SourceDeleted.kind]

    # -- mailboxes -----------------------------------------------------------------------

    def prepare_put(self, mail: Mail, *, outbound: bool) -> NewRecord:
        """The record ``put`` appends (raises for an unstorable mail, writing nothing)."""
        fields = _mail_fields(mail)
        router = self.state.router
        data: Any = (
            MailSent(router=router, **fields) if outbound else MailReceived(router=router, **fields)
        )
        return self._encoded(mail.id, data)

    async def put(self, mail: Mail, *, outbound: bool, record: NewRecord | None = None) -> bool:
        """Record a mail into its sender's outbox (``outbound``) or straight into its
        recipient's inbox (``record``: from ``prepare_put``). False if this mail is
        already known."""
        if record is None:
            record = self.prepare_put(mail, outbound=outbound)
        prepared = record

        def decide() -> Decision | None:
            if mail.id in self.state.where:
                return None
            self.state.live_mail[mail.id] = mail
            return [prepared], {mail.id: 0}

        try:
            return bool(await self.decide_and_append(decide))
        finally:
            self.state.live_mail.pop(mail.id, None)

    async def exclude(self, mail_ids: Iterable[IDType]) -> int:
        wanted = list(mail_ids)

        def decide() -> Decision | None:
            state = self.state
            chosen = [m for m in wanted if state.where.get(m) in ("outbox", "inbox", "buffer")]
            return [NewRecord(m, _EXCLUDED, _EMPTY) for m in chosen], {
                m: state.versions[m] for m in chosen
            }

        return len(await self.decide_and_append(decide))

    # -- routing -------------------------------------------------------------------------

    async def collect(self, senders: Sequence[IDType]) -> int:
        """Move every listed sender's outbox to the buffer, FIFO, in one transaction;
        mail to an unknown or deleted recipient is dead-lettered instead."""

        def decide() -> Decision | None:
            state = self.state
            records: list[NewRecord] = []
            expected: dict[IDType, int] = {}
            for sender in senders:
                gone = not state.is_active(sender) and sender in state.deleted
                for mail_id in state.outbox(sender):
                    recipient = state.mails[mail_id].recipient
                    if gone:  # sent after its source was deleted
                        records.append(
                            NewRecord(
                                mail_id, MailDeadLettered(reason="sender_deleted", stage="outbox")
                            )
                        )
                    elif state.is_active(recipient):
                        records.append(NewRecord(mail_id, _COLLECTED, _EMPTY))
                    else:
                        reason = (
                            "recipient_deleted"
                            if recipient in state.deleted
                            else "recipient_unknown"
                        )
                        records.append(
                            NewRecord(mail_id, MailDeadLettered(reason=reason, stage="outbox"))
                        )
                    expected[mail_id] = state.versions[mail_id]
            return records, expected

        return len(await self.decide_and_append(decide))

    async def deliver(self, recipients: Sequence[IDType]) -> int:
        """Move every listed recipient's buffered mail into its inbox, FIFO, in one
        transaction (mail collected before its sender was deleted included); mail to a
        recipient deleted meanwhile is dead-lettered."""

        def decide() -> Decision | None:
            state = self.state
            records: list[NewRecord] = []
            expected: dict[IDType, int] = {}
            for recipient in recipients:
                active = state.is_active(recipient)
                for mail_id in state.buffered_for(recipient):
                    if active:
                        records.append(NewRecord(mail_id, _DELIVERED, _EMPTY))
                    else:
                        records.append(
                            NewRecord(
                                mail_id,
                                MailDeadLettered(reason="recipient_deleted", stage="buffer"),
                            )
                        )
                    expected[mail_id] = state.versions[mail_id]
            return records, expected

        return len(await self.decide_and_append(decide))

    def check_sendable(self, mail: Mail, owner: IDType, *, outbound: bool) -> None:
        if outbound and mail.sender != owner:
            raise MailError(
                f"mail {mail.id} is from {mail.sender}, not from this mailbox's {owner}"
            )
        if not outbound and mail.recipient != owner:
            raise MailError(
                f"mail {mail.id} is for {mail.recipient}, not for this mailbox's {owner}"
            )
