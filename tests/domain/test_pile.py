"""Pile: lionagi 0.8.7's semantics (section 2.6) minus the ones that lose data or
raise on valid input (section 5 item 16)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import lionstore
from lionstore.domain.element import Element
from lionstore.domain.pile import Pile
from lionstore.domain.progression import Progression
from lionstore.errors import ItemExistsError, ItemNotFoundError, ReadOnlyProjectionError


class Item(Element):
    n: int = 0


class SubItem(Item):
    pass


class Other(Element):
    pass


def items(count: int) -> list[Item]:
    return [Item(n=i) for i in range(count)]


# -- construction and ordering -------------------------------------------------------------


def test_insertion_order_everywhere() -> None:
    a, b, c = items(3)
    pile: Pile[Item] = Pile([c, a])
    pile.include(b)
    assert list(pile) == [c, a, b]
    assert pile.keys() == [c.id, a.id, b.id]
    assert pile.values() == [c, a, b]
    assert pile.items() == [(c.id, c), (a.id, a), (b.id, b)]
    assert list(pile.progression) == [c.id, a.id, b.id]
    assert isinstance(pile.progression, Progression)
    assert list(reversed(pile)) == [b, a, c]
    assert len(pile) == pile.size() == 3
    assert pile and not pile.is_empty()
    assert not Pile() and Pile().is_empty()
    assert pile.collections == {c.id: c, a.id: a, b.id: b}


def test_custom_order_must_be_a_permutation() -> None:
    a, b, c = items(3)
    assert list(Pile([a, b, c], order=[c.id, str(a.id), b])) == [c, a, b]
    for bad in ([a, b], [a, b, c, a], [a, b, Item()]):
        with pytest.raises(ValueError):
            Pile([a, b, c], order=bad)


def test_construction_from_dict_pile_and_single_element() -> None:
    a, b = items(2)
    assert list(Pile({a.id: a, b.id: b})) == [a, b]
    assert list(Pile(Pile([b, a]))) == [b, a]
    assert list(Pile(a)) == [a]
    with pytest.raises(TypeError):
        Pile("not elements")


def test_unknown_constructor_kwargs_are_refused() -> None:
    """lionagi silently ignored unknown kwargs (so its ``strict=True`` ran non-strict);
    lionstore refuses them, and honours ``strict=`` as lionagi's spelling of
    ``strict_type=``."""
    with pytest.raises(ValueError):
        Pile(bogus=True)
    assert Pile(strict=True).strict_type is True
    assert Pile(strict=False).strict_type is False


# -- types ---------------------------------------------------------------------------------


def test_item_type_allows_subclasses_unless_strict() -> None:
    loose: Pile[Item] = Pile(item_type=Item)
    loose.include([Item(), SubItem()])
    assert len(loose) == 2
    assert loose.item_type == frozenset({Item})
    assert loose.strict_type is False
    with pytest.raises(TypeError, match="Invalid item type"):
        loose.include(Other())

    strict: Pile[Item] = Pile(item_type=Item, strict_type=True)
    assert strict.strict_type is True
    strict.include(Item())
    with pytest.raises(TypeError, match="exactly"):
        strict.include(SubItem())
    with pytest.raises(TypeError):
        Pile([SubItem()], item_type=Item, strict_type=True)
    assert len(strict) == 1


def test_several_item_types() -> None:
    pile: Pile[Any] = Pile(item_type=[Item, Other])
    pile.include([Item(), Other()])
    assert len(pile) == 2
    with pytest.raises(TypeError):
        pile.include(Element())


def test_a_rejected_batch_includes_nothing() -> None:
    pile: Pile[Item] = Pile(item_type=Item)
    good = Item()
    with pytest.raises(TypeError):
        pile.include([good, Other()])
    assert good not in pile
    assert len(pile) == 0


def test_bad_item_type_declarations() -> None:
    with pytest.raises(TypeError):
        Pile(item_type=int)
    with pytest.raises(ValueError):
        Pile(item_type=[Item, Item])
    with pytest.raises(TypeError):
        Pile().include(["not an element"])


# -- include / exclude / update ------------------------------------------------------------


def test_include_of_an_existing_id_replaces_in_place() -> None:
    a, b, c = items(3)
    pile: Pile[Item] = Pile([a, b, c])
    newer_b = Item(id=b.id, n=99)
    pile.include(newer_b)
    assert len(pile) == 3
    assert pile.keys() == [a.id, b.id, c.id]
    assert pile[b.id] is newer_b
    pile.update([Item(id=a.id, n=7), d := Item(n=3)])
    assert pile.keys() == [a.id, b.id, c.id, d.id]
    assert pile[0].n == 7
    pile.append(e := Item())
    assert pile[-1] is e


def test_exclude_is_silent_and_takes_any_ref() -> None:
    """lionagi raised TypeError for ``exclude(str_id)``."""
    a, b, c, d = items(4)
    pile: Pile[Item] = Pile([a, b, c, d])
    pile.exclude(str(a.id))
    pile.exclude(b)
    pile.exclude([uuid.UUID(c.id)])
    pile.exclude(Item())  # missing: silent
    pile.exclude("not an id")  # garbage: silent
    assert list(pile) == [d]
    pile.exclude(Pile([d]))
    assert len(pile) == 0


def test_remove() -> None:
    a, b = items(2)
    pile: Pile[Item] = Pile([a, b])
    pile.remove(str(a.id))
    assert list(pile) == [b]
    with pytest.raises(ItemNotFoundError):
        pile.remove(a)
    with pytest.raises(ItemNotFoundError):
        pile.remove("bad")
    with pytest.raises(TypeError):
        pile.remove(0)
    with pytest.raises(TypeError):
        pile.remove(slice(0, 1))
    assert list(pile) == [b]


# -- lookup --------------------------------------------------------------------------------


def test_getitem_by_every_kind_of_key() -> None:
    """lionagi raised ItemNotFoundError for ``p[str_id]`` and ``p[slice]``."""
    a, b, c = items(3)
    pile: Pile[Item] = Pile([a, b, c])
    assert pile[0] is a
    assert pile[-1] is c
    assert pile[a] is a
    assert pile[b.id] is b
    assert pile[str(b.id)] is b
    assert pile[str(b.id).upper()] is b
    assert pile[uuid.UUID(c.id)] is c
    assert pile[[c.id, a]] == [c, a]
    part = pile[1:]
    assert isinstance(part, Pile)
    assert list(part) == [b, c]
    assert len(pile) == 3  # slicing does not remove
    for missing in (3, Item(), str(uuid.uuid4()), "garbage", [a, Item()]):
        with pytest.raises(ItemNotFoundError):
            pile[missing]
    assert issubclass(ItemNotFoundError, LookupError)


def test_get_with_and_without_default() -> None:
    a = Item()
    pile: Pile[Item] = Pile([a])
    assert pile.get(str(a.id)) is a
    assert pile.get(Item(), None) is None
    sentinel = object()
    assert pile.get("garbage", sentinel) is sentinel
    assert pile.get(5, sentinel) is sentinel
    with pytest.raises(ItemNotFoundError):
        pile.get(Item())


def test_membership_with_element_id_str_and_lists() -> None:
    a, b = items(2)
    pile: Pile[Item] = Pile([a])
    assert a in pile
    assert a.id in pile
    assert str(a.id) in pile
    assert str(a.id).upper() in pile
    assert uuid.UUID(a.id) in pile
    assert [a, str(a.id)] in pile
    assert b not in pile
    assert [a, b] not in pile  # all must be present
    assert "garbage" not in pile
    assert 5 not in pile
    assert [] not in pile


# -- pop / insert / setitem / clear --------------------------------------------------------


def test_pop_of_a_slice_returns_the_removed_items() -> None:
    """lionagi 0.8.7 removed the items and returned an *empty* Pile: the data was lost."""
    a, b, c, d = items(4)
    pile: Pile[Item] = Pile([a, b, c, d], item_type=Item)
    popped = pile.pop(slice(1, 3))
    assert isinstance(popped, Pile)
    assert list(popped) == [b, c]
    assert popped.item_type == frozenset({Item})
    assert list(pile) == [a, d]


def test_pop_by_index_id_and_list() -> None:
    a, b, c, d = items(4)
    pile: Pile[Item] = Pile([a, b, c, d])
    assert pile.pop() is d
    assert pile.pop(0) is a
    assert pile.pop(str(b.id)) is b
    pile.include([a, b])
    assert pile.pop([a, b.id]) == [a, b]
    assert list(pile) == [c]
    with pytest.raises(ItemNotFoundError):
        pile.pop(a)
    assert pile.pop(a, None) is None
    assert pile.pop(7, "default") == "default"
    assert list(pile) == [c]


def test_insert_and_setitem() -> None:
    a, b, c = items(3)
    pile: Pile[Item] = Pile([a, c])
    pile.insert(1, b)
    assert list(pile) == [a, b, c]
    with pytest.raises(ItemExistsError):
        pile.insert(0, b)
    replacement = Item()
    pile[1] = replacement
    assert list(pile) == [a, replacement, c]
    with pytest.raises(ItemExistsError):
        pile[0] = c
    with pytest.raises(ItemNotFoundError):
        pile[10] = Item()
    newer_c = Item(id=c.id, n=5)
    pile[str(c.id)] = newer_c
    assert pile[c.id] is newer_c
    with pytest.raises(ValueError):
        pile[str(a.id)] = Item()
    with pytest.raises(TypeError):
        Pile[Any](item_type=Item).insert(0, Other())
    pile.clear()
    assert len(pile) == 0


# -- set operators -------------------------------------------------------------------------


def test_set_operators_build_new_piles() -> None:
    """lionagi: ``|`` raised ValueError, ``&`` and ``^`` always returned an empty Pile."""
    a, b, c, d = items(4)
    left: Pile[Item] = Pile([a, b, c], item_type=Item)
    right: Pile[Item] = Pile([c, d, b])
    union = left | right
    assert list(union) == [a, b, c, d]
    assert list(left & right) == [b, c]
    assert list(left ^ right) == [a, d]
    assert union.item_type == frozenset({Item})
    assert list(left) == [a, b, c]  # operands unchanged
    assert list(right) == [c, d, b]


def test_equality_is_by_content_order() -> None:
    a, b = items(2)
    assert Pile([a, b]) == Pile([a, b])
    assert Pile([a, b]) != Pile([b, a])
    assert repr(Pile([a])) == "Pile(size=1)"


# -- async ---------------------------------------------------------------------------------


async def test_async_methods() -> None:
    a, b, c = items(3)
    pile: Pile[Item] = Pile()
    await pile.ainclude([a, b, c])
    assert await pile.aget(str(b.id)) is b
    assert await pile.aget(Item(), None) is None
    await pile.aexclude(a)
    assert await pile.apop() is c
    newer = Item(id=b.id, n=4)
    await pile.aupdate(newer)
    assert pile[b.id] is newer
    await pile.asetitem(0, a)
    assert list(pile) == [a]
    await pile.aremove(a)
    assert len(pile) == 0
    await pile.ainclude([b, c])
    assert [x async for x in pile] == [b, c]
    await pile.aclear()
    assert len(pile) == 0


async def test_a_methods_inside_async_with_do_not_deadlock() -> None:
    """lionagi 0.8.7's lock was not re-entrant: ``await pile.ainclude(x)`` inside
    ``async with pile`` hung forever."""
    pile: Pile[Item] = Pile()
    a, b = items(2)

    async def body() -> None:
        async with pile:
            await pile.ainclude(a)
            await pile.ainclude(b)
            assert await pile.aget(a) is a
            await pile.aexclude(b)
            assert [x async for x in pile] == [a]

    await asyncio.wait_for(body(), timeout=5)
    assert list(pile) == [a]


async def test_async_with_still_excludes_other_tasks() -> None:
    pile: Pile[Item] = Pile()
    first, second = items(2)
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with pile:
            await pile.ainclude(first)
            inside.set()
            await release.wait()
            assert list(pile) == [first]  # the other task has not got in

    task = asyncio.create_task(holder())
    await asyncio.wait_for(inside.wait(), timeout=5)
    other = asyncio.create_task(pile.ainclude(second))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not other.done()
    assert second not in pile
    release.set()
    await asyncio.wait_for(asyncio.gather(task, other), timeout=5)
    assert list(pile) == [first, second]


# -- read-only projections -----------------------------------------------------------------


async def test_frozen_pile_refuses_every_mutation_but_reads_work() -> None:
    a, b = items(2)
    pile: Pile[Item] = Pile([a, b])._freeze("the owner's methods")
    mutations: list[Callable[[], object]] = [
        lambda: pile.include(Item()),
        lambda: pile.append(Item()),
        lambda: pile.update(a),
        lambda: pile.exclude(a),
        lambda: pile.remove(a),
        lambda: pile.pop(),
        lambda: pile.pop(slice(0, 1)),
        lambda: pile.insert(0, Item()),
        lambda: pile.__setitem__(0, Item()),
        lambda: pile.clear(),
    ]
    for mutate in mutations:
        with pytest.raises(lionstore.ReadOnlyProjectionError, match="the owner's methods"):
            mutate()
    for coro in (pile.ainclude(Item()), pile.aexclude(a), pile.apop(), pile.aclear()):
        with pytest.raises(ReadOnlyProjectionError):
            await coro
    assert issubclass(ReadOnlyProjectionError, TypeError)
    assert list(pile) == [a, b]
    assert pile[0] is a
    assert a in pile
    assert pile.get(Item(), None) is None
    assert list(pile[0:1]) == [a]
    copy = pile | Pile([Item()])
    copy.include(Item())  # derived piles are ordinary piles
    assert len(copy) == 4
