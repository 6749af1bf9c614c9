"""Progression: an ordered sequence of ids (lionagi's, with O(1) membership).

A progression owned by a projection (``executor.pending``, ``mailbox.pending_outs``)
is read-only: it changes only when records are applied, and mutating it directly
raises :class:`~lionstore.errors.ReadOnlyProjectionError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Self, overload

from pydantic import Field, PrivateAttr, field_validator

from lionstore.domain.element import Element, ReadOnlyGuard
from lionstore.domain.ids import IDType, to_id, to_ids
from lionstore.errors import IDError, IndexOutOfRangeError, ItemNotFoundError

__all__ = ["Progression"]


class Progression(ReadOnlyGuard, Element):
    """Ordered ids. ``include`` appends only new ids; ``append`` allows repeats."""

    order: list[IDType] = Field(default_factory=list)
    name: str | None = None

    _counts: Counter[str] = PrivateAttr(default_factory=Counter)
    _read_only: str | None = PrivateAttr(default=None)

    @field_validator("order", mode="before")
    @classmethod
    def _validate_order(cls, value: Any) -> list[IDType]:
        return to_ids(value)

    def model_post_init(self, context: Any, /) -> None:
        self._counts = Counter(self.order)

    def __setattr__(self, name: str, value: Any) -> None:
        # ``progression.order = [...]`` is validated, refused on a read-only
        # projection, and keeps the membership counts in step with the order.
        if name == "order":
            self._check()
            ids = to_ids(value)
            super().__setattr__(name, ids)
            self._counts = Counter(ids)
            return
        super().__setattr__(name, value)

    # -- container protocol ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.order)

    def __bool__(self) -> bool:
        return bool(self.order)

    def __iter__(self) -> Iterator[IDType]:  # type: ignore[override]
        return iter(list(self.order))

    def __contains__(self, refs: Any) -> bool:
        try:
            ids = to_ids(refs)
        except (IDError, ValueError, TypeError):
            return False
        return bool(ids) and all(self._counts.get(i, 0) for i in ids)

    def __next__(self) -> IDType:
        """The first id, as lionagi's ``next(progression)`` gives (it does not advance);
        StopIteration when empty. Use ``iter(progression)`` to walk the ids."""
        if not self.order:
            raise StopIteration("No more items in the progression")
        return self.order[0]

    def __list__(self) -> list[IDType]:
        return list(self.order)

    @overload
    def __getitem__(self, key: int) -> IDType: ...
    @overload
    def __getitem__(self, key: slice) -> Progression: ...
    def __getitem__(self, key: int | slice) -> IDType | Progression:
        if isinstance(key, bool) or not isinstance(key, (int, slice)):
            raise TypeError(f"progression indices must be int or slice, not {type(key).__name__}")
        if isinstance(key, slice):
            part = self.order[key]
            if not part:
                raise ItemNotFoundError(f"no items in slice {key}")
            return Progression(order=part, name=self.name)
        try:
            return self.order[key]
        except IndexError:
            raise IndexOutOfRangeError(f"index {key} is out of range") from None

    def __setitem__(self, key: int | slice, value: Any) -> None:
        """Set by position (an index at or past the end appends) or replace a slice
        with the ids of ``value`` (one ref or a list of them; lengths may differ)."""
        self._check()
        if isinstance(key, slice):
            ids = to_ids(value)
            self.order[key] = ids
            self._counts = Counter(self.order)
            return
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"progression indices must be int or slice, not {type(key).__name__}")
        ref = to_id(value)
        if key >= len(self.order):
            self.order.append(ref)
        else:
            old = self.order[key]
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
            self.order[key] = ref
        self._counts[ref] += 1

    def __delitem__(self, key: int | slice) -> None:
        self._check()
        del self.order[key]
        self._counts = Counter(self.order)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Progression):
            return NotImplemented
        return self.order == other.order and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.id)

    # -- mutation (lionagi semantics) --------------------------------------------------

    def include(self, refs: Any) -> bool:
        """Append the ids not already present; True if the input was valid."""
        self._check()
        try:
            ids = to_ids(refs)
        except ValueError:
            return False
        for ref in ids:
            if not self._counts.get(ref):
                self.order.append(ref)
                self._counts[ref] += 1
        return True

    def exclude(self, refs: Any) -> bool:
        """Remove every occurrence of the ids; True if anything was removed."""
        self._check()
        try:
            ids = set(to_ids(refs))
        except ValueError:
            return False
        present = {i for i in ids if self._counts.get(i)}
        if not present:
            return False
        self.order[:] = [x for x in self.order if x not in present]
        for ref in present:
            del self._counts[ref]
        return True

    def append(self, refs: Any) -> None:
        """Append the ids, repeats allowed."""
        self._check()
        for ref in to_ids(refs):
            self.order.append(ref)
            self._counts[ref] += 1

    def insert(self, index: int, refs: Any) -> None:
        self._check()
        ids = to_ids(refs)
        self.order[index:index] = ids
        self._counts.update(ids)

    def pop(self, index: int = -1) -> IDType:
        self._check()
        try:
            ref = self.order.pop(index)
        except IndexError:
            raise IndexOutOfRangeError(
                "pop from an empty progression or index out of range"
            ) from None
        self._counts[ref] -= 1
        if not self._counts[ref]:
            del self._counts[ref]
        return ref

    def popleft(self) -> IDType:
        if not self.order:
            self._check()
            raise IndexOutOfRangeError("popleft from an empty progression")
        return self.pop(0)

    def remove(self, refs: Any) -> None:
        """Remove every occurrence; ItemNotFoundError if any id is missing."""
        self._check()
        try:
            ids = to_ids(refs)
        except ValueError:
            raise ItemNotFoundError("Invalid ID(s) provided.") from None
        missing = [i for i in ids if not self._counts.get(i)]
        if missing or not ids:
            raise ItemNotFoundError(f"not in progression: {missing}")
        self.exclude(ids)

    def count(self, ref: Any) -> int:
        return self._counts.get(to_id(ref), 0)

    def index(self, ref: Any, start: int = 0, end: int | None = None) -> int:
        return self.order.index(to_id(ref), start, len(self.order) if end is None else end)

    def extend(self, other: Progression) -> None:
        if not isinstance(other, Progression):
            raise ValueError("can only extend a Progression with another Progression")
        self.append(other.order)

    def clear(self) -> None:
        self._check()
        self.order = []
        self._counts = Counter()

    def __add__(self, other: Any) -> Progression:
        return Progression(order=[*self.order, *to_ids(other)], name=self.name)

    def __radd__(self, other: Any) -> Progression:
        return Progression(order=[*to_ids(other), *self.order], name=self.name)

    def __sub__(self, other: Any) -> Progression:
        drop = set(to_ids(other))
        return Progression(order=[x for x in self.order if x not in drop], name=self.name)

    def __iadd__(self, other: Any) -> Self:
        self.append(other)
        return self

    def __isub__(self, other: Any) -> Self:
        self.remove(other)
        return self

    def __reversed__(self) -> Iterator[IDType]:
        return reversed(list(self.order))

    def __str__(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        return f"Progression(size={len(self)}, name={self.name!r})"
