"""lionstore's durable log against raw stdlib sqlite3, measured in the same process run.

    python benchmarks/bench_log.py [--rounds N] [--quick] [--only append|read]

Appends: the same rows go through ``Store.append`` and through raw ``sqlite3``
``executemany`` into identical tables (batches of 1, 100 and 10,000 records;
durability normal and full), plus 100 concurrent producers awaiting single-record
appends (group commit) against raw sqlite3 committing every record. Reads: a
1,000,000-record file read back through ``store.read(page_size=1000)`` and through a
raw ``SELECT ... ORDER BY position`` + ``fetchmany(1000)`` + ``json.loads``.

Every figure is the median over rounds with the (min-max) of the per-round values;
every ratio is lionstore/raw computed within a round. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import (
    Results,
    RssSampler,
    Stopwatch,
    add_smoke_argument,
    fmt_mib,
    fmt_num,
    fmt_pct,
    fmt_summary,
    git_state,
    loadavg1,
    machine_line,
    maxrss_bytes,
    print_table,
    round_order,
    summary,
)

import lionstore
from lionstore.domain.ids import IDType
from lionstore.domain.records import RecordData, RunStarted, record_kinds
from lionstore.log import migrate

# -- the records -------------------------------------------------------------------------


class BenchEvent(RecordData):
    """Fields every bench record has (no ``kind``: not a record kind itself)."""

    event_id: str
    attempt: int
    worker: str
    queue: str
    note: str


class Enqueued(BenchEvent):
    kind: ClassVar[str] = "bench.enqueued"
    priority: int
    timeout_s: float


class Claimed(BenchEvent):
    kind: ClassVar[str] = "bench.claimed"
    lease_ms: int


class Completed(BenchEvent):
    kind: ClassVar[str] = "bench.completed"
    duration_ms: float
    ok: bool


WINDOW = 100  # streams in flight at once; also the number of concurrent producers
RUN_LABEL = "bench"
TARGET_APPEND = 0.80
TARGET_READ = 0.60

_NOTES = (
    "summarise the quarterly report for the sales team, in English",
    "translate the onboarding guide into German and French",
    "classify 40 support tickets by urgency and product area",
    "draft a reply to the customer about the delayed shipment",
)


def _make(rng: random.Random, phase: int, event_id: str) -> RecordData:
    worker = f"worker-{rng.randrange(32):02d}"
    note = rng.choice(_NOTES)
    if phase == 0:
        return Enqueued(
            event_id=event_id,
            attempt=1,
            worker="",
            queue="default",
            note=note,
            priority=rng.randrange(10),
            timeout_s=30.0,
        )
    if phase == 1:
        return Claimed(
            event_id=event_id,
            attempt=1,
            worker=worker,
            queue="default",
            note=f"claimed by {worker} on host lion-{rng.randrange(8):02d}, lease renewed every"
            " 20 s",
            lease_ms=60_000,
        )
    return Completed(
        event_id=event_id,
        attempt=1,
        worker=worker,
        queue="default",
        note=f"completed: {rng.randrange(9)} tool calls, {rng.randrange(5000):,} tokens in,"
        f" {rng.randrange(900)} out, no retries",
        duration_ms=round(rng.uniform(5, 5000), 3),
        ok=True,
    )


def iter_records(n: int, seed: int = 1) -> Iterator[tuple[int, int, IDType, RecordData]]:
    """``n`` records as ``(stream_index, version, stream_id, data)``.

    Streams come in windows of WINDOW fresh uuid4 ids; a window holds its streams'
    enqueued records, then their claimed records, then their completed records
    (3 per stream), like a processor working through events. Stream indexes are
    numbered in order of first appearance (as lionstore numbers streams).
    """
    rng = random.Random(seed)
    made = 0
    window_no = 0
    while made < n:
        ids = [IDType.create() for _ in range(WINDOW)]
        event_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(WINDOW)]
        for phase in range(3):
            for k in range(WINDOW):
                if made == n:
                    return
                yield window_no * WINDOW + k, phase + 1, ids[k], _make(rng, phase, event_ids[k])
                made += 1
        window_no += 1


@dataclass
class Dataset:
    rows: list[tuple[IDType, RecordData]]  # what Store.append takes
    plan: list[tuple[int, int]]  # (stream_index, version) per record: what raw needs
    texts: list[str]  # the JSON, pre-encoded (for the raw reference without encoding)

    @classmethod
    def make(cls, n: int, seed: int = 1) -> Dataset:
        rows, plan = [], []
        for sidx, version, sid, data in iter_records(n, seed):
            rows.append((sid, data))
            plan.append((sidx, version))
        return cls(rows, plan, [d.model_dump_json() for _, d in rows])

    def head(self, n: int) -> Dataset:
        return Dataset(self.rows[:n], self.plan[:n], self.texts[:n])

    def __len__(self) -> int:
        return len(self.rows)


# -- files -------------------------------------------------------------------------------

_INSERT_STREAM = "INSERT INTO lionstore_streams (stream_no, run_no, stream_id) VALUES (?, ?, ?)"
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
_BASE_COLUMNS = (
    "position",
    "run_no",
    "stream_no",
    "stream_version",
    "kind",
    "kind_version",
    "data",
    "recorded_at_us",
)


@dataclass(frozen=True)
class RawSchema:
    """The record columns the raw path writes and reads: those of the file that
    lionstore's migrations made. ``digest`` (lionstore's per-run hash chain), when the
    schema has it, gets the value lionstore would write, computed outside the timed
    region: it is lionstore's own work, so its cost counts against lionstore."""

    digest: bool

    @classmethod
    def of(cls, path: Path) -> RawSchema:
        conn = sqlite3.connect(path)
        try:
            cols = conn.execute("PRAGMA table_info(lionstore_records)").fetchall()
        finally:
            conn.close()
        names = {c[1] for c in cols}
        unknown = [
            c[1]
            for c in cols
            if c[1] not in (*_BASE_COLUMNS, "digest") and c[3] and c[4] is None  # NOT NULL
        ]
        if unknown or not set(_BASE_COLUMNS) <= names:
            raise SystemExit(
                f"bench_log.py: lionstore_records has columns {sorted(names)}; the raw path "
                f"does not know how to fill {unknown or sorted(set(_BASE_COLUMNS) - names)}"
            )
        return cls(digest="digest" in names)

    @property
    def insert_record(self) -> str:
        cols = [*_BASE_COLUMNS, *(["digest"] if self.digest else [])]
        marks = ", ".join("?" * len(cols))
        return f"INSERT INTO lionstore_records ({', '.join(cols)}) VALUES ({marks})"

    @property
    def select(self) -> str:
        extra = ", r.digest" if self.digest else ""
        return (
            "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version, r.data,"
            f" r.recorded_at_us, r.run_no{extra} FROM lionstore_records r"
            " JOIN lionstore_streams s ON s.stream_no = r.stream_no ORDER BY r.position"
        )


