"""lionagi's real iModel (the pinned PyPI release, the ``lionagi`` extra) made durable:
its API calls are lionstore records, against a chat-completions server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore.integrations.lionagi import ModelCall, durable, redact
from lionstore.processing.executor import Executor
from lionstore.replay import verify

from .model_server import ModelServer

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
    limits = {"limit_requests": 2, "interval": 30.0, "capacity_refresh_time": 0.05}
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
