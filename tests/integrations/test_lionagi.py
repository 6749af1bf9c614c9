"""lionagi's real iModel (the pinned PyPI release, the ``lionagi`` extra) made durable:
its API calls are lionstore records, against a chat-completions server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore.integrations.lionagi import ModelCall, durable, redact
from lionstore.processing.executor import Executor
from lionstore.replay import verify

from .model_server import ModelServer

if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    import lionagi  # under CI the extra must be installed: fail, never skip
else:
    lionagi = pytest.importorskip("lionagi", reason="the lionagi extra: pip install -e '.[test]'")

SECRET = "sk-test-9f8e7d6c5b4a-do-not-log"


@pytest.fixture
def server() -> Iterator[ModelServer]:
    started = ModelServer().start()
    yield started
    started.stop()


def model(server: ModelServer, prefix: str = "ok", **kwargs: Any) -> Any:
    return lionagi.iModel(
        provider="openai",
        base_url=server.url(prefix),
        model="gpt-4.1-mini",
        api_key=SECRET,
        # offline: no token counting (tiktoken would download its encoding)
        requires_tokens=False,
        allow_local_network=True,
        **kwargs,
    )


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def records(store: lionstore.Store, kind: str) -> list[Any]:
    return [r async for r in await store.read(kinds=[kind])]


def test_redact_replaces_secret_values_only() -> None:
    data = {
        "Authorization": "Bearer x",
        "x-api-key": "k",
        "nested": [{"api_key": "k", "max_tokens": 5}],
        "Content-Type": "application/json",
    }
    assert redact(data) == {
        "Authorization": "[redacted]",
        "x-api-key": "[redacted]",
        "nested": [{"api_key": "[redacted]", "max_tokens": 5}],
        "Content-Type": "application/json",
    }
    assert data["Authorization"] == "Bearer x"  # the input is not changed


async def test_a_durable_imodel_records_every_call(tmp_path: Path, server: ModelServer) -> None:
    path = tmp_path / "calls.db"
    async with lionstore.open(str(path), run="calls") as store:
        imodel = durable(model(server))
        call = await asyncio.wait_for(imodel.invoke(messages=ask("hello")), timeout=30)
        assert call.status == "completed"
        assert call.response["choices"][0]["message"]["content"] == "echo: hello"
        failing = durable(model(server, "fail"), name="failing")
        bad = await asyncio.wait_for(failing.invoke(messages=ask("nope")), timeout=30)
        assert bad.status == "failed"
        await imodel.executor.flush()
        await failing.executor.flush()

        [appended, failed_appended] = await records(store, "event.appended")
        data = appended.data
        assert data.event_class.endswith("ModelCall")
        assert data.fields["payload"]["messages"] == ask("hello")
        assert data.fields["headers"]["Authorization"] == "[redacted]"
        assert data.fields["model"] == "gpt-4.1-mini" and data.fields["provider"] == "openai"
        finished = {r.stream_id: r.data for r in await records(store, "event.finished")}
        ok = finished[appended.stream_id]
        assert ok.status == "completed" and ok.duration_us > 0
        assert ok.response["choices"][0]["message"]["content"] == "echo: hello"
        assert ok.fields["usage"] == {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "total_tokens": 10,
        }
        nope = finished[failed_appended.stream_id]
        assert nope.status == "failed" and "ModelCallError" in nope.error
        # iModel popped both calls: released from the working pile, kept in the log
        released = [r.stream_id for r in await records(store, "event.released")]
        assert released == [appended.stream_id, failed_appended.stream_id]
        assert call.id not in imodel.executor.pile and len(imodel.executor.pile) == 0
        assert (await verify(store)).divergence is None
        assert server.counts[("ok", "hello")] == 1 and server.counts[("fail", "nope")] == 1
        assert all(h["Authorization"] == f"Bearer {SECRET}" for h in server.headers)

    async with lionstore.open(str(path), run="calls") as store:
        again = Executor(store=store, name=imodel.executor.name)
        await again.load()
        assert len(again.pile) == 0  # released: the working pile starts empty
        again.close()
    # the key's bytes are nowhere in the database (nor its WAL)
    for file in tmp_path.iterdir():
        assert SECRET.encode() not in file.read_bytes(), file.name


async def test_a_streamed_call_is_recorded(tmp_path: Path, server: ModelServer) -> None:
    async with lionstore.open(str(tmp_path / "stream.db"), run="s") as store:
        imodel = durable(model(server))
        chunks = [c async for c in imodel.stream(messages=ask("stream this"))]
        assert "".join(c.content or "" for c in chunks) == "echo:streamthis"
        await asyncio.wait_for(imodel.executor.flush(), timeout=10)
        [appended] = await records(store, "event.appended")
        assert appended.data.fields["streamed"] is True
        [claimed] = await records(store, "event.claimed")
        [finished] = await records(store, "event.finished")
        assert claimed.stream_id == finished.stream_id == appended.stream_id
        assert finished.data.status == "completed"
        assert [r.stream_id for r in await records(store, "event.released")] == [appended.stream_id]
        assert (await verify(store)).divergence is None
        assert server.counts[("ok", "stream this")] == 1


async def test_rate_limit_grants_and_waits_are_recorded_and_survive_a_restart(
    tmp_path: Path, server: ModelServer
) -> None:
    path = str(tmp_path / "limits.db")
    limits: dict[str, Any] = {"limit_requests": 2, "interval": 30.0, "capacity_refresh_time": 0.05}
    async with lionstore.open(path, run="limits") as store:
        first = durable(model(server, **limits), name="limited")
        await asyncio.wait_for(
            asyncio.gather(*(first.invoke(messages=ask(f"q{i}")) for i in range(2))), timeout=30
        )
        assert len(await records(store, "event.claimed")) == 2
        await first.executor.flush()

    # a new process-like start: a fresh iModel, processor and limiter on the same log
    async with lionstore.open(path, run="limits") as store:
        second = durable(model(server, **limits), name="limited")
        await second.executor.start()
        call = await second.create_event(messages=ask("third"))
        await second.executor.append(call)
        processor = second.executor.executor.processor
        await processor.enqueue(second.executor.executor.pile[str(call.id)])
        await asyncio.wait_for(processor.process(), timeout=10)
        # the two grants of the first start are in the window: the third call waits
        [deferred] = await records(store, "event.deferred")
        assert deferred.data.retry_at_us > deferred.data.at_us
        assert server.counts[("ok", "third")] == 0
        assert len(await records(store, "event.claimed")) == 2
        assert (await verify(store)).divergence is None
        second.executor.executor.close()


def test_model_call_is_a_lionstore_event() -> None:
    assert issubclass(ModelCall, lionstore.Event)
    assert json.loads(ModelCall(payload={"a": 1}).model_dump_json())["payload"] == {"a": 1}


WORKER = Path(__file__).with_name("_lionagi_worker.py")


def finished_count(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        [(n,)] = db.execute("SELECT COUNT(*) FROM lionstore_records WHERE kind = 'event.finished'")
    return int(n)


async def test_sigkill_mid_batch_then_resume_sends_finished_calls_once(
    tmp_path: Path, server: ModelServer
) -> None:
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "batch.db"
    held = {f"q{i}" for i in range(5, 10)}
    server.hold = set(held)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    args = [sys.executable, str(WORKER), "batch", str(path), server.url("ok"), "10"]
    worker = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # five calls answered and recorded, five in flight (held by the server)
        assert await asyncio.to_thread(server.wait_for, "ok", 10, 60), "requests never arrived"
        deadline = time.monotonic() + 60
        while finished_count(path) < 5:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the five answered calls were never recorded"
            await asyncio.sleep(0.02)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)
    assert finished_count(path) == 5
    server.hold.clear()
    server.release()  # the dead worker's held requests end (nobody reads them)

    args[2] = "resume"
    done = await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["counts"] == {"completed": 10}
    for i in range(10):
        sent = server.counts[("ok", f"q{i}")]
        if f"q{i}" in held:
            assert 2 <= sent <= 3, (i, sent)  # in flight: sent again, at most max_attempts
            assert report["attempts"][f"q{i}"] == 2
        else:
            assert sent == 1, (i, sent)  # finished before the kill: never sent again
    async with lionstore.open(str(path), run="batch") as store:
        assert (await verify(store)).divergence is None


async def test_a_run_of_model_calls_forks_and_the_fork_sends_again(
    tmp_path: Path, server: ModelServer
) -> None:
    path = str(tmp_path / "fork.db")
    async with lionstore.open(path, run="original") as store:
        imodel = durable(model(server), name="forked-model", lease_seconds=0.5)
        await asyncio.wait_for(imodel.invoke(messages=ask("again")), timeout=30)
        await imodel.executor.flush()
        [claimed] = await records(store, "event.claimed")
        # the commit that recorded, queued and claimed the call ends with the claim
        fork = await store.fork(claimed.position, label="replayed")
    assert server.counts[("ok", "again")] == 1
    async with lionstore.open(path, run=fork.run_id) as store:
        # the fork holds the call in flight (claimed by an owner that is gone): once
        # its lease expires, resuming sends it again
        again = durable(model(server), name="forked-model", lease_seconds=0.5)
        await asyncio.wait_for(again.executor.resume(), timeout=30)
        [finished] = await records(store, "event.finished")
        assert finished.data.attempt == 2
        assert finished.data.status == "completed"
        assert finished.data.response["choices"][0]["message"]["content"] == "echo: again"
        assert (await verify(store)).divergence is None
        again.executor.executor.close()
    assert server.counts[("ok", "again")] == 2
