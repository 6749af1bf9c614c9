"""LazyDict: a dict some of whose values are kept in a raw form and built on first read.

A projection restored from a checkpoint holds every finished event and every
delivered mail of a run; most are never looked at again. A LazyDict lets it keep
those as their raw snapshot text and build the object only when something reads
it. Every way of reading a value (``d[k]``, ``get``, ``pop``, ``values``,
``items``, copies and comparisons) returns built values, so code using it as a
plain dict sees no difference; keys, ``in`` and ``len`` never build anything.

A value is raw when its type is exactly ``raw_type`` (a type the built values
never have, such as ``str`` for objects kept as JSON text). A built value
replaces its raw one in place, so later reads return the same object. A build
that raises leaves the raw value in place, marks the dict ``damaged`` and
propagates the error: nothing is ever returned for a raw value that did not
build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

from lionstore._gcpause import gc_paused

__all__ = ["LazyDict", "set_raw_unchecked"]

K = TypeVar("K")
V = TypeVar("V")
_MISSING: Any = object()


set_raw_unchecked: Callable[[dict[Any, Any], Any, Any], None] = dict.__setitem__
"""``LazyDict.set_raw(d, key, raw)`` without its type check: for a replay's fold, which
stores only values of the dict's ``raw_type`` and does so a million times a run."""


def _no_tag(value: Any) -> Any:
    raise TypeError("this LazyDict has no tags")


class LazyDict(dict[K, V]):
    """A dict whose raw values (of type ``raw_type``) become ``build(key, raw)`` when read.

    ``tag`` and ``raw_tag`` optionally give a cheap summary of a value (for
    events, their status) without building it: ``tag(built)`` and
    ``raw_tag(raw)`` must agree for the same item.
    """

    __slots__ = ("_build", "_raw_tag", "_raw_type", "_tag", "damaged")

    def __init__(
        self,
        items: Iterable[tuple[K, Any]],
        build: Callable[[K, Any], V],
        raw_type: type,
        tag: Callable[[V], Any] = _no_tag,
        raw_tag: Callable[[Any], Any] = _no_tag,
    ) -> None:
        super().__init__(items)
        self._build = build
        self._raw_type = raw_type
        self._tag = tag
        self._raw_tag = raw_tag
        self.damaged: BaseException | None = None
        """The first error a build raised (None: none failed)."""

    # -- building ----------------------------------------------------------------------

    def _built(self, key: K, value: Any) -> V:
        if type(value) is not self._raw_type:
            built: V = value
            return built
        try:
            built = self._build(key, value)
        except BaseException as exc:
            if self.damaged is None:
                self.damaged = exc
            raise
        dict.__setitem__(self, key, built)
        return built

    @property
    def raw_type(self) -> type:
        """The type of the values kept raw."""
        return self._raw_type

    def set_raw(self, key: K, raw: Any) -> None:
        """Store ``raw`` (of ``raw_type``) for ``key``, to be built when read."""
        if type(raw) is not self._raw_type:
            raise TypeError(f"a raw value must be a {self._raw_type.__name__}")
        dict.__setitem__(cast(dict[K, Any], self), key, raw)

    def raw(self, key: K) -> Any:
        """The stored value, raw or built, without building it (KeyError if absent)."""
        return dict.__getitem__(self, key)

    def is_built(self, key: K) -> bool:
        """Whether the value for ``key`` is built (KeyError if absent)."""
        return type(dict.__getitem__(self, key)) is not self._raw_type

    def unbuilt(self) -> int:
        """How many values are still raw."""
        raw = self._raw_type
        return sum(1 for v in dict.values(self) if type(v) is raw)

    def build_all(self) -> None:
        """Build every raw value (in key order)."""
        raw = self._raw_type
        self._build_each([(k, v) for k, v in dict.items(self) if type(v) is raw])

    def _build_each(self, pending: list[tuple[K, Any]]) -> None:
        # Many objects that all live on and no garbage cycles: the cyclic collector
        # would only re-walk them (as in a snapshot restore), so it is paused.
        with gc_paused(len(pending)):
            for key, value in pending:
                self._built(key, value)

    # -- tags --------------------------------------------------------------------------

    def tag(self, key: K) -> Any:
        """The tag of the value for ``key``, without building it (KeyError if absent)."""
        value = dict.__getitem__(self, key)
        return self._raw_tag(value) if type(value) is self._raw_type else self._tag(value)

    def values_tagged(self, wanted: Any) -> list[V]:
        """The values whose tag equals ``wanted``, in key order; only those are built."""
        raw, tag, raw_tag = self._raw_type, self._tag, self._raw_tag
        found = [
            (k, v)
            for k, v in dict.items(self)
            if (raw_tag(v) if type(v) is raw else tag(v)) == wanted
        ]
        self._build_each([(k, v) for k, v in found if type(v) is raw])
        return [self[k] for k, _ in found]

    # -- dict reads, all returning built values ----------------------------------------

    def __getitem__(self, key: K) -> V:
        return self._built(key, dict.__getitem__(self, key))

    def get(self, key: K, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            return default
        return self._built(key, value)

    def pop(self, key: K, default: Any = _MISSING) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        built = self._built(key, value)
        dict.pop(self, key)
        return built

    def popitem(self) -> tuple[K, V]:
        key = next(reversed(dict.keys(self)))  # LIFO, as dict.popitem (KeyError if empty)
        return key, self.pop(key)

    def setdefault(self, key: K, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self[key]
        dict.__setitem__(self, key, default)
        return default

    def __iter__(self) -> Iterator[K]:
        # Overridden (even as the same iteration) so that CPython's dict merging
        # (dict(d), {**d}, x.update(d)) reads values through __getitem__ rather than
        # copying the raw ones.
        return dict.__iter__(self)

    def values(self) -> Any:
        self.build_all()
        return dict.values(self)

    def items(self) -> Any:
        self.build_all()
        return dict.items(self)

    def copy(self) -> dict[K, V]:
        """A plain dict of the built values."""
        self.build_all()
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self.build_all()
        if isinstance(other, LazyDict):
            other.build_all()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __or__(self, other: Any) -> Any:
        return self.copy() | other

    def __ror__(self, other: Any) -> Any:
        self.build_all()
        return other | dict(dict.items(self))

    def __repr__(self) -> str:
        self.build_all()
        return dict.__repr__(self)

    def __reduce__(self) -> Any:
        # Copies and pickles are plain dicts of built values (the builder is not data).
        return (dict, (self.copy(),))
