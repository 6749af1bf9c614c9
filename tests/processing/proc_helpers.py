"""Helpers for the processor/executor tests (imported as ``proc_helpers``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import lionstore
from lionstore.domain.event import Event, EventStatus
from lionstore.domain.records import Recorded
from lionstore.processing.executor import Executor

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_worker.py"

FAST = {"queue_capacity": 10, "capacity_refresh_time": 0.01}


def make_executor(
    store: lionstore.Store,
    *,
    cls: type[Executor] = Executor,
    name: str = "ex",
    strict: bool = False,
    **config: Any,
) -> Executor:
    """An executor on ``store`` with a fast default configuration."""
    return cls({**FAST, **config}, strict, store=store, name=name)


def status_of(event: Event) -> EventStatus:
    """``event.status``, read afresh: mypy keeps an attribute it narrowed (``assert
    event.status is X``) across the awaits that change it."""
    return event.status


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 5.0,
    interval: float = 0.005,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def read_all(
    store: lionstore.Store, *, kinds: tuple[str, ...] | None = None, stream: Any = None
) -> list[Recorded]:
    """Every record of the store's run (optionally of some kinds / one stream)."""
    return [r async for r in await store.read(kinds=kinds, stream=stream)]


def snapshot(executor: Executor) -> dict[str, Any]:
    """The executor's pile and pending progression as JSON-ready data."""
    events = []
    for event in executor.pile:
        fields = event.model_dump(
            mode="json", exclude={"id", "created_at", "metadata", "execution"}
        )
        events.append(
            {
                "id": event.id,
                "class": f"{type(event).__module__}.{type(event).__qualname__}",
                "created_at": event.created_at,
                "status": event.status.value,
                "response": event.execution.response,
                "error": event.execution.error,
                "duration": event.execution.duration,
                "fields": fields,
                "attempts": executor.attempts(event),
            }
        )
    return {"events": events, "pending": list(executor.pending)}


async def kinds_of(store: lionstore.Store, stream: Any) -> list[str]:
    return [r.kind for r in await read_all(store, stream=stream)]


REPO = HERE.parent.parent


def worker_command(mode: str, args: dict[str, Any]) -> list[str]:
    return [sys.executable, str(WORKER), mode, json.dumps(args)]


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_worker(mode: str, args: dict[str, Any], *, timeout: float = 60) -> Any:
    """Run ``_worker.py`` to completion and return its JSON result."""
    done = subprocess.run(
        worker_command(mode, args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=worker_env(),
        cwd=str(REPO),
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"worker {mode} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spawn_worker(mode: str, args: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        worker_command(mode, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(),
        cwd=str(REPO),
    )
