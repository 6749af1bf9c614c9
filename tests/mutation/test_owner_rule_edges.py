"""Edges of the owner rule (lionstore.repositories.leases) the mutation run found
unguarded (docs/mutation.md, repositories/leases.py): an identity that lacks a boot
id or a pid namespace is never judged, even by a host that lacks it too; and an
``OwnerWatch`` carried into a forked process judges from that process, not from the
one it was made in."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from lionstore.repositories.leases import ProcessIdentity, owner_state, this_process

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="the owner rule reads Linux /proc"
)

ROOT = Path(__file__).resolve().parents[2]


def _ended() -> ProcessIdentity:
    """A process of this host that has ended (run to its end and reaped)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "print(open('/proc/self/stat').read().split()[21])"],
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=30)
    here = this_process()
    return ProcessIdentity(here.host, child.pid, here.boot_id, here.pid_namespace, int(out))


def test_an_identity_without_boot_id_or_namespace_is_never_judged() -> None:
    """Without a boot id the start time cannot be trusted (a reboot starts the clock
    again); without a pid namespace the pid may name another container's process. Each
    missing on its own makes the owner "unknown", even judged from a host that lacks
    the same (where they compare equal), and even for a process that has ended."""
    ended = _ended()
    assert owner_state(ended.record("ex", "o")) == "gone"  # the rule itself tells
    # the same ended process, judged from a host with both: gone
    complete = ProcessIdentity("h", ended.pid, "boot", "pid:[1]", ended.process_started)
    whole_host = ProcessIdentity("h", os.getpid(), "boot", "pid:[1]", 77)
    assert owner_state(complete.record("ex", "o"), whole_host) == "gone"
    for boot_id, namespace in ((None, "pid:[1]"), ("boot", None)):
        here = ProcessIdentity("h", os.getpid(), boot_id, namespace, 77)
        owner = ProcessIdentity("h", ended.pid, boot_id, namespace, ended.process_started)
        assert owner_state(owner.record("ex", "o"), here) == "unknown", (boot_id, namespace)


# Runs in a process of its own (PYTHONPATH: this checkout). It asks an OwnerWatch about
# itself (alive), forks, and exits; the fork waits for a line on stdin (sent once this
# test has reaped its parent), asks the same watch about its parent again and prints
# the answer.
FORKED = """
import os, sys
from lionstore.repositories.leases import OwnerWatch, this_process
watch = OwnerWatch(every=0.0)
watch.learn(this_process().record("ex", "parent"))
assert watch.gone_among({"parent"}) == set() and watch.alive == {"parent"}
if os.fork() == 0:
    sys.stdin.readline()
    print(sorted(watch.gone_among({"parent"})), sorted(watch.alive), flush=True)
    os._exit(0)
os._exit(0)
"""


def test_a_watch_carried_into_a_fork_judges_from_the_fork() -> None:
    """A forked process has a pid of its own: the watch it inherited takes this process
    afresh, and sees the parent it was made in gone once that has ended, instead of
    taking the parent's identity for its own (alive)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    parent = subprocess.Popen(
        [sys.executable, "-c", FORKED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    assert parent.stdin is not None and parent.stdout is not None
    try:
        assert parent.wait(timeout=60) == 0  # reaped: its pid names no process now
        parent.stdin.write("go\n")
        parent.stdin.flush()
        # the fork's answer (it holds the pipe's write end; EOF if it died)
        ready, _, _ = select.select([parent.stdout], [], [], 60)
        assert ready, "the forked process did not answer within 60 s"
        answer = parent.stdout.readline()
    finally:
        parent.stdin.close()  # the fork, if still waiting, reads EOF and exits
        parent.stdout.close()
    assert answer == "['parent'] []\n"
