"""Retention: archive a finished run to a self-contained file, then delete it.

An archive is JSON lines: a header, then every record of the run in position
order as ``lionstore export`` writes it (``data`` in the current shape of its
kind) plus ``raw``, the data exactly as stored, which the digest covers. So an
archive can be checked on its own (:func:`verify_archive` recomputes the
digest chain from the run id) without the database it came from.

Deleting a run removes its records, streams and checkpoints and the run itself,
in one transaction. Positions stay what they were: they are never reused, so
the log has a gap where the run's records were, and every retained run still
verifies (each run's digest chain covers only its own records). A fork is a
copy of its parent's records with its own chain, so deleting a parent leaves
its forks whole; they keep the parent's id (``parent_run_id``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import lionstore
from lionstore.errors import LionstoreError, RunNotFoundError
from lionstore.log.backend import RunInfo
from lionstore.log.digest import chain_start, record_digest
from lionstore.log.opening import delete_run as store_delete_run
from lionstore.replay.state import rebuild

__all__ = [
    "ARCHIVE_FORMAT",
    "ArchiveCheck",
    "RunNotFinishedError",
    "archive_run",
    "delete_run",
    "unfinished_work",
    "verify_archive",
]

ARCHIVE_FORMAT = 1


class RunNotFinishedError(LionstoreError):
    """The run still has work in flight; deleting it would lose that work."""


async def unfinished_work(store: lionstore.Store, run: str) -> dict[str, int]:
    """What is not finished in ``run``: events not in a terminal status and mail still in
    an outbox or the buffer, by kind ({} when the run is finished)."""
    counts = (await rebuild(store, run=run)).counts()
    left = {
        f"events {status}": n
        for status, n in counts["events"].items()
        if status not in ("completed", "failed", "cancelled", "aborted", "skipped")
    }
    left.update(
        {
            f"mail in {place}": n
            for place, n in counts["mail"].items()
            if place in ("outbox", "buffer")
        }
    )
    return left


def _run_json(info: RunInfo) -> dict[str, Any]:
    return {
        "run_id": info.run_id,
        "label": info.label,
        "started_at_us": info.started_at_us,
        "parent_run_id": info.parent_run_id,
        "forked_at_position": info.forked_at_position,
    }


async def archive_run(path: str | os.PathLike[str], run: str, out: TextIO) -> tuple[RunInfo, int]:
    """Write run ``run`` (id or label) of the database at ``path`` to ``out`` as an
    archive; return the run and the number of records written. Read-only."""
    async with lionstore.open(path, readonly=True) as store:
        info = await store.find_run(run)
        header = {"lionstore_archive": ARCHIVE_FORMAT, "run": _run_json(info)}
        out.write(json.dumps(header, separators=(",", ":")) + "\n")
        count = 0
        async for record in await store.read(run=info.run_id, page_size=2000):
            line = {
                **record.to_json_dict(),
                "digest": record.digest,
                "recorded_at_us": record.recorded_at_us,
                "raw": record.raw,
            }
            out.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
            count += 1
    return info, count


@dataclass(frozen=True)
class ArchiveCheck:
    """What :func:`verify_archive` found: ``ok``, the run, the records read, and the
    first problem (``line``, ``reason``) when not ok."""

    ok: bool
    run_id: str | None
    records: int
    line: int | None = None
    reason: str | None = None


def verify_archive(file: str | os.PathLike[str]) -> ArchiveCheck:
    """Check an archive on its own: its header, and each record's digest chained from
    the run id over the stored bytes (``raw``), positions increasing."""
    run_id: str | None = None
    previous = ""
    last_position = 0
    count = 0
    with Path(file).open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, 1):
            try:
                line = json.loads(text)
            except (ValueError, RecursionError):
                return ArchiveCheck(False, run_id, count, number, "not JSON")
            if number == 1:
                if not isinstance(line, dict) or line.get("lionstore_archive") != ARCHIVE_FORMAT:
                    return ArchiveCheck(False, None, 0, 1, "not a lionstore archive (format 1)")
                run_id = str(line["run"]["run_id"])
                previous = chain_start(run_id)
                continue
            try:
                position = int(line["position"])
                expected = record_digest(
                    previous,
                    position,
                    str(line["stream_id"]),
                    int(line["stream_version"]),
                    str(line["kind"]),
                    int(line["kind_version"]),
                    int(line["recorded_at_us"]),
                    str(line["raw"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                return ArchiveCheck(False, run_id, count, number, f"a malformed record ({exc})")
            if line.get("run_id") != run_id:
                return ArchiveCheck(False, run_id, count, number, "a record of another run")
            if position <= last_position:
                return ArchiveCheck(False, run_id, count, number, "positions out of order")
            if expected != line.get("digest"):
                return ArchiveCheck(
                    False,
                    run_id,
                    count,
                    number,
                    "digest mismatch: changed, missing or extra record",
                )
            previous, last_position = expected, position
            count += 1
    if run_id is None:
        return ArchiveCheck(False, None, 0, None, "an empty file")
    return ArchiveCheck(True, run_id, count)


async def delete_run(
    path: str | os.PathLike[str], run: str, *, force: bool = False
) -> tuple[RunInfo, int]:
    """Delete run ``run`` (id or label) from the database at ``path``; return it and the
    number of records removed. Refuses (:class:`RunNotFinishedError`, nothing
    deleted) a run with unfinished work unless ``force``."""
    async with lionstore.open(path, readonly=True) as reader:
        info = await reader.find_run(run)
        if not force:
            left = await unfinished_work(reader, info.run_id)
            if left:
                what = ", ".join(f"{n} {k}" for k, n in sorted(left.items()))
                raise RunNotFinishedError(
                    f"run {info.label or info.run_id} is not finished ({what}); archive it and "
                    "pass force=True (--force) to delete it anyway"
                )
    removed = await store_delete_run(path, info.run_no)
    if removed is None:
        raise RunNotFoundError(f"no run with id or label {run!r}")
    return info, removed
