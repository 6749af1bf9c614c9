"""Heartbeats: a running invocation keeps its claims' leases alive.

A claim's lease (``lease_seconds``, 300 s by default) is what tells other
processors that the owner may have crashed. Without renewal, an ``invoke()`` that
runs longer than the lease (a slow model call) would be re-queued by another
processor while it still runs, and invoked twice at once. So while a cycle's
invocations run, :func:`keep_leases` renews the leases of the claims still in
flight every third of the lease: one ``event.lease_renewed`` record per claim, all
of them in one transaction, each appended with its event stream's version as
expected (compare-and-set), so a renewal never revives a claim another processor
took over (that processor's take-over was based on the lease as the log showed
it, and the outcome of the taken-over attempt is dropped, as before).

A lease is therefore lost only when its owner stops renewing: its process is gone
(killed, crashed, or the machine is), or it cannot reach the database for a whole
lease. An owner whose process is known to be gone is taken over at once without
waiting for the lease (``lionstore.repositories.leases``).

The period is a third of the lease so that two renewals may fail (the database
restarting, say) before the lease runs out. A renewal that fails is logged and
tried again at the next beat; it never interrupts the invocation. Invocations
shorter than a third of the lease write nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from lionstore.domain.ids import IDType

if TYPE_CHECKING:
    from lionstore.repositories.executor import ExecutorRepository

__all__ = ["keep_leases", "renewal_period"]

log = logging.getLogger("lionstore.heartbeat")


def renewal_period(lease_seconds: float) -> float:
    """How often a running invocation renews its lease: a third of the lease."""
    return lease_seconds / 3


class keep_leases:  # noqa: N801 - used as `async with keep_leases(...)`
    """Renew the leases of ``claimed`` (``(event, attempt, claim_version)`` as
    ``ExecutorRepository.claim`` returns them) while the body runs, for the events
    still in ``in_flight``. Costs one timer when the body ends within a period (no
    task is started before the first renewal is due).

    A class rather than a generator-based context manager: it is entered on every
    cycle, and this way costs a third as much."""

    __slots__ = ("_beat", "_timer")

    def __init__(
        self,
        repo: ExecutorRepository,
        claimed: Sequence[tuple[Any, int, int]],
        *,
        owner: str,
        lease_seconds: float,
        in_flight: Collection[IDType],
    ) -> None:
        beat = _Beat(repo, [(event.id, attempt) for event, attempt, _ in claimed], owner)
        beat.lease_seconds, beat.in_flight = lease_seconds, in_flight
        self._beat = beat
        self._timer: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(
            renewal_period(self._beat.lease_seconds), self._beat.start
        )

    async def __aexit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        beat = self._beat
        if beat.task is not None:
            # Not cancelled: a renewal under way is let finish (a commit cut off by a
            # cancellation would leave its outcome unknown to this process).
            beat.stop.set()
            await beat.task


class _Beat:
    """The renewals of one batch of claims, from the first one due."""

    def __init__(self, repo: ExecutorRepository, held: list[tuple[IDType, int]], owner: str):
        self.repo = repo
        self.held = held
        self.owner = owner
        self.lease_seconds = 0.0
        self.in_flight: Collection[IDType] = ()
        self.task: asyncio.Task[None] | None = None

    @functools.cached_property
    def stop(self) -> asyncio.Event:
        """Set when the body ends (made only for a beat that started)."""
        return asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name="lionstore-heartbeat")

    async def run(self) -> None:
        period = renewal_period(self.lease_seconds)
        while not self.stop.is_set():
            running = [(i, attempt) for i, attempt in self.held if i in self.in_flight]
            if not running:
                return
            try:
                renewed = await self.repo.renew_leases(
                    running, owner=self.owner, lease_seconds=self.lease_seconds
                )
            except Exception as exc:  # e.g. the database is away: the next beat tries again
                # (never raised: the invocations and the recording of their outcomes
                # must not fail because a renewal did)
                log.warning("lease renewal of %d events failed (retried): %s", len(running), exc)
            else:
                lost = {i for i, _ in running} - set(renewed)
                if lost:
                    log.warning(
                        "%d events lost their claim while invoking (taken over); their "
                        "outcomes will not be recorded by %s",
                        len(lost),
                        self.owner,
                    )
                    self.held = [(i, a) for i, a in self.held if i not in lost]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=period)
