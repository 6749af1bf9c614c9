"""Record kinds used by the log tests (and by the worker scripts run as subprocesses,
which import this file directly, so it has no relative imports)."""

from __future__ import annotations

from typing import Any, ClassVar

from lionstore import RecordData


class Ping(RecordData):
    kind: ClassVar[str] = "logtest.ping"
    n: int


class Note(RecordData):
    kind: ClassVar[str] = "logtest.note"
    text: str
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = {}


class Reading(RecordData):
    kind: ClassVar[str] = "logtest.reading"
    value: float


class Blob(RecordData):
    """Anything at all, so that bad data reaches the encoder."""

    kind: ClassVar[str] = "logtest.blob"
    value: Any = None


class Tick(RecordData):
    """One append of a worker process (test_multiprocess)."""

    kind: ClassVar[str] = "logtest.tick"
    worker: int
    seq: int


class Kindless(RecordData):
    """A RecordData subclass that forgot to name its kind."""

    n: int = 0
