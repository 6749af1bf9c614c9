"""Helpers shared by the log tests."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import lionstore
from lionstore import IDType, Recorded

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def new_id() -> IDType:
    return IDType.create()


async def records(store: lionstore.Store, **filters: Any) -> list[Recorded]:
    return [r async for r in await store.read(**filters)]


async def log_state(store: lionstore.Store) -> tuple[int, int, int]:
    """(head position, number of records in every run, number of runs)."""
    return (
        await store.head(),
        len(await records(store, run=None)),
        len(await store.runs()),
    )


def shape(record: Recorded) -> tuple[Any, ...]:
    """A record as a comparable tuple, without its position and run."""
    return (
        record.stream_id,
        record.stream_version,
        record.kind,
        record.kind_version,
        record.data,
        record.raw,
    )


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def read_line(stream: IO[str], proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line a child process writes, waiting at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line from process {proc.pid} within {timeout}s")
            if sel.select(left):
                line = stream.readline()
                if not line:
                    raise EOFError(
                        f"process {proc.pid} closed its output (exit code {proc.poll()})"
                    )
                return line.strip()


def file_fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns
