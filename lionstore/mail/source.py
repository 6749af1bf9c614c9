"""Communicatable, the protocol a mail source satisfies, and Source, a ready-made one."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import PrivateAttr

from lionstore.domain.element import Element
from lionstore.domain.mail import Mail
from lionstore.mail.mailbox import Mailbox

__all__ = ["Communicatable", "Source"]


@runtime_checkable
class Communicatable(Protocol):
    """Anything with an ``id``, a ``mailbox`` and a ``send(mail)``: a coroutine, or a
    plain method that calls ``self.mailbox.append_out(mail)`` (as lionagi's sources
    do; see ``lionstore.mail.mailbox`` for when such a send is durable)."""

    id: Any
    mailbox: Mailbox

    def send(self, mail: Mail) -> Any: ...


class Source(Element):
    """An element with a mailbox: ``await source.send(mail)`` queues it outbound."""

    _mailbox: Mailbox = PrivateAttr(default_factory=Mailbox)

    @property
    def mailbox(self) -> Mailbox:
        return self._mailbox

    @mailbox.setter
    def mailbox(self, value: Mailbox) -> None:
        self._mailbox = value

    async def send(self, mail: Mail) -> None:
        """Queue ``mail`` in this source's outbox; returns once it is recorded."""
        await self._mailbox._append_out_now(mail)
