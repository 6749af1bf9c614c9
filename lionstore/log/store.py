"""The Store: one run's view of the log, with group commit and an in-process feed.

Writes
    Every ``append`` goes through one writer task per store. The task takes every
    request queued at that moment and commits them in one transaction (group
    commit); each caller's ``await`` returns only after that commit, with its
    positions. Requests in a group stay independent: one whose expected versions
    are stale gets :class:`ConcurrencyError` and the others still commit.

The feed
    After each commit, and before any caller's ``await`` returns, the writer task
    hands the committed records to the store's subscribers (repositories) in
    position order. Records other processes committed to the same run are read
    inside the same write transaction and handed over first, so a subscriber sees
    this run's records exactly once, in log order, whoever wrote them. ``sync()``
    pulls in foreign records without writing.

Reads
    ``read()`` streams records page by page from a separate connection, so a
    million-record replay never holds more than one page.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from lionstore import _hooks
from lionstore._gcpause import gc_paused
from lionstore._loop import others_ready
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.records import (
    DEFAULT_MAX_RECORD_BYTES,
    NewRecord,
    RecordData,
    Recorded,
    encode_records,
)
from lionstore.errors import (
    CorruptDatabaseError,
    LionstoreError,
    NoStoreError,
    RunNotFoundError,
    StoreClosedError,
    StoreError,
)
from lionstore.log.backend import (
    AppendRequest,
    Checkpoint,
    CommitOutcome,
    LogBackend,
    ReadQuery,
    RunInfo,
    announce_committed,
)
from lionstore.log.digest import chain_start

__all__ = [
    "Store",
    "Clock",
    "DURABILITY_LEVELS",
    "Subscription",
    "check_run_end",
    "current_store",
    "resolve_store",
    "to_us",
    "utcnow",
]

log = logging.getLogger("lionstore.store")

Clock = Callable[[], datetime]
Handler = Callable[[Sequence[Recorded]], None]

#: What each ``durability`` survives, on SQLite in WAL mode:
#:
#: ``"normal"`` (``synchronous=NORMAL``): every append whose ``await`` returned
#: survives the process being killed (``kill -9``) or crashing. A power loss or
#: OS crash may lose the last commits (never corrupts the file).
#:
#: ``"full"`` (``synchronous=FULL``): the WAL is synced on every commit, so a
#: returned append also survives power loss. Costs one ``fsync`` per group commit.
DURABILITY_LEVELS = ("normal", "full")

_MAX_GROUP_RECORDS = 50_000
_STOP = object()


# The ambient store. ``async with lionstore.open(...) as store:`` (and ``async with
# store:``) makes ``store`` current for the code inside the block, so lionagi code
# that builds ``Executor(config)`` or ``Exchange(sources)`` with no ``store=`` ports
# by being wrapped in one ``async with``. A context variable, not a global: each
# asyncio task sees the store of the block it was created in, so two stores open in
# one process (two tests, two runs) never see each other's.
_current: contextvars.ContextVar[Store | None] = contextvars.ContextVar(
    "lionstore_current_store", default=None
)


def current_store() -> Store | None:
    """The store of the innermost ``async with lionstore.open(...)`` block around the
    caller, or None outside any (a closed store is never current)."""
    store = _current.get()
    return store if store is not None and not store.closed else None


def resolve_store(store: Store | None, who: str) -> Store:
    """``store`` if given, else the ambient store; ``who`` names the class the user
    called, for the error raised when there is neither."""
    if store is None:
        store = current_store()
        if store is None:
            raise NoStoreError(
                f"{who} needs a store: create it inside `async with lionstore.open(PATH) as "
                f"store:` (it then uses that store), or pass store=..."
            )
        return store
    if not isinstance(store, Store):
        raise TypeError(f"store must be a lionstore Store, not {type(store).__name__}")
    return store


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("the clock must return timezone-aware datetimes")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(eq=False)
class Subscription:
    """A live subscription to this run's committed records."""

    store: Store
    handler: Handler
    active: bool = True

    def close(self) -> None:
        self.active = False
        if self in self.store._subscribers:
            self.store._subscribers.remove(self)


