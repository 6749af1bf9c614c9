"""Progression: lionagi 0.8.7's ordered ids (section 2.5), with canonical ids,
O(1) membership and read-only projections."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest

import lionstore
from lionstore.domain.element import Element
from lionstore.domain.ids import IDType
from lionstore.domain.progression import Progression
from lionstore.errors import IDError, ItemNotFoundError


def ids(count: int) -> list[IDType]:
    return [IDType.create() for _ in range(count)]


def test_order_is_validated_to_canonical_ids() -> None:
    a, b = ids(2)
    element = Element()
    prog = Progression(order=[str(a).upper(), uuid.UUID(b), element, None, [a]])
    assert prog.order == [a, b, element.id, a]
    assert all(type(x) is IDType for x in prog.order)
    with pytest.raises(ValueError, match="Invalid ID"):
        Progression(order=["garbage"])
    assert Progression(name="n").name == "n"


def test_container_protocol() -> None:
    a, b, c = ids(3)
    prog = Progression(order=[a, b, c])
    assert len(prog) == 3
    assert prog
    assert not Progression()
    assert list(prog) == [a, b, c]
    assert list(reversed(prog)) == [c, b, a]
    assert a in prog
    assert str(a).upper() in prog
    assert Element(id=a) in prog
    assert [a, c] in prog
    assert [a, IDType.create()] not in prog
    assert "garbage" not in prog
    assert 3 not in prog
    assert [] not in prog


def test_indexing() -> None:
    a, b, c = ids(3)
    prog = Progression(order=[a, b, c], name="p")
    assert prog[0] == a
    assert prog[-1] == c
    part = prog[1:]
    assert isinstance(part, Progression)
    assert list(part) == [b, c]
    assert part.name == "p"
    with pytest.raises(ItemNotFoundError):
        prog[3]
    with pytest.raises(ItemNotFoundError):
        prog[5:]
    with pytest.raises(TypeError):
        prog["0"]  # type: ignore[call-overload]
    prog[1] = str(c)
    assert list(prog) == [a, c, c]
    prog[10] = b  # past the end appends
    assert list(prog) == [a, c, c, b]
    assert prog.count(c) == 2
    del prog[1]
    assert list(prog) == [a, c, b]
    assert prog.count(c) == 1


def test_include_appends_only_new_ids() -> None:
    a, b, c = ids(3)
    prog = Progression(order=[a])
    assert prog.include([a, b]) is True
    assert prog.include(b) is True
    assert prog.include([]) is True
    assert list(prog) == [a, b]
    assert prog.include(Element(id=c)) is True
    assert list(prog) == [a, b, c]
    assert prog.include("garbage") is False  # lionagi let IDError escape here
    assert list(prog) == [a, b, c]


def test_append_allows_duplicates() -> None:
    a = IDType.create()
    prog = Progression()
    prog.append(a)
    prog.append([a, a])
    assert list(prog) == [a, a, a]
    assert prog.count(a) == 3
    with pytest.raises(IDError):
        prog.append("garbage")


def test_exclude_removes_every_occurrence() -> None:
    a, b = ids(2)
    prog = Progression(order=[a, b, a])
    assert prog.exclude(a) is True
    assert list(prog) == [b]
    assert a not in prog
    assert prog.exclude(a) is False
    assert prog.exclude("garbage") is False
    assert list(prog) == [b]


def test_remove() -> None:
    a, b = ids(2)
    prog = Progression(order=[a, b, a])
    prog.remove(str(a))
    assert list(prog) == [b]
    with pytest.raises(ItemNotFoundError):
        prog.remove(a)
    with pytest.raises(ItemNotFoundError, match="Invalid ID"):
        prog.remove("garbage")
    assert list(prog) == [b]


def test_pop_and_popleft() -> None:
    a, b, c = ids(3)
    prog = Progression(order=[a, b, c])
    assert prog.pop() == c
    assert prog.popleft() == a
    assert prog.pop(0) == b
    with pytest.raises(ItemNotFoundError):
        prog.pop()
    with pytest.raises(ItemNotFoundError):
        prog.popleft()
    assert a not in prog


def test_index_insert_extend_clear() -> None:
    a, b, c, d = ids(4)
    prog = Progression(order=[a, c])
    prog.insert(1, b)
    assert list(prog) == [a, b, c]
    assert prog.index(str(b)) == 1
    with pytest.raises(ValueError):
        prog.index(d)
    prog.extend(Progression(order=[d, a]))
    assert list(prog) == [a, b, c, d, a]
    with pytest.raises(ValueError):
        prog.extend([d])  # type: ignore[arg-type]
    prog.clear()
    assert len(prog) == 0
    assert a not in prog


def test_operators() -> None:
    a, b, c = ids(3)
    prog = Progression(order=[a, b], name="n")
    assert list(prog + c) == [a, b, c]
    assert list(prog + [c, a]) == [a, b, c, a]  # noqa: RUF005 - the operator under test
    assert list([c] + prog) == [c, a, b]  # noqa: RUF005 - the operator under test
    assert list(prog - a) == [b]
    assert (prog + c).name == "n"
    assert list(prog) == [a, b]  # + and - build new progressions
    prog += c
    assert list(prog) == [a, b, c]
    prog -= b
    assert list(prog) == [a, c]
    with pytest.raises(ItemNotFoundError):
        prog -= b


def test_equality_compares_order_and_name() -> None:
    a, b = ids(2)
    assert Progression(order=[a, b]) == Progression(order=[a, b])
    assert Progression(order=[a, b]) != Progression(order=[b, a])
    assert Progression(order=[a], name="x") != Progression(order=[a], name="y")


def test_round_trip() -> None:
    a, b = ids(2)
    prog = Progression(order=[a, b, a], name="queue")
    data = json.loads(json.dumps(prog.to_dict()))
    assert data["order"] == [a, b, a]
    back = Element.from_dict(data)
    assert type(back) is Progression
    assert back == prog
    assert back.count(a) == 2
    assert a in back


def test_assigning_order_keeps_membership_consistent() -> None:
    a, b = ids(2)
    prog = Progression(order=[a])
    prog.order = [str(b).upper()]  # type: ignore[list-item]
    assert prog.order == [b]
    assert b in prog
    assert a not in prog
    assert prog.count(b) == 1
    assert prog.include(b) is True
    assert list(prog) == [b]  # not duplicated


def test_frozen_progression_refuses_every_mutation() -> None:
    a, b = ids(2)
    prog = Progression(order=[a, b])._freeze("Executor.append")
    mutations: list[Callable[[], object]] = [
        lambda: prog.include(IDType.create()),
        lambda: prog.exclude(a),
        lambda: prog.append(a),
        lambda: prog.insert(0, a),
        lambda: prog.pop(),
        lambda: prog.popleft(),
        lambda: prog.remove(a),
        lambda: prog.clear(),
        lambda: prog.extend(Progression(order=[a])),
        lambda: prog.__setitem__(0, b),
        lambda: prog.__delitem__(0),
        lambda: prog.__iadd__(a),
        lambda: prog.__isub__(a),
        lambda: setattr(prog, "order", []),
    ]
    for mutate in mutations:
        with pytest.raises(lionstore.ReadOnlyProjectionError, match=r"Executor\.append"):
            mutate()
    assert list(prog) == [a, b]
    assert a in prog
    assert prog[0] == a
    assert list(prog + a) == [a, b, a]  # derived progressions are ordinary
    (prog + a).append(b)
