"""Live spans and metrics, while a run is being written.

:func:`instrument` wires lionstore to the application's OpenTelemetry providers:

* **Invocation spans.** Each invocation of an event is a span (``<EventClass>
  invoke``) with the executor, event class, attempt, outcome and error. Its parent is
  the span that was current when the event was appended (``Executor.append``), or,
  failing that, when the invocation started (``forward()``'s caller, or the span
  around an ``execute()`` loop). A model call made through the lionagi integration
  also carries the GenAI attributes (operation, request model, usage tokens).
* **Mail spans.** Each mail send, collect, delivery and dead letter committed to the
  instrumented store is a short span (``mail.send``, ``mail.collect``,
  ``mail.deliver``, ``mail.dead_letter`` with status ERROR and the reason), timed by
  the record's commit time.
* **Metrics** (``lionstore.*``): queue depth and in-flight invocations (gauges per
  executor), completed / failed / abandoned events and dead letters (counters), and
  commit latency (a histogram, seconds).

Nothing is recorded through OpenTelemetry that is not also in the log; for a run
recorded without tracing, :mod:`lionstore.otel.recorded` gives the same picture
after the fact.

Cost: with nothing instrumented, the loops test one empty list per invocation and
per commit (``lionstore._hooks``). :func:`instrument` with OpenTelemetry's default
providers (the extra installed, no SDK configured) registers nothing, so it costs the
same; configure the providers before calling it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lionstore import _hooks
from lionstore.domain.event_records import (
    EventAbandoned,
    EventAppended,
    EventClaimed,
    EventDeferred,
    EventFinished,
    EventQueued,
    EventRequeued,
    EventRetried,
)
from lionstore.domain.mail_records import (
    MailCollected,
    MailDeadLettered,
    MailDelivered,
    MailPlaced,
)
from lionstore.domain.records import Recorded
from lionstore.log.store import Store, Subscription
from lionstore.otel._attrs import genai_attributes, value_attr
from lionstore.otel.export import SCOPE, _require

__all__ = ["Instrumentation", "instrument"]

log = logging.getLogger("lionstore.otel")


class _Invocations:
    """The invocation observer: one span per invocation."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import context, trace

        self._trace = trace
        self._context = context
        self._tracer = tracer
        # The context current at append, per event id, until the event is invoked.
        # Bounded: an event appended and never invoked must not hold memory forever.
        self._parents: dict[str, Any] = {}
        self._lock = threading.Lock()

    def appended(self, event: Any, executor: str) -> None:
        current = self._context.get_current()
        if self._trace.get_current_span(current).get_span_context().is_valid:
            with self._lock:
                if len(self._parents) >= 100_000:
                    self._parents.pop(next(iter(self._parents)))
                self._parents[str(event.id)] = current

    def started(self, event: Any, executor: str, attempt: int) -> Any:
        with self._lock:
            parent = self._parents.pop(str(event.id), None)
        cls = type(event)
        span = self._tracer.start_span(
            f"{cls.__name__} invoke",
            context=parent,
            attributes={
                "lionstore.event.id": str(event.id),
                "lionstore.event.class": f"{cls.__module__}.{cls.__qualname__}",
                "lionstore.executor": executor,
                "lionstore.attempt": attempt,
            },
        )
        return span, event

    def finished(self, token: Any, status: str, error: str | None, duration: float | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        span, event = token
        span.set_attribute("lionstore.status", status)
        if duration is not None:
            span.set_attribute("lionstore.duration_us", round(duration * 1_000_000))
        execution = getattr(event, "execution", None)
        response = getattr(execution, "response", None)
        fields: dict[str, Any] = {}
        for name in ("payload", "request"):
            value = getattr(event, name, None)
            if isinstance(value, dict):
                fields[name] = value
        for name, value in genai_attributes(fields, response).items():
            span.set_attribute(name, value_attr(value))
        if status in ("failed", "aborted"):
            span.set_status(Status(StatusCode.ERROR, error or status))
            if error:
                span.set_attribute("lionstore.event.error", error)
        span.end()


class _Feed:
    """Follows a store's committed records: mail spans, counters, queue gauges."""

    def __init__(self, store: Store, tracer: Any, meter: Any) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._executor_of: dict[str, str] = {}
        self._state: dict[str, str] = {}  # event id -> "pending" | "queued" | "running" | "done"
        self.depth: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self._events = meter.create_counter(
            "lionstore.events.finished", unit="{event}", description="events finished"
        )
        self._dead = meter.create_counter(
            "lionstore.mail.dead_letters", unit="{mail}", description="mail dead-lettered"
        )
        self._mail = meter.create_counter(
            "lionstore.mail.delivered", unit="{mail}", description="mail delivered"
        )
        meter.create_observable_gauge(
            "lionstore.queue.depth",
            callbacks=[self._observe_depth],
            unit="{event}",
            description="events queued, per executor",
        )
        meter.create_observable_gauge(
            "lionstore.invocations.in_flight",
            callbacks=[self._observe_running],
            unit="{event}",
            description="events being invoked (claimed, no outcome yet), per executor",
        )
        self.subscription: Subscription = store.subscribe(self._on_records)

    def _observe_depth(self, _options: Any) -> Any:
        from opentelemetry.metrics import Observation

        return [Observation(n, {"lionstore.executor": e}) for e, n in self.depth.items()]

    def _observe_running(self, _options: Any) -> Any:
        from opentelemetry.metrics import Observation

        return [Observation(n, {"lionstore.executor": e}) for e, n in self.running.items()]

    def _move(self, sid: str, to: str) -> None:
        executor = self._executor_of.get(sid)
        if executor is None:
            return
        before = self._state.get(sid)
        if before == "queued":
            self.depth[executor] -= 1
        elif before == "running":
            self.running[executor] -= 1
        if to == "queued":
            self.depth[executor] += 1
        elif to == "running":
            self.running[executor] += 1
        self._state[sid] = to

    def _mail_span(
        self, name: str, record: Recorded, attrs: dict[str, Any], error: str | None
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        at = record.recorded_at_us * 1000
        span = self._tracer.start_span(name, start_time=at, attributes=attrs)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=at)

    def _on_records(self, records: Sequence[Recorded]) -> None:
        for record in records:
            d: Any = record.data
            sid = str(record.stream_id)
            if isinstance(d, EventAppended):
                self._executor_of[sid] = d.executor
                self._move(sid, "pending")
            elif isinstance(d, (EventQueued, EventDeferred, EventRequeued)):
                self._move(sid, "queued")
            elif isinstance(d, EventClaimed):
                self._move(sid, "running")
            elif isinstance(d, EventRetried):
                self._move(sid, "pending")
            elif isinstance(d, (EventFinished, EventAbandoned)):
                status = "abandoned" if isinstance(d, EventAbandoned) else str(d.status)
                executor = self._executor_of.get(sid, "")
                self._move(sid, "done")
                self._events.add(1, {"lionstore.executor": executor, "lionstore.status": status})
            elif isinstance(d, MailPlaced):
                attrs = {
                    "lionstore.mail.id": sid,
                    "lionstore.mail.sender": str(d.sender),
                    "lionstore.mail.recipient": str(d.recipient),
                    "lionstore.mail.category": str(d.package.category),
                    "lionstore.router": d.router,
                }
                self._mail_span("mail.send", record, attrs, None)
            elif isinstance(d, MailCollected):
                self._mail_span("mail.collect", record, {"lionstore.mail.id": sid}, None)
            elif isinstance(d, MailDelivered):
                self._mail.add(1)
                self._mail_span("mail.deliver", record, {"lionstore.mail.id": sid}, None)
            elif isinstance(d, MailDeadLettered):
                self._dead.add(1, {"lionstore.reason": d.reason})
                attrs = {"lionstore.mail.id": sid, "lionstore.reason": d.reason}
                self._mail_span("mail.dead_letter", record, attrs, f"dead letter: {d.reason}")


class Instrumentation:
    """What :func:`instrument` set up; :meth:`close` takes it down again."""

    def __init__(self, invocations: _Invocations | None, feed: _Feed | None, commit: Any) -> None:
        self._invocations = invocations
        self._feed = feed
        self._commit = commit

    def close(self) -> None:
        if self._invocations in _hooks.invocation_observers:
            _hooks.invocation_observers.remove(self._invocations)
        if self._commit in _hooks.commit_observers:
            _hooks.commit_observers.remove(self._commit)
        if self._feed is not None:
            self._feed.subscription.close()

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def instrument(
    store: Store | None = None,
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Instrumentation:
    """Emit live spans and metrics through OpenTelemetry.

    Invocation spans cover every processor in the process; mail spans and the
    event metrics follow ``store`` (the ambient store when None and one is open;
    without a store, only invocation spans and commit latency). The providers
    default to OpenTelemetry's global ones (``trace.set_tracer_provider``). Returns an
    :class:`Instrumentation`; ``close()`` it (or use it as a context manager) to stop.
    """
    _require()
    from opentelemetry import metrics, trace

    from lionstore.log.store import current_store

    tracers = tracer_provider or trace.get_tracer_provider()
    meters = meter_provider or metrics.get_meter_provider()
    # Nothing configured (OpenTelemetry's default providers hand out no-op spans and
    # instruments): then nothing is registered at all, so an application that has the
    # extra but no SDK set up pays nothing. Configure the providers first.
    tracing = not isinstance(tracers, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    measuring = not isinstance(meters, metrics.NoOpMeterProvider) and (
        type(meters).__name__ != "_ProxyMeterProvider"
    )
    tracer = tracers.get_tracer(SCOPE)
    meter = meters.get_meter(SCOPE)
    on_commit = None
    if measuring:
        latency = meter.create_histogram(
            "lionstore.commit.duration",
            unit="s",
            description="time to commit one group of appends",
        )

        def on_commit(seconds: float, records: int) -> None:
            latency.record(seconds)

        _hooks.commit_observers.append(on_commit)
    invocations = None
    if tracing:
        invocations = _Invocations(tracer)
        _hooks.invocation_observers.append(invocations)
    if not (tracing or measuring):
        log.info("lionstore.otel.instrument: no tracer or meter provider is configured")
    target = store if store is not None else current_store()
    feed = _Feed(target, tracer, meter) if target is not None and (tracing or measuring) else None
    return Instrumentation(invocations, feed, on_commit)
