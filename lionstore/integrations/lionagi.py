"""Durable model calls for lionagi's ``iModel`` (the ``lionstore[lionagi]`` extra).

lionagi's iModel sends every API call through its executor (``imodel.executor``):
``pile.ainclude(call)``, ``processor.enqueue(call)``, ``processor.process()``, then
``pile.pop(call.id)``. :func:`durable` replaces that executor with one that keeps the
same calls in a lionstore executor, so each call is a run of records: its request
(secrets redacted), its claim, and its outcome (response, usage, duration, status,
error). Such a run can be shown, verified, timelined and forked like any other.

::

    async with lionstore.open("calls.db", run="batch-1"):
        model = durable(iModel(provider="openai", model="gpt-4.1-mini"))
        call = await model.invoke(messages=[{"role": "user", "content": "hi"}])

What a call records:

* ``event.appended``: a :class:`ModelCall` with provider, endpoint, model, the
  payload and the headers, every secret (``Authorization``, API-key headers and
  fields) replaced by ``"[redacted]"`` before the record is encoded.
* ``event.queued``, ``event.claimed`` (the limiter's grant), ``event.deferred``
  (the limiter's wait, with when it ends), ``event.finished`` (the response as
  JSON, ``usage`` in the fields, the duration, the error).
* ``pile.pop(call.id)``, as iModel does after every call, releases the call from
  the working pile (``event.released``, written by a task the pop schedules): the
  log keeps every record of the call.

A call that was in flight when its process died is claimed again once its lease
(``lease_seconds``) expires, and rebuilt from its recorded payload with the
current iModel's endpoint (whose key the process supplies): at most
``max_attempts`` sends in all. A finished call is never sent again.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from lionstore.domain.event import Event, EventStatus
from lionstore.domain.ids import IDType, to_id
from lionstore.log.store import Store
from lionstore.processing.executor import Executor
from lionstore.processing.processor import Processor

__all__ = [
    "DurableAPIExecutor",
    "ModelCall",
    "ModelCallError",
    "RateLimitedModelProcessor",
    "durable",
    "redact",
]

REDACTED = "[redacted]"
_SECRET_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "api_key",
        "apikey",
        "x-api-key",
        "x-goog-api-key",
        "openai-api-key",
        "anthropic-api-key",
        "secret",
        "client_secret",
        "access_token",
        "refresh_token",
        "password",
    }
)


def _is_secret(name: str) -> bool:
    key = name.lower().replace("_", "-")
    return (
        key in _SECRET_NAMES
        or name.lower() in _SECRET_NAMES
        or key.endswith(("-api-key", "-secret"))
    )


def redact(value: Any) -> Any:
    """``value`` with every secret-named key's value replaced by ``"[redacted]"``
    (recursively through dicts and lists). The input is not changed."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _is_secret(k) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _json_data(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class ModelCallError(Exception):
    """The model call ended FAILED (its endpoint's error is the message)."""


# Live lionagi calls (APICalling) by lionstore id; and, by executor name, how to
# rebuild a call from its record (a call resumed in another process).
_LIVE: dict[IDType, Any] = {}
_FACTORIES: dict[str, Callable[[ModelCall], Any]] = {}
_STREAM_STARTED: dict[IDType, float] = {}


class ModelCall(Event):
    """One lionagi API call as lionstore records it (secrets redacted)."""

    route: str = ""
    provider: str = ""
    endpoint: str = ""
    model: str = ""
    payload: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    streamed: bool = False
    required_tokens: int | None = None
    usage: dict[str, Any] | None = None

    @property
    def request(self) -> dict[str, Any]:
        return {"required_tokens": self.required_tokens}

    @classmethod
    def wrap(cls, call: Any, route: str) -> ModelCall:
        """A ModelCall for a lionagi ``APICalling`` (same id), kept live for invoking."""
        endpoint = getattr(call, "endpoint", None)
        config = getattr(endpoint, "config", None)
        payload = dict(getattr(call, "payload", {}) or {})
        try:
            required = call.request.get("required_tokens")
        except Exception:  # a token count that needs what is not here: no count
            required = None
        event = cls(
            id=to_id(call.id),
            route=route,
            provider=str(getattr(config, "provider", "") or ""),
            endpoint=str(getattr(config, "endpoint", "") or ""),
            model=str(payload.get("model", "") or ""),
            payload=_json_data(redact(payload)),
            headers=_json_data(redact(dict(getattr(call, "headers", {}) or {}))),
            streamed=bool(payload.get("stream")),
            required_tokens=required if isinstance(required, int) else None,
        )
        _LIVE[event.id] = call
        return event

    def lionagi_call(self) -> Any:
        """The live lionagi call (rebuilt from the record if this process has none)."""
        call = _LIVE.get(self.id)
        if call is None:
            factory = _FACTORIES.get(self.route)
            if factory is None:
                raise ModelCallError(
                    f"no durable iModel named {self.route!r} in this process to resend "
                    f"call {self.id}"
                )
            call = _LIVE[self.id] = factory(self)
        return call

    async def _invoke(self) -> Any:
        call = self.lionagi_call()
        if call.status != EventStatus.PENDING.value:
            _reset(call)  # an attempt after a crash: send it again
        await call.invoke()
        return self._take_outcome(call)

    def _take_outcome(self, call: Any) -> Any:
        status = getattr(call.status, "value", call.status)
        response = call.execution.response
        if isinstance(response, dict) and isinstance(response.get("usage"), dict):
            self.usage = _json_data(response["usage"])
        if status != "completed":
            raise ModelCallError(str(call.execution.error or f"the call ended {status}"))
        return _json_data(response)


