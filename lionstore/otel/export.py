"""Recorded spans as OpenTelemetry SDK spans, sent over OTLP/HTTP or written as OTLP JSON.

Uses the official packages (``pip install "lionstore[otel]"``): the SDK's
``ReadableSpan`` carries our derived ids and the log's times, the OTLP exporter
sends them, and the OTLP protobuf encoder gives the JSON form (the protobuf JSON
mapping, as ``opentelemetry-collector``'s file exporter writes it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lionstore._version import __version__
from lionstore.errors import LionstoreError
from lionstore.otel._attrs import span_id_for, trace_id_for
from lionstore.otel.recorded import SpanRecord

__all__ = ["OtelMissingError", "otlp_json", "send_otlp", "to_sdk_spans"]

SCOPE = "lionstore"
SERVICE = "lionstore"


class OtelMissingError(LionstoreError, ImportError):
    """The OpenTelemetry packages are not installed (``pip install "lionstore[otel]"``)."""


def _require() -> Any:
    try:
        from opentelemetry.sdk import trace as sdk_trace
    except ImportError as exc:
        raise OtelMissingError(
            'OpenTelemetry is not installed: pip install "lionstore[otel]"'
        ) from exc
    return sdk_trace


def to_sdk_spans(
    run_id: str, spans: Sequence[SpanRecord], *, service_name: str = SERVICE
) -> list[Any]:
    """The spans as ``opentelemetry.sdk.trace.ReadableSpan`` objects, with ids derived
    from ``run_id`` and each span's key, and the log's times."""
    sdk_trace = _require()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    trace_id = trace_id_for(run_id)
    resource = Resource.create({"service.name": service_name})
    scope = InstrumentationScope(SCOPE, __version__)
    flags = TraceFlags(TraceFlags.SAMPLED)

    def context(key: str) -> Any:
        return SpanContext(trace_id, span_id_for(run_id, key), is_remote=False, trace_flags=flags)

    out = []
    for span in spans:
        status = (
            Status(StatusCode.ERROR, span.error)
            if span.error is not None
            else Status(StatusCode.OK)
        )
        out.append(
            sdk_trace.ReadableSpan(
                name=span.name,
                context=context(span.key),
                parent=context(span.parent) if span.parent is not None else None,
                resource=resource,
                attributes=span.attributes,
                events=[
                    sdk_trace.Event(e.name, e.attributes, timestamp=e.time_ns) for e in span.events
                ],
                kind=SpanKind.INTERNAL,
                status=status,
                start_time=span.start_ns,
                end_time=span.end_ns,
                instrumentation_scope=scope,
            )
        )
    return out


def otlp_json(sdk_spans: Sequence[Any]) -> str:
    """The spans as one OTLP ``ExportTraceServiceRequest`` in protobuf's JSON mapping."""
    _require()
    from google.protobuf import json_format
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    text: str = json_format.MessageToJson(encode_spans(sdk_spans), indent=None)
    return text


def send_otlp(
    sdk_spans: Sequence[Any],
    endpoint: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> None:
    """Send the spans to an OTLP/HTTP endpoint (``http://host:4318/v1/traces``; default:
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` as the
    exporter reads them). Raises :class:`LionstoreError` when the endpoint refuses
    them or cannot be reached."""
    _require()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    shown = (
        endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    )
    exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout)
    try:
        # One request per batch of 512, as the SDK's batch processor sends them.
        for start in range(0, len(sdk_spans), 512):
            result = exporter.export(list(sdk_spans[start : start + 512]))
            if result is not SpanExportResult.SUCCESS:
                raise LionstoreError(f"{shown}: the OTLP endpoint did not accept the spans")
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
