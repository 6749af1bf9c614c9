"""lionagi 0.8.7 as the baseline: its own virtual environment, workloads in a subprocess.

lionagi is never installed into the project's environment. :func:`ensure_venv`
creates a separate virtual environment (default
``~/.cache/lionstore-bench/lionagi-0.8.7-venv``) and ``pip install``\\ s
``lionagi==0.8.7`` into it once; later runs reuse it. Each workload is a small
script, written to a temporary file at run time, run by that environment's python;
it times itself and prints one JSON line, which :func:`run_workload` returns.

If the environment cannot be made (no network, no pip), :func:`ensure_venv`
returns ``None`` with the reason, and the benchmarks print lionstore alone.

The mail workload repairs ``Exchange.collect`` (lionagi 0.8.7 calls a ``popleft``
that ``Pile`` does not have) with a minimal corrected collect written here, not
copied from lionagi: pop ids from the sender mailbox's ``pending_outs`` FIFO, take
each mail out of the sender's ``pile_``, append it to ``buffer[recipient]``.
Only the benchmark subprocess is patched. ``deliver``/``deliver_all`` are stock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_VENV",
    "LIONAGI_VERSION",
    "Lionagi",
    "add_venv_argument",
    "ensure_venv",
    "run_executor",
    "run_mail",
    "run_workload",
]

LIONAGI_VERSION = "0.8.7"
DEFAULT_VENV = Path.home() / ".cache" / "lionstore-bench" / f"lionagi-{LIONAGI_VERSION}-venv"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Lionagi:
    """A usable lionagi environment: its python and the versions inside it."""

    python: Path
    venv: Path
    versions: dict[str, str]

    def describe(self) -> str:
        v = self.versions
        return (
            f"lionagi {v.get('lionagi', '?')} (pydantic {v.get('pydantic', '?')}, "
            f"Python {v.get('python', '?')}) in {self.venv}"
        )


def add_venv_argument(parser: Any) -> None:
    parser.add_argument(
        "--lionagi-venv",
        type=Path,
        default=DEFAULT_VENV,
        help=f"virtual environment for lionagi=={LIONAGI_VERSION} "
        f"(created if missing; default {DEFAULT_VENV})",
    )
    parser.add_argument(
        "--no-lionagi", action="store_true", help="skip the lionagi baseline (lionstore only)"
    )


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


_PROBE = (
    "import json, sys, importlib.metadata as m\n"
    "out = {'python': sys.version.split()[0], 'prefix': sys.prefix}\n"
    "for name in ('lionagi', 'pydantic'):\n"
    "    try:\n"
    "        out[name] = m.version(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        pass\n"
    "print(json.dumps(out))\n"
)


def _probe(python: Path) -> dict[str, str] | None:
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        found: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return found


def _refuse_project_env(venv: Path) -> str | None:
    """A reason not to use ``venv``, if it is (or is inside) the project's environment."""
    target = venv.expanduser().resolve()
    own = Path(sys.prefix).resolve()
    if target == own or own in target.parents:
        return f"{venv} is the environment running this benchmark; use a separate one"
    project_venv = (_PROJECT_ROOT / ".venv").resolve()
    if target == project_venv or project_venv in target.parents:
        return f"{venv} is the project's virtual environment; use a separate one"
    return None


def ensure_venv(venv: Path = DEFAULT_VENV, *, log: Any = print) -> tuple[Lionagi | None, str]:
    """A lionagi environment at ``venv`` (created and installed if needed), or
    ``(None, reason)``."""
    venv = venv.expanduser()
    refused = _refuse_project_env(venv)
    if refused:
        return None, refused
    python = _venv_python(venv)
    if python.exists():
        found = _probe(python)
        if found and found.get("lionagi") == LIONAGI_VERSION:
            return Lionagi(python, venv, found), "reused"
    try:
        if not python.exists():
            log(f"creating a virtual environment for lionagi at {venv} ...")
            venv.parent.mkdir(parents=True, exist_ok=True)
            # The base interpreter (not this venv's site-packages) seeds the new one.
            done = subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                return None, f"python -m venv failed: {done.stderr.strip()[-500:]}"
        found = _probe(python)
        if not found or Path(found["prefix"]).resolve() != venv.resolve():
            return None, f"{python} does not run inside {venv}"
        log(f"installing lionagi=={LIONAGI_VERSION} into {venv} (once) ...")
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"lionagi=={LIONAGI_VERSION}"],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return None, "pip install failed: " + " / ".join(tail)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    found = _probe(python)
    if not found or found.get("lionagi") != LIONAGI_VERSION:
        return None, f"lionagi=={LIONAGI_VERSION} is not importable in {venv} after install"
    return Lionagi(python, venv, found), "installed"


