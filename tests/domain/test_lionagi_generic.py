"""The generic classes lionagi users import, as lionagi code uses them: ``ID``,
``validate_order``, ``pile(...)``, ``Node``, ``next(progression)``, slice assignment,
``Pile(items, order=<a Progression>)``, ``str(Execution)``, and errors that a
lionagi-style ``except ValueError`` still catches."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
import weakref

import pytest
from pydantic import ValidationError

import lionstore
from lionstore import (
    ID,
    Element,
    EventStatus,
    Execution,
    IDError,
    IDType,
    IndexOutOfRangeError,
    InvalidItemError,
    ItemNotFoundError,
    Node,
    Pile,
    Progression,
    pile,
    validate_order,
)


class Item(Element):
    n: int = 0


class SubItem(Item):
    pass


# -- ID and validate_order ------------------------------------------------------------------


def test_id_get_id_reads_elements_ids_uuids_and_strings() -> None:
    e = Item()
    assert ID.get_id(e) == e.id
    assert ID.get_id(e.id) == e.id
    assert ID.get_id(uuid.UUID(e.id)) == e.id
    assert ID.get_id(str(e.id).upper()) == e.id
    assert isinstance(ID.get_id(e), IDType)


@pytest.mark.parametrize("bad", [5, None, "not-a-uuid", 1.5, object()])
def test_id_get_id_refuses_non_ids_with_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        ID.get_id(bad)
    with pytest.raises(IDError):
        ID.get_id(bad)


def test_id_is_id() -> None:
    e = Item()
    assert ID.is_id(e.id) is True
    assert ID.is_id(str(uuid.uuid4())) is True
    assert ID.is_id("invalid") is False
    assert ID.is_id(12) is False


def test_id_type_aliases_exist_and_id_is_subscriptable() -> None:
    assert ID.ID is IDType
    assert ID[Node] is not None  # lionagi writes ID[Node].Ref in annotations
    assert ID.Item is Element
    for name in ("Ref", "IDSeq", "ItemSeq", "RefSeq"):
        assert getattr(ID, name) is not None


def test_idtype_underscore_id_is_the_uuid() -> None:
    i = IDType.create()
    assert isinstance(i._id, uuid.UUID)
    assert str(i._id) == i
    assert i._id == i.uuid


def test_validate_order_flattens_in_order() -> None:
    a, b, c = Item(), Item(), Item()
    assert validate_order([a, [b.id, (str(c.id),)], None]) == [a.id, b.id, c.id]
    assert validate_order({a.id: 1, b.id: 2}) == [a.id, b.id]
    assert validate_order(a) == [a.id]
    assert validate_order(None) == []
    with pytest.raises(ValueError):
        validate_order([1, 2, 3])


# -- Node ----------------------------------------------------------------------------------


def test_node_content_and_embedding() -> None:
    n = Node(content={"text": "hi"}, embedding=[1, 2.5])
    assert n.content == {"text": "hi"}
    assert n.embedding == [1.0, 2.5]
    assert all(isinstance(x, float) for x in n.embedding)
    assert Node().content is None and Node().embedding is None
    assert Node(embedding="[0.5, 1]").embedding == [0.5, 1.0]


@pytest.mark.parametrize(
    "bad", ["not json", '{"a": 1}', 5, ["x"], [True], [float("nan")], [object()]]
)
def test_node_refuses_a_bad_embedding(bad: object) -> None:
    with pytest.raises(ValidationError):
        Node(embedding=bad)


def test_node_round_trips_through_to_dict_and_json() -> None:
    n = Node(content=[1, "two"], embedding=[0.25])
    back = Element.from_dict(json.loads(json.dumps(n.to_dict())))
    assert type(back) is Node
    assert back == n and back.content == [1, "two"] and back.embedding == [0.25]


def test_node_subclasses_live_in_a_pile() -> None:
    class Squared(Node):
        @property
        def squared(self) -> int:
            assert isinstance(self.content, int)
            return self.content**2

    p: Pile[Squared] = Pile([Squared(content=i) for i in range(4)], item_type=Node)
    assert [e.squared for e in p.values()] == [0, 1, 4, 9]


def test_a_dropped_pile_releases_its_nodes() -> None:
    p: Pile[Node] = Pile()
    refs = []
    for i in range(50):
        node = Node(content=i)
        p.include(node)
        refs.append(weakref.ref(node))
    del p, node
    gc.collect()
    assert all(r() is None for r in refs)


# -- Progression ---------------------------------------------------------------------------


def test_next_gives_the_first_id_without_advancing() -> None:
    a, b = Item(), Item()
    prog = Progression(order=[a, b])
    assert next(prog) == a.id
    assert next(prog) == a.id  # lionagi's next() does not consume
    assert list(prog) == [a.id, b.id]
    with pytest.raises(StopIteration):
        next(Progression())


def test_slice_assignment_replaces_the_slice() -> None:
    items = [Item() for _ in range(4)]
    new = [Item(), Item(), Item()]
    prog = Progression(order=items)
    prog[0:2] = new
    assert prog.order == [new[0].id, new[1].id, new[2].id, items[2].id, items[3].id]
    # membership follows the new order
    assert new[2] in prog and items[0] not in prog and items[1] not in prog
    assert prog.count(new[0]) == 1
    prog[1:3] = new[0]  # one ref is a one-item list
    assert prog.order == [new[0].id, new[0].id, items[2].id, items[3].id]
    assert prog.count(new[0]) == 2 and new[1] not in prog
    prog[:] = []
    assert len(prog) == 0 and items[2] not in prog


def test_slice_assignment_refuses_bad_ids_and_leaves_the_order() -> None:
    items = [Item() for _ in range(3)]
    prog = Progression(order=items)
    with pytest.raises(IDError):
        prog[0:1] = ["not-a-uuid"]
    assert prog.order == [i.id for i in items]


def test_slice_assignment_on_a_projection_is_refused() -> None:
    prog = Progression(order=[Item()])._freeze("the executor")
    with pytest.raises(lionstore.ReadOnlyProjectionError):
        prog[0:1] = [Item()]


def test_progression_index_out_of_range_is_catchable_as_lookup_index_or_value_error() -> None:
    prog = Progression()
    for exc in (ItemNotFoundError, IndexError, ValueError, IndexOutOfRangeError):
        with pytest.raises(exc):
            prog[3]
        with pytest.raises(exc):
            prog.pop()
        with pytest.raises(exc):
            prog.popleft()


# -- Pile ----------------------------------------------------------------------------------


def test_order_may_be_a_progression_and_its_iteration_is_the_order() -> None:
    class Reversed(Progression):
        def __iter__(self):  # type: ignore[no-untyped-def]
            return reversed(self.order)

    items = [Item(n=i) for i in range(5)]
    p: Pile[Item] = Pile(items, order=Reversed(order=items))
    assert [e.n for e in p.values()] == [4, 3, 2, 1, 0]
    q: Pile[Item] = Pile(items, order=Progression(order=[items[1], items[0], *items[2:]]))
    assert [e.n for e in q] == [1, 0, 2, 3, 4]
    with pytest.raises(ValueError):
        Pile(items, order=Progression(order=items[:2]))


def test_pile_helper_builds_a_pile_and_honours_strict_type() -> None:
    items = [Item(n=i) for i in range(3)]
    p = pile(items, item_type=Item)
    assert isinstance(p, Pile) and len(p) == 3 and p.item_type == frozenset({Item})
    ordered = pile(items, progression=list(reversed(items)))
    assert [e.n for e in ordered] == [2, 1, 0]
    strict = pile(items, item_type=Item, strict_type=True)
    with pytest.raises(TypeError):
        strict.include(SubItem())
    assert len(pile()) == 0


def test_strict_keyword_is_lionagis_spelling_of_strict_type() -> None:
    p: Pile[Item] = Pile([Item()], item_type=Item, strict=True)
    assert p.strict_type
    with pytest.raises(TypeError):
        p.include(SubItem())
    loose: Pile[Item] = Pile([Item()], item_type=Item)
    loose.include(SubItem())
    assert len(loose) == 2


@pytest.mark.parametrize("bad", [5, "text", [1, 2], object()])
def test_a_non_element_is_a_type_error_and_a_value_error(bad: object) -> None:
    p: Pile[Item] = Pile([Item()])
    for exc in (TypeError, ValueError, InvalidItemError):
        with pytest.raises(exc):
            p.update(bad)
        with pytest.raises(exc):
            p.include(bad)
    assert len(p) == 1


def test_a_wrong_item_type_is_still_a_type_error() -> None:
    p: Pile[Item] = Pile(item_type=Item)
    with pytest.raises(TypeError):
        p.include(Node())
    with pytest.raises(TypeError):
        Pile([1, 2], item_type=Item)


async def test_asetitem_out_of_range_is_catchable_as_value_error() -> None:
    p: Pile[Node] = Pile([Node(content=i) for i in range(5)])
    await asyncio.wait_for(p.asetitem(2, Node(content=10)), timeout=5)
    assert p[2].content == 10 and len(p) == 5
    for exc in (ValueError, ItemNotFoundError, IndexError):
        with pytest.raises(exc):
            await asyncio.wait_for(p.asetitem(10, Node(content=20)), timeout=5)
    assert len(p) == 5
    with pytest.raises(ValueError):
        p[7]


# -- Execution -----------------------------------------------------------------------------


def test_execution_prints_as_lionagi_prints_it() -> None:
    text = str(Execution(duration=1.23, response="test", status=EventStatus.COMPLETED, error=None))
    assert text == "Execution(status=completed, duration=1.23, response=test, error=None)"
    failed = str(Execution(status="failed", error="Boom"))
    assert failed == "Execution(status=failed, duration=None, response=None, error=Boom)"