@dataclass(slots=True)
class _Pending:
    request: AppendRequest | None
    future: asyncio.Future[list[Recorded]] | asyncio.Future[int]
    records: int = 0
    upto: int | None = None  # a sync's known head (Store.sync)


@dataclass
class _Writer:
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    busy: bool = False  # a commit is in progress (in the writer task or a caller's task)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Store:
    """An open lionstore database, attached to one run (or to none, read-only)."""

    def __init__(
        self,
        backend: LogBackend,
        run: RunInfo | None,
        *,
        target: str,
        seen: int,
        clock: Clock = utcnow,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        durability: str = "normal",
        created_run: bool = False,
        checkpoints: bool = True,
    ) -> None:
        self._backend = backend
        self.checkpoints = checkpoints
        self._close_hooks: list[Callable[[], Awaitable[object]]] = []
        self._closing = False
        self._created_run = created_run
        self._published = 0
        self._run = run
        self.target = target
        self.clock = clock
        self.max_record_bytes = max_record_bytes
        self.durability = durability
        self._seen = seen
        self._turn_head = 0  # the highest head take_claim_turn returned (sync's upto)
        self._subscribers: list[Subscription] = []
        self._writer = _Writer()
        self._closed = False
        self._ambient: list[contextvars.Token[Store | None]] = []
        self._in_flight: set[asyncio.Future[Any]] = set()
        # Opens a second, read-only store on the same database and run (set by
        # ``open``): a repository folds its history through it from synchronous code.
        self._reader_opener: Callable[[], Awaitable[Store]] | None = None
        # (lo, hi, digest at hi): the run's records in (lo, hi] had their digest chain
        # checked by a read_chained of this store (the file is trusted not to be
        # rewritten under an open store; positions up to the head never change).
        self._chain_checked: tuple[int, int, str] | None = None

    # -- identity --------------------------------------------------------------------

    @property
    def run(self) -> RunInfo:
        """The run this store appends to."""
        if self._run is None:
            raise StoreError("this store is not attached to a run (it was opened read-only)")
        return self._run

    @property
    def run_id(self) -> IDType:
        return self.run.run_id

    @property
    def has_run(self) -> bool:
        """Whether this store is attached to a run (a read-only store may not be)."""
        return self._run is not None

    @property
    def position(self) -> int:
        """The log position up to which this store's feed has delivered records."""
        return self._seen

    @property
    def run_is_fresh(self) -> bool:
        """True while this store's run has no records but its ``run.started``: the run
        was created by this open and nothing has been appended to it since."""
        return self._created_run and self._published == 0

    @property
    def closed(self) -> bool:
        return self._closed

    def now_us(self) -> int:
        if self.clock is utcnow:  # the same microseconds, without the datetime
            return time.time_ns() // 1000
        return to_us(self.clock())

    # -- writes ----------------------------------------------------------------------

    def _prepare(
        self,
        records: Iterable[NewRecord | tuple[Any, RecordData]],
        expected_versions: Mapping[Any, int] | None,
    ) -> AppendRequest:
        """Validate and encode everything before anything is queued."""
        rows = encode_records(records, self.max_record_bytes)
        expected: dict[IDType, int] = {}
        for stream, version in (expected_versions or {}).items():
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise ValueError(
                    f"expected version for {stream} must be an int >= 0, not {version!r}"
                )
            expected[to_id(stream)] = version
        return AppendRequest(rows, expected)

    async def append(
        self,
        records: Iterable[NewRecord | tuple[Any, RecordData]],
        *,
        expected_versions: Mapping[Any, int] | None = None,
    ) -> list[int]:
        """Append records atomically; return their positions.

        ``expected_versions`` maps stream ids to the version each stream must be at
        (0: the stream must not exist yet). If any is stale, :class:`ConcurrencyError`
        is raised and nothing is written. Records of one call get consecutive
        positions; each stream's records get consecutive versions.
        """
        request = self._prepare(records, expected_versions)
        if not request.rows:
            return []
        self.run  # noqa: B018 - raises on a read-only store before queueing
        request.want_records = False
        committed = await self._submit(request)
        return [r.position for r in committed] if isinstance(committed, list) else list(committed)

    async def append_records(
        self,
        records: Iterable[NewRecord | tuple[Any, RecordData]],
        *,
        expected_versions: Mapping[Any, int] | None = None,
        sync: bool = True,
        on_committed: Callable[[], None] | None = None,
    ) -> list[Recorded]:
        """Like :meth:`append`, returning the committed records.

        ``sync=False`` lets these records be committed without waiting for their own
        sync (SQLite at durability "full": no fsync of the WAL for them alone;
        PostgreSQL: ``synchronous_commit`` off for their transaction): they survive
        the process being killed at once, as every commit does, and a power loss or
        server crash once the next synced commit has returned (the WAL is synced in
        order). A group commit that holds any ``sync=True`` request is synced. For
        records that only matter together with a later one, such as an executor's
        claim before its outcome.

        ``on_committed`` is called (with no arguments, on the event loop, once) as soon
        as the records are known to be committed, before they are decoded back and
        handed to subscribers, and so before this returns; never if they are refused
        or the commit fails. It must be quick and must not raise (an error is logged).
        On PostgreSQL the event loop then runs one turn before the records are
        decoded, so that a task the callback started (an executor giving back its
        claim turn) gets going first; on SQLite it is called once the commit returns.
        """
        with gc_paused(len(records) if isinstance(records, list) else 0):
            request = self._prepare(records, expected_versions)
        if not request.rows:
            return []
        request.sync = sync
        request.on_committed = on_committed
        self.run  # noqa: B018 - raises on a read-only store before queueing
        committed: list[Recorded] = await self._submit(request)
        return committed

    async def _submit(self, request: AppendRequest) -> Any:
        self._ensure_open()
        loop = asyncio.get_running_loop()
        writer = self._writer
        if not writer.busy and writer.queue.empty() and not others_ready(loop):
            # Alone (the one-at-a-time caller's case): no other task could join a group
            # commit, so commit in this task at once, with no future to hand the result
            # through. What _hand_over does, minus its yield and its group.
            writer.busy = True
            try:
                return await self._commit_alone(request)
            finally:
                self._release_writer()
        future: asyncio.Future[list[Recorded]] = loop.create_future()
        return await self._hand_over(_Pending(request, future, len(request.rows)))

    async def sync(self, *, upto: int | None = None) -> int:
        """Deliver this run's records committed by other processes; return the head.

        ``upto``: a head :meth:`take_claim_turn` returned (read after the commits
        below it). The records up to it are delivered and the backend need not read the
        head again; records committed after it may or may not be. Any other value is a
        ValueError: a position not known to be committed below could skip records
        committed later."""
        self._ensure_open()
        if upto is not None and (
            isinstance(upto, bool) or not isinstance(upto, int) or upto > self._turn_head
        ):
            raise ValueError(
                f"sync(upto=...) takes a head take_claim_turn returned (at most"
                f" {self._turn_head}), not {upto!r}"
            )
        if self._run is None:
            return await self._backend.head_position()
        if upto is not None and upto <= self._seen:
            return self._seen  # delivered already
        writer = self._writer
        if not writer.busy and writer.queue.empty():
            # Nothing is being committed: look at the tail at once (one PRAGMA when
            # no other process wrote) instead of through the writer's hand-over.
            try:
                tail = self._backend.tail_now(self._run, self._seen)
            except Exception as exc:
                raise _as_store_error(exc) from exc
            if tail is not None:
                foreign, head = tail
                if foreign:
                    with gc_paused(len(foreign)):
                        self._publish(foreign)
                self._seen = max(self._seen, head)
                return head
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        return int(await self._hand_over(_Pending(None, future, upto=upto)))

    async def _hand_over(self, pending: _Pending) -> Any:
        """Commit (or, for a sync, read the tail for) ``pending`` and return its result."""
        writer = self._writer
        if not writer.busy and writer.queue.empty():
            # Nobody else is committing: do it in the caller's task, sparing two task
            # switches. An append yields to the event loop once first if other tasks
            # are ready, so that appends they make at the same moment join this commit
            # (group commit); later ones queue up for the writer task.
            writer.busy = True
            try:
                group = [pending]
                if pending.request is not None:
                    if others_ready(asyncio.get_running_loop()):
                        await asyncio.sleep(0)
                    size = pending.records
                    while size < _MAX_GROUP_RECORDS and not writer.queue.empty():
                        item = writer.queue.get_nowait()
                        if item is _STOP:
                            writer.queue.put_nowait(_STOP)
                            break
                        group.append(item)
                        size += item.records
                await self._commit_group(group)
            finally:
                self._release_writer()
            return pending.future.result()
        self._start_writer()
        writer.queue.put_nowait(pending)
        writer.wake.set()
        return await pending.future

    def _release_writer(self) -> None:
        """End a commit made in a caller's task: what queued up meanwhile goes to the
        writer task."""
        writer = self._writer
        writer.busy = False
        if not writer.queue.empty():
            self._start_writer()
            writer.wake.set()

    def _start_writer(self) -> None:
        if self._writer.task is None:
            self._writer.task = asyncio.get_running_loop().create_task(
                self._write_loop(), name="lionstore-writer"
            )

    async def _write_loop(self) -> None:
        writer = self._writer
        queue = writer.queue
        while True:
            while writer.busy or queue.empty():
                writer.wake.clear()
                await writer.wake.wait()
            first = queue.get_nowait()
            if first is _STOP:
                return
            group: list[_Pending] = [first]
            size = first.records
            stop_after = False
            while size < _MAX_GROUP_RECORDS and not queue.empty():
                item = queue.get_nowait()
                if item is _STOP:
                    stop_after = True
                    break
                group.append(item)
                size += item.records
            writer.busy = True
            try:
                await self._commit_group(group)
            finally:
                writer.busy = False
            if stop_after:
                return

    async def _commit_requests(self, requests: list[AppendRequest]) -> CommitOutcome:
        """Commit ``requests`` in one transaction (inline when the backend can)."""
        run = self.run
        if self._subscribers:  # the feed needs the records
            for request in requests:
                request.want_records = True
        timed = time.perf_counter() if _hooks.commit_observers else 0.0
        now_us = self.now_us()
        outcome = self._backend.commit_now(run, requests, now_us, self._seen)
        if outcome is None:
            outcome = await self._backend.commit(run, requests, now_us, self._seen)
        if timed:
            _hooks.notify_commit(time.perf_counter() - timed, sum(len(r.rows) for r in requests))
        if any(r.on_committed is not None for r in requests):
            announce_committed(requests, outcome.results)  # those the backend did not
        return outcome

    async def _commit_alone(self, request: AppendRequest) -> Any:
        """:meth:`_commit_group` for one append and nothing else: its result returned
        (or raised) rather than set on a future."""
        try:
            outcome = await self._commit_requests([request])
        except Exception as exc:
            error = _as_store_error(exc)
            if error is exc:
                raise
            raise error from exc
        foreign, result = outcome.foreign, outcome.results[0]
        with gc_paused(len(request.rows) + len(foreign)):
            self._publish(foreign)
            if isinstance(result, list):
                self._publish(result)
        self._seen = max(self._seen, outcome.head)
        if isinstance(result, BaseException):
            raise result
        return result

    async def _commit_group(self, group: list[_Pending]) -> None:
        appends = [p for p in group if p.request is not None]
        try:
            if appends:
                outcome = await self._commit_requests([p.request for p in appends if p.request])
                foreign, head = outcome.foreign, outcome.head
            else:
                # A known head serves the group only if every sync in it has one.
                hints = [p.upto for p in group]
                upto = None if None in hints else max(h for h in hints if h is not None)
                tail = await self._backend.tail(self.run, self._seen, upto)
                foreign, head = tail if tail is not None else ([], self._seen)
        except BaseException as exc:  # every waiter hears about the failure
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(_as_store_error(exc))
            if not isinstance(exc, Exception):
                raise
            return
        with gc_paused(sum(p.records for p in group) + len(foreign)):
            self._publish(foreign)
            if appends:
                for pending, result in zip(appends, outcome.results, strict=True):
                    if isinstance(result, BaseException):
                        pending.future.set_exception(result)
                    else:
                        if isinstance(result, list):
                            self._publish(result)
                        pending.future.set_result(result)  # type: ignore[arg-type]
        self._seen = max(self._seen, head)
        for pending in group:
            if pending.request is None and not pending.future.done():
                pending.future.set_result(head)  # type: ignore[arg-type]

    def _publish(self, records: Sequence[Recorded]) -> None:
        if not records:
            return
        self._published += len(records)
        for sub in list(self._subscribers):
            if not sub.active:
                continue
            try:
                sub.handler(records)
            except Exception:  # a broken projection must not stop the writer
                log.exception("a lionstore subscriber failed; it is unsubscribed")
                sub.close()

    def subscribe(self, handler: Handler) -> Subscription:
        """Call ``handler`` with every batch of this run's records committed from now on.

        Handlers run on the event loop, synchronously, before the appending caller
        resumes; they must be quick and must not await.
        """
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        sub = Subscription(self, handler)
        self._subscribers.append(sub)
        return sub

    # -- reads -----------------------------------------------------------------------

    async def read(
        self,
        *,
        run: str | bool | None = True,
        stream: Any = None,
        kinds: Iterable[str] | None = None,
        after: int = 0,
        upto: int | None = None,
        until: datetime | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Recorded]:
        """Stream records in position order, ``page_size`` at a time.

        ``run=True`` (default) reads this store's run, ``run=None`` every run, a
        string a run by id or label. ``after``/``upto`` bound positions
        (exclusive/inclusive); ``until`` bounds the recorded time (inclusive).
        """
        self._ensure_open()
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        run_no: int | None
        if run is True:
            run_no = self.run.run_no
        elif run is None or run is False:
            run_no = None
        else:
            found = await self.find_run(str(run))
            run_no = found.run_no
        query = ReadQuery(
            run_no=run_no,
            stream_id=to_id(stream) if stream is not None else None,
            kinds=tuple(kinds) if kinds is not None else None,
            after=after,
            upto=upto,
            until_us=to_us(until) if until is not None else None,
        )
        return self._pages(query, page_size)

    async def _pages(self, query: ReadQuery, page_size: int) -> AsyncIterator[Recorded]:
        """Rows come a page at a time, the next page already being fetched (on
        SQLite's reader thread) while this one is decoded, a record at a time as it is
        handed out. A malformed row ends the read with its error, after the records
        before it."""
        backend = self._backend
        decode = backend.decode_rows

        def fetch(after: int, version: int) -> asyncio.Future[tuple[list[Any], dict[int, IDType]]]:
            page = dataclasses.replace(query, after=after, after_version=version)
            return asyncio.ensure_future(backend.read_rows(page, page_size))

        task: asyncio.Future[tuple[list[Any], dict[int, IDType]]] | None = fetch(query.after, 0)
        try:
            while task is not None:
                rows, run_ids = await task
                task = None
                if len(rows) == page_size:
                    # (position, stream_id, stream_version, ...) on every backend
                    last = rows[-1]
                    task = fetch(last[0], last[2] if query.one_stream else 0)
                for record in decode(rows, run_ids):
                    yield record
        finally:
            if task is not None:
                task.cancel()

    async def read_chained(
        self,
        *,
        kinds: Iterable[str] | None = None,
        after: int = 0,
        upto: int | None = None,
        tip: str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Recorded]:
        """This run's records of ``kinds`` (all when None or empty) in positions
        ``(after, upto]``, checking the digest chain of every record of the run in that
        range, of any kind, before yielding the next: what a projection load reads.

        ``tip`` is the digest of the run's last record at or before ``after`` (a
        checkpoint's digest); with ``after=0`` the chain starts from the run id. A
        record changed, deleted, duplicated or read out of place (a damaged index)
        raises :class:`CorruptDatabaseError` naming its position, so a load returns
        the logged state or raises, never a silently different one. Rows of other
        kinds are hashed but not decoded.
        """
        self._ensure_open()
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        run = self.run
        if tip is None:
            if after:
                raise ValueError("a read after position 0 needs the digest there (tip)")
            tip = chain_start(run.run_id)
        wanted = frozenset(kinds or ())
        if upto is None:
            upto = await self._backend.head_position()
        query = ReadQuery(run_no=run.run_no, after=after, upto=upto)
        checked = self._chain_checked
        if checked is not None and checked[0] <= after <= checked[1]:
            # (after, checked[1]] was hashed by an earlier load of this store (the
            # executor's, say, before the exchange's): read just the kinds asked for
            # there, through the same index, and hash only what lies beyond.
            plain = ReadQuery(
                run_no=run.run_no,
                kinds=tuple(wanted) or None,
                after=after,
                upto=min(checked[1], upto),
            )
            rest = dataclasses.replace(query, after=checked[1]) if upto > checked[1] else None
            return self._checked_then_chained(plain, rest, page_size, checked[2], wanted)
        return self._chained_pages(query, page_size, tip, wanted)

    async def _checked_then_chained(
        self,
        plain: ReadQuery,
        rest: ReadQuery | None,
        page_size: int,
        tip: str,
        wanted: frozenset[str],
    ) -> AsyncIterator[Recorded]:
        async for record in self._pages(plain, page_size):
            yield record
        if rest is not None:
            async for record in self._chained_pages(rest, page_size, tip, wanted):
                yield record

    async def _chained_pages(
        self, query: ReadQuery, page_size: int, tip: str, wanted: frozenset[str]
    ) -> AsyncIterator[Recorded]:
        backend = self._backend
        decode = backend.decode_rows
        new_hash = sha256

        def fetch(after: int) -> asyncio.Future[tuple[list[Any], dict[int, IDType]]]:
            return asyncio.ensure_future(
                backend.read_rows(dataclasses.replace(query, after=after), page_size)
            )

        task: asyncio.Future[tuple[list[Any], dict[int, IDType]]] | None = fetch(query.after)
        last = query.after
        try:
            while task is not None:
                rows, run_ids = await task
                task = fetch(rows[-1][0]) if len(rows) == page_size else None
                # The page's chain is checked first, up to a row that breaks it; the
                # rows before that row are then decoded and yielded (those of the
                # kinds asked for), and the break raised: what checking each row
                # before yielding it gives, with the rows decoded in one loop.
                good: list[Any] = []
                keep = good.append
                error: Exception | None = None
                row: Any = None
                try:
                    for row in rows:
                        position, sid, version, kind, kind_version, data, at_us, run_no, digest = (
                            row
                        )
                        if run_no != query.run_no:  # read through a damaged index
                            error = CorruptDatabaseError(
                                f"{self.target}: a read of run {query.run_no} found a record of"
                                f" run {run_no} at position {position}: an index of the file is"
                                " damaged"
                            )
                            break
                        h = new_hash(
                            f"{tip}|{position}|{sid}|{version}|{kind}|{kind_version}|{at_us}|".encode()
                        )
                        h.update(data.encode())
                        tip = h.hexdigest()[:32]
                        if tip != digest:
                            error = CorruptDatabaseError(
                                f"{self.target}: the record at position {position} does not chain"
                                " to the run's record before it (digest mismatch): a record was"
                                " changed or deleted behind lionstore's back, or an index of the"
                                " file is damaged; `lionstore verify` reports where"
                            )
                            break
                        last = position
                        if not wanted or kind in wanted:
                            keep(row)
                except (AttributeError, TypeError, ValueError):
                    # a column of the wrong type (SQLite keeps any): the decoder says which
                    error = _malformed(decode, row, run_ids, self.target)
                for record in decode(good, run_ids):
                    yield record
                if error is not None:
                    raise error
            assert query.run_no is not None and query.upto is not None
            await check_run_end(backend, self.target, query.run_no, query.upto, last)
            checked = self._chain_checked
            if checked is None or not checked[0] <= query.after <= checked[1]:
                self._chain_checked = (query.after, query.upto, tip)
            elif query.upto > checked[1]:
                self._chain_checked = (checked[0], query.upto, tip)
        finally:
            if task is not None:
                task.cancel()

    async def head(self) -> int:
        """The log's last committed position (all runs)."""
        self._ensure_open()
        return await self._backend.head_position()

    async def runs(self) -> list[RunInfo]:
        self._ensure_open()
        return await self._backend.list_runs()

    async def find_run(self, ref: str) -> RunInfo:
        """The run whose id or label is ``ref`` (RunNotFoundError if none)."""
        self._ensure_open()
        if not isinstance(ref, str):
            raise TypeError(f"a run is named by its id or label (a str), not {type(ref).__name__}")
        found = await self._backend.find_run(ref)
        if found is None:
            raise RunNotFoundError(f"no run with id or label {ref!r}")
        return found

    async def fork(self, at: int, *, label: str | None = None, run: str | None = None) -> RunInfo:
        """Start a new run holding the first records (up to position ``at``) of ``run``
        (default: this store's run). The source run is not changed."""
        self._ensure_open()
        if isinstance(at, bool) or not isinstance(at, int):
            raise TypeError(f"fork position must be an int, not {type(at).__name__}")
        if at < 0:
            raise ValueError("fork position must be >= 0")
        if label is not None and not isinstance(label, str):
            raise TypeError(f"fork label must be a str or None, not {type(label).__name__}")
        source = self.run if run is None else await self.find_run(run)
        return await self._backend.create_run(label, self.now_us(), parent=source, forked_at=at)

    # -- owner locks (PostgreSQL) ----------------------------------------------------

    @property
    def owner_locks(self) -> bool:
        """Whether this database tells if a processor's session is alive (PostgreSQL's
        advisory locks); see ``lionstore.repositories.leases``."""
        return self._backend.owner_locks

    async def hold_owner_lock(self, owner: str) -> None:
        """Hold processor ``owner``'s lock while this store is open (no-op on SQLite)."""
        self._ensure_open()
        await self._backend.hold_owner_lock(owner)

    async def owner_lock_free(self, owner: str) -> bool | None:
        """Whether no session holds ``owner``'s lock (None on SQLite: not known)."""
        self._ensure_open()
        return await self._backend.owner_lock_free(owner)

    @property
    def readonly(self) -> bool:
        """Whether the store was opened with ``readonly=True`` (appends are refused,
        and projections write no checkpoints)."""
        return self._backend.readonly

    @property
    def claim_turns(self) -> bool:
        """Whether an executor's processors in several processes take turns to claim
        (PostgreSQL; ``ExecutorRepository.begin_claim_turn``)."""
        return self._backend.claim_turns

    async def take_claim_turn(self, name: str) -> int | None:
        """Wait for executor ``name``'s claim turn; when taken, the log's head position
        read once it was (for :meth:`sync`'s ``upto``), else None."""
        self._ensure_open()
        head = await self._backend.take_claim_turn(name)
        if head is not None:
            self._turn_head = max(self._turn_head, head)
        return head

    async def end_claim_turn(self, name: str, *, wait: bool = True) -> None:
        """Give back executor ``name``'s claim turn. ``wait=False``: the unlock is sent
        at the event loop's next turn and not waited for (the next take of this
        store's waits behind it, and :meth:`close` waits for it)."""
        if wait:
            await self._backend.end_claim_turn(name)
        else:
            self.end_claim_turn_soon(name)

    def end_claim_turn_soon(self, name: str) -> None:
        """Give back executor ``name``'s claim turn from synchronous code (an
        ``on_committed`` callback of :meth:`append_records`): as
        ``end_claim_turn(name, wait=False)``."""
        self.track(asyncio.ensure_future(self._backend.end_claim_turn(name)))

    # -- checkpoints -----------------------------------------------------------------

    async def read_checkpoint(self, name: str) -> Checkpoint | None:
        """The projection snapshot stored under ``name`` for this store's run, if any
        (none when the store was opened with ``checkpoints=False``)."""
        self._ensure_open()
        if not self.checkpoints:
            return None
        return await self._backend.read_checkpoint(self.run.run_no, name)

    async def write_checkpoint(
        self, name: str, position: int, format_version: int, snapshot: str
    ) -> bool:
        """Store a snapshot of projection ``name`` covering this run's records up to
        ``position``; False when not stored (checkpoints off, or nothing to cover)."""
        if self._closed and not self._closing:
            raise StoreClosedError("the store is closed")
        if not self.checkpoints:
            return False
        return await self._backend.write_checkpoint(
            self.run.run_no, name, position, format_version, snapshot, self.now_us()
        )

    def on_close(self, hook: Callable[[], Awaitable[object]]) -> None:
        """Await ``hook()`` when the store closes, after the last append is committed
        (repositories write their checkpoints there). A failing hook is logged."""
        self._close_hooks.append(hook)

    # -- writes started from synchronous code -----------------------------------------

    def track(self, write: asyncio.Future[Any]) -> None:
        """Have :meth:`close` wait for ``write``, a write started without being awaited
        (e.g. a mail sent from a synchronous ``send``), before it stops appending."""
        self._in_flight.add(write)
        write.add_done_callback(self._in_flight.discard)

    def open_reader(self) -> Awaitable[Store]:
        """Open a second, read-only store on this database and run, for a caller with
        its own event loop (a repository folding its history from a synchronous read)."""
        self._ensure_open()
        if self._reader_opener is None:
            raise StoreError("this store cannot open a reader of its run")
        return self._reader_opener()

    # -- lifecycle -------------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    async def close(self) -> None:
        if self._closed:
            return
        while self._in_flight:  # writes started without an await are committed first
            await asyncio.wait(list(self._in_flight))
        # Refuse new appends at once: one queued behind _STOP would never be answered.
        self._closed = True
        if self._writer.task is not None:
            self._writer.queue.put_nowait(_STOP)
            self._writer.wake.set()
            await self._writer.task
        self._closing = True
        try:
            for hook in self._close_hooks:
                try:
                    await hook()
                except Exception:
                    log.warning("a lionstore close hook failed", exc_info=True)
        finally:
            self._closing = False
        for sub in list(self._subscribers):
            sub.close()
        await self._backend.close()

    async def __aenter__(self) -> Store:
        self._ambient.append(_current.set(self))
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.close()
        finally:
            if self._ambient:
                _current.reset(self._ambient.pop())


