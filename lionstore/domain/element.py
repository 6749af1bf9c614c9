"""Element: the identified, timestamped base model of everything lionstore stores.

Follows lionagi's ``Element``: ``id`` (frozen, a new UUID4 by default),
``created_at`` (frozen POSIX seconds) and ``metadata``; equality and hashing by
id. Unlike lionagi, ids are :class:`~lionstore.domain.ids.IDType` strings and a
dumped element always validates back (``to_dict``/``from_dict`` round-trip).

Classes are looked up by name when elements are rebuilt from the log, but only
among classes already defined in this process (or registered explicitly): a
database file can never make lionstore import a module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lionstore.domain.ids import IDType, is_id, to_id, to_ids
from lionstore.errors import EventClassNotFoundError, ReadOnlyProjectionError

__all__ = [
    "ID",
    "Element",
    "ReadOnlyGuard",
    "class_path",
    "register_class",
    "resolve_class",
    "validate_order",
]


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def class_path(cls: type) -> str:
    """``module.QualName`` of a class: the name records store."""
    return f"{cls.__module__}.{cls.__qualname__}"


_REGISTERED: dict[str, type[BaseModel]] = {}


def register_class(*classes: type[BaseModel]) -> None:
    """Make classes findable by :func:`resolve_class` (e.g. classes defined in a
    function, which the subclass walk also finds, or under another name)."""
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise TypeError(f"only pydantic model classes can be registered, not {cls!r}")
        _REGISTERED[class_path(cls)] = cls


def _walk(base: type) -> list[type]:
    seen: list[type] = []
    stack = [base]
    while stack:
        cls = stack.pop()
        sub: type
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def resolve_class(path: str, base: type[BaseModel]) -> type[BaseModel]:
    """The class named ``path`` among ``base`` and its subclasses defined in this process.

    Raises :class:`EventClassNotFoundError` naming the class. Never imports anything.
    """
    found = _REGISTERED.get(path)
    if found is not None and issubclass(found, base):
        return found
    if class_path(base) == path:
        return base
    matches = [c for c in _walk(base) if class_path(c) == path]
    # Redefinitions (tests, notebooks) leave old classes behind; the newest wins.
    if matches:
        cls = matches[-1]
        _REGISTERED[path] = cls
        return cls
    raise EventClassNotFoundError(
        f"class {path} is not defined in this process; import the module that defines it "
        "(or pass it with register_class) before opening"
    )


class ReadOnlyGuard:
    """For collections a projection owns: ``_freeze(owner)`` makes every public
    mutator raise :class:`ReadOnlyProjectionError` naming what to call instead."""

    _read_only: str | None
    _noun: str = "collection"

    def _freeze(self, owner: str) -> Self:
        self._read_only = owner
        return self

    def _check(self) -> None:
        if self._read_only is not None:
            raise ReadOnlyProjectionError(
                f"this {self._noun} is rebuilt from the log; change it through {self._read_only}"
            )


class Element(BaseModel):
    """Base of events, mail and sources: an id, a creation time and metadata."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        arbitrary_types_allowed=True,
        validate_assignment=False,
        # NaN and infinities stay floats in a JSON-mode dump (pydantic's default turns
        # them into null), so recording them is refused instead of silently changed.
        ser_json_inf_nan="constants",
    )

    id: IDType = Field(default_factory=IDType.create, frozen=True)
    created_at: float = Field(default_factory=_now, frozen=True)
    metadata: dict[str, Any] = Field(default_factory=dict)

    _lion_class_key: ClassVar[str] = "lion_class"

    @field_validator("created_at", mode="before")
    @classmethod
    def _coerce_created_at(cls, value: Any) -> float:
        if value is None:
            return _now()
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, bool):
            raise ValueError("Invalid created_at: a bool is not a time")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                try:
                    return dt.datetime.fromisoformat(value).timestamp()
                except ValueError:
                    pass
        raise ValueError(f"Invalid created_at: {value!r}")

    @field_validator("metadata", mode="before")
    @classmethod
    def _coerce_metadata(cls, value: Any) -> dict[str, Any]:
        if not value:
            return {}
        if not isinstance(value, dict):
            raise ValueError("metadata must be a dict")
        lion_class = value.get(cls._lion_class_key)
        if lion_class is not None and lion_class != class_path(cls):
            raise ValueError(f"Metadata class mismatch: {lion_class} is not {class_path(cls)}")
        return dict(value)

    @property
    def created_datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.created_at, dt.UTC)

    @classmethod
    def class_name(cls, full: bool = False) -> str:
        return class_path(cls) if full else cls.__name__

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` turns back into this element."""
        data = self.model_dump(mode="json")
        data["metadata"] = {
            **data.get("metadata", {}),
            self._lion_class_key: class_path(type(self)),
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuild an element from :meth:`to_dict` output (the input is not mutated)."""
        data = dict(data)
        metadata = dict(data.get("metadata") or {})
        lion_class = metadata.pop(cls._lion_class_key, None)
        data["metadata"] = metadata
        target: type[BaseModel] = cls
        if lion_class is not None and lion_class != class_path(cls):
            target = resolve_class(lion_class, cls)
        result = target.model_validate(data)
        assert isinstance(result, cls)
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __bool__(self) -> bool:
        return True

    if not TYPE_CHECKING:  # (mypy would then accept any attribute name)

        def __getattr__(self, name: str) -> Any:
            # Reached for attributes not found the usual way, which includes every
            # private attribute (Pile._items, Progression._counts...). pydantic answers
            # those after asking the attribute's declaration whether it is a descriptor,
            # a question that raises and catches an AttributeError inside: 5-10 us a
            # read, against 0.05 us for the dict look-up done here first. (A private
            # attribute whose *default* is a descriptor, which pydantic binds instead,
            # is not set in the dict until assigned; lionstore declares none.)
            try:
                private = object.__getattribute__(self, "__pydantic_private__")
            except AttributeError:
                private = None
            if private:
                value = private.get(name, _MISSING)
                if value is not _MISSING:
                    return value
            return super().__getattr__(name)


_MISSING: Any = object()


def validate_order(order: Any) -> list[IDType]:
    """Flatten elements, ids, UUIDs, UUID strings, nested lists/tuples/sets and mapping
    keys (``None`` skipped) into a list of ids, in order (lionagi's ``validate_order``).

    Raises :class:`~lionstore.errors.IDError` (a ValueError) for anything else.
    """
    return to_ids(order)


E = TypeVar("E", bound=Element)


class ID(Generic[E]):
    """lionagi's id helpers and type aliases: ``ID.get_id(x)``, ``ID.is_id(x)``,
    ``ID.ID``, ``ID.Ref``, ``ID.RefSeq`` ... (``ID[Node].Ref`` reads as in lionagi)."""

    ID: TypeAlias = IDType
    Item: TypeAlias = Element
    Ref: TypeAlias = IDType | Element | str
    IDSeq: TypeAlias = Sequence[IDType]
    ItemSeq: TypeAlias = Sequence[Element]
    RefSeq: TypeAlias = Sequence[IDType | Element | str]

    @staticmethod
    def get_id(item: Any) -> IDType:
        """The id of an element, an id, a ``uuid.UUID`` or a UUID string.

        Raises :class:`~lionstore.errors.IDError` (a ValueError) for anything else.
        """
        return to_id(item)

    @staticmethod
    def is_id(item: Any) -> bool:
        """True if ``item`` can be read as an id."""
        return is_id(item)
