"""A real OTLP/HTTP endpoint on 127.0.0.1 that decodes what it receives.

It speaks the protocol as a collector does: POST /v1/traces and /v1/metrics with a
protobuf ``Export*ServiceRequest`` body (gzip or not), answered with an empty
``Export*ServiceResponse``. Decoding uses ``opentelemetry-proto``, so a request the
SDK's exporter could not have meant fails here as it would at a real collector.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass
class Sink:
    url: str
    requests: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def spans(self) -> list[Any]:
        """Every span received, flattened, with its resource attributes dropped."""
        out = []
        with self.arrived:
            for request in self.requests:
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        out.extend(scope_spans.spans)
        return out

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> None:
        with self.arrived:
            if not self.arrived.wait_for(predicate, timeout):
                raise AssertionError(f"the OTLP endpoint did not receive it within {timeout} s")


def attrs(span_or_event: Any) -> dict[str, Any]:
    """An OTLP span's (or span event's) attributes as a plain dict."""
    out: dict[str, Any] = {}
    for kv in span_or_event.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = getattr(value, kind) if kind is not None else None
    return out


@contextmanager
def otlp_sink() -> Iterator[Sink]:
    sink: Sink

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                request: Any = trace_service_pb2.ExportTraceServiceRequest()
                answer: Any = trace_service_pb2.ExportTraceServiceResponse()
                bucket = sink.requests
            elif self.path == "/v1/metrics":
                request = metrics_service_pb2.ExportMetricsServiceRequest()
                answer = metrics_service_pb2.ExportMetricsServiceResponse()
                bucket = sink.metrics
            else:
                self.send_error(404)
                return
            request.ParseFromString(body)
            payload = answer.SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            with sink.arrived:
                bucket.append(request)
                sink.arrived.notify_all()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink = Sink(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
