"""LazyDict: raw values are built on first read, once, and every read returns built
values; keys, membership and length never build anything."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from lionstore.domain.lazy import LazyDict


class Built:
    def __init__(self, key: str, raw: str) -> None:
        self.key, self.raw = key, raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Built) and (self.key, self.raw) == (other.key, other.raw)

    def __repr__(self) -> str:
        return f"Built({self.key}, {self.raw})"


def make(**raw: Any) -> tuple[LazyDict[str, Any], list[str]]:
    calls: list[str] = []

    def build(key: str, value: str) -> Built:
        calls.append(key)
        if value == "boom":
            raise ValueError(f"cannot build {key}")
        return Built(key, value)

    lazy: LazyDict[str, Any] = LazyDict(
        raw.items(), build, str, tag=lambda b: b.raw[0], raw_tag=lambda r: r[0]
    )
    return lazy, calls


def test_keys_membership_and_length_build_nothing() -> None:
    lazy, calls = make(a="x1", b="y2", c="x3")
    assert list(lazy) == ["a", "b", "c"] == list(lazy.keys())
    assert "b" in lazy and "z" not in lazy and len(lazy) == 3
    assert calls == [] and lazy.unbuilt() == 3


def test_a_value_is_built_once_and_the_same_object_is_returned() -> None:
    lazy, calls = make(a="x1", b="y2")
    first = lazy["a"]
    assert first == Built("a", "x1") and lazy["a"] is first and lazy.get("a") is first
    assert calls == ["a"] and lazy.is_built("a") and not lazy.is_built("b")
    assert lazy.raw("b") == "y2" and lazy.unbuilt() == 1


def test_every_way_of_reading_values_returns_built_ones() -> None:
    lazy, _ = make(a="x1", b="y2")
    expected = {"a": Built("a", "x1"), "b": Built("b", "y2")}
    assert dict(make(a="x1", b="y2")[0]) == expected
    assert {**make(a="x1", b="y2")[0]} == expected
    merged: dict[str, Any] = {}
    merged.update(make(a="x1", b="y2")[0])
    assert merged == expected
    assert make(a="x1", b="y2")[0].copy() == expected
    assert make(a="x1", b="y2")[0] == expected
    assert list(make(a="x1", b="y2")[0].values()) == list(expected.values())
    assert list(make(a="x1", b="y2")[0].items()) == list(expected.items())
    assert (make(a="x1", b="y2")[0] | {}) == expected
    assert ({} | make(a="x1", b="y2")[0]) == expected
    assert copy.copy(make(a="x1", b="y2")[0]) == expected
    assert pickle.loads(pickle.dumps(make(a="x1", b="y2")[0])) == expected
    assert repr(lazy) == repr(expected)


def test_pop_get_and_setdefault() -> None:
    lazy, _ = make(a="x1", b="y2", c="x3")
    assert lazy.pop("a") == Built("a", "x1") and "a" not in lazy
    assert lazy.pop("a", None) is None
    with pytest.raises(KeyError):
        lazy.pop("a")
    assert lazy.get("zz", 5) == 5 and lazy.get("zz") is None
    assert lazy.setdefault("b") == Built("b", "y2")
    assert lazy.popitem() == ("c", Built("c", "x3"))
    lazy["d"] = Built("d", "mine")  # a built value stored as such
    assert lazy["d"] == Built("d", "mine") and lazy.unbuilt() == 0


def test_tags_are_read_without_building() -> None:
    lazy, calls = make(a="x1", b="y2", c="x3")
    assert lazy.tag("b") == "y" and calls == []
    lazy["c"]
    assert lazy.tag("c") == "x"  # from the built value
    assert lazy.values_tagged("x") == [Built("a", "x1"), Built("c", "x3")]
    assert calls == ["c", "a"] and not lazy.is_built("b")
    with pytest.raises(KeyError):
        lazy.tag("zz")


def test_a_failed_build_raises_every_time_and_marks_the_dict_damaged() -> None:
    lazy, _calls = make(a="x1", b="boom")
    assert lazy.damaged is None
    for read in (lambda: lazy["b"], lambda: lazy.get("b"), lazy.values, lambda: dict(lazy)):
        with pytest.raises(ValueError, match="cannot build b"):
            read()
    assert isinstance(lazy.damaged, ValueError)
    assert lazy.raw("b") == "boom" and not lazy.is_built("b")  # never a wrong value
    assert lazy["a"] == Built("a", "x1")
