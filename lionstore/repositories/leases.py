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

__all__ = ["ProcessIdentity", "OwnerWatch", "owner_is_gone", "process_start_ticks", "this_process"]

OWNER_GONE = "owner_gone"
"""The ``reason`` of a take-over because the owner's process is gone."""

_PROC = "/proc"


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    """What identifies a running process across processes on one host."""

    host: str
    pid: int
    boot_id: str | None
    pid_namespace: str | None
    process_started: int | None

    def record(self, executor: str, owner: str) -> ProcessorIdentity:
        """The ``processor.identity`` record of processor ``owner`` in this process."""
        return ProcessorIdentity(
            executor=executor,
            owner=owner,
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


def owner_is_gone(identity: ProcessorIdentity, here: ProcessIdentity | None = None) -> bool:
    """True only when the owner described by ``identity`` certainly no longer runs:
    it ran on this host, boot and pid namespace, and no process with its pid and
    start time exists now. False when it runs, or when that cannot be told."""
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
        return False
    if identity.pid == here.pid:
        return identity.process_started != here.process_started
    return process_start_ticks(identity.pid) != identity.process_started


class OwnerWatch:
    """Which owners of an executor's claims are gone, asked at most every ``every``
    seconds per owner (a gone owner stays gone). Identities come from the
    ``processor.identity`` records the caller feeds in with :meth:`learn`."""

    def __init__(self, every: float = 0.25) -> None:
        self.identities: dict[str, ProcessorIdentity] = {}
        self.gone: set[str] = set()
        self._checked: dict[str, float] = {}
        self._every = every
        self._here: ProcessIdentity | None = None

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
            if owner_is_gone(identity, here):
                self.gone.add(owner)
        return owners & self.gone
