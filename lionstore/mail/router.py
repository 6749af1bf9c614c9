"""What Exchange and MailManager share: sources, a repository, and the run loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from lionstore._loop import Stoppable
from lionstore.domain.element import Element, class_path
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.mail import Mail, Package
from lionstore.domain.pile import Pile
from lionstore.errors import SourceError, UnknownSourceError
from lionstore.log.store import Store, resolve_store
from lionstore.mail.mailbox import Mailbox, PendingWrite
from lionstore.mail.source import Source
from lionstore.projections.mail import DeadLetter, element_source_materializer
from lionstore.repositories.mail import MailRepository

__all__ = ["MailRouter"]

log = logging.getLogger("lionstore.mail")


def _as_list(sources: Any) -> list[Any]:
    if sources is None:
        return []
    if isinstance(sources, Pile):
        return list(sources)
    if isinstance(sources, (list, tuple, set, frozenset)):
        return list(sources)
    return [sources]


class MailRouter(Stoppable):
    """Routes mail among registered sources; everything it does is recorded.

    Reading ``sources``, ``mailboxes``, ``dead_letters`` (and an Exchange's
    ``buffer``, a MailManager's ``mails``) right after the constructor works: the
    router's history is folded on that first read (``repositories.base``), and the
    sources given to the constructor are shown at once, while the write that records
    them, started by the constructor, commits (every async method waits for it).

    One source in several routers: each router keeps its own mailbox per source
    (``router.mailboxes[source.id]``), its view of its own records. The source's
    ``mailbox`` attribute is the one of the router it joined (or re-joined with
    ``add_source``) last, so ``source.send(mail)`` goes through that router; a mail is
    collected and delivered only by the router it was sent through. To send through
    another one: ``router.mailboxes[source.id].append_out(mail)``.
    """

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
        self._in_flight: set[asyncio.Future[None]] = set()
        self._last_write: asyncio.Future[None] | None = None
        self._failed: list[tuple[PendingWrite, BaseException]] = []
        self._initial = self._validate_sources(_as_list(sources))
        for source in self._initial:
            self._bind(source)
        self._ready = not self._initial and store.run_is_fresh
        Stoppable.__init__(self)
        self.execution_mode = False
        if self._initial:
            with contextlib.suppress(RuntimeError):  # no running loop: the first await does it
                asyncio.get_running_loop()
                self._start_write(None)

    # -- sources -------------------------------------------------------------------------

    @staticmethod
    def _validate_sources(sources: list[Any]) -> list[Any]:
        for source in sources:
            if not hasattr(source, "id") or not callable(getattr(source, "send", None)):
                raise TypeError(
                    f"{type(source).__name__} is not Communicatable (it needs an id, a mailbox "
                    "and a send(mail) method)"
                )
            to_id(source.id)
        return sources

    def _bind(self, source: Any) -> None:
        # This router's own Mailbox for the source (a fresh one the source brought is
        # adopted); the source's ``mailbox`` becomes it: the router joined last.
        sid = to_id(source.id)
        box = self._boxes.get(sid)
        if box is None:
            current = getattr(source, "mailbox", None)
            box = current if isinstance(current, Mailbox) and current._router is None else Mailbox()
            box._bind(sid, self)
            self._boxes[sid] = box
        if getattr(source, "mailbox", None) is not box:
            try:
                source.mailbox = box
            except AttributeError as exc:
                raise TypeError(
                    f"{type(source).__name__}.mailbox cannot be set; a source's mailbox is "
                    "given to it by the router it joins"
                ) from exc

    def _bind_rebuilt(self) -> None:
        # sources rebuilt from the log get mailboxes bound to this router
        for sid, source in self._repo.state.sources.items():
            if sid not in self._boxes:
                self._bind(source)

    async def load(self) -> None:
        """Fold this router's history and record the sources given at construction
        (done by every async method; calling it is never required)."""
        if self._ready:
            return
        await self._repo.load()
        self._ready = True
        if self._initial:
            initial, self._initial = self._initial, []
            await self._repo.add_sources(initial)
        self._bind_rebuilt()

    # -- writes started from synchronous code ------------------------------------------

    def _start_write(self, write: Callable[[], Coroutine[Any, Any, object]] | None) -> PendingWrite:
        """Start ``write`` (after this router's earlier writes, in order) on the running
        loop; the store's close waits for it. See ``lionstore.mail.mailbox``."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise SourceError(
                "a mailbox records on the running event loop: call it from async code "
                "(inside `async with lionstore.open(...)`)"
            ) from None
        self.store._ensure_open()
        previous = self._last_write

        async def run() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await self.load()
            if write is not None:
                await write()

        task = loop.create_task(run())
        self._last_write = task
        self._in_flight.add(task)
        self.store.track(task)
        pending = PendingWrite(task)

        def done(task: asyncio.Future[None]) -> None:
            self._in_flight.discard(task)
            if task.cancelled():
                return
            exc = task.exception()  # retrieved here: reported below or by its awaiter
            if exc is not None and not pending.awaited:
                log.warning("a mailbox write that was not awaited failed: %r", exc)
                self._failed.append((pending, exc))

        task.add_done_callback(done)
        return pending

    async def _before_write(self) -> None:
        """Wait for the writes started from synchronous code (an async write goes after
        them, in order)."""
        while self._in_flight:
            await asyncio.wait(list(self._in_flight))

    async def _settle(self) -> None:
        """Wait for the writes started from synchronous code and raise the first that
        failed and was not awaited."""
        await self._before_write()
        failed = [exc for pending, exc in self._failed if not pending.awaited]
        self._failed.clear()
        if failed:
            raise failed[0]

    async def _add(self, sources: Any) -> list[IDType]:
        await self._settle()
        await self.load()
        items = self._validate_sources(_as_list(sources))
        for source in items:
            self._bind(source)
        added = await self._repo.add_sources(items)
        for source in items:
            self._repo.state.sources[to_id(source.id)] = source  # keep the caller's object
        return added

    async def _delete(self, sources: Any) -> list[IDType]:
        await self._settle()
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
        """Views are the log: fold the history first if it is not in yet."""
        self._repo.require_loaded(f"router {self.name!r}")
        self._bind_rebuilt()

    def _active_sources(self) -> dict[IDType, Any]:
        """The registered sources, then those given to the constructor whose record is
        still being written."""
        found = dict(self._repo.state.sources)
        for source in self._initial:
            found.setdefault(to_id(source.id), source)
        return found

    @property
    def sources(self) -> Pile[Any]:
        self._require_loaded()
        items = [s for s in self._active_sources().values() if isinstance(s, Element)]
        pile: Pile[Any] = Pile(items)
        return pile._freeze("add_source / delete_source")

    @property
    def mailboxes(self) -> dict[IDType, Mailbox]:
        """This router's mailbox of each of its sources, by source id."""
        self._require_loaded()
        boxes = self._boxes
        return {sid: boxes.get(sid, s.mailbox) for sid, s in self._active_sources().items()}

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
        """Wait for the writes this router's mailboxes started (see
        ``lionstore.mail.mailbox``), then bring in what other processes recorded."""
        await self._settle()
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