def _reset(call: Any) -> None:
    from lionagi.protocols.generic.event import EventStatus as LionagiStatus

    call.execution.status = LionagiStatus.PENDING
    call.execution.response = None
    call.execution.error = None


class RateLimitedModelProcessor(Processor):
    """lionagi's rate limits (requests and tokens per ``interval``), as decisions in
    the log: a grant is the call's ``event.claimed`` record (``at_us``), a wait its
    ``event.deferred`` record (with when it is looked at again). The window is
    sliding and rebuilt from the log on the first cycle of a process, so a
    restarted process counts the grants made before it and does not burst past the
    limit. Tokens count the call's ``required_tokens`` (lionagi computes them only
    when its endpoint ``requires_tokens``)."""

    event_type: ClassVar[type[Event]] = ModelCall

    def __init__(
        self,
        queue_capacity: int,
        capacity_refresh_time: float,
        concurrency_limit: int | None = None,
        max_queue_size: int = 0,
        *,
        interval: float | None = None,
        limit_requests: int | None = None,
        limit_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            queue_capacity, capacity_refresh_time, concurrency_limit, max_queue_size, **kwargs
        )
        self.interval = float(interval or capacity_refresh_time)
        self.limit_requests = limit_requests
        self.limit_tokens = limit_tokens
        self._grants: collections.deque[tuple[int, int]] | None = None  # (at_us, tokens)

    async def _window(self) -> collections.deque[tuple[int, int]]:
        if self._grants is None:
            repo = self._require_repo()
            since = repo.store.now_us() - int(self.interval * 1_000_000)
            grants: list[tuple[int, int]] = []
            async for record in await repo.store.read(kinds=["event.claimed"]):
                data: Any = record.data
                if repo.state.knows(record.stream_id) and data.at_us > since:
                    event = repo.state.pile._items.get(record.stream_id)
                    tokens = getattr(event, "required_tokens", None) or 0
                    grants.append((data.at_us, tokens))
            self._grants = collections.deque(sorted(grants))
        return self._grants

    async def request_permission(self, required_tokens: int | None = None, **kwargs: Any) -> bool:
        if self.limit_requests is None and self.limit_tokens is None:
            return True
        window = await self._window()
        now = self._require_repo().store.now_us()
        horizon = now - int(self.interval * 1_000_000)
        while window and window[0][0] <= horizon:
            window.popleft()
        tokens = required_tokens or 0
        if self.limit_requests is not None and len(window) >= self.limit_requests:
            return False
        if self.limit_tokens is not None and tokens:
            used = sum(t for _, t in window)
            if used + tokens > self.limit_tokens:
                return False
        window.append((now, tokens))
        return True


class ModelCallExecutor(Executor):
    processor_type: ClassVar[type[Processor]] = RateLimitedModelProcessor


class _Pile:
    """What iModel uses of its executor's pile: ``ainclude``, ``pop``, ``in``."""

    def __init__(self, owner: DurableAPIExecutor) -> None:
        self._owner = owner

    async def ainclude(self, call: Any) -> None:
        await self._owner._include(call, record=False)

    def include(self, call: Any) -> None:
        raise TypeError("use `await pile.ainclude(call)`: recording a call is asynchronous")

    def pop(self, ref: Any, default: Any = ...) -> Any:
        return self._owner._pop(ref, default)

    def __contains__(self, ref: Any) -> bool:
        try:
            return to_id(getattr(ref, "id", ref)) in self._owner.executor
        except Exception:
            return False

    def __len__(self) -> int:
        return len(self._owner.executor.pile)

    def __getitem__(self, ref: Any) -> Any:
        return self._owner.executor.pile[to_id(getattr(ref, "id", ref))]


