"""Stored record rows as :class:`~lionstore.domain.records.Recorded`, a page at a time.

Both backends select a record as ``(position, stream id, stream version, kind, kind
version, data, recorded_at_us, run number, digest)``. A database file is untrusted
input, and SQLite keeps a value of any type in any column whatever the column's
declared type: so every field a Recorded holds is checked to have its type, the
stream id to be an id's canonical text and the run number to name a run of the file.
A row that fails gives :class:`~lionstore.errors.CorruptDatabaseError` naming its
position and column, never a record with a field of the wrong type. The data's
*content* is decoded as :func:`~lionstore.domain.records.decode_data` decodes it, as
leniently: JSON of an unknown kind, of a newer version, or that does not fit its kind
gives an UnknownRecord.

Once SQLite has stepped the rows, this loop is most of what a read costs. Per row it
checks the column types, looks the run and stream ids up (one id object per stream)
and hands the JSON text to the kind's pydantic validator, as ``model_validate_json``
does but without its Python wrapper; older versions and unknown kinds go through
``decode_data``. A record whose text is the last one of its kind in the page gets that
record's value, when the kind's fields hold only immutable scalars (a frozen model, so
nothing in the shared value can change): an executor writes a cycle's claimed records
side by side with one text, and they are then validated once. The same loop decodes the
records other writers committed that a store's catch-up brings in.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from lionstore.domain.ids import IDType, canonical_id
from lionstore.domain.records import Recorded, decode_data, kind_class
from lionstore.errors import CorruptDatabaseError

__all__ = ["RowDecoder"]

_MAX_IDS = 100_000  # stream ids known to be canonical, kept from one page to the next
_COLUMNS = (
    ("position", int),
    ("stream_id", str),
    ("stream_version", int),
    ("kind", str),
    ("kind_version", int),
    ("data", str),
    ("recorded_at_us", int),
    ("run_no", int),
    ("digest", str),
)
_MODEL_VALIDATE_JSON = BaseModel.model_validate_json.__func__  # type: ignore[attr-defined]

#: A kind's current ``kind_version``, the validator of its JSON text, whether its values
#: may be shared, and the last text decoded in this page with its value. A one-entry
#: memo: the records that share a text are written together (a cycle's claims), so
#: they are next to each other in the log; a dict would hash every text for nothing
#: when none repeat.
_Fast = list[Any]

# Whether a record class's values may be shared by records of the same text, by class.
_SHAREABLE: dict[type, bool] = {}


def _immutable(annotation: Any) -> bool:
    if isinstance(annotation, type):
        return issubclass(annotation, (int, float, str, type(None)))
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return True
    if origin is typing.Union or origin is types.UnionType:
        return all(_immutable(arg) for arg in typing.get_args(annotation))
    return False


def _shareable(cls: type[BaseModel]) -> bool:
    """Whether one decoded value of ``cls`` may serve every record of the same text: a
    frozen model whose fields all hold immutable scalars (an executor's queued and
    claimed records: every event of a cycle gets the same text). A field that may hold
    a list or a dict rules it out: changing it in one record would change the others."""
    found = _SHAREABLE.get(cls)
    if found is None:
        found = _SHAREABLE[cls] = bool(cls.model_config.get("frozen")) and all(
            _immutable(field.annotation) for field in cls.model_fields.values()
        )
    return found


def _fast_validator(kind: str) -> _Fast | None:
    """What decodes ``kind`` at its current version as ``decode_data`` does (the class's
    ``model_validate_json``), or None to leave the kind to ``decode_data``: a kind
    this code does not know, or one whose class overrides ``model_validate_json``."""
    cls = kind_class(kind)
    if cls is None:
        return None
    if getattr(cls.model_validate_json, "__func__", None) is not _MODEL_VALIDATE_JSON:
        return None
    validate = cls.__pydantic_validator__.validate_json
    return [cls.kind_version, validate, _shareable(cls), None, None]


class RowDecoder:
    """Decodes the record rows of one database (``label`` names it in errors)."""

    __slots__ = ("_ids", "_label")

    def __init__(self, label: str) -> None:
        self._label = label
        # Stream id texts found canonical. Texts, not the IDType objects: those are
        # tracked by the garbage collector, and keeping 100,000 of them alive made it
        # run (and walk them) a hundred times per 100,000 records read.
        self._ids: set[str] = set()

    def decode(self, row: Any, run_ids: Mapping[int, IDType]) -> Recorded:
        """One row as a Recorded; raises :class:`CorruptDatabaseError` for a malformed one."""
        return next(self.records((row,), run_ids))

    def records(self, rows: Iterable[Any], run_ids: Mapping[int, IDType]) -> Iterator[Recorded]:
        """The records of ``rows``, one at a time, in order (``run_ids``: run ids by run
        number). A malformed row raises when it is reached, after the records before
        it. One at a time, not a list: a reader that drops each record before the
        next frees it before Python's garbage collector is set off, which a page of
        records alive at once does (and then it walks them all, and at times the
        whole heap)."""
        new = tuple.__new__
        new_id = str.__new__
        ids = self._ids
        if len(ids) > _MAX_IDS:
            ids.clear()
        # Per call (a page), not kept: a kind defined between pages is seen.
        fast: dict[str, _Fast] = {}
        # One id object per stream per page (the records of a stream share it).
        page_ids: dict[str, IDType] = {}
        checked = self._decode_checked
        for row in rows:
            position, sid, version, kind, kv, data, at_us, run_no, digest = row
            entry = fast.get(kind)  # only str keys are put there: kind is a str then
            run_id = run_ids.get(run_no)
            if (
                entry is None
                or kv != entry[0]
                or run_id is None
                or type(position) is not int
                or type(version) is not int
                or type(kv) is not int
                or type(data) is not str
                or type(at_us) is not int
                or type(run_no) is not int
                or type(digest) is not str
            ):
                yield checked(row, run_ids, fast)
                continue
            stream_id = page_ids.get(sid)
            if stream_id is None:
                if sid not in ids:  # a stream first seen: its id is checked once
                    if canonical_id(sid) is None:
                        yield checked(row, run_ids, fast)  # raises
                        continue
                    ids.add(sid)
                stream_id = page_ids[sid] = new_id(IDType, sid)
            # _validate, written out in the loop that runs once per record read
            if entry[2] and data == entry[3]:
                value = entry[4]  # the same text as the last record of the kind
            else:
                try:
                    value = entry[1](data)
                except ValidationError:
                    value = decode_data(kind, kv, data)  # its UnknownRecord (not shared)
                else:
                    if entry[2]:
                        entry[3], entry[4] = data, value
            yield new(
                Recorded,
                (position, run_id, stream_id, version, kind, kv, value, at_us, data, digest),
            )

    def _decode_checked(
        self, row: Any, run_ids: Mapping[int, IDType], fast: dict[str, _Fast]
    ) -> Recorded:
        """A row the fast path did not take, checked column by column."""
        values = tuple(row)
        if len(values) != len(_COLUMNS):
            raise CorruptDatabaseError(
                f"{self._label}: a record row has {len(values)} columns, not {len(_COLUMNS)}"
            )
        for value, (column, expected) in zip(values, _COLUMNS, strict=True):
            if type(value) is not expected:
                raise CorruptDatabaseError(
                    f"{self._label}: the record at position {values[0]!r} holds"
                    f" {type(value).__name__} {_short(value)} as its {column}, not"
                    f" {'an' if expected is int else 'a'} {expected.__name__}: the file was"
                    " edited or damaged"
                )
        position, sid, version, kind, kv, data, at_us, run_no, digest = values
        run_id = run_ids.get(run_no)
        if run_id is None:
            raise CorruptDatabaseError(
                f"{self._label}: the record at position {position} names run {run_no},"
                " which is not in the file: the file or one of its indexes is damaged"
            )
        stream_id = canonical_id(sid)
        if stream_id is None:
            raise CorruptDatabaseError(
                f"{self._label}: the record at position {position} names stream"
                f" {_short(sid)}, which is not an id: the file was edited or damaged"
            )
        self._ids.add(sid)
        entry = fast.get(kind)
        if entry is None:
            entry = _fast_validator(kind)
            if entry is not None:
                fast[kind] = entry
        if entry is not None and kv == entry[0]:
            value = entry[4] if entry[2] and data == entry[3] else _validate(entry, kind, kv, data)
        else:
            value = decode_data(kind, kv, data)
        return Recorded(position, run_id, stream_id, version, kind, kv, value, at_us, data, digest)


def _validate(entry: _Fast, kind: str, kv: int, data: str) -> Any:
    """``data`` decoded by the kind's validator (kept as the page's last of its kind when
    the kind's values may be shared), or by ``decode_data`` when it does not fit: an
    UnknownRecord, never shared (its raw JSON is a dict)."""
    try:
        value = entry[1](data)
    except ValidationError:
        return decode_data(kind, kv, data)
    if entry[2]:
        entry[3], entry[4] = data, value
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
