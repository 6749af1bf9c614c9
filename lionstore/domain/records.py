"""Record types: what the log holds.

A record is a frozen pydantic model naming its ``kind`` (``"event.claimed"``) and
``kind_version``. Record kinds register themselves when their class is defined;
together they form a union discriminated by ``kind`` (the ``kind`` column of the
log, not a JSON field, so the stored JSON is only the data).

Decoding is lenient on purpose: a record whose kind this code does not know, or
whose version is newer than this code, comes back as :class:`UnknownRecord`
carrying its raw JSON data. Nothing in the log is ever dropped or fatal to read.
Older versions pass through registered upcasters first (see :func:`register_upcaster`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError

from lionstore.domain.ids import IDType, to_id
from lionstore.errors import RecordError, RecordTooLargeError

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "MAX_JSON_DEPTH",
    "NewRecord",
    "Recorded",
    "RecordData",
    "RunStarted",
    "UnknownRecord",
    "decode_data",
    "encode_data",
    "encode_records",
    "kind_class",
    "record_kinds",
    "register_upcaster",
]

DEFAULT_MAX_RECORD_BYTES = 1 << 20  # 1 MiB of JSON per record
MAX_JSON_DEPTH = 128
"""How deeply a record's JSON may nest (arrays and objects, the record's own object
included). Appends refuse deeper data with :class:`RecordError`; every reader reads
anything within it (pydantic's JSON parser stops at about 200 levels, Python's
``json`` module at the interpreter's recursion limit), so whatever lionstore
writes it reads back."""

_KINDS: dict[str, type[RecordData]] = {}
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}
_MODEL_DUMP_JSON = BaseModel.model_dump_json


class RecordData(BaseModel):
    """Base of every record kind. Subclasses set ``kind`` and ``kind_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    kind: ClassVar[str] = ""
    kind_version: ClassVar[int] = 1

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind:
            other = _KINDS.get(kind)
            if other is not None and other.__qualname__ != cls.__qualname__:
                raise TypeError(f"record kind {kind!r} is already defined by {other.__qualname__}")
            _KINDS[kind] = cls


class UnknownRecord(BaseModel):
    """A record this code cannot interpret: an unknown kind or a newer kind_version."""

    model_config = ConfigDict(frozen=True)

    kind: str
    kind_version: int
    raw: Any


def record_kinds() -> dict[str, type[RecordData]]:
    """Every known record kind, by name."""
    return dict(_KINDS)


def kind_class(kind: str) -> type[RecordData] | None:
    """The class of record kind ``kind``, or None when this code does not know it
    (:func:`record_kinds` without copying them all)."""
    return _KINDS.get(kind)


def register_upcaster(kind: str, from_version: int, upcaster: Upcaster) -> None:
    """Register a function turning ``kind`` data at ``from_version`` into ``from_version + 1``.

    An upcaster takes the stored JSON (parsed) and returns the next version's JSON;
    it must be pure (no I/O) since it runs on every read of an old record. Chains
    run in order (v1 -> v2 -> v3). The stored bytes never change: digests and
    archives keep covering what was written.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError("kind must be a non-empty string")
    if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
        raise ValueError(f"from_version must be an int >= 1, not {from_version!r}")
    if not callable(upcaster):
        raise TypeError("upcaster must be callable")
    _UPCASTERS[(kind, from_version)] = upcaster


def encode_data(data: RecordData, max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> str:
    """The JSON text stored for ``data``. Raises :class:`RecordError` before anything is written."""
    if not isinstance(data, RecordData) or not data.kind:
        raise TypeError(f"expected a RecordData with a kind, got {type(data).__name__}")
    size: int | None = None  # None: not known yet
    try:
        if type(data).model_dump_json is _MODEL_DUMP_JSON:
            text, size = _to_json(data)
        else:  # a kind that overrides model_dump_json gets its own
            text = data.model_dump_json()
    except (PydanticSerializationError, ValueError, RecursionError) as exc:
        raise RecordError(f"{data.kind}: data is not JSON-serializable: {exc}") from None
    if (
        size is None
        or ("N" in text and "NaN" in text)
        or ("I" in text and "Infinity" in text)
        or size > max_bytes
    ):
        _check_encoded(text, size, data.kind, max_bytes)
    _check_depth(text, data.kind)
    return text


def _to_json(data: RecordData) -> tuple[str, int]:
    """What ``data.model_dump_json()`` returns with its default arguments (without its
    Python-level wrapper, which costs as much again on a small record), and its size
    in bytes."""
    raw = data.__pydantic_serializer__.to_json(data)
    return raw.decode(), len(raw)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply the JSON ``text`` nests (0 for a scalar). Linear, in C loops."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _check_depth(text: str, kind: str) -> None:
    """Refuse JSON nested deeper than :data:`MAX_JSON_DEPTH`. Counting the opening
    brackets (memchr-fast) settles it for nearly every record; only a text with more
    of them than the limit is measured."""
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        depth = json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise RecordError(
                f"{kind}: data is nested {depth} levels deep, over the limit of {MAX_JSON_DEPTH}"
            )


def _check_encoded(text: str, size: int | None, kind: str, max_bytes: int) -> None:
    """Refuse JSON that holds NaN or infinities, or is over ``max_bytes`` bytes (``size``,
    or None to measure ``text``).

    Callers may skip it when ``text`` has neither "NaN" nor "Infinity" in it and
    ``size`` is within the limit: the one-character tests before the substring
    searches (memchr) spare those for most texts.
    """
    if "NaN" in text or "Infinity" in text:
        _reject_non_finite(text, kind)
    if size is None:
        size = len(text.encode()) if len(text) > max_bytes // 4 else 0
    if size > max_bytes:
        raise RecordTooLargeError(
            f"{kind}: {size} bytes of JSON is over the {max_bytes}-byte limit"
        )


def encode_records(
    records: Iterable[NewRecord | tuple[Any, RecordData]], max_bytes: int
) -> list[tuple[IDType, str, int, str, RecordData]]:
    """``(stream_id, kind, kind_version, json, data)`` for each record to append.

    Each record is a :class:`NewRecord` (its ``encoded`` JSON, when given, is taken
    as it is) or a ``(stream_id, data)`` pair; the data is checked and encoded as
    :func:`encode_data` does. Raises on the first bad record.
    """
    rows: list[tuple[IDType, str, int, str, RecordData]] = []
    add = rows.append
    checked: type | None = None  # the class of the last data checked (all checks pass)
    plain = True  # ... and whether it keeps pydantic's model_dump_json
    for item in records:
        if type(item) is tuple and len(item) == 2:  # the common case, tested first
            stream, data = item
        elif isinstance(item, NewRecord):
            stream, data = item.stream_id, item.data
            if item.encoded is not None:
                add((to_id(stream), data.kind, data.kind_version, item.encoded, data))
                continue
        elif isinstance(item, tuple) and len(item) == 2:
            stream, data = item
        else:
            raise TypeError(
                f"append takes NewRecord or (stream_id, data) pairs, not {type(item).__name__}"
            )
        sid = stream if type(stream) is IDType else to_id(stream)
        cls = type(data)
        if cls is not checked:  # the class decides these; records often come in runs
            if not isinstance(data, RecordData):
                raise TypeError(f"record data must be a RecordData, not {cls.__name__}")
            plain = cls.model_dump_json is _MODEL_DUMP_JSON
            checked = cls
        kind = data.kind
        if not kind:
            raise TypeError(f"expected a RecordData with a kind, got {cls.__name__}")
        if plain:
            try:
                raw = data.__pydantic_serializer__.to_json(data)
                text = raw.decode()
            except (PydanticSerializationError, ValueError, RecursionError) as exc:
                raise RecordError(f"{kind}: data is not JSON-serializable: {exc}") from None
            size = len(raw)
            if (
                ("N" in text and "NaN" in text)
                or ("I" in text and "Infinity" in text)
                or size > max_bytes
            ):
                _check_encoded(text, size, kind, max_bytes)
            _check_depth(text, kind)
        else:
            text = encode_data(data, max_bytes)
        add((sid, kind, data.kind_version, text, data))
    return rows


def _reject_non_finite(text: str, kind: str) -> None:
    def refuse(constant: str) -> Any:
        raise RecordError(f"{kind}: data contains {constant}, which JSON cannot hold")

    json.loads(text, parse_constant=refuse)


def decode_data(kind: str, kind_version: int, text: str) -> RecordData | UnknownRecord:
    """Decode stored JSON into its record model, upcasting older versions."""
    cls = _KINDS.get(kind)
    if cls is None or kind_version > cls.kind_version:
        return UnknownRecord(kind=kind, kind_version=kind_version, raw=_loads(text))
    if kind_version == cls.kind_version:
        try:
            return cls.model_validate_json(text)
        except ValidationError:
            return UnknownRecord(kind=kind, kind_version=kind_version, raw=_loads(text))
    stored = _loads(text)
    data = stored
    try:
        for version in range(kind_version, cls.kind_version):
            upcast = _UPCASTERS.get((kind, version))
            if upcast is None:
                return UnknownRecord(kind=kind, kind_version=kind_version, raw=stored)
            data = upcast(data)
        return cls.model_validate(data)
    except (ValidationError, TypeError, ValueError, KeyError, AttributeError):
        # Old data an upcaster cannot make sense of is kept, never dropped or fatal.
        return UnknownRecord(kind=kind, kind_version=kind_version, raw=stored)


def _loads(text: str) -> Any:
    """The parsed JSON, or the text itself when it is not JSON or nests too deeply
    for Python's parser (a hostile file: one record's problem, never a crash)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to append: the stream it is about and its data (``encoded``: its JSON,
    when the caller already produced it with :func:`encode_data`)."""

    stream_id: IDType
    data: RecordData
    encoded: str | None = None


class Recorded(NamedTuple):
    """A record as stored in the log (a named tuple: a replay builds millions)."""

    position: int
    run_id: IDType
    stream_id: IDType
    stream_version: int
    kind: str
    kind_version: int
    data: RecordData | UnknownRecord
    recorded_at_us: int
    raw: str
    digest: str = ""

    @property
    def recorded_at(self) -> datetime:
        """When the record was committed, in UTC."""
        return datetime.fromtimestamp(self.recorded_at_us / 1_000_000, UTC)

    @property
    def upcast(self) -> bool:
        """True when the record was stored at an older ``kind_version`` and ``data`` is
        its upcast to the current shape."""
        data = self.data
        return isinstance(data, RecordData) and self.kind_version < data.kind_version

    def data_json(self) -> Any:
        """The data, JSON-ready, in the current shape of its kind: the stored JSON, or
        for a record stored at an older ``kind_version`` its upcast (``raw`` keeps
        the stored text, which the digest covers)."""
        if self.upcast:
            assert isinstance(self.data, RecordData)
            return self.data.model_dump(mode="json")
        return _loads(self.raw)

    def to_json_dict(self) -> dict[str, Any]:
        """The record as the CLI's ``--json`` prints it: ``data`` in the current shape,
        ``kind_version`` the version it was stored at."""
        return {
            "position": self.position,
            "stream_id": self.stream_id,
            "stream_version": self.stream_version,
            "run_id": self.run_id,
            "kind": self.kind,
            "kind_version": self.kind_version,
            "data": self.data_json(),
            "recorded_at": self.recorded_at.isoformat(),
        }


class RunStarted(RecordData):
    """First record of every run (its stream is the run id)."""

    kind: ClassVar[str] = "run.started"
    label: str | None = None
    parent_run_id: IDType | None = None
    forked_at_position: int | None = None
