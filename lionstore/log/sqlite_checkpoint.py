"""Checkpoints of the WAL on a thread of their own, at durability "normal".

A checkpoint copies the pages committed to the WAL back into the database file. By
default SQLite runs one inside the COMMIT that takes the WAL past 1,000 pages: the
WAL synced, every page changed since the last one copied, the file synced, 2-4 ms
here, on the committing thread. At "normal" lionstore commits on the event loop, so
every ~90 events (three commits of three or four pages each) one commit stalled the
loop that long. Measured with raw sqlite3 making lionstore's three commits per event,
those stalls were 40% of the time (58 of 143 µs an event; the median COMMIT took 15
µs, the mean 37).

At "normal" the writer's own checkpoints are therefore pushed far out (to
:data:`SAFETY_FRAMES`, a safety net), and :class:`Checkpointer` runs PASSIVE
checkpoints on a connection of its own, in its own thread, every so many commits,
while commits go on (a PASSIVE checkpoint never blocks a writer, and SQLite lets the
thread copy pages without the GIL). Appending one event at a time then takes about
0.8x the time (benchmarks/bench_executor.py; the A/B in the README).

A PASSIVE checkpoint cannot start the WAL over, though. SQLite writes from the start
of the WAL again only at a write transaction that begins with every frame copied
back; commits landing while the background checkpoint copies leave frames behind it
each time, and the WAL grew for ever when nothing else was done (250 MB after 5,000
events, measured). So once a background checkpoint finds the WAL at
:data:`RESTART_FRAMES` or more, the next commit first checkpoints on the writer's
connection, just before its ``BEGIN IMMEDIATE`` (:meth:`Checkpointer.before_commit`):
only what the background one left is copied, nothing of this process can commit in
between, and the write that follows starts the WAL over. That costs the loop the two
syncs and the last pages (about 2 ms here) once every RESTART_FRAMES frames instead
of a whole checkpoint every 1,000, and bounds the WAL at about RESTART_FRAMES pages plus what one
background checkpoint lets in (16-19 MB with 4 KiB pages, against SQLite's usual 4).

At "full" every commit syncs the WAL anyway; measured, a background checkpoint's
syncs then only compete with the commits' own (5% slower an event), so the writer
checkpoints inline as SQLite does by default and no Checkpointer is made.

A checkpoint moves no data a reader could miss (the WAL and the file hold the same
pages) and is safe to cut off at any point: a process killed in the middle leaves
the WAL in place, and the next connection carries on from it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable

from lionstore.log.sqlite_threads import ConnectionThread

__all__ = ["RESTART_FRAMES", "SAFETY_FRAMES", "Checkpointer"]

log = logging.getLogger("lionstore.sqlite")

#: WAL frames (pages) from which the next commit starts the WAL over.
RESTART_FRAMES = 4000
#: The writer's own ``wal_autocheckpoint`` while a Checkpointer runs: what SQLite
#: falls back on if the background checkpoints fall far behind.
SAFETY_FRAMES = 4 * RESTART_FRAMES
#: Commit weight (one per commit, one more per 8 rows) between background checkpoints:
#: every ~100 single-event commits, or every ~8 batches of 100 rows.
_WEIGHT_PER_CHECKPOINT = 100

_PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"
_SQLITE_DEFAULT = 1000  # wal_autocheckpoint


def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    # fetchall: a statement left open would hold the connection's read of the WAL
    row: tuple[int, int, int] = conn.execute(_PASSIVE).fetchall()[0]
    return row


class Checkpointer:
    """The background checkpoints of one SQLite writer (see the module's docstring).

    :meth:`committed` and the futures' callbacks run on the event loop; the writer
    reads :attr:`restart_due` from whichever thread commits, where a stale read
    costs at most one commit's delay.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], label: str) -> None:
        self._thread = ConnectionThread("lionstore-checkpointer", connect)
        self._label = label
        self._weight = 0
        self._running: asyncio.Future[tuple[int, int, int]] | None = None
        self._failed = False  # for good: the writer checkpoints as SQLite does by default
        #: The WAL reached RESTART_FRAMES: the next commit checkpoints first.
        self.restart_due = False

    @property
    def active(self) -> bool:
        """False once a background checkpoint failed (the writer checkpoints itself)."""
        return not self._failed

    def committed(self, rows: int) -> None:
        """Count a commit of ``rows`` rows; every so often, start a checkpoint (unless
        the last one is still copying: it is then asked again at the next count)."""
        self._weight += 1 + (rows >> 3)
        if self._weight < _WEIGHT_PER_CHECKPOINT or self._failed:
            return
        if self._running is not None and not self._running.done():
            return
        self._weight = 0
        try:
            self._running = self._thread.submit(_checkpoint)
        except RuntimeError:  # closed
            return
        self._running.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[tuple[int, int, int]]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            # Back to SQLite's own checkpoints, in the writer (see before_commit).
            log.warning(
                "%s: a background WAL checkpoint failed (%s); checkpoints go back to the"
                " committing thread",
                self._label,
                exc,
            )
            self._failed = True
            self.restart_due = True
            return
        _busy, frames, _copied = future.result()
        if frames >= RESTART_FRAMES:
            self.restart_due = True

    def before_commit(self, conn: sqlite3.Connection) -> None:
        """On the writer's connection, outside a transaction, when :attr:`restart_due`:
        copy what the background checkpoints left, so that the commit that follows
        starts the WAL over. Busy (the background one is copying): tried again at the
        next commit. A failure is left to SQLite's own checkpoint, as an automatic
        checkpoint's is: the commit itself does not depend on it. After a background
        checkpoint failed, the writer is given SQLite's default checkpoints back."""
        try:
            if self._failed:
                conn.execute(f"PRAGMA wal_autocheckpoint={_SQLITE_DEFAULT}")
            busy, _frames, _copied = _checkpoint(conn)
        except sqlite3.Error as exc:
            log.debug("%s: WAL checkpoint before a commit failed: %s", self._label, exc)
            self.restart_due = False
            return
        if not busy:
            self.restart_due = False

    async def close(self) -> None:
        """Stop the thread once the checkpoint under way (if any) has ended."""
        await self._thread.close()
