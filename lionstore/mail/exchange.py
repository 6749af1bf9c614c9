"""Exchange: collects outbound mail from each source into a buffer and delivers it.

``delete_source`` policy (lionagi's intent: deleting a source clears the mail
addressed to it and its own unsent outbox): the source is removed and, in the same
transaction, the mail still in its outbox is dead-lettered (``sender_deleted``),
and so is every undelivered mail to it, in any outbox or in the buffer
(``recipient_deleted``). Mail it sent that was already collected (in the buffer)
is still delivered to its recipients, and mail already delivered stays delivered.
Collecting mail to an unknown or deleted recipient dead-letters it
(``recipient_unknown`` / ``recipient_deleted``), and so does collecting mail a
deleted source sent after its deletion (``sender_deleted``); it never blocks the
mail behind it.

``exchange._execute_stop = True`` (the seed's flag) is ``await exchange.stop()``:
``execute()`` returns after its current pass, without waiting out its refresh time;
setting it back to False is ``start()``.
"""

from __future__ import annotations

from typing import Any

from lionstore.domain.ids import IDType
from lionstore.domain.mail import Mail
from lionstore.mail.router import MailRouter

__all__ = ["Exchange"]


class Exchange(MailRouter):
    """Mail exchange among Communicatable sources, durable."""

    @property
    def _execute_stop(self) -> bool:
        """The seed's stop flag: True asks ``execute()`` to stop (see the module)."""
        return self._stop_requested

    @_execute_stop.setter
    def _execute_stop(self, value: bool) -> None:
        self._set_stop(bool(value))

    @property
    def buffer(self) -> dict[IDType, list[Mail]]:
        """Collected mail waiting for delivery, by recipient (a copy)."""
        self._repo.require_loaded(f"exchange {self.name!r}")
        return self._buffered()

    async def add_source(self, sources: Any) -> list[IDType]:
        """Register sources (one or a sequence). Idempotent: sources already
        registered are left as they are. All are added in one transaction."""
        return await self._add(sources)

    async def delete_source(self, sources: Any) -> list[IDType]:
        """Remove sources (see the module docstring for what happens to their mail)."""
        return await self._delete(sources)

    @staticmethod
    def create_mail(
        sender: Any, recipient: Any, category: Any, item: Any, request_source: Any = None
    ) -> Mail:
        """A new Mail (nothing is recorded until a source sends it)."""
        return MailRouter._create_mail(sender, recipient, category, item, request_source)

    async def collect(self, sender: Any) -> int:
        """Move the sender's outbox into the buffer (FIFO)."""
        await self.sync()
        return await self._collect([self._require_source(sender, "Sender")])

    async def deliver(self, recipient: Any) -> int:
        """Deliver buffered mail addressed to the recipient (FIFO)."""
        await self.sync()
        return await self._deliver([self._require_source(recipient, "Recipient")])

    async def deliver_all(self) -> int:
        """Deliver all buffered mail, in one transaction."""
        return await self._deliver_all()
