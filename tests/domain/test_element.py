"""Element: frozen id/created_at, identity by id, a dump that always validates back
(lionagi 0.8.7 section 2.3)."""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import PrivateAttr, ValidationError

from lionstore.domain.element import Element, class_path, register_class, resolve_class
from lionstore.errors import EventClassNotFoundError


class Note(Element):
    text: str = ""
    tags: list[str] = []


class Memo(Note):
    urgent: bool = False


def test_defaults() -> None:
    before = dt.datetime.now(dt.UTC).timestamp()
    element = Element()
    after = dt.datetime.now(dt.UTC).timestamp()
    assert uuid.UUID(element.id).version == 4
    assert before <= element.created_at <= after
    assert isinstance(element.created_at, float)
    assert element.metadata == {}
    assert element.created_datetime == dt.datetime.fromtimestamp(element.created_at, dt.UTC)
    assert bool(element) is True


def test_id_and_created_at_are_frozen() -> None:
    element = Element()
    original_id, original_time = element.id, element.created_at
    with pytest.raises(ValidationError):
        element.id = uuid.uuid4()  # type: ignore[misc,assignment]
    with pytest.raises(ValidationError):
        element.created_at = 1.0  # type: ignore[misc]
    assert element.id == original_id
    assert element.created_at == original_time
    element.metadata = {"k": 1}  # metadata is not frozen
    assert element.metadata == {"k": 1}


def test_equality_and_hash_are_by_id() -> None:
    ref = uuid.uuid4()
    first = Element(id=ref, created_at=1.0)
    second = Element(id=str(ref), created_at=2.0, metadata={"x": 1})
    other = Element()
    assert first == second
    assert hash(first) == hash(second) == hash(str(ref))
    assert first != other
    assert len({first, second, other}) == 2
    assert (first == str(ref)) is False  # not equal to non-elements
    assert first != 5
    assert Note(id=ref) == first  # ids, not classes, decide


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5.0),
        (1.5, 1.5),
        ("2.5", 2.5),
        (
            dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp(),
        ),
        ("2026-01-01T00:00:00+00:00", dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()),
    ],
)
def test_created_at_coercion(value: object, expected: float) -> None:
    assert Element(created_at=value).created_at == expected


def test_created_at_none_is_now() -> None:
    now = dt.datetime.now(dt.UTC).timestamp()
    assert abs(Element(created_at=None).created_at - now) < 5


@pytest.mark.parametrize("bad", ["yesterday", [1], True, object()])
def test_bad_created_at_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError, match="created_at"):
        Element(created_at=bad)


def test_metadata_rules() -> None:
    assert Element(metadata=None).metadata == {}
    assert Element(metadata={}).metadata == {}
    with pytest.raises(ValidationError):
        Element(metadata=[1, 2])
    with pytest.raises(ValidationError, match="class mismatch"):
        Note(metadata={"lion_class": class_path(Memo)})
    assert Note(metadata={"lion_class": class_path(Note)}).metadata["lion_class"] == class_path(
        Note
    )


def test_extra_fields_are_forbidden() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Element(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="extra"):
        Note(text="x", colour="red")  # type: ignore[call-arg]


def test_class_name() -> None:
    assert Memo.class_name() == "Memo"
    assert Memo.class_name(full=True) == f"{Memo.__module__}.Memo"
    assert class_path(Memo) == f"{Memo.__module__}.Memo"


def test_to_dict_is_json_ready_and_names_the_class() -> None:
    memo = Memo(text="hi", tags=["a"], urgent=True, metadata={"k": [1, 2]})
    data = memo.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["id"] == memo.id
    assert data["created_at"] == memo.created_at
    assert data["metadata"] == {"k": [1, 2], "lion_class": class_path(Memo)}
    assert memo.metadata == {"k": [1, 2]}  # to_dict does not touch the element


def test_round_trip_through_base_class_rebuilds_the_subclass() -> None:
    memo = Memo(text="hi", tags=["a", "b"], urgent=True, metadata={"k": 1})
    data = memo.to_dict()
    snapshot = json.loads(json.dumps(data))
    back = Element.from_dict(data)
    assert type(back) is Memo
    assert back == memo
    assert back.model_dump() == memo.model_dump()
    assert back.metadata == {"k": 1}
    assert data == snapshot  # lionagi's from_dict popped keys out of its input
    again = Note.from_dict(json.loads(json.dumps(data)))
    assert type(again) is Memo
    assert type(Memo.from_dict(data)) is Memo


def test_from_dict_refuses_a_class_that_is_not_a_subclass() -> None:
    data = Note(text="x").to_dict()
    with pytest.raises(EventClassNotFoundError):
        Memo.from_dict(data)


def test_a_dump_naming_an_unknown_class_raises_and_never_imports(tmp_path: Path) -> None:
    """A file (or dict) naming a module must not make lionstore import it."""
    marker = tmp_path / "imported"
    module_name = f"lionstore_evil_{uuid.uuid4().hex}"
    (tmp_path / f"{module_name}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('yes')\n"
        "from lionstore.domain.element import Element\n"
        "class Evil(Element):\n    pass\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        data = Element().to_dict()
        data["metadata"]["lion_class"] = f"{module_name}.Evil"
        with pytest.raises(EventClassNotFoundError, match=f"{module_name}.Evil"):
            Element.from_dict(data)
        assert module_name not in sys.modules
        assert not marker.exists()
    finally:
        sys.path.remove(str(tmp_path))


def test_classes_defined_in_functions_resolve() -> None:
    class Local(Element):
        n: int = 0

    item = Local(n=3)
    back = Element.from_dict(item.to_dict())
    assert type(back) is Local
    assert back.n == 3
    assert resolve_class(class_path(Local), Element) is Local


def test_register_class() -> None:
    class Registered(Element):
        pass

    register_class(Registered)
    assert resolve_class(class_path(Registered), Element) is Registered
    with pytest.raises(TypeError):
        register_class(int)  # type: ignore[arg-type]


# -- private attributes: read from the instance's private dict, as pydantic keeps them -------


class _WithPrivate(Element):
    """A user element with private state, as lionagi subclasses have."""

    _cache: dict[str, int] = PrivateAttr(default_factory=dict)
    _flag: bool = PrivateAttr(default=False)
    _note: str | None = PrivateAttr(default=None)


def test_private_attributes_read_their_defaults_and_what_was_assigned() -> None:
    item = _WithPrivate()
    assert item._cache == {} and item._flag is False and item._note is None
    item._cache["a"] = 1
    item._flag = True
    item._note = "set"
    assert item._cache == {"a": 1} and item._flag is True and item._note == "set"
    other = _WithPrivate()  # defaults are per instance
    assert other._cache == {} and other._flag is False
    copied = item.model_copy(deep=True)
    assert copied._cache == {"a": 1} and copied._cache is not item._cache


def test_a_missing_attribute_still_raises_attribute_error_naming_it() -> None:
    item = _WithPrivate()
    with pytest.raises(AttributeError, match="_missing"):
        _ = item._missing  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="not_a_field"):
        _ = item.not_a_field  # type: ignore[attr-defined]
    assert getattr(item, "streaming", False) is False
    assert not hasattr(item, "_missing")