async def check_run_end(
    backend: LogBackend,
    target: str,
    run_no: int,
    upto: int,
    last: int,
    until_us: int | None = None,
) -> None:
    """Raise CorruptDatabaseError when a read of run ``run_no`` up to ``upto`` ended at
    ``last`` but the table holds a later record of the run (a damaged index dropped the
    tail: the digest chain of what was read holds, yet it is not the whole run)."""
    found = await backend.last_position(run_no, upto, until_us)
    if found is not None and found > last:
        raise CorruptDatabaseError(
            f"{target}: a read of the run stopped at position {last}, but the run holds"
            f" records up to position {found}: an index of the file is damaged"
        )


def _as_store_error(exc: BaseException) -> BaseException:
    if isinstance(exc, LionstoreError):
        return exc
    if isinstance(exc, Exception):
        err = StoreError(f"append failed: {exc}")
        err.__cause__ = exc
        return err
    return exc


def _malformed(
    decode: Callable[[Sequence[Any], dict[int, IDType]], Iterator[Recorded]],
    row: Any,
    run_ids: dict[int, IDType],
    target: str,
) -> Exception:
    """The error for a record row that could not even be hashed: what decoding it
    raises (it names the column of the wrong type), else a general one."""
    try:
        for _ in decode([row], run_ids):
            pass
    except LionstoreError as exc:
        return exc
    except Exception:  # the general error below says it
        pass
    position = row[0] if isinstance(row, (tuple, list)) and row else "?"
    return CorruptDatabaseError(
        f"{target}: the record row at position {position!r} is malformed: the file was"
        " edited or damaged"
    )
