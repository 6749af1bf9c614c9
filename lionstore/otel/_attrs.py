"""Attribute helpers shared by recorded and live spans: ids, values, redaction, GenAI."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "MAX_VALUE_CHARS",
    "Redactor",
    "genai_attributes",
    "make_redactor",
    "span_id_for",
    "trace_id_for",
    "value_attr",
]

#: Longer JSON values are cut, with a marker: a trace backend is not an archive (the
#: log keeps the whole value).
MAX_VALUE_CHARS = 8192

#: ``redact(name, value)`` returns the value to export, or None to leave it out.
Redactor = Callable[[str, Any], Any]


def _digest_int(text: str, nbytes: int) -> int:
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:nbytes], "big")
    return value or 1  # all-zero ids are invalid in OpenTelemetry


def trace_id_for(run_id: str) -> int:
    """The trace id of a run: the same on every export, so a backend that sees a run
    twice de-duplicates it rather than showing a second copy."""
    return _digest_int(f"lionstore-trace:{run_id}", 16)


def span_id_for(run_id: str, key: str) -> int:
    """A span's id, from the run and what the span is about (an event's stream and
    attempt, a mail's stream, ...): stable across exports."""
    return _digest_int(f"lionstore-span:{run_id}:{key}", 8)


def value_attr(value: Any) -> str | int | float | bool:
    """An attribute value: scalars as they are, anything else as compact JSON (cut at
    :data:`MAX_VALUE_CHARS`)."""
    if isinstance(value, (str, bool, int, float)):
        text = value
    else:
        text = json.dumps(value, separators=(",", ":"), default=str, sort_keys=True)
    if isinstance(text, str) and len(text) > MAX_VALUE_CHARS:
        return text[:MAX_VALUE_CHARS] + f"...[{len(text) - MAX_VALUE_CHARS} more characters]"
    return text


def make_redactor(drop: Iterable[str] = (), redact: Redactor | None = None) -> Redactor:
    """A redactor that leaves out every attribute whose name, or whose last dotted part,
    is in ``drop`` (``"response"`` drops ``lionstore.event.response``), then applies
    ``redact``, the user's own hook."""
    dropped = frozenset(drop)

    def apply(name: str, value: Any) -> Any:
        if name in dropped or name.rsplit(".", 1)[-1] in dropped:
            return None
        return redact(name, value) if redact is not None else value

    return apply


def _first(mapping: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if mapping.get(name) is not None:
            return mapping[name]
    return None


def genai_attributes(fields: Mapping[str, Any] | None, response: Any) -> dict[str, Any]:
    """OpenTelemetry GenAI attributes for a model call, read from an event's recorded
    fields and response when they have the shape of one (an OpenAI-style request with
    a ``model`` and a response with ``usage``); empty otherwise."""
    attrs: dict[str, Any] = {}
    request: Any = None
    for candidate in (fields or {}).get("payload"), (fields or {}).get("request"), fields:
        if isinstance(candidate, Mapping) and isinstance(candidate.get("model"), str):
            request = candidate
            break
    if request is None:
        return attrs
    attrs["gen_ai.request.model"] = request["model"]
    messages = request.get("messages")
    attrs["gen_ai.operation.name"] = "chat" if messages is not None else "text_completion"
    if isinstance(request.get("max_tokens"), int):
        attrs["gen_ai.request.max_tokens"] = request["max_tokens"]
    if isinstance(request.get("temperature"), (int, float)):
        attrs["gen_ai.request.temperature"] = float(request["temperature"])
    if isinstance(response, Mapping):
        if isinstance(response.get("model"), str):
            attrs["gen_ai.response.model"] = response["model"]
        if isinstance(response.get("id"), str):
            attrs["gen_ai.response.id"] = response["id"]
        usage = response.get("usage")
        if isinstance(usage, Mapping):
            used_in = _first(usage, "input_tokens", "prompt_tokens")
            used_out = _first(usage, "output_tokens", "completion_tokens")
            if isinstance(used_in, int):
                attrs["gen_ai.usage.input_tokens"] = used_in
            if isinstance(used_out, int):
                attrs["gen_ai.usage.output_tokens"] = used_out
    return attrs
