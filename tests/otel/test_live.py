"""Live spans and metrics, through the SDK, to a real OTLP/HTTP endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import lionstore
from lionstore import Exchange, Executor, IDType, _hooks
from lionstore.otel import instrument

from .otel_run import CONFIG, Agent, ChatCall, Chore
from .otlp_sink import Sink, attrs, otlp_sink


class Providers:
    def __init__(self, sink: Sink) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{sink.url}/v1/traces"))
        )
        self.reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{sink.url}/v1/metrics"),
            export_interval_millis=3_600_000,  # exported when the test flushes
        )
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("test")

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def sink() -> Iterator[Sink]:
    with otlp_sink() as s:
        yield s


@pytest.fixture
def providers(sink: Sink) -> Iterator[Providers]:
    p = Providers(sink)
    yield p
    p.shutdown()


def metric_points(sink: Sink) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for request in sink.metrics:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    out.setdefault(metric.name, []).extend(getattr(metric, kind).data_points)
    return out


async def test_invocations_are_children_of_the_span_current_at_append(
    tmp_path: Path, sink: Sink, providers: Providers
) -> None:
    async with lionstore.open(tmp_path / "live.db", run="live") as store:
        with instrument(
            tracer_provider=providers.tracer_provider, meter_provider=providers.meter_provider
        ):
            executor = Executor(CONFIG, name="jobs")
            await executor.start()
            with providers.tracer.start_as_current_span("agent turn"):
                appended = [Chore(n=1), Chore(n=2, fail=True)]
                await executor.extend(appended)
            with providers.tracer.start_as_current_span("forwarding"):
                late = Chore(n=3)
                await executor.append(late)  # appended under "forwarding"
                await asyncio.wait_for(executor.forward(), 30)
            with providers.tracer.start_as_current_span("model turn"):
                call = ChatCall(payload={"model": "tiny-model-2026", "messages": []})
                await executor.append(call)
                await asyncio.wait_for(executor.forward(), 30)
            executor.close()
        run_id = str(store.run_id)
    assert not _hooks.invocation_observers and not _hooks.commit_observers  # close() undid it
    providers.tracer_provider.force_flush()
    sink.wait_for(lambda: len(sink.spans()) >= 7)
    spans = sink.spans()
    by_id = {s.span_id: s for s in spans}
    invokes = {attrs(s)["lionstore.event.id"]: s for s in spans if s.name.endswith(" invoke")}
    assert set(invokes) == {str(e.id) for e in [*appended, late, call]}
    for event, parent in [
        (appended[0], "agent turn"),
        (appended[1], "agent turn"),
        (late, "forwarding"),
        (call, "model turn"),
    ]:
        span = invokes[str(event.id)]
        assert by_id[span.parent_span_id].name == parent
        a = attrs(span)
        assert a["lionstore.executor"] == "jobs"
        assert a["lionstore.attempt"] == 1
    ok, failed = invokes[str(appended[0].id)], invokes[str(appended[1].id)]
    assert attrs(ok)["lionstore.status"] == "completed"
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
    assert failed.status.message == "RuntimeError: chore 2 broke"
    model = attrs(invokes[str(call.id)])
    assert model["gen_ai.request.model"] == "tiny-model-2026"
    assert model["gen_ai.usage.output_tokens"] == 7
    assert run_id  # the run the spans belong to is in the log, not lost


async def test_mail_spans_and_metrics(tmp_path: Path, sink: Sink, providers: Providers) -> None:
    async with lionstore.open(tmp_path / "live.db", run="live") as store:
        instrumentation = instrument(
            store,
            tracer_provider=providers.tracer_provider,
            meter_provider=providers.meter_provider,
        )
        try:
            executor = Executor(CONFIG, name="jobs")
            await executor.start()
            await executor.extend([Chore(n=1), Chore(n=2, fail=True), Chore(n=3)])
            await asyncio.wait_for(executor.forward(), 30)
            executor.close()
            alice, bob = Agent(name="alice"), Agent(name="bob")
            exchange = Exchange([alice, bob], name="post")
            await exchange.add_source([alice, bob])
            await alice.send(exchange.create_mail(alice, bob, "message", "hi"))
            await alice.send(exchange.create_mail(alice, IDType.create(), "message", "lost"))
            await exchange.collect_all()
            await exchange.deliver_all()
            providers.meter_provider.force_flush()
        finally:
            instrumentation.close()
    providers.tracer_provider.force_flush()
    sink.wait_for(lambda: bool(sink.metrics))
    names = [s.name for s in sink.spans()]
    assert names.count("mail.send") == 2
    assert names.count("mail.collect") == 1  # the mail to nobody is dead-lettered at collection
    assert names.count("mail.deliver") == 1
    (dead,) = [s for s in sink.spans() if s.name == "mail.dead_letter"]
    assert dead.status.code == dead.status.STATUS_CODE_ERROR
    assert attrs(dead)["lionstore.reason"] == "recipient_unknown"

    points = metric_points(sink)
    finished = {attrs(p)["lionstore.status"]: p.as_int for p in points["lionstore.events.finished"]}
    assert finished == {"completed": 2, "failed": 1}
    assert sum(p.as_int for p in points["lionstore.mail.dead_letters"]) == 1
    assert sum(p.as_int for p in points["lionstore.mail.delivered"]) == 1
    (latency,) = points["lionstore.commit.duration"]
    assert latency.count >= 3 and latency.sum > 0
    depth = {attrs(p)["lionstore.executor"]: p.as_int for p in points["lionstore.queue.depth"]}
    assert depth == {"jobs": 0}  # everything ran
    running = points["lionstore.invocations.in_flight"]
    assert [p.as_int for p in running] == [0]


def test_nothing_is_registered_without_instrument() -> None:
    assert _hooks.invocation_observers == []
    assert _hooks.commit_observers == []


async def test_with_no_provider_configured_nothing_is_registered(tmp_path: Path) -> None:
    """OpenTelemetry's default providers make no-op spans: instrument() then registers
    no observer and follows no store, so the per-event path pays nothing."""
    async with lionstore.open(tmp_path / "live.db", run="live") as store:
        subscribers = len(store._subscribers)
        with instrument(store):
            assert _hooks.invocation_observers == []
            assert _hooks.commit_observers == []
            assert len(store._subscribers) == subscribers
