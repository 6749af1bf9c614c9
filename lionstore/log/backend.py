"""What a database backend must do for the Store, and the values passed across.

The Store (``store.py``) owns ordering, group commit and the in-process feed; a
backend only runs transactions. Each method is one round trip to the database
side (for SQLite, one hop to the thread that owns the connection), because on
these machines a hop costs about as much as a durable commit
(shared/reference/sqlite-baseline.md section 2).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from lionstore.domain.ids import IDType
from lionstore.domain.records import Recorded

__all__ = [
    "AppendRequest",
    "Checkpoint",
    "CommitOutcome",
    "LogBackend",
    "ReadQuery",
    "RunInfo",
    "RunScan",
    "read_order",
    "Durability",
    "announce_committed",
]

Durability = str  # "normal" | "full"
log = logging.getLogger("lionstore.store")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run: the namespace a set of records belongs to."""

    run_no: int
    run_id: IDType
    label: str | None
    started_at_us: int
    parent_run_id: IDType | None = None
    forked_at_position: int | None = None


@dataclass(slots=True)
class AppendRequest:
    """One caller's atomic batch and the versions its streams must be at (0: the
    stream must not exist yet). Rows are ``(stream_id, kind, kind_version, json,
    data)``; ``data`` is the validated model, handed back in the committed record."""

    rows: list[tuple[IDType, str, int, str, Any]]
    expected: dict[IDType, int] = field(default_factory=dict)
    # False when nobody needs the committed records (no subscriber, only positions
    # asked for): the backend then returns the positions alone.
    want_records: bool = True
    # False: this commit need not wait for a sync of its own (SQLite at durability
    # "full", PostgreSQL); the next synced commit makes it durable (see
    # Store.append_records' ``sync``).
    sync: bool = True
    # Called once the records are committed, before they are decoded back and handed
    # to subscribers (Store.append_records' ``on_committed``): see announce_committed.
    on_committed: Callable[[], None] | None = None


def announce_committed(requests: Sequence[AppendRequest], results: Sequence[object]) -> bool:
    """Call the ``on_committed`` of each request whose result is not a refusal, once
    (it is cleared); True if any was called. A backend calls it on the event loop's
    thread as soon as it knows the transaction committed; the Store calls it after the
    backend returns for those the backend did not (SQLite commits on a thread of its
    own). A callback that raises is logged: the records are committed regardless."""
    called = False
    for request, result in zip(requests, results, strict=True):
        callback = request.on_committed
        if callback is None or isinstance(result, BaseException):
            continue
        request.on_committed = None
        called = True
        try:
            callback()
        except Exception:
            log.exception("an on_committed callback failed")
    return called


@dataclass(slots=True)
class CommitOutcome:
    """What one group transaction did.

    ``foreign`` holds this run's records that other writers committed after the
    caller's ``seen`` position, in position order; ``results`` has, per request, either
    its committed records or the error that refused it.
    """

    foreign: list[Recorded]
    results: list[list[Recorded] | range | BaseException]
    head: int
    last_stream_no: int = 0


@dataclass(frozen=True, slots=True)
class ReadQuery:
    run_no: int | None = None
    stream_id: IDType | None = None
    kinds: tuple[str, ...] | None = None
    after: int = 0
    upto: int | None = None
    until_us: int | None = None
    # A stream of a known run is read in version order (its positions follow its
    # versions), from its own index; a page goes on past the version the page before
    # ended at, so each page starts where the last one stopped, however long the stream.
    after_version: int = 0

    @property
    def one_stream(self) -> bool:
        """Whether the read is of one stream of one run (read in version order)."""
        return self.stream_id is not None and self.run_no is not None


