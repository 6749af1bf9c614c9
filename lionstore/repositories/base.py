"""What every repository shares: a projection fed by the store, loaded once from history.

A repository subscribes to its store's feed as soon as it exists, then folds the
run's history up to the feed's position when first used: by ``await load()``
(every async command does it), or, when a view is read first, synchronously on the
spot (``load_now``: the fold runs on a worker thread through a read-only store of
its own, so a constructor followed by a property read works on SQLite and
PostgreSQL alike). Records that arrive on the feed meanwhile are held back and
applied after the history, so the projection sees every record once, in position
order: in-memory state is always the fold of the log.

Checkpoints: a repository whose ``state`` is an ExecutorState or a MailState
starts ``load`` from the newest snapshot of it stored for the run, when that
snapshot checks out (its format version is this code's, its checksum matches,
the run's record at the position it covers still has the digest it was made
from, and it restores without error), and folds only the records after it;
otherwise it folds from the start. It writes a snapshot when the store closes
and after a load that had to fold more than ``CHECKPOINT_EVERY`` records, never
while appending, and only when no event is in flight (see
``projections.snapshot.snapshot_ready``).

Commands follow one pattern (``decide_and_append``): decide from the projection,
append the records with the expected stream versions the decision was based
on, and let the feed apply them. If another process wrote first the append
raises ConcurrencyError; the repository syncs and decides again.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence

from lionstore.domain.ids import IDType
from lionstore.domain.records import NewRecord, Recorded
from lionstore.errors import ConcurrencyError, LionstoreError, RecordError
from lionstore.log.store import Store
from lionstore.projections import snapshot

__all__ = ["Repository", "Decision", "NotLoadedError"]

Decision = tuple[list[NewRecord], Mapping[IDType, int]]
_MAX_RETRIES = 20
CHECKPOINT_EVERY = 10_000
"""A load that folds more records than this writes a checkpoint right after."""

log = logging.getLogger("lionstore.checkpoints")


class NotLoadedError(LionstoreError):
    """The projection has history in the log that has not been loaded yet (kept for
    code that catches it: reading a view now loads the history on the spot)."""


class Repository(abc.ABC):
    kinds: tuple[str, ...] = ()

    def __init__(self, store: Store) -> None:
        self.store = store
        self._failure: BaseException | None = None
        self._loaded = store.run_is_fresh
        self._load_task: asyncio.Future[None] | None = None
        self._held: list[Recorded] = []
        self._subscription = store.subscribe(self._on_records)
        self._checkpoint_name = snapshot.checkpoint_name(getattr(self, "state", None))
        self._checkpointed_at = -1  # the position of the last snapshot read or written
        self.restored_from: int | None = None  # the position a checkpoint restored to
        if self._checkpoint_name is not None:
            store.on_close(self.checkpoint)

    @abc.abstractmethod
    def apply(self, record: Recorded) -> None: ...

    def _on_records(self, records: Sequence[Recorded]) -> None:
        if not self._loaded:
            self._held.extend(records)
            return
        apply = self.apply
        try:
            for record in records:
                apply(record)
        except Exception as exc:
            # The projection can no longer follow the log (e.g. another process appended
            # an event whose class is not defined here). Every later use raises this,
            # rather than the projection silently going stale.
            self._failure = exc
            raise

    def require_healthy(self) -> None:
        if self._failure is not None:
            raise self._failure

    @property
    def loaded(self) -> bool:
        return self._loaded

    def require_loaded(self, what: str) -> None:
        """Make sure the projection holds the run's history before ``what`` is read:
        fold it now, synchronously, if no load has happened yet (see ``load_now``)."""
        self.require_healthy()
        if not self._loaded:
            self.load_now(what)

    def load_now(self, what: str = "this projection") -> None:
        """Fold the run's history from synchronous code (a property read right after a
        constructor), blocking until it is in.

        The fold runs on a worker thread with its own event loop, through a second,
        read-only store on the same database and run (``Store.open_reader``): this
        thread may be running the store's own loop, which cannot be awaited from here.
        It reads the records the store's feed had delivered when it began (a checkpoint
        first, when one checks out); records the feed brings meanwhile are held back and
        applied after, as ``load`` does. Only the first read of a projection pays this.
        A ``load()`` still running at that moment finds the work done and keeps it.
        """
        self.require_healthy()
        if self._loaded:
            return
        upto = self.store.position
        opener = self.store.open_reader
        empty = snapshot.empty_like(self._state())

        async def fold() -> tuple[snapshot.State, int]:
            reader = await opener()
            try:
                return await self._fold_history(reader, upto, empty)
            finally:
                await reader.close()

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lionstore-load") as pool:
            state, folded = pool.submit(asyncio.run, fold()).result()
        self._finish_load(state, upto)
        if folded > CHECKPOINT_EVERY:
            with contextlib.suppress(RuntimeError):  # no running loop: the next close writes it
                task = asyncio.get_running_loop().create_task(self.checkpoint())
                self.store.track(task)

    async def load(self) -> None:
        """Fold the run's history (idempotent; concurrent calls share one fold)."""
        self.require_healthy()
        if self._loaded:
            return
        if self._load_task is None:
            self._load_task = asyncio.ensure_future(self._load())
        task = self._load_task
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._load_task is task:
                self._load_task = None

    async def _load(self) -> None:
        upto = self.store.position
        state, folded = await self._fold_history(
            self.store, upto, snapshot.empty_like(self._state())
        )
        if self._loaded:  # a synchronous read loaded it meanwhile: keep that one
            return
        self._finish_load(state, upto)
        if folded > CHECKPOINT_EVERY:
            await self.checkpoint()

    async def _fold_history(
        self, reader: Store, upto: int, empty: snapshot.State
    ) -> tuple[snapshot.State, int]:
        """A state holding the run's history up to ``upto``, read through ``reader``:
        the newest good checkpoint (else ``empty``) and the records after it; and how
        many records were folded. ``self.state`` is not touched."""
        restored, after, tip = await self._restore(reader, upto)
        state = empty if restored is None else restored
        apply = state.apply
        folded = 0
        # Every record of the run in the range is hashed (the digest chain), whatever
        # its kind: a load returns the logged state or raises CorruptDatabaseError.
        records = await reader.read_chained(kinds=self.kinds, after=after, upto=upto, tip=tip)
        async for record in records:
            try:
                apply(record)
            except RecordError as exc:  # e.g. a package item that does not fit its class
                raise RecordError(
                    f"the {record.kind} record at position {record.position}: {exc}"
                ) from exc
            except LionstoreError:
                raise
            except (ValueError, TypeError, LookupError) as exc:
                # e.g. a pydantic ValidationError: the record names a class that is not
                # its own. That record's problem, reported as such.
                raise RecordError(
                    f"the {record.kind} record at position {record.position} cannot be"
                    f" applied: {type(exc).__name__}: {exc}"
                ) from exc
            folded += 1
        return state, folded

    def _finish_load(self, state: snapshot.State, upto: int) -> None:
        setattr(self, "state", state)  # noqa: B010 - a subclass's own state
        held, self._held = self._held, []
        self._loaded = True
        apply = self.apply
        for record in held:
            if record.position > upto:
                apply(record)

    def _state(self) -> snapshot.State:
        state: snapshot.State = getattr(self, "state")  # noqa: B009 - set by subclasses
        return state

    async def _restore(
        self, reader: Store, upto: int
    ) -> tuple[snapshot.State | None, int, str | None]:
        """The state of the run's checkpoint (read through ``reader``) if it checks out,
        the position it covers and the log's digest there; (None, 0, None) when there
        is none to use (fold from the start)."""
        name = self._checkpoint_name
        if name is None or not reader.checkpoints:
            return None, 0, None
        found = await reader.read_checkpoint(name)
        if found is None:
            return None, 0, None
        reason = None
        if found.format_version != snapshot.FORMAT_VERSION:
            reason = f"format {found.format_version}, this code reads {snapshot.FORMAT_VERSION}"
        elif found.position > upto:
            reason = f"covers position {found.position}, past the log's {upto}"
        elif found.log_digest is None or found.log_digest != found.digest:
            reason = "the log it was made from is not the log in the file"
        else:
            text = snapshot.verified_text(found.snapshot)
            if text is None:
                reason = "its checksum does not match"
            else:
                fresh = snapshot.empty_like(self._state())
                try:
                    snapshot.load_state(fresh, text)
                except Exception as exc:  # any failure: the snapshot is not used
                    reason = f"it does not restore ({type(exc).__name__}: {exc})"
                else:
                    self._checkpointed_at = found.position
                    self.restored_from = found.position
                    return fresh, found.position, found.digest
        log.info("checkpoint %s ignored and rebuilt: %s", name, reason)
        return None, 0, None

    async def checkpoint(self) -> bool:
        """Store a snapshot of the projection as of the store's position (best effort:
        a failure is logged, never raised). Returns whether one was written."""
        if (
            self._checkpoint_name is None
            or not self._loaded
            or self._failure is not None
            or not self.store.checkpoints
            or self.store.readonly  # (nothing to write with: no warning about it at close)
            or self.store.position == self._checkpointed_at
            or not snapshot.snapshot_ready(self._state())
        ):
            return False
        position = self.store.position
        try:
            text = snapshot.sealed(snapshot.dump_state(self._state()))
            written = await self.store.write_checkpoint(
                self._checkpoint_name, position, snapshot.FORMAT_VERSION, text
            )
        except (LionstoreError, ValueError, TypeError) as exc:
            log.warning("checkpoint %s not written: %s", self._checkpoint_name, exc)
            return False
        if written:
            self._checkpointed_at = position
        return written

    async def sync(self, *, upto: int | None = None) -> None:
        """Bring in records other processes committed (``upto``: see :meth:`Store.sync`)."""
        self.require_healthy()
        if not self._loaded:
            await self.load()
        await self.store.sync(upto=upto)

    async def decide_and_append(
        self,
        decide: Callable[[], Decision | None],
        *,
        sync: bool = True,
        on_committed: Callable[[], None] | None = None,
    ) -> list[Recorded]:
        """Run ``decide`` against the projection and append what it returns; on a lost
        race, sync and decide again. Returns the committed records ([] if nothing to do).
        ``sync`` and ``on_committed``: see :meth:`Store.append_records`."""
        if not self._loaded:
            await self.load()
        for _ in range(_MAX_RETRIES):
            self.require_healthy()
            decision = decide()
            if decision is None or not decision[0]:
                return []
            records, expected = decision
            try:
                return await self.store.append_records(
                    records, expected_versions=expected, sync=sync, on_committed=on_committed
                )
            except ConcurrencyError:
                await self.store.sync()
        raise ConcurrencyError(f"gave up after {_MAX_RETRIES} lost races")

    def close(self) -> None:
        """Stop following the log (and so stop writing checkpoints: the projection
        would no longer be what the log says)."""
        self._subscription.close()
        self._checkpoint_name = None
