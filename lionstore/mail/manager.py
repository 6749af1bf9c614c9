"""MailManager: the seed's higher-level router, with mail queued by recipient, then sender.

Built from the documented intent (lionagi 0.8.7's MailManager cannot run: its
create_mail, collect and send all raise). It shares the Exchange's records and
guarantees (``delete_source``: see ``lionstore.mail.exchange``); ``mails`` is
``recipient -> sender -> deque of Mail``. ``manager.execute_stop = True`` (the seed's
flag) is ``await manager.stop()``: ``execute()`` returns after its current pass.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from lionstore.domain.ids import IDType
from lionstore.domain.mail import Mail
from lionstore.mail.router import MailRouter

__all__ = ["MailManager"]


class MailManager(MailRouter):
    """Collects from sources and sends to recipients, durable."""

    @property
    def execute_stop(self) -> bool:
        """The seed's stop flag: True asks ``execute()`` to stop; False clears it."""
        return self._stop_requested

    @execute_stop.setter
    def execute_stop(self, value: bool) -> None:
        self._set_stop(bool(value))

    @property
    def mails(self) -> dict[IDType, dict[IDType, deque[Mail]]]:
        """Collected mail waiting to be sent: recipient -> sender -> FIFO (a copy)."""
        self._repo.require_loaded(f"mail manager {self.name!r}")
        out: dict[IDType, dict[IDType, deque[Mail]]] = {}
        for recipient, queue in self._buffered().items():
            by_sender = out.setdefault(recipient, {})
            for mail in queue:
                by_sender.setdefault(mail.sender, deque()).append(mail)
        return out

    async def add_sources(self, sources: Any) -> list[IDType]:
        """Register one source or a sequence; idempotent and atomic."""
        return await self._add(sources)

    async def delete_source(self, source_id: Any) -> list[IDType]:
        """Remove a source: the mail to it and its unsent outbox are dead-lettered; mail
        of its that was already collected is still sent."""
        return await self._delete(source_id)

    @staticmethod
    def create_mail(
        sender: Any, recipient: Any, category: Any, package: Any, request_source: Any = None
    ) -> Mail:
        """A new Mail whose package carries ``package`` as its item."""
        return MailRouter._create_mail(sender, recipient, category, package, request_source)

    async def collect(self, sender: Any) -> int:
        await self.sync()
        return await self._collect([self._require_source(sender, "Sender")])

    async def send(self, recipient: Any) -> int:
        """Deliver the recipient's queued mail, sender by sender, FIFO."""
        await self.sync()
        return await self._deliver([self._require_source(recipient, "Recipient")])

    async def send_all(self) -> int:
        return await self._deliver_all()
