"""Mailbox: one source's inbound and outbound mail, as a view of the log.

``pile_``, ``pending_ins`` and ``pending_outs`` are rebuilt from the router's
records; they are read-only. ``append_in``, ``append_out`` and ``exclude``
record and are therefore async. A mailbox that belongs to no Exchange or
MailManager yet cannot record anything and says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lionstore.domain.ids import IDType, to_id
from lionstore.domain.mail import Mail
from lionstore.domain.pile import Pile
from lionstore.domain.progression import Progression
from lionstore.errors import IDError, SourceError

if TYPE_CHECKING:
    from lionstore.repositories.mail import MailRepository

__all__ = ["Mailbox"]

_OWNER = "the mailbox's append_in / append_out / exclude"


class Mailbox:
    """Inbound mail grouped by sender and an outbound queue, for one source."""

    def __init__(self, owner: Any = None) -> None:
        self.owner: IDType | None = None if owner is None else to_id(owner)
        self._repo: MailRepository | None = None
        self._ready: Callable[[], Awaitable[None]] | None = None

    def _bind(
        self,
        owner: IDType,
        repo: MailRepository,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.owner = owner
        self._repo = repo
        self._ready = ready

    async def _router_ready(self) -> None:
        # The router records the sources it was constructed with before any mail.
        if self._ready is not None:
            await self._ready()

    @property
    def bound(self) -> bool:
        return self._repo is not None

    def _require(self) -> tuple[IDType, MailRepository]:
        if self._repo is None or self.owner is None:
            raise SourceError(
                "this mailbox belongs to no Exchange or MailManager yet; add its source first"
            )
        return self.owner, self._repo

    def _box(self) -> Any:
        if self._repo is None or self.owner is None:
            return None
        self._repo.require_loaded(f"the mailbox of {self.owner}")  # never silently empty
        return self._repo.state.boxes.get(self.owner)

    # -- views ---------------------------------------------------------------------------

    @property
    def pile_(self) -> Pile[Mail]:
        box = self._box()
        mails = list(box.mails.values()) if box else []
        return Pile(mails, item_type=Mail)._freeze(_OWNER)

    @property
    def pending_ins(self) -> dict[IDType, Progression]:
        box = self._box()
        if not box:
            return {}
        return {s: Progression(order=list(q))._freeze(_OWNER) for s, q in box.ins.items()}

    @property
    def pending_outs(self) -> Progression:
        box = self._box()
        return Progression(order=list(box.outs) if box else [])._freeze(_OWNER)

    @property
    def senders(self) -> list[IDType]:
        """Ids of senders with inbound mail waiting here."""
        box = self._box()
        return [s for s, q in box.ins.items() if q] if box else []

    def __contains__(self, item: Any) -> bool:
        box = self._box()
        if not box:
            return False
        try:
            return to_id(item) in box.mails
        except IDError:
            return False

    def __bool__(self) -> bool:
        box = self._box()
        return bool(box and box.mails)

    def __len__(self) -> int:
        box = self._box()
        return len(box.mails) if box else 0

    def __repr__(self) -> str:
        return f"Mailbox(owner={self.owner}, mails={len(self)})"

    # -- writes --------------------------------------------------------------------------

    async def append_in(self, item: Mail) -> None:
        """Put a mail straight into this inbox, queued under its sender."""
        owner, repo = self._require()
        _require_mail(item)
        repo.check_sendable(item, owner, outbound=False)
        await self._router_ready()
        await repo.put(item, outbound=False)

    async def append_out(self, item: Mail) -> None:
        """Queue a mail in this outbox for the router to collect."""
        owner, repo = self._require()
        _require_mail(item)
        repo.check_sendable(item, owner, outbound=True)
        await self._router_ready()
        await repo.put(item, outbound=True)

    async def exclude(self, item: Any) -> None:
        """Remove a mail from this mailbox (inbound or outbound); silent if absent."""
        owner, repo = self._require()
        mail_id = to_id(item)
        await self._router_ready()
        box = repo.state.boxes.get(owner)
        if box is not None and mail_id in box.mails:
            await repo.exclude([mail_id])


def _require_mail(item: Any) -> None:
    if not isinstance(item, Mail):
        raise TypeError(f"a mailbox holds Mail, not {type(item).__name__}")
