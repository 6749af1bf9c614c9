"""Ids: canonical lowercase UUID text at every boundary (lionagi 0.8.7 section 2.2,
fixed per section 5 item 15)."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import BaseModel

import lionstore
from lionstore.domain.element import Element
from lionstore.domain.ids import IDType, is_id, to_id, to_ids
from lionstore.errors import IDError, LionstoreError

CANONICAL = "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b"


def test_create_is_canonical_uuid4_text() -> None:
    made = IDType.create()
    assert isinstance(made, str)
    assert isinstance(made, IDType)
    parsed = uuid.UUID(made)
    assert parsed.version == 4
    assert made == str(parsed)  # lowercase, hyphenated
    assert made.uuid == parsed
    assert IDType.create() != made


@pytest.mark.parametrize(
    "spelling",
    [
        CANONICAL,
        CANONICAL.upper(),
        CANONICAL.replace("-", ""),
        "{" + CANONICAL + "}",
        "urn:uuid:" + CANONICAL,
        uuid.UUID(CANONICAL),
    ],
)
def test_every_spelling_becomes_the_canonical_text(spelling: object) -> None:
    got = to_id(spelling)
    assert type(got) is IDType
    assert got == CANONICAL
    assert IDType(spelling) == CANONICAL
    assert IDType.validate(spelling) == CANONICAL


def test_elements_and_objects_with_an_id_are_accepted() -> None:
    element = Element(id=CANONICAL)
    assert to_id(element) == CANONICAL

    class Holder:
        id = uuid.UUID(CANONICAL)

    assert to_id(Holder()) == CANONICAL

    class LionagiStyleIDType:
        """A wrapper that prints as its UUID (lionagi's IDType does)."""

        def __str__(self) -> str:
            return CANONICAL

    assert to_id(LionagiStyleIDType()) == CANONICAL


@pytest.mark.parametrize(
    "garbage",
    [
        "not-a-uuid",
        "",
        "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633",  # one digit short
        "x" * 10_000,
        12345,
        1.5,
        True,
        None,
        b"1b4e28ba2fa14d3ba3f5ef19b5a7633b",
        object(),
        [CANONICAL],
    ],
)
def test_garbage_raises_iderror_which_is_a_valueerror(garbage: object) -> None:
    with pytest.raises(IDError) as caught:
        to_id(garbage)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, LionstoreError)
    assert lionstore.IDError is IDError
    assert "Invalid ID" in str(caught.value)
    assert not is_id(garbage)


def test_non_v4_uuids_are_kept_not_rewritten() -> None:
    """lionagi 0.8.7 forced the version bits to 4, so a UUIDv1 came back as a
    *different* id (``...-11f1-...`` became ``...-41f1-...``)."""
    for original in (
        uuid.uuid1(),
        uuid.uuid3(uuid.NAMESPACE_DNS, "x"),
        uuid.uuid5(uuid.NAMESPACE_URL, "y"),
    ):
        got = to_id(str(original))
        assert got == str(original)
        assert uuid.UUID(got).version == original.version
        assert Element(id=original).id == str(original)


def test_ids_equal_and_hash_like_their_text_so_dicts_work_with_str_keys() -> None:
    """lionagi's IDType never equalled a str: ``{id: v}[str(id)]`` was a KeyError."""
    made = IDType.create()
    plain = str(made)
    assert made == plain
    assert hash(made) == hash(plain)
    by_id = {made: "value"}
    assert by_id[plain] == "value"  # type: ignore[index]  # a str finds an IDType key
    assert by_id[to_id(plain.upper())] == "value"
    by_str = {plain: "value"}
    assert by_str[made] == "value"
    assert repr(made) == f"IDType('{plain}')"


def test_ids_serialize_to_json_as_plain_text() -> None:
    class Model(BaseModel):
        ref: IDType

    model = Model(ref=CANONICAL.upper())
    assert model.ref == CANONICAL
    assert json.loads(model.model_dump_json()) == {"ref": CANONICAL}
    assert Model.model_validate_json(model.model_dump_json()).ref == CANONICAL
    with pytest.raises(ValueError, match="Invalid ID"):
        Model(ref="nope")


def test_to_ids_flattens_in_order_and_skips_none() -> None:
    a, b, c, d = (IDType.create() for _ in range(4))
    element = Element(id=d)
    got = to_ids([a, None, (b, [c.upper()]), {element.id: 1}, element])
    assert got == [a, b, c, d, d]
    assert all(type(x) is IDType for x in got)
    assert to_ids(None) == []
    assert to_ids(a) == [a]
    assert to_ids(element) == [d]
    with pytest.raises(IDError):
        to_ids([a, "bad"])


def test_is_id() -> None:
    assert is_id(CANONICAL)
    assert is_id(uuid.uuid4())
    assert is_id(Element())
    assert not is_id("bad")
    assert not is_id(None)
