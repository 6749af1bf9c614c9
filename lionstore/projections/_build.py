"""Building pydantic objects from values a decoded record already validated.

A replay makes hundreds of thousands of events and mails. Validating each one
again (pydantic ``__init__``), or even ``model_construct`` (a Python-level loop
over the fields), costs more than decoding the record did; ``unchecked`` sets
the instance's state directly.

It is only for values that passed validation as part of a record's data (the
record's pydantic model checked every type on decode) and only for classes
without private attributes or ``model_post_init``, which it would skip.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["fields_set", "unchecked"]

M = TypeVar("M", bound=BaseModel)
_set = object.__setattr__


def fields_set(cls: type[BaseModel]) -> set[str]:
    """One set naming every field of ``cls``, to share between its unchecked instances.

    Sharing is safe because pydantic only ever adds a field name to an instance's
    set (on assignment), and every name is in it already; ``extra="forbid"``
    classes have no other names to add.
    """
    if cls.__private_attributes__ or cls.__pydantic_post_init__:
        raise TypeError(f"{cls.__name__} has private attributes or a post-init hook")
    if cls.model_config.get("extra") == "allow":
        raise TypeError(f"{cls.__name__} allows extra fields")
    return set(cls.model_fields)


def unchecked(cls: type[M], shared_fields: set[str], values: dict[str, Any]) -> M:
    """An instance of ``cls`` holding ``values`` (every field, in field order), unvalidated."""
    obj = cls.__new__(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", shared_fields)
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj
