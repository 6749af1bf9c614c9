"""Identifiers: canonical lowercase UUID text at every boundary.

lionagi's ``IDType`` wraps a ``uuid.UUID`` and compares equal only to other
``IDType`` objects, so a dict keyed by ids cannot be looked up with a string, and
its validator silently rewrites non-v4 UUIDs into different ids. lionstore's
:class:`IDType` is a ``str`` subclass holding the canonical hyphenated lowercase
form: it equals and hashes like that string, serializes to JSON as itself, and is
never rewritten. Any RFC 4122 UUID is accepted; new ids are UUID4.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from uuid import UUID as _UUID

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from lionstore.errors import IDError

__all__ = ["IDType", "canonical_id", "to_id", "to_ids", "is_id"]

_MAX_ID_INPUT = 100  # a UUID spelled any standard way is shorter than this


class IDType(str):
    """A canonical UUID string (``"1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"``)."""

    __slots__ = ()

    def __new__(cls, value: Any) -> IDType:
        return to_id(value)

    @classmethod
    def create(cls) -> IDType:
        """A new random (version 4) id."""
        return str.__new__(cls, str(uuid.uuid4()))

    @classmethod
    def validate(cls, value: Any) -> IDType:
        """Return ``value`` as an :class:`IDType`; raise :class:`IDError` if it is not one."""
        return to_id(value)

    @property
    def uuid(self) -> uuid.UUID:
        """The id as a :class:`uuid.UUID`."""
        return uuid.UUID(self)

    @property
    def _id(self) -> _UUID:
        """lionagi's name for :attr:`uuid` (its ``IDType`` wraps a UUID in ``_id``)."""
        return uuid.UUID(self)

    def __repr__(self) -> str:
        return f"IDType('{self}')"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            to_id,
            serialization=core_schema.plain_serializer_function_ser_schema(
                str, when_used="json-unless-none"
            ),
            json_schema_input_schema=core_schema.str_schema(),
        )


# The canonical form itself (what every id read back from the log is): no need to go
# through uuid.UUID, which would return the same text.
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_id(value: Any) -> IDType | None:
    """``value`` as an :class:`IDType` when it is a string in an id's canonical form
    (what lionstore stores), else None. Nothing is rewritten: a UUID spelled another
    way is not canonical."""
    if type(value) is str and len(value) == 36 and _CANONICAL.fullmatch(value):
        return str.__new__(IDType, value)
    return None


def _parse(text: str, original: Any) -> IDType:
    if len(text) == 36 and _CANONICAL.fullmatch(text):
        return str.__new__(IDType, text)
    if len(text) > _MAX_ID_INPUT:
        raise IDError(f"Invalid ID: a {len(text)}-character string is not a UUID.")
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        raise IDError(f"Invalid ID: {original!r} is not a UUID.") from None
    return str.__new__(IDType, str(parsed))


def to_id(value: Any) -> IDType:
    """Canonical id of ``value``: an IDType, a UUID string, a ``uuid.UUID``, or any
    object with an ``id`` attribute (an Element, a source, a lionagi IDType holder).

    Raises :class:`IDError` for anything else.
    """
    if type(value) is IDType:
        return value
    if isinstance(value, str):
        return _parse(value, value)
    if isinstance(value, uuid.UUID):
        return str.__new__(IDType, str(value))
    if isinstance(value, (bool, int, float, bytes, type(None))):
        raise IDError(f"Invalid ID: {value!r} is not a UUID.")
    inner = getattr(value, "id", None)
    if inner is not None and inner is not value:
        return to_id(inner)
    # lionagi's IDType and similar wrappers print as their UUID.
    if type(value).__str__ is not object.__str__:  # type: ignore[comparison-overlap]
        return _parse(str(value), value)
    raise IDError(f"Invalid ID: cannot get an id from {type(value).__name__}.")


def to_ids(values: Any) -> list[IDType]:
    """Flatten one ref or any nesting of lists/tuples/sets/mapping keys into ids, in order."""
    out: list[IDType] = []
    _flatten(values, out)
    return out


def _flatten(value: Any, out: list[IDType]) -> None:
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _flatten(v, out)
    elif isinstance(value, (set, frozenset)):
        for v in sorted(value, key=str):
            _flatten(v, out)
    elif isinstance(value, dict) or (
        hasattr(value, "__iter__")
        and not isinstance(value, (str, bytes))
        and not hasattr(value, "id")
    ):
        for v in value:
            _flatten(v, out)
    else:
        out.append(to_id(value))


def is_id(value: Any) -> bool:
    """True if ``value`` can be read as an id."""
    try:
        to_id(value)
    except IDError:
        return False
    return True
