"""What Exchange and MailManager share: sources, a repository, and the run loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from lionstore._loop import Stoppable
from lionstore.domain.element import Element, class_path
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.mail import Mail, Package
from lionstore.domain.pile import Pile
from lionstore.errors import UnknownSourceError
from lionstore.log.store import Store, resolve_store
from lionstore.mail.mailbox import Mailbox
from lionstore.mail.source import Source
from lionstore.projections.mail import DeadLetter, element_source_materializer
from lionstore.repositories.base import NotLoadedError
from lionstore.repositories.mail import MailRepository

__all__ = ["MailRouter"]


def _as_list(sources: Any) -> list[Any]:
    if sources is None:
        return []
    if isinstance(sources, Pile):
        return list(sources)
    if isinstance(sources, (list, tuple, set, frozenset)):
        return list(sources)
    return [sources]


class MailRouter(Stoppable):
    """Routes mail among registered sources; everything it does is recorded."""

    def __init__(
        self, sources: Any = None, *, store: Store | None = None, name: str | None = None
    ) -> None:
        store = resolve_store(store, type(self).__name__)
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError("name must be a non-empty string")
        self.name = name or class_path(type(self))
        self.store = store
        self._repo = MailRepository(
            store, self.name, element_source_materializer(Element, lambda sid: Source(id=sid))
        )
        self._boxes: dict[IDType, Mailbox] = {}
        self._initial = self._validate_sources(_as_list(sources))
        for source in self._initial:
            self._bind(source)
        self._ready = not self._initial and store.run_is_fresh
        Stoppable.__init__(self)
        self.execution_mode = False

    # -- sources -------------------------------------------------------------------------

    @staticmethod
    def _validate_sources(sources: list[Any]) -> list[Any]:
        for source in sources:
            if not hasattr(source, "id") or not callable(getattr(source, "send", None)):
                raise TypeError(
                    f"{type(source).__name__} is not Communicatable (it needs an id, a mailbox "
                    "and an async send)"
                )
            to_id(source.id)
        return sources

    def _bind(self, source: Any) -> None:
        # Each router has its own Mailbox per source: its view of this router's
        # records. A source's own ``mailbox`` is that of the first (open) router it
        # joined; another router gives it one of its own (``router.mailboxes[id]``),
        # so one source can take part in an Exchange and a MailManager (the seed's
        # usage example) without either view changing under the other.
        sid = to_id(source.id)
        current = getattr(source, "mailbox", None)
        elsewhere = (
            isinstance(current, Mailbox)
            and current._repo is not None
            and current._repo is not self._repo
            and not current._repo.store.closed
        )
        box = self._boxes.get(sid)
        if box is None:
            box = current if isinstance(current, Mailbox) and not elsewhere else Mailbox()
            self._boxes[sid] = box
        box._bind(sid, self._repo, self.load)
        if not elsewhere and current is not box:
            source.mailbox = box

    async def load(self) -> None:
        """Fold this router's history and register the sources given at construction."""
        if self._ready:
            return
        await self._repo.load()
        self._ready = True
        if self._initial:
            initial, self._initial = self._initial, []
            await self._repo.add_sources(initial)
        # rebuilt sources get mailboxes bound to this router
        for source in self._repo.state.sources.values():
            if to_id(source.id) not in self._boxes:
                self._bind(source)

    async def _add(self, sources: Any) -> list[IDType]:
        await self.load()
        items = self._validate_sources(_as_list(sources))
        for source in items:
            self._bind(source)
        added = await self._repo.add_sources(items)
        for source in items:
            self._repo.state.sources[to_id(source.id)] = source  # keep the caller's object
        return added

    async def _delete(self, sources: Any) -> list[IDType]:
        await self.load()
        ids = [to_id(s) for s in _as_list(sources)]
        state = self._repo.state
        missing = [i for i in ids if not state.is_active(i)]
        if missing:
            raise UnknownSourceError(f"Source(s) {missing} do not exist in {self.name}")
        return await self._repo.delete_sources(ids)

    def _require_source(self, ref: Any, role: str) -> IDType:
        source_id = to_id(ref)
        if not self._repo.state.is_active(source_id):
            raise UnknownSourceError(f"{role} source {source_id} does not exist in {self.name}")
        return source_id

    # -- views ---------------------------------------------------------------------------

    def _require_loaded(self) -> None:
        """Views are the log: refuse to show them before the history, and the sources
        given to the constructor, are in."""
        self._repo.require_loaded(f"router {self.name!r}")
        if self._initial:
            raise NotLoadedError(
                f"router {self.name!r} has not recorded the sources it was given yet; await "
                "its load() (or any of its async methods) first"
            )

    @property
    def sources(self) -> Pile[Any]:
        self._require_loaded()
        items = [s for s in self._repo.state.sources.values() if isinstance(s, Element)]
        pile: Pile[Any] = Pile(items)
        return pile._freeze("add_source / delete_source")

    @property
    def mailboxes(self) -> dict[IDType, Mailbox]:
        self._require_loaded()
        boxes = self._boxes
        return {sid: boxes.get(sid, s.mailbox) for sid, s in self._repo.state.sources.items()}

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Undeliverable mail with the reason, in the order it was dead-lettered."""
        self._require_loaded()
        return sorted(self._repo.state.dead.values(), key=lambda d: d.position)

    def _buffered(self) -> dict[IDType, list[Mail]]:
        state = self._repo.state
        return {r: [state.mails[m] for m in q] for r, q in state.buffer.items() if q}

    # -- mail ----------------------------------------------------------------------------

    @staticmethod
    def _create_mail(
        sender: Any, recipient: Any, category: Any, item: Any, request_source: Any = None
    ) -> Mail:
        return Mail(
            sender=to_id(sender),
            recipient=to_id(recipient),
            package=Package(category, item, request_source),
        )

    async def _collect(self, senders: Iterable[IDType]) -> int:
        await self.sync()
        return await self._repo.collect(list(senders))

    async def _deliver(self, recipients: Iterable[IDType]) -> int:
        await self.sync()
        return await self._repo.deliver(list(recipients))

    async def collect_all(self) -> int:
        """Collect every source's outbox, in one transaction. Returns how many mails moved.
        Mail other processes sent through the file is included."""
        await self.sync()
        state = self._repo.state
        senders = [s for s, box in state.boxes.items() if box.outs]
        return await self._repo.collect(senders) if senders else 0

    async def _deliver_all(self) -> int:
        await self.sync()
        recipients = list(self._repo.state.buffer)
        return await self._repo.deliver(recipients) if recipients else 0

    async def sync(self) -> None:
        """Bring in what other processes recorded for this router."""
        await self.load()
        await self._repo.sync()

    # -- the loop ------------------------------------------------------------------------

    async def execute(self, refresh_time: float = 1) -> None:
        """Collect and deliver until :meth:`stop`; wait ``refresh_time`` between sweeps
        (or less, when mail is sent through this store)."""
        if isinstance(refresh_time, bool) or not isinstance(refresh_time, (int, float)):
            raise TypeError("refresh_time must be a number")
        if not refresh_time > 0:  # also refuses NaN, which would spin forever
            raise ValueError("refresh_time must be > 0")
        if self._stop_requested:
            return
        self.execution_mode = True
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self.store.subscribe(lambda _records: self._wakeup.set() if self._wakeup else None)
        try:
            while not self._stop_requested:
                self._wakeup.clear()
                await self.sync()
                await self.collect_all()
                await self._deliver_all()
                if self._stop_requested:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=refresh_time)
        finally:
            self.execution_mode = False
