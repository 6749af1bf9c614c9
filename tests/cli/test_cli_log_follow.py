"""``lionstore log --follow``: keep printing records as other processes commit them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

import lionstore
from lionstore.cli.demo import DemoNote
from lionstore.cli.log import follow_log

if TYPE_CHECKING:
    from conftest import Cli, SampleDb


class LineReader:
    """Lines of a child's stdout, read by a thread, waited for with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, predicate: object, *, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no matching line within {timeout}s; saw {self.seen!r}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the output ended; saw {self.seen!r}")
            self.seen.append(line)
            if callable(predicate) and predicate(line):
                return line


async def append_note(path: Path, run: str, text: str) -> int:
    async with lionstore.open(path, run=run) as store:
        (position,) = await store.append(
            [(lionstore.IDType.create(), DemoNote(number=0, text=text))]
        )
        return position


def test_follow_prints_records_appended_later(sample_db: SampleDb) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # SIGUSR1 prints every thread's stack: what the test shows if Ctrl-C hangs
            "import faulthandler, signal; faulthandler.register(signal.SIGUSR1);"
            " from lionstore.cli import main; raise SystemExit(main())",
            "log",
            str(sample_db.path),
            "--follow",
            "--json",
            "--run",
            "alpha",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": ""},  # block-buffered: the command flushes
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        reader = LineReader(child.stdout)
        # the existing records first: alpha's last one is position 5
        reader.wait_for(lambda line: json.loads(line)["position"] == 5)
        assert [json.loads(line)["position"] for line in reader.seen] == [1, 2, 3, 4, 5]
        # beta's records are not alpha's; then one appended to alpha shows up
        asyncio.run(append_note(sample_db.path, "beta", "not followed"))
        position = asyncio.run(append_note(sample_db.path, "alpha", "appended while following"))
        line = reader.wait_for(lambda line: "appended while following" in line)
        record = json.loads(line)
        assert record["position"] == position
        assert record["data"] == {"number": 0, "text": "appended while following"}
        assert [json.loads(line)["data"].get("text") for line in reader.seen[5:]] == [
            "appended while following"
        ]
        child.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):  # time to print them
                child.wait(timeout=5)
            child.kill()
            _, stacks = child.communicate(timeout=30)
            pytest.fail(f"log --follow did not end 30 s after Ctrl-C; its threads:\n{stacks}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert code == 130
    assert child.stderr.read() == ""  # quiet: no traceback


def test_follow_with_a_limit_ends_by_itself(cli: Cli, sample_db: SampleDb) -> None:
    result = cli("log", sample_db.path, "--follow", "--limit", "3")
    assert result.code == 0
    assert len(result.out.splitlines()) == 3


async def test_follow_log_yields_new_records_in_batches(sample_db: SampleDb) -> None:
    async with lionstore.open(sample_db.path, readonly=True) as reader:
        batches = follow_log(reader, run="beta", since=await reader.head(), interval=0.01)
        first = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.05)
        assert not first.done()  # nothing new yet: it keeps polling
        async with lionstore.open(sample_db.path, run="beta") as writer:
            await writer.append([(sample_db.ticks_stream, DemoNote(number=1, text="one"))])
            await writer.append([(sample_db.ticks_stream, DemoNote(number=2, text="two"))])
        batch = await asyncio.wait_for(first, 10)
        texts = [r.data.text for r in batch]  # type: ignore[union-attr]
        if texts == ["one"]:
            texts += [r.data.text for r in await asyncio.wait_for(anext(batches), 10)]  # type: ignore[union-attr]
        assert texts == ["one", "two"]
        await batches.aclose()
