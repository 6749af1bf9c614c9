"""Child process for test_disk_full.py: the disk fills in the middle of an append.

The file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes every write past
``limit`` bytes fail with EFBIG, which SQLite reports as a full disk, exactly as when
the disk runs out. Prints one JSON line with what happened.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
from typing import Any, ClassVar

import lionstore


class Blob(lionstore.RecordData):
    kind: ClassVar[str] = "reliability.blob"
    n: int
    text: str


async def blobs(store: lionstore.Store) -> list[tuple[int, int]]:
    return [
        (r.position, r.data.n)  # type: ignore[union-attr]
        async for r in await store.read(kinds=[Blob.kind])
    ]


async def main(path: str, limit: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stream = lionstore.IDType.create()
    async with lionstore.open(path, run="full") as store:
        before = await store.append([(stream, Blob(n=i, text="a" * 100)) for i in range(20)])
        out["before"] = before
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            n = 20
            for _ in range(200):  # grow until the "disk" is full
                await store.append([(stream, Blob(n=n + j, text="b" * 900)) for j in range(50)])
                n += 50
            out["error"] = None
        except Exception as exc:
            out["error"] = [type(exc).__name__, str(exc), isinstance(exc, lionstore.LionstoreError)]
        out["head_when_full"] = await store.head()
        out["read_when_full"] = await blobs(store)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
        try:
            out["after"] = await store.append([(stream, Blob(n=-1, text="after"))])
        except Exception as exc:
            out["after"] = [type(exc).__name__, str(exc)]
    async with lionstore.open(path, run="full") as store:
        out["reopened"] = await blobs(store)
        out["stream_versions"] = [r.stream_version async for r in await store.read(stream=stream)]
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2])))), flush=True)
