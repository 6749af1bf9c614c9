"""Mailbox: one source's inbound and outbound mail, as a view of the log.

``pile_``, ``pending_ins`` and ``pending_outs`` are rebuilt from the router's
records; they are read-only. ``append_in``, ``append_out`` and ``exclude``
record. A mailbox that belongs to no Exchange or MailManager yet cannot record
anything and says so (``SourceError``, before anything is written).

Writes from synchronous code: ``append_in``, ``append_out`` and ``exclude`` are
plain methods, as in lionagi, so a source whose own ``send`` is synchronous (the
seed's ``MySource``: ``def send(self, mail): self.mailbox.append_out(mail)``)
loses nothing. The call checks the mail at once (a bad one raises before anything
is written), starts recording it on the running event loop, and returns a
:class:`PendingWrite`. Awaiting it waits for the commit (and raises if the write
failed); not awaiting it still records. The mail is durable once any of these
returns: that awaitable, the router's next ``collect``/``collect_all``/``deliver``/
``deliver_all``/``send``/``send_all``/``sync`` (each first waits for the writes its
mailboxes started, and raises the first one that failed and was not awaited), the
next pass of its ``execute`` loop, or the store's ``close``. A process killed before
then loses only that send, not yet acknowledged, like any write not awaited. Writes
started this way are recorded in the order they were made. Calling them with no
running event loop raises ``SourceError``: there would be no loop to record on.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from lionstore.domain.ids import IDType, to_id
from lionstore.domain.mail import Mail
from lionstore.domain.pile import Pile
from lionstore.domain.progression import Progression
from lionstore.errors import IDError, SourceError

if TYPE_CHECKING:
    import asyncio

    from lionstore.mail.router import MailRouter
    from lionstore.repositories.mail import MailRepository

__all__ = ["Mailbox", "PendingWrite"]

_OWNER = "the mailbox's append_in / append_out / exclude"


class PendingWrite:
    """A mailbox write already under way. ``await`` it to wait for its commit (and to
    get its error, if it failed); leaving it alone does not cancel it."""

    __slots__ = ("_task", "awaited")

    def __init__(self, task: asyncio.Future[None]) -> None:
        self._task = task
        self.awaited = False

    def done(self) -> bool:
        """Whether the write has finished (committed, or failed)."""
        return self._task.done()

    def __await__(self) -> Generator[Any, None, None]:
        self.awaited = True
        return self._task.__await__()

    def __repr__(self) -> str:
        return f"PendingWrite(done={self.done()})"


class Mailbox:
    """Inbound mail grouped by sender and an outbound queue, for one source."""

    def __init__(self, owner: Any = None) -> None:
        self.owner: IDType | None = None if owner is None else to_id(owner)
        self._repo: MailRepository | None = None
        self._router: MailRouter | None = None

    def _bind(self, owner: IDType, router: MailRouter) -> None:
        self.owner = owner
        self._router = router
        self._repo = router._repo

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

    def _start(self, write: Callable[[], Coroutine[Any, Any, object]]) -> PendingWrite:
        assert self._router is not None
        return self._router._start_write(write)

    def append_in(self, item: Mail) -> PendingWrite:
        """Put a mail straight into this inbox, queued under its sender (recorded; see
        the module docstring for when a write not awaited is durable)."""
        owner, repo = self._require()
        _require_mail(item)
        repo.check_sendable(item, owner, outbound=False)
        record = repo.prepare_put(item, outbound=False)  # an unstorable mail raises here
        return self._start(lambda: repo.put(item, outbound=False, record=record))

    def append_out(self, item: Mail) -> PendingWrite:
        """Queue a mail in this outbox for the router to collect (recorded; see the
        module docstring for when a write not awaited is durable)."""
        owner, repo = self._require()
        _require_mail(item)
        repo.check_sendable(item, owner, outbound=True)
        record = repo.prepare_put(item, outbound=True)  # an unstorable mail raises here
        return self._start(lambda: repo.put(item, outbound=True, record=record))

    async def _append_out_now(self, item: Mail) -> None:
        """``append_out`` for async callers (``Source.send``): the same checks and
        order, without a task per mail."""
        owner, repo = self._require()
        _require_mail(item)
        repo.check_sendable(item, owner, outbound=True)
        assert self._router is not None
        await self._router._before_write()
        await self._router.load()
        await repo.put(item, outbound=True)

    def exclude(self, item: Any) -> PendingWrite:
        """Remove a mail from this mailbox (inbound or outbound); silent if absent."""
        owner, repo = self._require()
        mail_id = to_id(item)

        async def write() -> None:
            box = repo.state.boxes.get(owner)
            if box is not None and mail_id in box.mails:
                await repo.exclude([mail_id])

        return self._start(write)


def _require_mail(item: Any) -> None:
    if not isinstance(item, Mail):
        raise TypeError(f"a mailbox holds Mail, not {type(item).__name__}")
