"""A run's digest chain, checked in a second process while a rebuild folds the run.

``lionstore.replay.rebuild`` checks every record it folds against the per-run digest
chain (lionstore.log.digest), so that it returns the logged state or raises. Hashing
in the folding thread costs about 2 µs a record, a third of the fold: for a large
run the chain is instead checked by a child Python process reading the same rows
from the same file, on another core, while the fold runs; the rebuild returns only
once the child has confirmed every record the fold read (or raises for the first one
that does not chain).

The child is ``python -I -c <script>``: the interpreter in isolated mode and nothing
but the standard library (sqlite3, hashlib, json), so it starts in tens of
milliseconds and imports nothing the file names. It opens the database read-only, the
way the store's reader does, and reads the rows of the same bounded query (positions up
to the head when the rebuild began: committed and append-only, so both read the same
records whatever their snapshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import dataclass
from typing import Any

from lionstore.errors import StoreError

__all__ = ["ChainCheck", "ChainResult", "start_chain_check"]

_SCRIPT = r"""
import hashlib, json, sqlite3, sys
uri, sql, params, tip = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
conn.execute("PRAGMA query_only=ON")
sha = hashlib.sha256
rows = last = 0
key = None
tail = ""
for position, sid, version, kind, kv, data, at, digest in conn.execute(sql, params):
    if (kind, kv, at) != key:
        key = (kind, kv, at)
        tail = f"|{kind}|{kv}|{at}|"
    h = sha(f"{tip}|{position}|{sid}|{version}{tail}".encode())
    h.update(data.encode())
    tip = h.hexdigest()[:32]
    if tip != digest:
        print(json.dumps({"ok": False, "position": position}))
        sys.exit(0)
    rows += 1
    last = position
print(json.dumps({"ok": True, "rows": rows, "last": last, "tip": tip}))
"""

_SELECT = (
    "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version, r.data,"
    " r.recorded_at_us, r.digest FROM lionstore_records r"
    " JOIN lionstore_streams s ON s.stream_no = r.stream_no"
)


@dataclass(frozen=True)
class ChainResult:
    """What the child found: ``ok`` with the rows it hashed, the last position and the
    chain's tip there; or not ``ok`` and the first ``position`` that does not chain."""

    ok: bool
    rows: int = 0
    last: int = 0
    tip: str = ""
    position: int = 0


class ChainCheck:
    """A running check; :meth:`result` waits for it, :meth:`cancel` stops it."""

    def __init__(self, process: asyncio.subprocess.Process, label: str) -> None:
        self._process = process
        self._label = label

    async def result(self) -> ChainResult:
        out, err = await self._process.communicate()
        if self._process.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise StoreError(f"{self._label}: the digest chain check failed ({tail[0]})")
        found: dict[str, Any] = json.loads(out)
        return ChainResult(**found)

    async def cancel(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


async def start_chain_check(
    uri: str, where: str, params: list[Any], tip: str, label: str
) -> ChainCheck | None:
    """Start checking the chain of the records ``where`` selects (in position order),
    from ``tip``; None when no child process can be started here (the caller then
    hashes in the folding thread)."""
    if not sys.executable:
        return None
    sql = f"{_SELECT} WHERE {where} ORDER BY r.position"
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            _SCRIPT,
            uri,
            sql,
            json.dumps(params),
            tip,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError:
        return None
    return ChainCheck(process, label)
