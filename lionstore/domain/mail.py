"""Package, PackageCategory and Mail (seeds/mail-system.txt).

Unlike lionagi 0.8.7, a Mail takes its sender and recipient as an id string, a
UUID or the source itself, and Mail and Package dump to JSON and validate back.
A package item must be a JSON value or a pydantic model (rebuilt as its own
class on reopen); anything else is refused when the Package is made, before
anything could be written.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from lionstore.domain.element import Element, class_path, resolve_class
from lionstore.domain.ids import IDType, to_id
from lionstore.errors import MailError, RecordError

__all__ = [
    "Mail",
    "Package",
    "PackageCategory",
    "validate_category",
    "item_to_json",
    "item_from_json",
]

_MAX_DEPTH = 100
_UNSET: Any = object()


class PackageCategory(StrEnum):
    """What a package carries."""

    MESSAGE = "message"
    TOOL = "tool"
    IMODEL = "imodel"
    NODE = "node"
    NODE_LIST = "node_list"
    NODE_ID = "node_id"
    START = "start"
    END = "end"
    CONDITION = "condition"
    SIGNAL = "signal"

    def __str__(self) -> str:
        return self.value


def validate_category(value: Any) -> PackageCategory:
    """A PackageCategory from a member or its lowercase value; MailError otherwise."""
    if isinstance(value, PackageCategory):
        return value
    try:
        return PackageCategory(value)
    except ValueError:
        allowed = ", ".join(c.value for c in PackageCategory)
        raise MailError(
            f"Invalid value for category: {value!r} (expected one of {allowed})"
        ) from None


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise MailError(f"package item is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MailError(f"package item contains {value}, which JSON cannot hold")
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_json(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise MailError(f"package item has a non-string key {k!r}")
            _check_json(v, depth + 1)
        return
    raise MailError(
        f"package item of type {type(value).__name__} is neither a JSON value nor a pydantic model"
    )


def item_to_json(item: Any) -> tuple[Any, str | None]:
    """``(json_value, model_class_path)`` for a package item."""
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json"), class_path(type(item))
    return item, None


def item_from_json(value: Any, model_class: str | None) -> Any:
    """The package item a record holds: its JSON, or validated into ``model_class``
    when the record names one (a pydantic model defined in this process, never one of
    lionstore's own classes: a file cannot make lionstore build its records or
    elements from an item). A RecordError when the data does not fit the class."""
    if model_class is None:
        return value
    cls = resolve_class(model_class, BaseModel)
    if cls.__module__.split(".")[0] == "lionstore":
        raise RecordError(f"a package item names {model_class}, one of lionstore's own classes")
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        raise RecordError(
            f"a package item does not validate as the {model_class} it names: {exc}"
        ) from None


class Package(Element):
    """A payload with a category, carried by a Mail."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    category: PackageCategory
    item: Any = None
    request_source: IDType | None = None

    def __init__(
        self,
        category: Any = None,
        item: Any = None,
        request_source: Any = None,
        **kwargs: Any,
    ) -> None:
        if "package" in kwargs:  # MailManager.create_mail's historical keyword
            item = kwargs.pop("package")
        if not isinstance(item, BaseModel):
            _check_json(item)  # a MailError here, not a pydantic ValidationError
        super().__init__(  # type: ignore[call-arg]
            category=validate_category(category),
            item=item,
            request_source=None if request_source is None else to_id(request_source),
            **kwargs,
        )

    @field_validator("item")
    @classmethod
    def _item(cls, value: Any) -> Any:
        if not isinstance(value, BaseModel):
            _check_json(value)
        return value


class Mail(Element):
    """One message from a sender to a recipient, carrying a Package."""

    sender: IDType
    recipient: IDType
    package: Package

    def __init__(
        self, sender: Any = _UNSET, recipient: Any = _UNSET, package: Any = _UNSET, **kwargs: Any
    ) -> None:
        # Mail(sender, recipient, package), positionally or by keyword; an id that is
        # not one raises IDError here, not wrapped in a pydantic ValidationError.
        for key, value in (("sender", sender), ("recipient", recipient), ("package", package)):
            if value is not _UNSET:
                kwargs[key] = value
        for key in ("sender", "recipient"):
            if key in kwargs:
                kwargs[key] = to_id(kwargs[key])
        super().__init__(**kwargs)

    @field_validator("sender", "recipient", mode="before")
    @classmethod
    def _validate_sender_recipient(cls, value: Any) -> IDType:
        return to_id(value)

    @property
    def category(self) -> PackageCategory:
        return self.package.category