def read_order(query: ReadQuery) -> str:
    """The ORDER BY of a read of records ``r``: one stream of a known run by its own
    index, in version order (which is its position order); anything else by position."""
    return "r.stream_no, r.stream_version" if query.one_stream else "r.position"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stored projection snapshot, as read back.

    ``digest`` is what was stored: the digest of the run's last record at or before
    ``position`` when the snapshot was written. ``log_digest`` is that digest read
    now (None: the run has no record there any more). They differ when the log
    the snapshot was made from is not the log in the file.
    """

    name: str
    position: int
    digest: str
    format_version: int
    snapshot: str
    log_digest: str | None


# The SQL the backends share for checkpoints; ``{0}``, ``{1}`` are each backend's
# parameter markers (``?`` for SQLite, ``$1``, ``$2`` for PostgreSQL).
READ_CHECKPOINT_SQL = (
    "SELECT c.position, c.digest, c.format_version, c.snapshot,"
    " (SELECT r.digest FROM lionstore_records r WHERE r.run_no = c.run_no"
    "  AND r.position <= c.position ORDER BY r.position DESC LIMIT 1)"
    " FROM lionstore_checkpoints c WHERE c.run_no = {0} AND c.name = {1}"
)
# The digest a new checkpoint of run {0} covering position {1} is fingerprinted with.
CHECKPOINT_DIGEST_SQL = (
    "SELECT digest FROM lionstore_records WHERE run_no = {0} AND position <= {1}"
    " ORDER BY position DESC LIMIT 1"
)


def checkpoint_from_row(name: str, row: Sequence[Any] | None) -> Checkpoint | None:
    """A :class:`Checkpoint` from a row of :data:`READ_CHECKPOINT_SQL` (None: no row)."""
    if row is None:
        return None
    position, digest, format_version, snapshot, log_digest = row
    return Checkpoint(name, position, digest, format_version, snapshot, log_digest)


class RunScan(abc.ABC):
    """One run's records in position order, a page of plain rows at a time, all read
    from one snapshot of the database: records committed while a scan runs are not in
    it. What ``lionstore.replay.rebuild`` folds; an async context manager.

    A row is ``(position, stream_no, stream_version, kind, kind_version, data,
    stream_id, recorded_at_us, digest)``: the stream by its number, which a fold maps
    to one id object per stream, and its text id at least on the stream's first record
    (None elsewhere is allowed); :meth:`stream_id` finds the id of a stream whose rows
    brought none. The time and digest let the fold check the digest chain.
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Start the scan: its snapshot is taken here (``async with`` calls it;
        :meth:`next_page` too, if it was not)."""

    @abc.abstractmethod
    async def next_page(self) -> list[Any]:
        """The next page of rows; an empty list at the end."""

    @abc.abstractmethod
    def stream_id(self, stream_no: int) -> IDType:
        """The id of a stream none of whose rows so far brought it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """End the scan and give back what it holds; calling it again does nothing."""


def check_scan(query: ReadQuery, page_size: int) -> None:
    """Refuse a scan other than of one whole run from its start."""
    if query.run_no is None or query.after or query.stream_id is not None or query.kinds:
        raise ValueError("scan_run reads one whole run from its start")
    if page_size < 1:
        raise ValueError("page_size must be at least 1")


