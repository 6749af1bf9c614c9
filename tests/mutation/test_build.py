"""``fields_set`` and ``unchecked`` (lionstore/projections/_build.py): the fast path that
builds replayed objects without validating them again refuses the classes it would build
wrongly. Its callers pass lionstore's own classes at import time, so these tests call it
directly (mutmut found the refusals unguarded)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, PrivateAttr

from lionstore.projections._build import fields_set, unchecked


class Plain(BaseModel):
    a: int
    b: str = "x"


class WithPrivate(BaseModel):
    a: int
    _cache: int = PrivateAttr(default=0)


class WithPostInit(BaseModel):
    a: int

    def model_post_init(self, context: object, /) -> None:
        pass


class AllowsExtra(BaseModel):
    model_config = ConfigDict(extra="allow")
    a: int


class ForbidsExtra(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int


def test_fields_set_names_every_field() -> None:
    assert fields_set(Plain) == {"a", "b"}
    assert fields_set(ForbidsExtra) == {"a"}


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (WithPrivate, "WithPrivate has private attributes or a post-init hook"),
        (WithPostInit, "WithPostInit has private attributes or a post-init hook"),
        (AllowsExtra, "AllowsExtra allows extra fields"),
    ],
)
def test_fields_set_refuses_a_class_unchecked_would_build_wrongly(
    cls: type[BaseModel], message: str
) -> None:
    with pytest.raises(TypeError, match=f"^{message}$"):
        fields_set(cls)


def test_unchecked_holds_the_values_as_given_and_shares_the_set() -> None:
    shared = fields_set(Plain)
    one = unchecked(Plain, shared, {"a": 1, "b": "y"})
    two = unchecked(Plain, shared, {"a": 2, "b": "z"})
    assert (one.a, one.b, two.a, two.b) == (1, "y", 2, "z")
    assert one.model_fields_set is shared and two.model_fields_set is shared
    assert one.model_dump() == {"a": 1, "b": "y"} and one == Plain(a=1, b="y")
