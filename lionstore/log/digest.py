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
from collections.abc import Iterable
from hashlib import sha256
from itertools import count

__all__ = ["chain_digests", "chain_start", "record_digest"]

_EMPTY = sha256()  # copying it is cheaper than starting a new hash


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
    h = sha256(
        f"{previous}|{position}|{stream_id}|{stream_version}|{kind}|{kind_version}|"
        f"{recorded_at_us}|".encode()
    )
    h.update(data.encode())
    return h.hexdigest()[:32]


def chain_digests(
    previous: str,
    first_position: int,
    recorded_at_us: int,
    stream_ids: Iterable[str],
    stream_versions: Iterable[int],
    kinds: Iterable[str],
    kind_versions: Iterable[int],
    datas: Iterable[str],
) -> list[str]:
    """:func:`record_digest` of consecutive records at ``first_position``,
    ``first_position + 1``, ..., all recorded at ``recorded_at_us``, each chained to
    the one before it (the first to ``previous``): the same bytes hashed, in one loop
    without a call per record."""
    digests: list[str] = []
    add = digests.append
    new = _EMPTY.copy
    kind = kind_version = tail = None
    for position, stream_id, stream_version, next_kind, next_kind_version, data in zip(
        count(first_position), stream_ids, stream_versions, kinds, kind_versions, datas
    ):
        if next_kind is not kind or next_kind_version != kind_version:
            kind, kind_version = next_kind, next_kind_version
            tail = f"|{kind}|{kind_version}|{recorded_at_us}|"  # the same for a run of a kind
        h = new()
        h.update(f"{previous}|{position}|{stream_id}|{stream_version}{tail}".encode())
        h.update(data.encode())
        previous = h.hexdigest()[:32]
        add(previous)
    return digests