def run_workload(
    env: Lionagi, script: str, args: dict[str, Any], *, timeout: float = 900
) -> dict[str, Any]:
    """Run ``script`` with ``env``'s python; it reads ``json.loads(sys.argv[1])`` and
    prints its result as JSON on its last stdout line."""
    with tempfile.NamedTemporaryFile(
        "w", prefix="lionagi-bench-", suffix=".py", delete=False
    ) as fh:
        fh.write(script)
        path = fh.name
    try:
        done = subprocess.run(
            [str(env.python), path, json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tempfile.gettempdir(),  # never import anything from the project tree
        )
    finally:
        os.unlink(path)
    if done.returncode != 0:
        raise RuntimeError(
            f"lionagi workload failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}"
        )
    lines = [ln for ln in done.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"lionagi workload printed no JSON:\n{done.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- the executor workload ---------------------------------------------------------------

_EXECUTOR_SCRIPT = r"""
import asyncio, gc, json, sys, time

from lionagi.protocols.generic.event import Event, EventStatus
from lionagi.protocols.generic.processor import Executor, Processor

args = json.loads(sys.argv[1])
N, SHAPE, CAPACITY = args["n"], args["shape"], args["capacity"]


class TrivialEvent(Event):
    async def invoke(self):
        self.execution.response = "ok"
        self.execution.status = EventStatus.COMPLETED


class TrivialProcessor(Processor):
    event_type = TrivialEvent


class TrivialExecutor(Executor):
    processor_type = TrivialProcessor


async def main():
    events = [TrivialEvent() for _ in range(N)]  # created outside the timed region
    gc.collect()
    t0 = time.perf_counter()
    ex = TrivialExecutor(
        processor_config={"queue_capacity": CAPACITY, "capacity_refresh_time": 0.001}
    )
    await ex.start()
    if SHAPE == "per_event":
        append_s = 0.0
        for e in events:
            a = time.perf_counter()
            await ex.append(e)
            append_s += time.perf_counter() - a
            await ex.forward()
        t1 = t0 + append_s  # the append share of the total
    else:
        for e in events:
            await ex.append(e)
        t1 = time.perf_counter()
        await ex.forward()
        while not ex.processor.queue.empty():
            await ex.processor.process()
    t2 = time.perf_counter()
    done = sum(1 for e in events if e.status == EventStatus.COMPLETED)
    print(json.dumps({
        "total": t2 - t0, "append": t1 - t0, "dispatch": t2 - t1 if SHAPE != "per_event"
        else (t2 - t0) - (t1 - t0), "completed": done, "n": N,
    }))


asyncio.run(main())
"""


def run_executor(env: Lionagi, shape: str, n: int, capacity: int) -> dict[str, Any]:
    """One timed lionagi Executor run: ``shape`` is ``batch`` (append all, one forward,
    then process() until the queue is empty) or ``per_event`` (append + forward each)."""
    out = run_workload(env, _EXECUTOR_SCRIPT, {"shape": shape, "n": n, "capacity": capacity})
    if out["completed"] != n:
        raise RuntimeError(f"lionagi {shape}: only {out['completed']}/{n} events COMPLETED")
    return out


# -- the mail workload -------------------------------------------------------------------

_MAIL_SCRIPT = r"""
import asyncio, gc, json, sys, time

from pydantic import Field
from lionagi.protocols._concepts import Communicatable
from lionagi.protocols.generic.element import Element
from lionagi.protocols.mail.exchange import Exchange
from lionagi.protocols.mail.mail import Mail, Package
from lionagi.protocols.mail.mailbox import Mailbox

args = json.loads(sys.argv[1])
SOURCES, PER_SOURCE = args["sources"], args["per_source"]


class Src(Element, Communicatable):
    mailbox: Mailbox = Field(default_factory=Mailbox, exclude=True)

    model_config = {"arbitrary_types_allowed": True}

    def send(self, mail):
        self.mailbox.append_out(mail)


def corrected_collect(self, sender):
    # The benchmark's own minimal repair of Exchange.collect (lionagi 0.8.7 calls
    # Pile.popleft, which does not exist): FIFO over the sender's pending_outs.
    if sender not in self.sources:
        raise ValueError(f"Sender source {sender} does not exist.")
    box = self.sources[sender].mailbox
    while box.pending_outs:
        mail_id = box.pending_outs.popleft()
        mail = box.pile_.pop(mail_id)
        self.buffer[mail.recipient].append(mail)


Exchange.collect = corrected_collect


def main():
    sources = [Src() for _ in range(SOURCES)]
    ex = Exchange(sources)
    ids = [s.id for s in sources]
    expected = {i: {j: [] for j in ids if j != i} for i in ids}  # recipient -> sender -> ids
    t0 = time.perf_counter()
    for k in range(PER_SOURCE):
        for i, s in enumerate(sources):
            others = ids[:i] + ids[i + 1:]
            to = others[k % len(others)]
            mail = Mail(sender=s.id, recipient=to, package=Package(category="message", item=k))
            s.send(mail)
            expected[to][s.id].append(mail.id)
    send_s = time.perf_counter() - t0
    gc.collect()
    t1 = time.perf_counter()
    ex.collect_all()
    t2 = time.perf_counter()
    ex.deliver_all()
    t3 = time.perf_counter()
    delivered = 0
    order_ok = True
    for s in sources:
        box = s.mailbox
        for sender, want in expected[s.id].items():
            got = list(box.pending_ins.get(sender, []))
            delivered += len(got)
            order_ok = order_ok and got == want
    print(json.dumps({
        "send": send_s, "collect": t2 - t1, "deliver": t3 - t2, "total": t3 - t1,
        "delivered": delivered, "order_ok": order_ok,
    }))


main()
"""


def run_mail(env: Lionagi, sources: int, per_source: int) -> dict[str, Any]:
    """One timed lionagi Exchange run (collect repaired, see the module docstring)."""
    out = run_workload(env, _MAIL_SCRIPT, {"sources": sources, "per_source": per_source})
    if out["delivered"] != sources * per_source or not out["order_ok"]:
        raise RuntimeError(
            f"lionagi mail: {out['delivered']}/{sources * per_source} delivered, "
            f"per-sender order kept: {out['order_ok']}"
        )
    return out


if __name__ == "__main__":  # python benchmarks/_lionagi.py [VENV]: set up the environment
    env, why = ensure_venv(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_VENV)
    print(env.describe() if env else f"lionagi unavailable: {why}")
    sys.exit(0 if env else 1)
