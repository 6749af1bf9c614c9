"""Owners of claims: who they are, and whether their process is gone.

A claim is owned by one processor until its lease expires. Waiting out the lease is
the only safe rule when nothing else is known about the owner, but after a crash on
the same machine it makes a resume wait in silence for up to ``lease_seconds``
(300 s by default). So each processor records, with its ``processor.started``, a
``processor.identity`` record naming its process (:func:`this_process`), and a
processor that finds claims of another owner asks :func:`owner_is_gone` before it
waits for their leases.

The rule, on Linux: the owner is gone when it ran on this host (same host name,
same boot id, same pid namespace) and no process with its pid and its start time
(``/proc/<pid>/stat`` field 22, clock ticks since boot) exists. The start time
guards against pid reuse: a new process that got the same pid started later. The
boot id guards against a reboot (start times start again from zero); the pid
namespace against two containers sharing a host name, where the other's pids are
not visible. In every other case (another host, another namespace, a platform
without ``/proc``, an owner that recorded no identity) the answer is "not known to
be gone" and the lease decides, as before.

Across machines, on PostgreSQL: every processor that claims events holds a
session-level advisory lock named after it while its store is open
(``lionstore.log.postgres``, "Owner locks"). When the host rule cannot tell, an
owner whose lock is seen free on every check for ``OWNER_LOCK_GRACE`` seconds
(10 s) is gone: its session, so its process or its machine, ended. The grace
covers a server restart, which drops every lock at once: a live owner takes its
lock again within a few seconds of the server coming back, and a free lock seen
once is not enough.

A live owner keeps its claims by renewing their leases while it invokes
(``lionstore.processing.heartbeat``); a gone owner's claims are taken over at once
(``event.requeued`` / ``event.abandoned`` with reason ``owner_gone``).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from functools import cache

from lionstore.domain.event_records import ProcessorIdentity

__all__ = [
    "OWNER_GONE",
    "OWNER_LOCK_GRACE",
    "OwnerWatch",
    "ProcessIdentity",
    "owner_is_gone",
    "owner_state",
    "process_start_ticks",
    "this_process",
]

OWNER_GONE = "owner_gone"
"""The ``reason`` of a take-over because the owner's process is gone."""

_PROC = "/proc"

OWNER_LOCK_GRACE = 10.0
"""Seconds an owner's advisory lock must be seen free, on every check, before the
owner is taken for gone (PostgreSQL; see the module docstring)."""


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """What identifies a running process across processes on one host."""

    host: str
    pid: int
    boot_id: str | None
    pid_namespace: str | None
    process_started: int | None

    def record(
        self, executor: str, owner: str, *, advisory_lock: bool = False
    ) -> ProcessorIdentity:
        """The ``processor.identity`` record of processor ``owner`` in this process
        (``advisory_lock``: it will hold its owner lock while it holds claims)."""
        return ProcessorIdentity(
            executor=executor,
            owner=owner,
            advisory_lock=advisory_lock,
            host=self.host,
            pid=self.pid,
            boot_id=self.boot_id,
            pid_namespace=self.pid_namespace,
            process_started=self.process_started,
        )


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


@cache
def _boot_id() -> str | None:
    text = _read(f"{_PROC}/sys/kernel/random/boot_id")
    return text.strip() or None if text is not None else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink(f"{_PROC}/self/ns/pid")
    except OSError:
        return None


def process_start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat``
    field 22), or None when there is no such process or no ``/proc``."""
    text = _read(f"{_PROC}/{pid}/stat")
    if text is None:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ")".
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22; the list starts at field 3
    except (IndexError, ValueError):
        return None


def this_process() -> ProcessIdentity:
    """The identity of the calling process (taken afresh: a fork has its own pid)."""
    pid = os.getpid()
    return ProcessIdentity(
        host=socket.gethostname(),
        pid=pid,
        boot_id=_boot_id(),
        pid_namespace=_pid_namespace(),
        process_started=process_start_ticks(pid),
    )


def owner_state(identity: ProcessorIdentity, here: ProcessIdentity | None = None) -> str:
    """``"gone"`` when the owner described by ``identity`` certainly no longer runs
    (it ran on this host, boot and pid namespace, and no process with its pid and
    start time exists now), ``"alive"`` when that process runs, ``"unknown"`` when
    this host cannot tell (another host, another namespace, no ``/proc``)."""
    here = here or this_process()
    if (
        identity.process_started is None
        or here.process_started is None
        or identity.boot_id is None
        or identity.pid_namespace is None
        or identity.host != here.host
        or identity.boot_id != here.boot_id
        or identity.pid_namespace != here.pid_namespace
    ):
        return "unknown"
    started: int | None
    if identity.pid == here.pid:
        started = here.process_started
    else:
        started = process_start_ticks(identity.pid)
    return "alive" if started == identity.process_started else "gone"


def owner_is_gone(identity: ProcessorIdentity, here: ProcessIdentity | None = None) -> bool:
    """True only when the owner described by ``identity`` certainly no longer runs
    (:func:`owner_state` says ``"gone"``); False when it runs or cannot be told."""
    return owner_state(identity, here) == "gone"


class OwnerWatch:
    """Which owners of an executor's claims are gone, asked at most every ``every``
    seconds per owner (a gone owner stays gone). Identities come from the
    ``processor.identity`` records the caller feeds in with :meth:`learn`."""

    def __init__(self, every: float = 0.25) -> None:
        self.identities: dict[str, ProcessorIdentity] = {}
        self.gone: set[str] = set()
        self.alive: set[str] = set()  # seen running on this host at the last check
        self._checked: dict[str, float] = {}
        self._every = every
        self._here: ProcessIdentity | None = None
        self.free_since: dict[str, float] = {}  # owner -> when its lock was first seen free

    def learn(self, identity: ProcessorIdentity) -> None:
        self.identities.setdefault(identity.owner, identity)

    def unknown(self, owners: set[str]) -> set[str]:
        """Those of ``owners`` whose identity has not been learnt."""
        return {o for o in owners if o not in self.identities}

    def gone_among(self, owners: set[str]) -> set[str]:
        """Those of ``owners`` whose process is gone (see :func:`owner_is_gone`)."""
        now = time.monotonic()
        here = self._here
        if here is None or here.pid != os.getpid():
            here = self._here = this_process()
        for owner in owners - self.gone:
            identity = self.identities.get(owner)
            if identity is None or now - self._checked.get(owner, -1e9) < self._every:
                continue
            self._checked[owner] = now
            state = owner_state(identity, here)
            if state == "gone":
                self.gone.add(owner)
            if state == "alive":
                self.alive.add(owner)
            else:
                self.alive.discard(owner)
        return owners & self.gone

    def lock_seen(self, owner: str, free: bool | None) -> bool:
        """Note one check of ``owner``'s advisory lock; True once it has been seen free
        on every check for ``OWNER_LOCK_GRACE`` seconds (then the owner is gone)."""
        if free is None or not free:
            self.free_since.pop(owner, None)
            return False
        now = time.monotonic()
        first = self.free_since.setdefault(owner, now)
        if now - first >= OWNER_LOCK_GRACE:
            self.gone.add(owner)
            return True
        return False

    def may_probe(self, owner: str) -> bool:
        """Whether ``owner``'s lock may be probed now (at most every ``every`` s)."""
        key = f"lock:{owner}"
        now = time.monotonic()
        if now - self._checked.get(key, -1e9) < self._every:
            return False
        self._checked[key] = now
        return True
