"""What every repository shares: a projection fed by the store, loaded once from history.

A repository subscribes to its store's feed as soon as it exists, then folds the
run's history up to the feed's position when first used (``load``). Records that
arrive on the feed meanwhile are held back and applied after the history, so the
projection sees every record once, in position order.

Commands follow one pattern (``decide_and_append``): decide from the projection,
append the records with the expected stream versions the decision was based
on, and let the feed apply them. If another process wrote first the append
raises ConcurrencyError; the repository syncs and decides again.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence

from lionstore.domain.ids import IDType
from lionstore.domain.records import NewRecord, Recorded
from lionstore.errors import ConcurrencyError, LionstoreError
from lionstore.log.store import Store

__all__ = ["Repository", "Decision", "NotLoadedError"]

Decision = tuple[list[NewRecord], Mapping[IDType, int]]
_MAX_RETRIES = 20


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
        apply = self.apply
        async for record in await self.store.read(kinds=self.kinds, upto=upto):
            apply(record)
        held, self._held = self._held, []
        self._loaded = True
        for record in held:
            if record.position > upto:
                apply(record)

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
        self._subscription.close()
