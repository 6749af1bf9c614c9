"""The per-run digest chain that makes edits to a log detectable.

``digest(n) = sha256(digest(n-1) | position | stream_id | stream_version | kind |
kind_version | recorded_at_us | data)``, truncated to 128 bits, where ``n-1`` is
the run's previous record and the chain of a run starts from its run id. It is
not a signature (anyone who can write the file can recompute it); it catches
accidental and casual edits, and tells ``verify`` exactly where the log stopped
being what lionstore wrote.
"""

from __future__ import annotations

import hashlib

__all__ = ["chain_start", "record_digest"]


def chain_start(run_id: str) -> str:
    return hashlib.sha256(f"lionstore-run|{run_id}".encode()).hexdigest()[:32]


def record_digest(
    previous: str,
    position: int,
    stream_id: str,
    stream_version: int,
    kind: str,
    kind_version: int,
    recorded_at_us: int,
    data: str,
) -> str:
    h = hashlib.sha256(
        f"{previous}|{position}|{stream_id}|{stream_version}|{kind}|{kind_version}|"
        f"{recorded_at_us}|".encode()
    )
    h.update(data.encode())
    return h.hexdigest()[:32]
