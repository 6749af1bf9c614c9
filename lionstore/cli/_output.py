"""Output helpers shared by the commands: JSON lines, times, widths, error lines."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from lionstore.errors import LionstoreError

__all__ = [
    "PROG",
    "CliError",
    "Progress",
    "compact_json",
    "count_phrase",
    "error_line",
    "format_time",
    "format_time_us",
    "one_line",
    "output_stream",
    "pretty_json",
    "print_json_line",
    "shorten",
    "terminal_width",
]

PROG = "lionstore"


class CliError(LionstoreError):
    """A command cannot do what it was asked (a file it cannot write, a module it
    cannot import); reported as one line, like every LionstoreError."""


def one_line(message: str) -> str:
    """``message`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(message.split())


def error_line(message: str, *, stream: TextIO | None = None) -> None:
    """Print ``lionstore: error: <message>`` as exactly one line on stderr."""
    out = stream if stream is not None else sys.stderr
    print(f"{PROG}: error: {one_line(message)}", file=out)


def print_json_line(obj: Any, *, out: TextIO | None = None) -> None:
    """Print ``obj`` as one line of JSON (for ``--json`` output, one object per line)."""
    print(json.dumps(obj, separators=(",", ":"), default=str), file=out or sys.stdout)


def compact_json(obj: Any) -> str:
    """``obj`` as compact one-line JSON, non-ASCII kept readable."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


def format_time(moment: datetime) -> str:
    """A UTC timestamp to the millisecond: ``2026-01-01 12:00:00.000``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_time_us(us: int) -> str:
    """:func:`format_time` for microseconds since the epoch."""
    return format_time(datetime.fromtimestamp(us / 1_000_000, UTC))


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters, ending in ``…`` when cut."""
    if width < 1:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"


def terminal_width(fallback: int = 160) -> int:
    """The terminal's width in columns; ``fallback`` when stdout is not a terminal."""
    return shutil.get_terminal_size((fallback, 24)).columns


def pretty_json(obj: Any) -> str:
    """``obj`` as indented JSON, for people to read."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str)


def count_phrase(counts: dict[str, int]) -> str:
    """``{"completed": 2, "failed": 1}`` as ``completed 2, failed 1`` (``-`` when empty)."""
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "-"


class Progress:
    """A one-line progress indicator on stderr, shown only when stderr is a terminal.

    Call it with the number of records done so far (the library's ``progress``
    callbacks do, every 10,000 records); it redraws at most ten times a second.
    Used as a context manager, it clears its line at the end, so piped or redirected
    output, and anything printed afterwards, is never mixed with it.
    """

    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.count = 0
        self._shown = 0
        self._started = time.monotonic()
        self._last = 0.0

    def __call__(self, count: int) -> None:
        self.count = count
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        text = f"{PROG}: {self.label}: {count:,} records ({count / elapsed:,.0f}/s)"
        pad = " " * max(0, self._shown - len(text))
        self.stream.write(f"\r{text}{pad}")
        self.stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        """Erase the indicator's line (if anything was drawn)."""
        if self.enabled and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.clear()


@contextmanager
def output_stream(path: str | None) -> Iterator[TextIO]:
    """Where a command writes its document: stdout when ``path`` is None or ``-``,
    else the file at ``path`` (written to a temporary name and renamed into place
    only when the command succeeds, so a failure never leaves half a file)."""
    if path is None or path == "-":
        yield sys.stdout
        return
    target = Path(path)
    if target.is_dir():
        raise CliError(f"{target}: is a directory; give a file name to write to")
    partial = target.with_name(f".{target.name}.partial")
    try:
        try:
            out = partial.open("w", encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{target}: cannot write the file ({exc.strerror or exc})") from exc
        with out:
            yield out
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
