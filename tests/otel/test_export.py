"""A recorded run exported as OpenTelemetry spans to a real OTLP/HTTP endpoint."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lionstore
from lionstore.otel import make_redactor, recorded_spans, trace_id_for

from .otel_run import SECRET_REPLY, record_run
from .otlp_sink import Sink, attrs, otlp_sink


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lionstore"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def sink() -> Any:
    with otlp_sink() as s:
        yield s


def by_name(spans: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


async def record_times(path: Path) -> dict[tuple[str, str], list[int]]:
    """(stream id, kind) -> the records' commit times in ns, from the log."""
    out: dict[tuple[str, str], list[int]] = {}
    async with lionstore.open(path, readonly=True) as store:
        async for r in await store.read(run=None):
            out.setdefault((str(r.stream_id), r.kind), []).append(r.recorded_at_us * 1000)
    return out


async def test_cli_sends_the_run_as_linked_spans_with_log_times(tmp_path: Path, sink: Sink) -> None:
    db = tmp_path / "run.db"
    ids = await record_run(db)
    done = cli("export", str(db), "--run", "otel-run", "--format", "otlp", "--endpoint", sink.url)
    assert done.returncode == 0, done.stderr
    trace_hex = f"{trace_id_for(ids['run_id']):032x}"
    assert f"trace {trace_hex}" in done.stdout
    spans = sink.spans()
    assert {s.trace_id.hex() for s in spans} == {trace_hex}
    named = by_name(spans)
    ids_of = {s.span_id: s for s in spans}

    (root,) = named["run otel-run"]
    assert root.parent_span_id == b""
    assert attrs(root)["lionstore.run.id"] == ids["run_id"]
    (chores,) = named["executor chores"]
    assert chores.parent_span_id == root.span_id

    events = {attrs(s)["lionstore.event.id"]: s for s in named["ChoreDenied"]}
    assert set(events) == set(ids["events"])
    times = await record_times(db)
    for eid, span in events.items():
        assert span.parent_span_id == chores.span_id
        assert span.start_time_unix_nano == times[(eid, "event.appended")][0]
        assert span.end_time_unix_nano == times[(eid, "event.finished")][-1]

    ok, denied, failed = (events[i] for i in ids["events"])
    assert attrs(ok)["lionstore.status"] == "completed"
    assert ok.status.code == ok.status.STATUS_CODE_OK
    assert [e.name for e in denied.events].count("denied") == 1
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
    assert "RuntimeError: chore 3 broke" in failed.status.message

    attempts = [s for s in spans if s.name.startswith("ChoreDenied attempt")]
    assert len(attempts) == 3
    for attempt in attempts:
        parent = ids_of[attempt.parent_span_id]
        assert parent.name == "ChoreDenied"
        eid = attrs(attempt)["lionstore.event.id"]
        assert attempt.start_time_unix_nano == times[(eid, "event.claimed")][0]
        assert attempt.end_time_unix_nano == times[(eid, "event.finished")][0]

    # the model call carries the GenAI semantic conventions
    (call,) = named["ChatCall"]
    call_attrs = attrs(call)
    assert call_attrs["gen_ai.operation.name"] == "chat"
    assert call_attrs["gen_ai.request.model"] == "tiny-model-2026"
    assert call_attrs["gen_ai.usage.input_tokens"] == 11
    assert call_attrs["gen_ai.usage.output_tokens"] == 7

    mails = {attrs(s)["lionstore.mail.id"]: s for s in named["mail message"]}
    hello, lost = mails[ids["hello"]], mails[ids["lost"]]
    assert attrs(hello)["lionstore.mail.sender"] == "alice"
    assert attrs(hello)["lionstore.mail.recipient"] == "bob"
    assert [e.name for e in hello.events] == ["collected", "delivered"]
    assert hello.end_time_unix_nano == times[(ids["hello"], "mail.delivered")][0]
    assert lost.status.code == lost.status.STATUS_CODE_ERROR
    assert lost.status.message == "dead letter: recipient_unknown"
    assert ids_of[hello.parent_span_id].name == "mail post"