class LogBackend(abc.ABC):
    """A database the Store can append to and read from."""

    @abc.abstractmethod
    async def commit(
        self, run: RunInfo, requests: Sequence[AppendRequest], now_us: int, seen: int
    ) -> CommitOutcome:
        """One transaction for all ``requests``; ``seen`` is the position up to which the
        caller has seen this run's records (the outcome's ``foreign`` fills the gap)."""

    def commit_now(
        self, run: RunInfo, requests: Sequence[AppendRequest], now_us: int, seen: int
    ) -> CommitOutcome | None:
        """:meth:`commit`, made at once on the caller's thread when the backend can do
        that without blocking anyone (the event loop waits for nothing else, the file
        is free); None when it cannot, and the caller awaits :meth:`commit`. It saves
        the coroutine and lock hand-offs a small commit would otherwise cost."""
        return None

    def tail_now(self, run: RunInfo, seen: int) -> tuple[list[Recorded], int] | None:
        """:meth:`tail` at once, on the caller's thread, as :meth:`commit_now` commits
        (``([], seen)`` when nothing was committed elsewhere); None when it cannot."""
        return None

    @abc.abstractmethod
    async def tail(
        self, run: RunInfo, seen: int, upto: int | None = None
    ) -> tuple[list[Recorded], int] | None:
        """This run's records committed after ``seen``, and the log's head position;
        None when the backend knows nothing was committed elsewhere since it last looked.
        ``upto``: a head position the caller read after the commits below it (a claim
        turn's); a backend may read the records up to it and return it as the head,
        without reading the head again."""

    @abc.abstractmethod
    async def read_rows(self, query: ReadQuery, limit: int) -> tuple[list[Any], dict[int, IDType]]:
        """Up to ``limit`` raw rows after ``query.after``, and run ids by run number.
        Rows are decoded by :meth:`decode_row` as they are consumed, so a page of
        undecoded rows is all a reader holds."""

    @abc.abstractmethod
    def decode_row(self, row: Any, run_ids: dict[int, IDType]) -> Recorded: ...

    def decode_rows(self, rows: Sequence[Any], run_ids: dict[int, IDType]) -> Iterator[Recorded]:
        """:meth:`decode_row` of each row, in order, one at a time (a malformed row
        raises when it is reached, after the records before it)."""
        for row in rows:
            yield self.decode_row(row, run_ids)

    @abc.abstractmethod
    def scan_run(self, query: ReadQuery, page_size: int) -> RunScan:
        """A :class:`RunScan` of run ``query.run_no`` from its start, bounded by
        ``query.upto`` and ``query.until_us`` (see :func:`check_scan`)."""

    async def start_chain_check(self, query: ReadQuery, tip: str) -> Any:
        """Start checking the digest chain of the records ``query`` selects, from
        ``tip``, in another process (``lionstore.log.chaincheck``); None where that is
        not done (the caller hashes them itself)."""
        return None

    @abc.abstractmethod
    async def head_position(self) -> int: ...

    async def last_position(
        self, run_no: int, upto: int, until_us: int | None = None
    ) -> int | None:
        """The position of run ``run_no``'s last record at or before ``upto`` (and
        recorded at or before ``until_us``), found without the ``(run_no, position)``
        index a read goes through, so a read that stopped early on a damaged index is
        told apart (0: none; None: this backend does not check)."""
        return None

    async def check_head(self) -> None:
        """Raise CorruptDatabaseError when the head row is behind what the tables hold
        (an edited or damaged file: appends would collide with stored rows). Cheap:
        run at every open."""
        return None

    @abc.abstractmethod
    async def list_runs(self) -> list[RunInfo]: ...

    @abc.abstractmethod
    async def find_run(self, ref: str) -> RunInfo | None: ...

    @abc.abstractmethod
    async def create_run(
        self,
        label: str | None,
        now_us: int,
        run_id: IDType | None = None,
        parent: RunInfo | None = None,
        forked_at: int | None = None,
    ) -> RunInfo: ...

    # Checkpoints are optional: a backend without them reads none and writes none,
    # and projections are then always folded from the start.

    async def read_checkpoint(self, run_no: int, name: str) -> Checkpoint | None:
        """The snapshot stored for projection ``name`` of run ``run_no``, if any."""
        return None

    async def write_checkpoint(
        self,
        run_no: int,
        name: str,
        position: int,
        format_version: int,
        snapshot: str,
        now_us: int,
    ) -> bool:
        """Store (replace) the snapshot of projection ``name`` covering run ``run_no``'s
        records up to ``position``, fingerprinted with the digest of the run's last
        record at or before ``position``, read in the same transaction. Returns
        False when nothing was stored."""
        return False

    # Owner locks are optional: they tell whether a processor's process still runs,
    # across machines (PostgreSQL: session-level advisory locks). A backend without
    # them answers None: the lease decides (lionstore.repositories.leases).

    owner_locks: bool = False
    """Whether :meth:`hold_owner_lock` and :meth:`owner_lock_free` work here."""

    async def hold_owner_lock(self, owner: str) -> None:
        """Hold processor ``owner``'s lock for as long as this backend is open (taken
        again after a lost connection)."""
        return None

    async def owner_lock_free(self, owner: str) -> bool | None:
        """Whether no session holds ``owner``'s lock now (None: cannot be told)."""
        return None

    @property
    def readonly(self) -> bool:
        """Whether this backend was opened read-only (it can write nothing)."""
        return False

    #: Whether processors of one executor in several processes take turns to claim
    #: (PostgreSQL; see :meth:`take_claim_turn`).
    claim_turns: bool = False

    async def take_claim_turn(self, name: str) -> int | None:
        """Wait for executor ``name``'s claim turn; when taken, the log's head position
        read once it was (every record up to it is committed). None: there are none
        here, or it was not had in time, and the caller claims without."""
        return None

    async def end_claim_turn(self, name: str) -> None:  # noqa: B027 - none to give back here
        """Give back executor ``name``'s claim turn."""

    @abc.abstractmethod
    async def delete_run(self, run_no: int) -> int | None:
        """Delete run ``run_no`` whole (records, streams, checkpoints, the run) in one
        transaction; forks of it lose the parent link but keep its id. Returns the
        number of records removed (None: no such run). Positions are not reused."""

    @abc.abstractmethod
    async def close(self) -> None: ...
