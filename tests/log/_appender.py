"""A worker process for test_multiprocess.py: appends to a shared run of one file.

Usage: python _appender.py CONFIG_JSON. It prints "ready" once imported, waits for a line
on stdin (the start signal, so that all workers begin together), then makes
``appends`` appends of 1-3 records each. Every third append also writes to one of the
shared streams with an expected version, reading the stream and retrying on
ConcurrencyError. The last line it prints is a JSON report.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from _kinds import Tick  # this script's folder is first on sys.path

import lionstore
from lionstore import ConcurrencyError, IDType


async def work(cfg: dict[str, Any]) -> dict[str, Any]:
    worker = int(cfg["worker"])
    shared = [IDType(s) for s in cfg["shared"]]
    own = [IDType.create() for _ in range(4)]
    positions: list[int] = []
    records = 0
    retries = 0
    known: dict[str, tuple[int, int]] = {s: (0, 0) for s in shared}  # version, position

    async with lionstore.open(cfg["db"], run=cfg["run"], lock_timeout=60) as store:
        for seq in range(int(cfg["appends"])):
            batch = [
                (own[(seq + i) % len(own)], Tick(worker=worker, seq=seq))
                for i in range(1 + seq % 3)
            ]
            if seq % 3 != 0:
                positions += await store.append(batch)
                records += len(batch)
                continue
            sid = shared[(seq // 3) % len(shared)]
            while True:
                version, position = known[sid]
                async for record in await store.read(stream=sid, after=position):
                    version, position = record.stream_version, record.position
                known[sid] = (version, position)
                try:
                    got = await store.append(
                        [*batch, (sid, Tick(worker=worker, seq=seq))],
                        expected_versions={sid: version},
                    )
                except ConcurrencyError:
                    retries += 1
                    continue
                positions += got
                records += len(batch) + 1
                known[sid] = (version + 1, got[-1])
                break
    return {
        "worker": worker,
        "appends": int(cfg["appends"]),
        "records": records,
        "retries": retries,
        "positions": positions,
        "own": own,
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no start signal")
    print(json.dumps(asyncio.run(work(cfg))), flush=True)


if __name__ == "__main__":
    main()
