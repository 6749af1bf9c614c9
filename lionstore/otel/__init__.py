"""OpenTelemetry for lionstore runs (``pip install "lionstore[otel]"``).

* :func:`instrument`: live spans for every invocation, spans for mail, and metrics,
  through the application's tracer and meter providers.
* :func:`recorded_spans` / :func:`export_run`: a recorded run, even one recorded with
  no tracing at all, as the same kind of spans, with times from the log and ids
  derived from the run (a second export sends the same ids).

:mod:`lionstore.otel.recorded` needs no OpenTelemetry package; the rest imports it
when called and raises :class:`OtelMissingError` when it is not installed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from lionstore.otel._attrs import Redactor, make_redactor, span_id_for, trace_id_for
from lionstore.otel.export import OtelMissingError, otlp_json, send_otlp, to_sdk_spans
from lionstore.otel.live import Instrumentation, instrument
from lionstore.otel.recorded import (
    SpanEvent,
    SpanRecord,
    format_tree,
    recorded_spans,
    spans_from_records,
)

__all__ = [
    "Instrumentation",
    "OtelMissingError",
    "Redactor",
    "SpanEvent",
    "SpanRecord",
    "export_run",
    "format_tree",
    "instrument",
    "make_redactor",
    "otlp_json",
    "recorded_spans",
    "send_otlp",
    "span_id_for",
    "spans_from_records",
    "to_sdk_spans",
    "trace_id_for",
]


async def export_run(
    target: str | os.PathLike[str],
    run: str | None = None,
    *,
    endpoint: str | None = None,
    redact: Redactor | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, list[Any]]:
    """Read run ``run`` (default: the newest) of the database at ``target`` (read-only)
    and send it to the OTLP/HTTP ``endpoint``; return the run id and the SDK spans."""
    import lionstore

    async with lionstore.open(target, readonly=True) as store:
        spans = await recorded_spans(store, run, redact=redact)
    run_id = str(spans[0].attributes["lionstore.run.id"])
    sdk_spans = to_sdk_spans(run_id, spans)
    await asyncio.to_thread(send_otlp, sdk_spans, endpoint, headers=headers)
    return run_id, sdk_spans
