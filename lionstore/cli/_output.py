"""Output helpers shared by the commands: JSON lines, times, widths, error lines."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "PROG",
    "compact_json",
    "error_line",
    "format_time",
    "format_time_us",
    "one_line",
    "print_json_line",
    "shorten",
    "terminal_width",
]

PROG = "lionstore"


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
