"""Small helpers shared by the benchmark scripts: timing, per-round summaries, tables.

Conventions (see benchmarks/README.md):

* every variant runs once per round; a figure is the median over rounds with the
  (min-max) of the per-round values;
* a ratio is computed per round, from two variants measured in the same round, and
  then summarised the same way. Only same-round ratios are meaningful on a shared VM;
* the order of variants changes from round to round (:func:`round_order`).
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "Results",
    "RssSampler",
    "Stopwatch",
    "add_smoke_argument",
    "fmt_num",
    "fmt_mib",
    "fmt_pct",
    "fmt_summary",
    "print_table",
    "round_order",
    "rss_bytes",
    "maxrss_bytes",
    "peak_rss_bytes",
    "summary",
    "git_state",
    "loadavg1",
    "machine_line",
]

T = TypeVar("T")

clock = time.perf_counter


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``.

    ``sw.gc_seconds`` is the part of that time spent in Python's cyclic garbage
    collector (any thread), measured through ``gc.callbacks``.
    """

    __slots__ = ("_gc_start", "_start", "gc_seconds", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.gc_seconds = 0.0
        self._start = 0.0
        self._gc_start = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = clock()
        elif self._gc_start:
            self.gc_seconds += clock() - self._gc_start
            self._gc_start = 0.0

    def __enter__(self) -> Stopwatch:
        gc.callbacks.append(self._on_gc)
        self._start = clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = clock() - self._start
        gc.callbacks.remove(self._on_gc)

    @property
    def gc_share(self) -> float:
        return self.gc_seconds / self.seconds if self.seconds else 0.0


def round_order(items: Sequence[T], round_no: int) -> list[T]:
    """``items`` rotated by ``round_no`` and reversed on odd rounds.

    Over rounds every item runs first, last and in between, and neighbours swap
    places, so a slow spell of the VM does not always hit the same variant.
    """
    if not items:
        return []
    k = round_no % len(items)
    out = list(items[k:]) + list(items[:k])
    if round_no % 2:
        out.reverse()
    return out


@dataclass
class Results:
    """Per-round values by name: ``res.add("x", v)`` once per round, then summarise."""

    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, value: float) -> None:
        self.values[name].append(value)

    def get(self, name: str) -> list[float]:
        return self.values.get(name, [])

    def ratio(self, num: str, den: str) -> list[float]:
        """Per-round ``num / den`` (both lists hold one value per round, same order)."""
        a, b = self.get(num), self.get(den)
        return [x / y for x, y in zip(a, b, strict=True) if y]

    def __contains__(self, name: str) -> bool:
        return name in self.values


def summary(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, min, max); NaNs if empty."""
    vals = list(values)
    if not vals:
        nan = float("nan")
        return nan, nan, nan
    return statistics.median(vals), min(vals), max(vals)


def fmt_num(value: float, digits: int = 3) -> str:
    """A readable number: thousands separators for large values, ``digits``
    significant digits for small ones."""
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}"


def fmt_pct(value: float) -> str:
    if value != value:
        return "-"
    return f"{value * 100:.0f}%"


def fmt_summary(values: Iterable[float], fmt: Callable[[float], str] = fmt_num) -> str:
    """``median (min\u2013max)``, or just the value for a single round."""
    vals = list(values)
    if not vals:
        return "-"
    med, lo, hi = summary(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(lo)}\u2013{fmt(hi)})"


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    align: str | None = None,
    file: Any = None,
) -> None:
    """A Markdown table, padded so it also reads well in a terminal.

    ``align`` is one letter per column, ``l`` or ``r`` (default: first column left,
    the rest right).
    """
    out = file or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    ncol = len(headers)
    align = align or ("l" + "r" * (ncol - 1))
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(widths[i]) if align[i] == "l" else v.rjust(widths[i])
            for i, v in enumerate(values)
        ]
        return "| " + " | ".join(parts) + " |"

    print(line(headers), file=out)
    seps = [
        ("-" * (widths[i] + 1) + ":") if align[i] == "r" else "-" * (widths[i] + 2)
        for i in range(ncol)
    ]
    print("|" + "|".join(seps) + "|", file=out)
    for row in cells:
        print(line(row), file=out)
    out.flush()


def add_smoke_argument(parser: Any) -> None:
    """``--smoke``: one round of a tiny workload. It shows the script still runs (CI runs
    every benchmark so: ``benchmarks/run_all.py``); its figures mean nothing."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one round of a tiny workload: checks the script runs, measures nothing",
    )


# -- memory ------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The process's current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


def maxrss_bytes() -> int:
    """Peak RSS of the process so far (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_rss_bytes() -> int:
    """Peak RSS of this process image: ``VmHWM`` of /proc/self/status on Linux, else
    ``ru_maxrss``. Linux carries ``ru_maxrss`` over ``exec`` (a subprocess started by a
    big parent reports at least the parent's RSS at the fork), ``VmHWM`` starts afresh."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return maxrss_bytes()


class RssSampler:
    """Samples the current RSS on a daemon thread; ``peak`` is the highest seen.

    ``ru_maxrss`` is a lifetime peak, so it cannot show the peak of one phase that
    comes after a bigger one; this can. The thread wakes every ``interval`` seconds
    (cost: one small /proc read).
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.start_rss = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.start_rss = self.peak = rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start_rss


def fmt_mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def machine_line() -> str:
    """One line naming the interpreter, SQLite and the load, for the report header."""
    import platform
    import sqlite3

    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return (
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, loadavg {load}"
    )


def loadavg1() -> float:
    """The 1-minute load average (NaN where unavailable)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def git_state(repo: str | os.PathLike[str]) -> str:
    """``<short commit>`` plus ``+ uncommitted changes`` when the tree is dirty, for
    the report header (numbers belong to the code they measured)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", os.fspath(repo), *args], capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit} + uncommitted changes" if dirty else commit