def _digest_funcs() -> tuple[Callable[..., str], Callable[..., str]]:
    from lionstore.log.digest import chain_start, record_digest

    return chain_start, record_digest


class Files:
    """Fresh database files in one temp dir, copied from a template made by Alembic."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        self._n = 0
        self.schema = RawSchema(digest=False)

    async def prepare(self) -> None:
        await migrate.upgrade(self.template)  # the schema, through lionstore's migrations
        self.schema = RawSchema.of(self.template)

    def fresh(self, name: str) -> Path:
        self._n += 1
        path = self.root / f"{self._n:04d}-{name}.db"
        shutil.copyfile(self.template, path)
        return path

    def fresh_raw(self, name: str) -> tuple[Path, str, str]:
        """A fresh file holding what ``lionstore.open(path, run=RUN_LABEL)`` writes:
        run 1, its stream 1 and its ``run.started`` record at position 1.
        Returns the path, the run id and the run's digest chain tip ("" without one)."""
        path = self.fresh(name)
        now = time.time_ns() // 1000
        run_id = IDType.create()
        text = RunStarted(label=RUN_LABEL).model_dump_json()
        values: tuple[Any, ...] = (1, 1, 1, 1, RunStarted.kind, 1, text, now)
        tip = ""
        if self.schema.digest:
            chain_start, record_digest = _digest_funcs()
            tip = record_digest(chain_start(run_id), 1, run_id, 1, RunStarted.kind, 1, now, text)
            values += (tip,)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO lionstore_runs (run_no, run_id, label, started_at_us,"
                " parent_run_no, forked_at_position) VALUES (1, ?, ?, ?, NULL, NULL)",
                (run_id, RUN_LABEL, now),
            )
            conn.execute(_INSERT_STREAM, (1, 1, run_id))
            conn.execute(self.schema.insert_record, values)
            conn.execute(
                "UPDATE lionstore_head SET last_position = 1, last_stream_no = 1,"
                " last_run_no = 1 WHERE id = 1"
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        return path, run_id, tip

    @staticmethod
    def remove(path: Path) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def raw_connect(path: Path, durability: str) -> sqlite3.Connection:
    """A stdlib connection set up as lionstore's writer is."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={SYNCHRONOUS[durability]}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


# -- append variants (each returns records/s) --------------------------------------------


def raw_append(
    files: Files, name: str, ds: Dataset, batch: int, durability: str, encode: bool
) -> Stopwatch:
    """Raw sqlite3: per batch, build the rows lionstore would write (JSON from
    ``model_dump_json`` when ``encode``), then BEGIN IMMEDIATE, executemany, COMMIT.

    Timestamps (one per batch, as lionstore stamps one per commit) and, if the schema
    has them, digests are worked out before the timed region.
    """
    path, _run_id, tip = files.fresh_raw(name)
    schema = files.schema
    rows, plan, texts = ds.rows, ds.plan, ds.texts
    n = len(rows)
    run_no, first_pos, first_stream = 1, 2, 2  # after the run's own record and stream
    starts = range(0, n, batch)
    t0 = time.time_ns() // 1000
    stamps = [t0 + k for k in range(len(starts))]
    digests: list[str] | None = None
    if schema.digest:
        _, record_digest = _digest_funcs()
        digests = []
        for i in range(n):
            sid, data = rows[i]
            tip = record_digest(
                tip,
                first_pos + i,
                sid,
                plan[i][1],
                data.kind,
                data.kind_version,
                stamps[i // batch],
                texts[i],
            )
            digests.append(tip)
    insert_record = schema.insert_record
    conn = raw_connect(path, durability)
    try:
        with Stopwatch() as sw:
            for k, start in enumerate(starts):
                end = min(n, start + batch)
                now = stamps[k]
                new_streams = []
                records: list[tuple[Any, ...]] = []
                for i in range(start, end):
                    sid, data = rows[i]
                    sidx, version = plan[i]
                    stream_no = first_stream + sidx
                    if version == 1:
                        new_streams.append((stream_no, run_no, sid))
                    text = data.model_dump_json() if encode else texts[i]
                    if digests is None:
                        records.append(
                            (
                                first_pos + i,
                                run_no,
                                stream_no,
                                version,
                                data.kind,
                                data.kind_version,
                                text,
                                now,
                            )
                        )
                    else:
                        records.append(
                            (
                                first_pos + i,
                                run_no,
                                stream_no,
                                version,
                                data.kind,
                                data.kind_version,
                                text,
                                now,
                                digests[i],
                            )
                        )
                conn.execute("BEGIN IMMEDIATE")
                if new_streams:
                    conn.executemany(_INSERT_STREAM, new_streams)
                conn.executemany(insert_record, records)
                conn.execute("COMMIT")
        (count,) = conn.execute("SELECT count(*) FROM lionstore_records").fetchone()
    finally:
        conn.close()
        files.remove(path)
    assert count == n + 1, (count, n)
    return sw


async def store_append(path: Path, ds: Dataset, batch: int, durability: str) -> Stopwatch:
    """``await store.append(batch)`` one batch after another (encoding included)."""
    batches = [ds.rows[i : i + batch] for i in range(0, len(ds), batch)]
    async with lionstore.open(path, run=RUN_LABEL, durability=durability) as store:
        with Stopwatch() as sw:
            for b in batches:
                await store.append(b)
    return sw


async def store_group_commit(
    path: Path, ds: Dataset, durability: str, producers: int = WINDOW
) -> tuple[Stopwatch, float]:
    """``producers`` tasks, each awaiting single-record appends in turn.

    Producer k appends records k, k+producers, ...: with producers == WINDOW that is
    stream k of every window, in version order. Returns the time and records per commit.
    """
    shares = [ds.rows[k::producers] for k in range(producers)]
    async with lionstore.open(path, run=RUN_LABEL, durability=durability) as store:

        async def produce(rows: list[tuple[IDType, RecordData]]) -> None:
            for row in rows:
                await store.append([row])

        with Stopwatch() as sw:
            await asyncio.gather(*(produce(s) for s in shares))
    # Each group commit stamps one recorded_at_us on all its records.
    conn = sqlite3.connect(path)
    try:
        (commits,) = conn.execute(
            "SELECT count(DISTINCT recorded_at_us) FROM lionstore_records WHERE position > 1"
        ).fetchone()
    finally:
        conn.close()
    return sw, len(ds) / max(commits, 1)


# -- read variants (each returns rows/s) -------------------------------------------------


def raw_read(path: Path, decode: str) -> tuple[Stopwatch, int]:
    """Raw sqlite3 scan with fetchmany(1000); decode each data column with
    ``json.loads`` ("json"), its pydantic model ("pydantic") or not at all ("none")."""
    select = RawSchema.of(path).select
    conn = sqlite3.connect(path, isolation_level=None)
    kinds = record_kinds()
    loads = json.loads
    count = 0
    try:
        with Stopwatch() as sw:
            cur = conn.execute(select)
            while rows := cur.fetchmany(1000):
                count += len(rows)
                if decode == "json":
                    for row in rows:
                        loads(row[5])
                elif decode == "pydantic":
                    for row in rows:
                        kinds[row[3]].model_validate_json(row[5])
    finally:
        conn.close()
    return sw, count


async def store_read(path: Path) -> tuple[Stopwatch, int, float, RssSampler]:
    """``store.read(page_size=1000)`` over the whole run; returns the time, the rows,
    the open time in s, and the RSS seen during the read."""
    with Stopwatch() as open_sw:
        store = await lionstore.open(path, run=RUN_LABEL, readonly=True)
    count = 0
    try:
        with RssSampler() as rss, Stopwatch() as sw:
            async for _record in await store.read(page_size=1000):
                count += 1
    finally:
        await store.close()
    return sw, count, open_sw.seconds, rss


STREAM_READS = 300  # streams of the read file read one by one (3 records each)


def pick_streams(path: Path, n: int) -> list[str]:
    """``n`` stream ids of the read file, spread over the whole run."""
    conn = sqlite3.connect(path)
    try:
        (count,) = conn.execute("SELECT count(*) FROM lionstore_streams").fetchone()
        step = max(count // n, 1)
        return [
            row[0]
            for row in conn.execute(
                "SELECT stream_id FROM lionstore_streams WHERE stream_no % ? = 0 LIMIT ?",
                (step, n),
            )
        ]
    finally:
        conn.close()


async def store_stream_reads(
    path: Path, streams: list[str], readonly: bool
) -> tuple[Stopwatch, int]:
    """``store.read(stream=sid)`` of each stream in turn (an aggregate's history, the
    event store's basic read) through a writable store (the page is read on its idle
    writer connection) or a read-only one (through its reader thread); returns the
    time and the records read."""
    count = 0
    async with lionstore.open(path, run=RUN_LABEL, readonly=readonly) as store:
        with Stopwatch() as sw:
            for sid in streams:
                async for _record in await store.read(stream=sid):
                    count += 1
    return sw, count


def raw_stream_reads(path: Path, streams: list[str]) -> tuple[Stopwatch, int]:
    """The same through raw sqlite3: the stream's rows by (run, stream id) and its
    version index, then ``json.loads`` of each."""
    conn = sqlite3.connect(path, isolation_level=None)
    select = RawSchema.of(path).select.replace(
        " ORDER BY r.position",
        " WHERE s.run_no = 1 AND s.stream_id = ? ORDER BY r.stream_version",
    )
    loads = json.loads
    count = 0
    try:
        with Stopwatch() as sw:
            for sid in streams:
                for row in conn.execute(select, (sid,)).fetchall():
                    loads(row[5])
                    count += 1
    finally:
        conn.close()
    return sw, count


async def build_read_file(path: Path, n: int) -> float:
    """The read file: ``n`` records through Store.append in batches of 10,000."""
    records = iter_records(n, seed=7)
    with Stopwatch() as sw:
        async with lionstore.open(path, run=RUN_LABEL, durability="normal") as store:
            while chunk := [(sid, data) for _, _, sid, data in itertools.islice(records, 10_000)]:
                await store.append(chunk)
    return sw.seconds


# -- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    batch1: dict[str, int]  # by durability
    batched: int
    group: int
    read: int


FULL_SIZES = Sizes({"full": 2_000, "normal": 5_000}, 100_000, 20_000, 1_000_000)
QUICK_SIZES = Sizes({"full": 300, "normal": 1_000}, 20_000, 3_000, 100_000)
SMOKE_SIZES = Sizes({"full": 20, "normal": 100}, 10_000, 200, 10_000)
BATCHES = (1, 100, 10_000)
DURABILITIES = ("normal", "full")


def record(res: Results, key: str, n: int, sw: Stopwatch) -> None:
    """Store ``n / seconds`` under ``key`` and the share of the time in GC under
    ``key.gc``."""
    res.add(key, n / sw.seconds)
    res.add(f"{key}.gc", sw.gc_share)


@dataclass
class Variant:
    key: str
    run: Callable[[], Any]  # returns an awaitable or a value, records/s


async def _call(fn: Callable[[], Any]) -> Any:
    out = fn()
    if asyncio.iscoroutine(out):
        out = await out
    return out


def append_groups(files: Files, data: Dataset, sizes: Sizes, res: Results) -> list[list[Variant]]:
    """Variants grouped so that what is compared runs back to back in a round."""
    groups: list[list[Variant]] = []
    for batch in BATCHES:
        for dur in DURABILITIES:
            n = sizes.batch1[dur] if batch == 1 else sizes.batched
            ds = data.head(n)
            key = f"b{batch}.{dur}"

            def ls(ds: Dataset = ds, batch: int = batch, dur: str = dur, key: str = key) -> Any:
                async def go() -> None:
                    path = files.fresh(f"store-{key}")
                    try:
                        record(
                            res, f"{key}.store", len(ds), await store_append(path, ds, batch, dur)
                        )
                    finally:
                        files.remove(path)

                return go()

            def raw(
                encode: bool, ds: Dataset = ds, batch: int = batch, dur: str = dur, key: str = key
            ) -> None:
                name = f"{key}.raw_encode" if encode else f"{key}.raw_preencoded"
                record(res, name, len(ds), raw_append(files, name, ds, batch, dur, encode))

            group = [
                Variant(f"{key}.store", ls),
                Variant(f"{key}.raw_encode", functools.partial(raw, True)),
                Variant(f"{key}.raw_preencoded", functools.partial(raw, False)),
            ]
            if batch == 1:  # group commit is compared with raw commit-per-record

                def gcv(dur: str = dur) -> Any:
                    async def go() -> None:
                        path = files.fresh(f"group-{dur}")
                        try:
                            sw, per_commit = await store_group_commit(
                                path, data.head(sizes.group), dur
                            )
                            record(res, f"group.{dur}.store", sizes.group, sw)
                            res.add(f"group.{dur}.per_commit", per_commit)
                        finally:
                            files.remove(path)

                    return go()

                group.append(Variant(f"group.{dur}.store", gcv))
            groups.append(group)
    return groups


def read_group(path: Path, res: Results, rss_log: list[dict[str, float]]) -> list[Variant]:
    def ls() -> Any:
        async def go() -> None:
            before = maxrss_bytes()
            sw, count, open_s, rss = await store_read(path)
            record(res, "read.store", count, sw)
            res.add("read.store.open_s", open_s)
            res.add("read.count", count)
            rss_log.append(
                {
                    "start": rss.start_rss,
                    "peak": rss.peak,
                    "growth": rss.growth,
                    "maxrss_before": before,
                    "maxrss_after": maxrss_bytes(),
                }
            )

        return go()

    def raw(decode: str) -> None:
        sw, count = raw_read(path, decode)
        record(res, f"read.raw_{decode}", count, sw)
        res.add(f"read.raw_{decode}.count", count)

    def ls_streams(readonly: bool) -> Any:
        async def go() -> None:
            sw, count = await store_stream_reads(path, picked, readonly)
            record(res, "stream.store_ro" if readonly else "stream.store", count, sw)

        return go()

    def raw_streams() -> None:
        sw, count = raw_stream_reads(path, picked)
        record(res, "stream.raw_json", count, sw)

    picked = pick_streams(path, STREAM_READS)
    return [
        Variant("stream.store", lambda: ls_streams(False)),
        Variant("stream.store_ro", lambda: ls_streams(True)),
        Variant("stream.raw_json", raw_streams),
        Variant("read.store", ls),
        Variant("read.raw_json", lambda: raw("json")),
        Variant("read.raw_none", lambda: raw("none")),
        Variant("read.raw_pydantic", lambda: raw("pydantic")),
    ]


def verdict(ratios: list[float], target: float) -> str:
    med, lo, _ = summary(ratios)
    if med != med:
        return "-"
    if med >= target:
        return "PASS" if lo >= target else "PASS (median; min below)"
    return "FAIL"


def report(
    res: Results,
    sizes: Sizes,
    rounds: int,
    rss_log: list[dict[str, float]],
    build_s: float | None,
    only: str | None,
) -> None:
    def rate(key: str) -> str:
        return fmt_summary(res.get(key))

    def us(key: str) -> str:
        vals = res.get(key)
        return fmt_num(1e6 / summary(vals)[0]) if vals else "-"

    def pct(values: list[float]) -> str:
        return fmt_summary(values, fmt_pct)

    def in_gc(key: str) -> str:
        vals = res.get(f"{key}.gc")
        return fmt_pct(summary(vals)[0]) if vals else "-"

    targets: list[tuple[str, list[float], float]] = []
    if only != "read":
        print(f"\n## Appends (records/s; {rounds} round(s); median (min-max) over rounds)\n")
        rows = []
        for batch in BATCHES:
            for dur in DURABILITIES:
                key = f"b{batch}.{dur}"
                n = f"{sizes.batch1[dur] if batch == 1 else sizes.batched:,}"
                enc = res.ratio(f"{key}.store", f"{key}.raw_encode")
                pre = res.ratio(f"{key}.store", f"{key}.raw_preencoded")
                targeted = batch > 1
                for label, k, r1, r2, tgt, verd in (
                    (
                        "store.append (incl. pydantic encode)",
                        f"{key}.store",
                        pct(enc),
                        pct(pre),
                        f">= {TARGET_APPEND:.0%}" if targeted else "-",
                        verdict(enc, TARGET_APPEND) if targeted else "-",
                    ),
                    (
                        "raw sqlite3 + model_dump_json (timed)",
                        f"{key}.raw_encode",
                        "-",
                        "-",
                        "",
                        "",
                    ),
                    ("raw sqlite3, JSON pre-encoded", f"{key}.raw_preencoded", "-", "-", "", ""),
                ):
                    rows.append(
                        [label, f"{batch:,}", dur, n, rate(k), us(k), in_gc(k), r1, r2, tgt, verd]
                    )
                if targeted:
                    targets.append(
                        (f"batched append, batch {batch:,}, durability {dur}", enc, TARGET_APPEND)
                    )
        print_table(
            [
                "variant",
                "batch",
                "durability",
                "N",
                "records/s",
                "µs/record",
                "in GC",
                "lionstore/raw+encode",
                "lionstore/raw pre-encoded",
                "target",
                "verdict",
            ],
            rows,
            align="lrlrrrrrrll",
        )
        print(
            f"\n## Group commit: {WINDOW} concurrent producers, each awaiting single-record"
            " appends\n"
        )
        rows = []
        for dur in DURABILITIES:
            ratio = res.ratio(f"group.{dur}.store", f"b1.{dur}.raw_encode")
            key = f"group.{dur}.store"
            per_commit = fmt_summary(res.get(f"group.{dur}.per_commit"))
            rows.append(
                [
                    f"store.append x {WINDOW} producers",
                    dur,
                    f"{sizes.group:,}",
                    rate(key),
                    in_gc(key),
                    per_commit,
                    pct(ratio),
                ]
            )
            key = f"b1.{dur}.raw_encode"
            rows.append(
                [
                    "raw sqlite3, commit per record (+ encode)",
                    dur,
                    f"{sizes.batch1[dur]:,}",
                    rate(key),
                    in_gc(key),
                    "1",
                    "-",
                ]
            )
        print_table(
            [
                "variant",
                "durability",
                "N",
                "records/s",
                "in GC",
                "records per commit",
                "lionstore/raw",
            ],
            rows,
            align="llrrrrr",
        )

    if only != "append":
        counts = res.get("read.count")
        n_rows = int(counts[0]) if counts else sizes.read
        print(f"\n## Reads: the whole run, {n_rows:,} rows, position order ({rounds} round(s))\n")
        json_ratio = res.ratio("read.store", "read.raw_json")
        rows = []
        for label, k, shown, tgt, verd in (
            (
                "store.read(page_size=1000), records decoded to models",
                "read.store",
                pct(json_ratio),
                f">= {TARGET_READ:.0%}",
                verdict(json_ratio, TARGET_READ),
            ),
            ("raw sqlite3 fetchmany(1000) + json.loads", "read.raw_json", "-", "", ""),
            (
                "raw sqlite3 fetchmany(1000), no decode (reference)",
                "read.raw_none",
                pct(res.ratio("read.store", "read.raw_none")),
                "",
                "",
            ),
            (
                "raw sqlite3 fetchmany(1000) + model_validate_json (reference)",
                "read.raw_pydantic",
                pct(res.ratio("read.store", "read.raw_pydantic")),
                "",
                "",
            ),
        ):
            rows.append([label, rate(k), us(k), in_gc(k), shown, tgt, verd])
        for label, key in (
            ("writable store", "stream.store"),
            ("read-only store", "stream.store_ro"),
        ):
            rows.append(
                [
                    f"store.read(stream=...) of {STREAM_READS} streams in turn, {label}",
                    rate(key),
                    us(key),
                    in_gc(key),
                    pct(res.ratio(key, "stream.raw_json")),
                    "",
                    "",
                ]
            )
        rows.append(
            [
                "raw sqlite3: the stream by (run, id), its version index + json.loads",
                rate("stream.raw_json"),
                us("stream.raw_json"),
                in_gc("stream.raw_json"),
                "-",
                "",
                "",
            ]
        )
        targets.append(("read and decode vs raw fetch + json.loads", json_ratio, TARGET_READ))
        print_table(
            ["pipeline", "rows/s", "µs/row", "in GC", "lionstore/this", "target", "verdict"],
            rows,
            align="lrrrrll",
        )
        print()
        if build_s is not None:
            print(f"- read file built through Store.append (batches of 10,000): {build_s:.1f} s")
        opens = res.get("read.store.open_s")
        if opens:
            print(
                f"- lionstore.open(readonly) of the read file (not in the read time): "
                f"{fmt_summary([o * 1000 for o in opens])} ms"
            )
        if rss_log:
            growth = [r["growth"] for r in rss_log]
            peak = [r["peak"] for r in rss_log]
            print(
                "- RSS during store.read, sampled every 10 ms: "
                f"start {fmt_mib(rss_log[0]['start'])}, peak {fmt_mib(max(peak))}; "
                f"peak minus start: median {fmt_mib(summary(growth)[0])}, "
                f"max {fmt_mib(max(growth))}"
            )
            print(
                f"- ru_maxrss before/after the first store.read: "
                f"{fmt_mib(rss_log[0]['maxrss_before'])} / {fmt_mib(rss_log[0]['maxrss_after'])}"
            )

    print(
        "\n- in GC: share of the timed region spent in Python's cyclic garbage collector"
        " (gc.callbacks), median over rounds"
    )
    loads = res.get("loadavg1")
    if loads:
        print(
            f"- 1-minute load average at the start of each round: "
            f"{', '.join(f'{x:.2f}' for x in loads)} ({os.cpu_count()} CPUs; a load near or above"
            " the CPU count means other processes competed with this run)"
        )
    print("\n## Targets (verdict on the median of same-round ratios)\n")
    print_table(
        ["target", "lionstore/raw median (min-max)", "threshold", "verdict"],
        [[name, pct(vals), f">= {thr:.0%}", verdict(vals, thr)] for name, vals, thr in targets],
        align="lrrl",
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default 5; 1 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="1 round, small N: a smoke run")
    parser.add_argument("--only", choices=("append", "read"), help="run one half only")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the temporary files go (default: the system temp dir)",
    )
    add_smoke_argument(parser)
    args = parser.parse_args(argv)
    sizes = SMOKE_SIZES if args.smoke else QUICK_SIZES if args.quick else FULL_SIZES
    rounds = args.rounds or (1 if args.quick or args.smoke else 5)

    print("# lionstore log benchmark: lionstore vs raw sqlite3, same process run\n")
    print(f"- {machine_line()}")
    code = git_state(Path(__file__).resolve().parent.parent)
    print(
        f"- lionstore {lionstore.__version__} at {code}; rounds {rounds};"
        " variant order rotates per round"
    )
    print(
        f"- records: 3 per stream (enqueued/claimed/completed), fresh uuid4 stream ids, "
        f"{WINDOW} streams in flight; JSON data about "
        f"{sum(len(t) for t in Dataset.make(300).texts) // 300} bytes"
    )
    print()

    tmp = Path(tempfile.mkdtemp(prefix="lionstore-bench-", dir=args.dir))
    res = Results()
    rss_log: list[dict[str, float]] = []
    build_s = None
    try:
        files = Files(tmp)
        await files.prepare()
        groups: list[list[Variant]] = []
        if args.only != "read":
            data = Dataset.make(max(sizes.batched, sizes.group, *sizes.batch1.values()))
            groups += append_groups(files, data, sizes, res)
        read_path = tmp / "read.db"
        if args.only != "append":
            print(f"building the {sizes.read:,}-record read file ...", flush=True)
            build_s = await build_read_file(read_path, sizes.read)
            print(
                f"  built in {build_s:.1f} s ({read_path.stat().st_size / 1e6:.0f} MB)", flush=True
            )
        started = time.perf_counter()
        for r in range(rounds):
            res.add("loadavg1", loadavg1())
            order = [round_order(g, r) for g in round_order(groups, r)]
            if args.only != "append":
                order.append(round_order(read_group(read_path, res, rss_log), r))
            for group in order:
                for variant in group:
                    gc.collect()
                    with Stopwatch() as sw:
                        await _call(variant.run)
                    print(
                        f"  round {r + 1}/{rounds} {variant.key:<24} {sw.seconds:6.2f} s",
                        flush=True,
                    )
            print(f"round {r + 1} done at {time.perf_counter() - started:.0f} s", flush=True)
        report(res, sizes, rounds, rss_log, build_s, args.only)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