class _Pending:
    """iModel takes its call out of pending (``exclude``): calls here are queued
    directly by ``processor.enqueue``, so there is nothing to take out."""

    def __init__(self, owner: DurableAPIExecutor) -> None:
        self._owner = owner

    def exclude(self, ref: Any) -> None:
        return None

    def __len__(self) -> int:
        return len(self._owner.executor.pending)


class _ProcessorView:
    """What iModel uses of its executor's processor."""

    def __init__(self, owner: DurableAPIExecutor, processor: Processor) -> None:
        self._owner = owner
        self._processor = processor

    @property
    def _concurrency_sem(self) -> asyncio.Semaphore | None:
        return self._processor._concurrency_sem

    def is_stopped(self) -> bool:
        return self._processor.is_stopped()

    async def enqueue(self, call: Any) -> None:
        # Recorded by the next process(): appended, queued and claimed in the cycle's
        # one commit (iModel calls process() right after; nothing is sent before).
        event = await self._owner._include(call, record=False)
        if event.id not in self._owner.executor:
            self._owner._admit.setdefault(event.id, event)

    async def process(self) -> None:
        # lionagi re-drives deferred calls from a replenisher task; here the caller's
        # process() runs cycles until the queue is drained (waits are recorded).
        admit = list(self._owner._admit.values())
        self._owner._admit.clear()
        for event in admit:
            self._owner._wrapped.pop(event.id, None)
        if admit:
            await self._processor._cycle_with(forward=False, admit=admit)
        await self._processor.join()

    async def start(self) -> None:
        await self._processor.start()

    async def stop(self) -> None:
        await self._processor.stop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


