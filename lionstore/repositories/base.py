"""What every repository shares: a projection fed by the store, loaded once from history.

A repository subscribes to its store's feed as soon as it exists, then folds the
run's history up to the feed's position when first used (``load``). Records that
arrive on the feed meanwhile are held back and applied after the history, so the
projection sees every record once, in position order.

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
    """The projection has history in the log that has not been loaded yet."""


class Repository(abc.ABC):
    kinds: tuple[str, ...] = ()

    def __init__(self, store: Store) -> None:
        self.store = store
        self._failure: BaseException | None = None
        self._loaded = store.run_is_fresh
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
        self.require_healthy()
        if not self._loaded:
            raise NotLoadedError(
                f"{what} has history in the log; await its load() (or any of its async "
                "methods) before reading it"
            )

    async def load(self) -> None:
        """Fold the run's history (idempotent)."""
        self.require_healthy()
        if self._loaded:
            return
        upto = self.store.position
        after, tip = await self._restore(upto)
        apply = self.apply
        folded = 0
        # Every record of the run in the range is hashed (the digest chain), whatever
        # its kind: a load returns the logged state or raises CorruptDatabaseError.
        records = await self.store.read_chained(kinds=self.kinds, after=after, upto=upto, tip=tip)
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
        held, self._held = self._held, []
        self._loaded = True
        for record in held:
            if record.position > upto:
                apply(record)
        if folded > CHECKPOINT_EVERY:
            await self.checkpoint()

    def _state(self) -> snapshot.State:
        state: snapshot.State = getattr(self, "state")  # noqa: B009 - set by subclasses
        return state

    async def _restore(self, upto: int) -> tuple[int, str | None]:
        """Restore ``state`` from the run's checkpoint if it checks out; return the
        position it covers and the log's digest there ((0, None): none, fold from the
        start)."""
        name = self._checkpoint_name
        if name is None or not self.store.checkpoints:
            return 0, None
        found = await self.store.read_checkpoint(name)
        if found is None:
            return 0, None
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
                    setattr(self, "state", fresh)  # noqa: B010 - a subclass's own state
                    self._checkpointed_at = found.position
                    self.restored_from = found.position
                    return found.position, found.digest
        log.info("checkpoint %s ignored and rebuilt: %s", name, reason)
        return 0, None

    async def checkpoint(self) -> bool:
        """Store a snapshot of the projection as of the store's position (best effort:
        a failure is logged, never raised). Returns whether one was written."""
        if (
            self._checkpoint_name is None
            or not self._loaded
            or self._failure is not None
            or not self.store.checkpoints
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

    async def sync(self) -> None:
        """Bring in records other processes committed."""
        await self.load()
        await self.store.sync()

    async def decide_and_append(self, decide: Callable[[], Decision | None]) -> list[Recorded]:
        """Run ``decide`` against the projection and append what it returns; on a lost
        race, sync and decide again. Returns the committed records ([] if nothing to do)."""
        await self.load()
        for _ in range(_MAX_RETRIES):
            self.require_healthy()
            decision = decide()
            if decision is None or not decision[0]:
                return []
            records, expected = decision
            try:
                return await self.store.append_records(records, expected_versions=expected)
            except ConcurrencyError:
                await self.store.sync()
        raise ConcurrencyError(f"gave up after {_MAX_RETRIES} lost races")

    def close(self) -> None:
        """Stop following the log (and so stop writing checkpoints: the projection
        would no longer be what the log says)."""
        self._subscription.close()
        self._checkpoint_name = None
