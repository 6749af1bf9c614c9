"""lionstore: lionagi's event Processor/Executor and mail system, durable and replayable.

Every enqueue, status change, send, collect and deliver is a record in an
append-only log in a SQLite file; piles, progressions, mailboxes and the exchange
buffer are projections rebuilt from it.
"""

from lionstore._version import __version__
from lionstore.domain.element import ID, Element, register_class, validate_order
from lionstore.domain.event import Event, EventStatus, Execution
from lionstore.domain.ids import IDType, to_id
from lionstore.domain.mail import Mail, Package, PackageCategory
from lionstore.domain.node import Node
from lionstore.domain.pile import Pile, pile
from lionstore.domain.progression import Progression
from lionstore.domain.records import NewRecord, RecordData, Recorded, UnknownRecord
from lionstore.errors import (
    ConcurrencyError,
    CorruptDatabaseError,
    EventClassNotFoundError,
    IDError,
    IndexOutOfRangeError,
    InvalidItemError,
    ItemExistsError,
    ItemNotFoundError,
    LionstoreError,
    MailError,
    NoStoreError,
    NotALionstoreDatabaseError,
    ProcessorNotStartedError,
    ReadOnlyProjectionError,
    RecordError,
    RecordTooLargeError,
    RunNotFoundError,
    SchemaOutdatedError,
    SchemaTooNewError,
    SourceError,
    StoreClosedError,
    StoreError,
    StoreLockedError,
    StorePathError,
    UnknownSourceError,
)
from lionstore.log.backend import RunInfo
from lionstore.log.opening import open
from lionstore.log.store import DURABILITY_LEVELS, Store, current_store
from lionstore.mail.exchange import Exchange
from lionstore.mail.mailbox import Mailbox
from lionstore.mail.manager import MailManager
from lionstore.mail.source import Communicatable, Source
from lionstore.processing.executor import Executor
from lionstore.processing.processor import Processor

__all__ = [
    "DURABILITY_LEVELS",
    "Communicatable",
    "Element",
    "Event",
    "EventStatus",
    "Exchange",
    "ID",
    "Execution",
    "Executor",
    "Mail",
    "MailManager",
    "Mailbox",
    "Node",
    "Package",
    "PackageCategory",
    "Pile",
    "Processor",
    "Progression",
    "Source",
    "pile",
    "register_class",
    "validate_order",
    "ConcurrencyError",
    "CorruptDatabaseError",
    "EventClassNotFoundError",
    "IDError",
    "IDType",
    "IndexOutOfRangeError",
    "InvalidItemError",
    "ItemExistsError",
    "ItemNotFoundError",
    "LionstoreError",
    "MailError",
    "NoStoreError",
    "NewRecord",
    "NotALionstoreDatabaseError",
    "ProcessorNotStartedError",
    "ReadOnlyProjectionError",
    "RecordData",
    "RecordError",
    "RecordTooLargeError",
    "Recorded",
    "RunInfo",
    "RunNotFoundError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SourceError",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreLockedError",
    "StorePathError",
    "UnknownRecord",
    "UnknownSourceError",
    "__version__",
    "current_store",
    "open",
    "to_id",
]