async def test_a_second_export_sends_the_same_ids(tmp_path: Path, sink: Sink) -> None:
    db = tmp_path / "run.db"
    await record_run(db)
    for _ in range(2):
        assert (
            cli(
                "export", str(db), "--run", "otel-run", "--format", "otlp", "--endpoint", sink.url
            ).returncode
            == 0
        )
    first, second = sink.requests[0], sink.requests[1]

    def ids(request: Any) -> list[tuple[bytes, bytes, bytes]]:
        return sorted(
            (s.trace_id, s.span_id, s.parent_span_id)
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        )

    assert ids(first) == ids(second)
    assert len(ids(first)) == len({i[1] for i in ids(first)})  # span ids are distinct


async def test_redacted_fields_never_leave(tmp_path: Path, sink: Sink) -> None:
    db = tmp_path / "run.db"
    await record_run(db)
    done = cli(
        "export", str(db), "--run", "otel-run", "--format", "otlp", "--endpoint", sink.url,
        "--redact", "response", "--redact", "item",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    raw = b"".join(r.SerializeToString() for r in sink.requests)
    assert SECRET_REPLY.encode() not in raw
    assert b"hello bob" not in raw
    for span in sink.spans():
        names = set(attrs(span))
        assert "lionstore.event.response" not in names
        assert "lionstore.mail.item" not in names
    # without redaction both are there (the test can fail)
    async with lionstore.open(db, readonly=True) as store:
        spans = await recorded_spans(store, "otel-run")
    text = json.dumps([s.attributes for s in spans])
    assert SECRET_REPLY in text and "hello bob" in text


async def test_a_redaction_hook_rewrites_values(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    await record_run(db)

    def hook(name: str, value: Any) -> Any:
        return "[hidden]" if name == "lionstore.event.response" else value

    async with lionstore.open(db, readonly=True) as store:
        spans = await recorded_spans(store, "otel-run", redact=make_redactor(["fields"], hook))
    responses = [s.attributes["lionstore.event.response"] for s in spans if
                 "lionstore.event.response" in s.attributes]  # fmt: skip
    assert responses and set(responses) == {"[hidden]"}
    assert not any("lionstore.event.fields" in s.attributes for s in spans)


async def test_otlp_json_file(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    ids = await record_run(db)
    out = tmp_path / "spans.json"
    done = cli("export", str(db), "--run", "otel-run", "--format", "otlp-json", "-o", str(out))
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    async with lionstore.open(db, readonly=True) as store:
        expected = await recorded_spans(store, "otel-run")
    assert len(spans) == len(expected)
    root = next(s for s in spans if s["name"] == "run otel-run")
    assert {a["key"]: a["value"] for a in root["attributes"]}["lionstore.run.id"] == {
        "stringValue": ids["run_id"]
    }


def test_endpoint_without_otlp_format_is_refused(tmp_path: Path) -> None:
    done = cli("export", str(tmp_path / "x.db"), "--run", "r", "--endpoint", "http://127.0.0.1:1")
    assert done.returncode != 0
    assert "--format otlp" in done.stderr


async def test_an_unreachable_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    await record_run(db)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = cli(
        "export",
        str(db),
        "--run",
        "otel-run",
        "--format",
        "otlp",
        "--endpoint",
        f"http://127.0.0.1:{port}",
        "--timeout",
        "1",
    )
    assert done.returncode != 0
    assert "did not accept the spans" in done.stderr
    assert "Traceback" not in done.stderr


async def test_spans_format_prints_the_tree(tmp_path: Path) -> None:
    db = tmp_path / "run.db"
    await record_run(db)
    done = cli("export", str(db), "--run", "otel-run", "--format", "spans")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run otel-run  +0.0 ms")
    assert "  executor chores  " in done.stdout
    failed = [line for line in lines if "ERROR: RuntimeError: chore 3 broke" in line]
    assert len(failed) == 2 and failed[0].startswith("    ChoreDenied ")  # event, attempt
    assert any("[queued, denied]" in line for line in lines)
    assert any("ERROR: dead letter: recipient_unknown" in line for line in lines)
