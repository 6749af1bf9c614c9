"""Pile: an ordered, type-checked collection of elements keyed by id (lionagi's,
with O(1) include/exclude/lookup and without its data-losing quirks: a popped
slice returns its items, str ids work everywhere, set operators work).

A pile owned by a projection (``executor.pile``, ``mailbox.pile_``) is
read-only: mutating it raises :class:`~lionstore.errors.ReadOnlyProjectionError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Generic, Self, TypeVar

from pydantic import ConfigDict, PrivateAttr

from lionstore.domain.element import Element, ReadOnlyGuard
from lionstore.domain.ids import IDType, to_id, to_ids
from lionstore.domain.progression import Progression
from lionstore.errors import (
    IDError,
    IndexOutOfRangeError,
    InvalidItemError,
    ItemExistsError,
    ItemNotFoundError,
)

__all__ = ["Pile", "pile"]

T = TypeVar("T", bound=Element)
_UNDEFINED: Any = object()


class Pile(ReadOnlyGuard, Element, Generic[T]):
    """Elements in insertion order, optionally restricted to ``item_type`` (exactly,
    with ``strict_type=True``; subclasses allowed otherwise)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    _items: dict[IDType, T] = PrivateAttr(default_factory=dict)
    _item_type: frozenset[type] | None = PrivateAttr(default=None)
    _strict: bool = PrivateAttr(default=False)
    _read_only: str | None = PrivateAttr(default=None)
    _lock: asyncio.Lock | None = PrivateAttr(default=None)
    _lock_owner: asyncio.Task[Any] | None = PrivateAttr(default=None)

    def __init__(
        self,
        collections: Any = None,
        item_type: type | Iterable[type] | None = None,
        order: Any = None,
        strict_type: bool = False,
        **kwargs: Any,
    ) -> None:
        # lionagi code (and its ``pile()`` helper) spells the flag ``strict=``; lionagi
        # silently ignores it, lionstore honours it.
        strict = kwargs.pop("strict", None)
        if strict is not None:
            strict_type = bool(strict_type) or bool(strict)
        super().__init__(**kwargs)
        self._item_type = self._validate_item_type(item_type)
        self._strict = bool(strict_type)
        items = self._as_items(collections) if collections is not None else []
        for item in items:
            self._check_type(item)
        by_id = {item.id: item for item in items}
        if order is not None:
            # A Progression gives the order its iteration yields (not its own id).
            ids = to_ids(list(order)) if isinstance(order, Progression) else to_ids(order)
            if len(ids) != len(set(ids)) or set(ids) != set(by_id):
                raise ValueError("order must list every item of the pile exactly once")
            by_id = {i: by_id[i] for i in ids}
        self._items = by_id

    # -- types ---------------------------------------------------------------------------

    @staticmethod
    def _validate_item_type(item_type: Any) -> frozenset[type] | None:
        if item_type is None:
            return None
        types = [item_type] if isinstance(item_type, type) else list(item_type)
        for t in types:
            if not (isinstance(t, type) and issubclass(t, Element)):
                raise TypeError(f"item_type must be Element subclasses, not {t!r}")
        if len(types) != len(set(types)):
            raise ValueError("item_type lists a type twice")
        return frozenset(types)

    @property
    def item_type(self) -> frozenset[type] | None:
        return self._item_type

    @property
    def strict_type(self) -> bool:
        return self._strict

    def _check_type(self, item: Any) -> None:
        if not isinstance(item, Element):
            raise InvalidItemError(f"Invalid pile item {type(item).__name__}: piles hold Elements")
        # (the private attributes read from their dict: each read by name is a failed
        # look-up first, then Element.__getattr__; this runs for every event appended)
        private: dict[str, Any] = self.__pydantic_private__  # type: ignore[assignment]
        allowed = private["_item_type"]
        if allowed is None:
            return
        if private["_strict"]:
            if type(item) not in allowed:
                raise InvalidItemError(
                    f"Invalid item type in pile: {type(item).__name__} is not exactly one of "
                    f"{sorted(t.__name__ for t in allowed)}"
                )
        elif not isinstance(item, tuple(allowed)):
            raise InvalidItemError(
                f"Invalid item type in pile: {type(item).__name__} is not one of "
                f"{sorted(t.__name__ for t in allowed)} or their subclasses"
            )

    @staticmethod
    def _as_items(value: Any) -> list[Any]:
        if isinstance(value, Element) and not isinstance(value, Pile):
            return [value]
        if isinstance(value, Pile):
            return list(value.values())
        if isinstance(value, dict):
            return list(value.values())
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise InvalidItemError(f"expected elements, not {type(value).__name__}")
        return list(value)

    def _put(self, item: T) -> None:
        """Projection-internal include (no type or read-only checks)."""
        self._items[item.id] = item

    def _discard(self, ref: IDType) -> None:
        self._items.pop(ref, None)

    # -- lookup --------------------------------------------------------------------------

    @property
    def progression(self) -> Progression:
        return Progression(order=list(self._items))

    @property
    def collections(self) -> dict[IDType, T]:
        return dict(self._items)

    def keys(self) -> list[IDType]:
        return list(self._items)

    def values(self) -> list[T]:
        return list(self._items.values())

    def items(self) -> list[tuple[IDType, T]]:
        return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)

    def size(self) -> int:
        return len(self._items)

    def is_empty(self) -> bool:
        return not self._items

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[T]:  # type: ignore[override]
        return iter(list(self._items.values()))

    def __reversed__(self) -> Iterator[T]:
        return reversed(list(self._items.values()))

    def __contains__(self, refs: Any) -> bool:
        try:
            ids = to_ids(refs)
        except (IDError, ValueError, TypeError):
            return False
        return bool(ids) and all(i in self._items for i in ids)

    def _key_ids(self, key: Any) -> list[IDType]:
        try:
            return to_ids(key)
        except IDError:
            raise ItemNotFoundError(f"no item {key!r} in pile") from None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, bool):
            raise TypeError("pile keys cannot be bool")
        # By position through the keys: only the items asked for are read (a restored
        # projection builds its finished events on first read).
        if isinstance(key, int):
            try:
                return self._items[list(self._items)[key]]
            except IndexError:
                raise IndexOutOfRangeError(f"index {key} is out of range") from None
        if isinstance(key, slice):
            return self._new(self._items[i] for i in list(self._items)[key])
        ids = self._key_ids(key)
        missing = [i for i in ids if i not in self._items]
        if missing or not ids:
            raise ItemNotFoundError(f"no item(s) {missing or key!r} in pile")
        if isinstance(key, (list, tuple, set)):
            return [self._items[i] for i in ids]
        return self._items[ids[0]]

    def get(self, key: Any, default: Any = _UNDEFINED) -> Any:
        try:
            return self[key]
        except ItemNotFoundError:
            if default is _UNDEFINED:
                raise
            return default

    def _new(self, items: Iterable[T]) -> Pile[T]:
        return Pile(list(items), item_type=self._item_type, strict_type=self._strict)

    # -- mutation ------------------------------------------------------------------------

    def include(self, items: Any) -> None:
        """Add new items at the end; an item whose id is present replaces the stored
        object in place (its position is kept)."""
        self._check()
        values = self._as_items(items)
        for item in values:
            self._check_type(item)
        for item in values:
            self._items[item.id] = item

    def append(self, item: T) -> None:
        self.include(item)

    def exclude(self, refs: Any) -> None:
        """Remove the items if present; silent when missing."""
        self._check()
        try:
            ids = to_ids(refs if not isinstance(refs, Pile) else refs.keys())
        except IDError:
            return
        for ref in ids:
            self._items.pop(ref, None)

    def remove(self, ref: Any) -> None:
        """Remove an item; ItemNotFoundError if missing."""
        self._check()
        if isinstance(ref, (int, slice)):
            raise TypeError("remove takes an item or id; use pop for indices")
        ids = self._key_ids(ref)
        missing = [i for i in ids if i not in self._items]
        if missing or not ids:
            raise ItemNotFoundError(f"no item(s) {missing or ref!r} in pile")
        for i in ids:
            del self._items[i]

    def pop(self, key: Any = -1, default: Any = _UNDEFINED) -> Any:
        """Remove and return: an index, a slice (a Pile of the removed items), an
        item or id, or a list of them (a list back)."""
        self._check()
        try:
            found = self[key]
        except ItemNotFoundError:
            if default is _UNDEFINED:
                raise
            return default
        removed = found if isinstance(found, (list, Pile)) else [found]
        for item in removed:
            del self._items[item.id]
        return found

    def insert(self, index: int, item: T) -> None:
        self._check()
        self._check_type(item)
        if item.id in self._items:
            raise ItemExistsError(f"item {item.id} is already in the pile")
        entries = list(self._items.items())
        entries.insert(index, (item.id, item))
        self._items = dict(entries)

    def __setitem__(self, key: Any, item: T) -> None:
        self._check()
        self._check_type(item)
        if isinstance(key, int) and not isinstance(key, bool):
            entries = list(self._items.items())
            try:
                old_id, _ = entries[key]
            except IndexError:
                raise IndexOutOfRangeError(f"index {key} is out of range") from None
            if item.id != old_id and item.id in self._items:
                raise ItemExistsError(f"item {item.id} is already in the pile")
            entries[key] = (item.id, item)
            self._items = dict(entries)
            return
        ref = to_id(key)
        if ref != item.id:
            raise ValueError("key and item id differ")
        self._items[ref] = item

    def update(self, items: Any) -> None:
        """Replace items already present (in place) and append the new ones."""
        self.include(items)

    def clear(self) -> None:
        self._check()
        self._items = {}

    # -- set operators (new piles) -------------------------------------------------------

    def __or__(self, other: Pile[T]) -> Pile[T]:
        return self._new([*self.values(), *(v for v in other if v.id not in self._items)])

    def __and__(self, other: Pile[T]) -> Pile[T]:
        return self._new(v for v in self if v.id in other)

    def __xor__(self, other: Pile[T]) -> Pile[T]:
        return self._new(
            [
                *(v for v in self if v.id not in other),
                *(v for v in other if v.id not in self._items),
            ]
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pile):
            return NotImplemented
        return list(self._items) == list(other._items)

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        return f"Pile(size={len(self)})"

    # -- async (an asyncio lock; a* methods do not deadlock inside `async with pile`) -----

    def _async_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def __aenter__(self) -> Self:
        await self._async_lock().acquire()
        self._lock_owner = asyncio.current_task()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._lock_owner = None
        self._async_lock().release()

    async def _locked(self, fn: Any, *args: Any) -> Any:
        if self._lock_owner is not None and self._lock_owner is asyncio.current_task():
            return fn(*args)
        async with self._async_lock():
            return fn(*args)

    async def ainclude(self, items: Any) -> None:
        await self._locked(self.include, items)

    async def aexclude(self, refs: Any) -> None:
        await self._locked(self.exclude, refs)

    async def apop(self, key: Any = -1, default: Any = _UNDEFINED) -> Any:
        return await self._locked(self.pop, key, default)

    async def aremove(self, ref: Any) -> None:
        await self._locked(self.remove, ref)

    async def aget(self, key: Any, default: Any = _UNDEFINED) -> Any:
        return await self._locked(self.get, key, default)

    async def aupdate(self, items: Any) -> None:
        await self._locked(self.update, items)

    async def asetitem(self, key: Any, item: T) -> None:
        await self._locked(self.__setitem__, key, item)

    async def aclear(self) -> None:
        await self._locked(self.clear)

    async def __aiter__(self) -> AsyncIterator[T]:
        for item in await self._locked(list, self._items.values()):
            yield item


def pile(
    collections: Any = None,
    /,
    item_type: type | Iterable[type] | None = None,
    progression: Any = None,
    strict_type: bool = False,
    **kwargs: Any,
) -> Pile[Any]:
    """A new free-standing :class:`Pile` (lionagi's ``pile(...)`` helper).

    ``progression`` is the initial order (a Progression or any refs). Unlike lionagi's,
    ``strict_type=True`` is honoured. lionagi's ``df=``/``fp=`` loaders are not
    supported (lionstore reads no files or data frames).
    """
    return Pile(
        collections, item_type=item_type, order=progression, strict_type=strict_type, **kwargs
    )