class DurableAPIExecutor:
    """Stands in for lionagi's ``RateLimitedAPIExecutor`` on an iModel: the same
    calls, kept in a lionstore :class:`Executor` named ``name``."""

    def __init__(
        self,
        imodel: Any,
        *,
        store: Store | None = None,
        name: str | None = None,
        max_attempts: int = 3,
        lease_seconds: float = 300.0,
    ) -> None:
        previous = getattr(imodel, "executor", None)
        config = dict(getattr(previous, "config", {}) or {})
        self.config = config
        self.imodel = imodel
        endpoint_config = imodel.endpoint.config
        self.name = name or f"lionagi.imodel:{endpoint_config.provider}/{imodel.model_name}"
        refresh = float(config.get("capacity_refresh_time") or 1.0)
        interval = config.get("interval")
        processor_config = {
            "queue_capacity": int(config.get("queue_capacity") or 100),
            # a deferred call is looked at again within the limiter's interval
            "capacity_refresh_time": min(refresh, float(interval or refresh)),
            "concurrency_limit": config.get("concurrency_limit"),
            "interval": interval or refresh,
            "limit_requests": config.get("limit_requests"),
            "limit_tokens": config.get("limit_tokens"),
            "max_attempts": max_attempts,
            "lease_seconds": lease_seconds,
            # a finished call is recorded at once, whatever the slow ones do
            "finish_each": True,
        }
        self.executor = ModelCallExecutor(processor_config, store=store, name=self.name)
        self.pile = _Pile(self)
        self.pending = _Pending(self)
        self._view: _ProcessorView | None = None
        self._finishing: set[asyncio.Task[None]] = set()
        # calls included (iModel's pile.ainclude) and not yet recorded
        self._wrapped: dict[IDType, ModelCall] = {}
        # calls enqueued and not yet recorded: the next process() admits them
        self._admit: dict[IDType, ModelCall] = {}
        _FACTORIES[self.name] = self._rebuild

    # -- what iModel calls ----------------------------------------------------------------

    @property
    def processor(self) -> _ProcessorView | None:
        processor = self.executor.processor
        if processor is None:
            return None
        if self._view is None or self._view._processor is not processor:
            self._view = _ProcessorView(self, processor)
        return self._view

    async def start(self) -> None:
        await self.executor.start()

    async def stop(self) -> None:
        await self.flush()
        await self.executor.stop()

    async def append(self, call: Any) -> None:
        await self._include(call)

    async def forward(self) -> None:
        await self.executor.forward()

    # -- durable extras ---------------------------------------------------------------------

    async def resume(self) -> None:
        """Carry on after a crash: run every recorded call not finished yet (calls in
        flight in a dead process are taken over when their lease expires)."""
        await self.executor.start()
        assert self.executor.processor is not None
        if self.executor.pending:
            await self.executor.forward()
        await self.executor.processor.join()

    async def flush(self) -> None:
        """Wait until the outcomes and releases that synchronous calls scheduled are
        written."""
        while self._finishing:
            await asyncio.gather(*list(self._finishing))
        await self.executor.flush_released()

    # -- internals --------------------------------------------------------------------------

    async def _include(self, call: Any, *, record: bool = True) -> ModelCall:
        """The ModelCall of ``call``, recorded (appended) unless ``record`` is False:
        iModel's ``pile.ainclude`` is followed by ``processor.enqueue``, which appends
        and queues the call in one commit."""
        if isinstance(call, ModelCall):
            if record:
                await self.executor.append(call)
            return call
        event_id = to_id(call.id)
        if event_id in self.executor:
            existing = self.executor.pile[event_id]
            assert isinstance(existing, ModelCall)
            _LIVE.setdefault(event_id, call)
            return existing
        event = self._wrapped.get(event_id)
        if event is None:
            event = self._wrapped[event_id] = ModelCall.wrap(call, self.name)
        if event.streamed:
            # iModel.stream consumes the call itself, outside the processor: the call
            # is recorded and claimed now (in flight, under a lease), finished at its pop.
            self._wrapped.pop(event_id, None)
            await self.executor.append(event)
            await self._claim_for_stream(event)
        elif record:
            self._wrapped.pop(event_id, None)
            await self.executor.append(event)
        return event

    async def _claim_for_stream(self, event: ModelCall) -> None:
        await self.executor.start()
        processor = self.executor.processor
        assert processor is not None
        repo = self.executor._repo
        processor._cycle += 1
        await repo.claim(
            [event.id],
            [],
            queue_first=[event.id],
            owner=processor.owner,
            lease_seconds=processor.lease_seconds,
            cycle=processor._cycle,
            backoff=processor._backoff,
            seen=repo.state.position,
        )
        _STREAM_STARTED[event.id] = time.perf_counter()

    def _pop(self, ref: Any, default: Any) -> Any:
        event_id = to_id(getattr(ref, "id", ref))
        call = _LIVE.pop(event_id, None)
        wrapped = self._wrapped.pop(event_id, None)  # included, never enqueued
        if wrapped is not None and call is None:
            call = wrapped
        if event_id not in self.executor:
            if default is ...:
                raise KeyError(event_id)
            return default if call is None else call
        event = self.executor.pile[event_id]
        if isinstance(event, ModelCall) and event.status == EventStatus.PROCESSING:
            if call is not None and event.streamed:
                self._schedule(self._finish_stream(event, call))
            return call if call is not None else event
        self.executor._release_now([event_id])
        return call if call is not None else event

    def _schedule(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish_stream(self, event: ModelCall, call: Any) -> None:
        from lionstore.repositories.executor import Outcome

        repo = self.executor._repo
        status = getattr(call.status, "value", call.status)
        error = None if status == "completed" else str(call.execution.error or status)
        response = call.execution.response
        duration = call.execution.duration
        started = _STREAM_STARTED.pop(event.id, time.perf_counter())
        await repo.finish(
            [
                Outcome(
                    event_id=event.id,
                    attempt=repo.state.attempts.get(event.id, 1),
                    claim_version=repo.state.versions[event.id],
                    status=EventStatus.COMPLETED if error is None else EventStatus.FAILED,
                    duration=duration
                    if isinstance(duration, float)
                    else time.perf_counter() - started,
                    response=_json_data(response),
                    error=error,
                    fields=None,
                )
            ]
        )
        self.executor._release_now([event.id])
        await self.executor.flush_released()

    def _rebuild(self, event: ModelCall) -> Any:
        from lionagi.service.connections.api_calling import APICalling

        endpoint = self.imodel.endpoint
        request = {k: v for k, v in event.payload.items() if v != REDACTED}
        payload, headers = endpoint.create_payload(request=request)
        return APICalling(
            id=uuid.UUID(event.id), payload=payload, headers=headers, endpoint=endpoint
        )


def durable(
    imodel: Any,
    *,
    store: Store | None = None,
    name: str | None = None,
    max_attempts: int = 3,
    lease_seconds: float = 300.0,
) -> Any:
    """Make a lionagi ``iModel`` durable: its API calls go through a lionstore
    executor (``name``, by default ``lionagi.imodel:<provider>/<model>``) in
    ``store`` (default: the ambient store). Returns the same iModel."""
    imodel.executor = DurableAPIExecutor(
        imodel, store=store, name=name, max_attempts=max_attempts, lease_seconds=lease_seconds
    )
    return imodel
