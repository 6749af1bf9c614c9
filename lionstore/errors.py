"""The one error hierarchy lionstore raises.

Every error a caller can act on is a :class:`LionstoreError`. Errors about bad
arguments also subclass :class:`ValueError` or :class:`TypeError`, so code
written against the standard library's conventions keeps working. Each is
raised *before* anything is written: a refused call leaves the log unchanged.
"""

from __future__ import annotations

__all__ = [
    "ConcurrencyError",
    "CorruptDatabaseError",
    "EventClassNotFoundError",
    "IDError",
    "ItemExistsError",
    "IndexOutOfRangeError",
    "InvalidItemError",
    "ItemNotFoundError",
    "LionstoreError",
    "MailError",
    "NotALionstoreDatabaseError",
    "ProcessorNotStartedError",
    "ReadOnlyProjectionError",
    "RecordError",
    "RecordTooLargeError",
    "RunNotFoundError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SourceError",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StorePathError",
    "UnknownSourceError",
]


class LionstoreError(Exception):
    """Base class of every error lionstore raises on purpose."""


# -- values -------------------------------------------------------------------------


class IDError(LionstoreError, ValueError):
    """A value that should name an element is not a UUID (or anything carrying one)."""


class RecordError(LionstoreError, ValueError):
    """Record data that cannot be stored: not JSON-serializable, NaN, or badly shaped."""


class RecordTooLargeError(RecordError):
    """A record's JSON data is over the store's ``max_record_bytes`` limit."""


class ItemNotFoundError(LionstoreError, LookupError):
    """A Pile, Progression or projection lookup found nothing."""


class IndexOutOfRangeError(ItemNotFoundError, IndexError, ValueError):
    """A position past the end of a Pile or Progression.

    An :class:`ItemNotFoundError` (and an :class:`IndexError`) like lionstore's other
    lookups, and also a :class:`ValueError`, which is what lionagi's Pile raises when
    a set by position is out of range: ``except ValueError`` written for lionagi
    still catches it.
    """


class InvalidItemError(LionstoreError, TypeError, ValueError):
    """An object a Pile cannot hold: not an Element, or not of the pile's ``item_type``.

    A :class:`TypeError`, and a :class:`ValueError` as lionagi raises for a
    non-element given to a Pile (``pile.update(5)``).
    """


class ItemExistsError(LionstoreError, ValueError):
    """An item is already present where a new one was required."""


class ReadOnlyProjectionError(LionstoreError, TypeError):
    """A projection (a Pile or Progression rebuilt from the log) was mutated directly.

    Projections change only by appending records; use the owning object's methods
    (``executor.append``, ``mailbox.append_out`` ...) instead.
    """


class EventClassNotFoundError(LionstoreError, LookupError):
    """A record names an element class that is not defined in this process.

    lionstore never imports a module because a database file names it. Import (or
    define) the class before opening, or pass it explicitly.
    """


# -- the log ------------------------------------------------------------------------


class ConcurrencyError(LionstoreError):
    """An append's expected stream version was stale: someone else wrote first.

    Nothing of the refused append was written. Catch up and decide again.
    """


class StoreError(LionstoreError):
    """The store cannot be opened or used."""


class StoreClosedError(StoreError):
    """The store was used after it was closed."""


class StorePathError(StoreError):
    """The database path cannot be used: a missing or read-only directory."""


class StoreLockedError(StoreError):
    """Another process held the database lock for longer than the busy timeout."""


class NotALionstoreDatabaseError(StoreError):
    """The file is a database, but not a lionstore one (or not SQLite at all)."""


class CorruptDatabaseError(StoreError):
    """The database file is damaged."""


class SchemaOutdatedError(StoreError):
    """The file was written by an older lionstore schema; it must be upgraded first."""


class SchemaTooNewError(StoreError):
    """The file was written by a newer lionstore than this one."""


class NoStoreError(StoreError, TypeError):
    """A class that records to a store was created with no ``store=`` outside any
    ``async with lionstore.open(...)`` block (no ambient store)."""


class RunNotFoundError(StoreError, LookupError):
    """No run with that id or label exists in the store."""


# -- processing and mail -------------------------------------------------------------


class ProcessorNotStartedError(LionstoreError, RuntimeError):
    """``Executor.forward()`` was called before ``Executor.start()``."""


class MailError(LionstoreError, ValueError):
    """A mail operation was refused (bad mail, bad category, bad payload)."""


class SourceError(MailError):
    """A source cannot be added, deleted or used as asked."""


class UnknownSourceError(SourceError, LookupError):
    """A sender or recipient is not registered with the exchange."""
