"""The invariants the crash loop and the concurrency test check after every run."""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rel_workload import read_lines

import lionstore
from lionstore.log.digest import chain_start, record_digest
from lionstore.replay import verify

TERMINAL_KINDS = ("event.finished", "event.abandoned")
MAIL_END_KINDS = ("mail.delivered", "mail.dead_lettered")


@dataclass
class Checked:
    """What one check looked at."""

    records: int = 0
    events: int = 0
    invocations: int = 0
    abandoned: int = 0
    failed: int = 0
    mails: int = 0
    delivered: int = 0
    dead: int = 0
    acks: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


def check_structure(path: Path) -> int:
    """Positions gapless from 1, stream versions 1, 2, 3 ... per stream; the head row
    is not past them. Read with plain sqlite3, beside lionstore. Returns the record count."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT position, stream_no, stream_version FROM lionstore_records ORDER BY position"
        ).fetchall()
        head = conn.execute("SELECT last_position FROM lionstore_head").fetchone()
    finally:
        conn.close()
    positions = [r[0] for r in rows]
    assert positions == list(range(1, len(rows) + 1)), "positions are not gapless from 1"
    # a high-water mark since schema 0003: written when a run starts, not by commits
    assert head is not None and head[0] <= len(rows), (head, len(rows))
    next_version: dict[int, int] = defaultdict(lambda: 1)
    for position, stream, version in rows:
        assert version == next_version[stream], (position, stream, version)
        next_version[stream] = version + 1
    return len(rows)


def rechain(path: Path, run: str) -> None:
    """Recompute the digest chain of run ``run`` (its label) over the stored bytes, as
    someone hiding an edit would; the check of the edit itself must then report it."""
    conn = sqlite3.connect(path)
    try:
        ((run_no, run_id),) = conn.execute(
            "SELECT run_no, run_id FROM lionstore_runs WHERE label = ?", (run,)
        ).fetchall()
        rows = conn.execute(
            "SELECT r.position, s.stream_id, r.stream_version, r.kind, r.kind_version,"
            " r.recorded_at_us, r.data FROM lionstore_records r JOIN lionstore_streams s"
            " ON s.stream_no = r.stream_no WHERE r.run_no = ? ORDER BY r.position",
            (run_no,),
        ).fetchall()
        tip = chain_start(run_id)
        for row in rows:
            tip = record_digest(tip, *row)
            conn.execute(
                "UPDATE lionstore_records SET digest = ? WHERE position = ?", (tip, row[0])
            )
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def check_run(
    path: Path,
    run: str,
    *,
    side: Path,
    ack: Path,
    max_attempts: int,
    exact_invocations: bool = False,
) -> Checked:
    """Every invariant of the guarantees, on a run that has been resumed to the end.

    * the log's structure (``check_structure``), every record decodes to a known
      kind, and ``verify`` (digest chain, decisions, transitions) finds nothing;
    * each event has exactly one terminal record (no retries in this workload), at
      most ``max_attempts`` claims, and no more invocations than claims (the
      invocation file is written before ``invoke`` does anything); with
      ``exact_invocations`` (no crash), exactly one invocation each;
    * each mail ends delivered once or dead-lettered once with a reason, and
      deliveries keep each sender's order per recipient;
    * every write acknowledged in the ack file is in the log.
    """
    out = Checked(records=check_structure(path))
    invoked = Counter(read_lines(side))
    out.invocations = sum(invoked.values())
    async with lionstore.open(path, run=run, readonly=True) as store:
        report = await verify(store)
        assert report.ok, report.to_dict()
        kinds: dict[str, list[str]] = defaultdict(list)
        senders: dict[str, tuple[str, str]] = {}
        sources_added: set[str] = set()
        sources_deleted: set[str] = set()
        deliveries: dict[tuple[str, str], list[str]] = defaultdict(list)
        sent_order: dict[tuple[str, str], list[str]] = defaultdict(list)
        async for r in await store.read():
            assert not isinstance(r.data, lionstore.UnknownRecord), r
            kinds[r.stream_id].append(r.kind)
            data = r.data
            if r.kind == "mail.sent":
                key = (str(data.recipient), str(data.sender))  # type: ignore[attr-defined]
                senders[r.stream_id] = key
                sent_order[key].append(r.stream_id)
            elif r.kind == "mail.delivered":
                deliveries[senders[r.stream_id]].append(r.stream_id)
            elif r.kind == "mail.dead_lettered":
                reason = data.reason  # type: ignore[attr-defined]
                assert reason, r
                out.reasons[reason] += 1
            elif r.kind == "event.finished" and data.status == "failed":  # type: ignore[attr-defined]
                out.failed += 1
            elif r.kind == "source.added":
                sources_added.add(r.stream_id)
            elif r.kind == "source.deleted":
                sources_deleted.add(r.stream_id)

    for stream, history in kinds.items():
        if history[0] == "event.appended":
            out.events += 1
            ends = [k for k in history if k in TERMINAL_KINDS]
            assert len(ends) == 1, (stream, history)
            assert history[-1] in TERMINAL_KINDS, (stream, history)
            claims = history.count("event.claimed")
            assert claims <= max_attempts, (stream, history)
            assert invoked[stream] <= claims, (stream, invoked[stream], history)
            if ends[0] == "event.abandoned":
                out.abandoned += 1
            else:
                assert invoked[stream] >= 1, (stream, history)
            if exact_invocations:
                assert invoked[stream] == 1, (stream, invoked[stream], history)
        elif history[0] == "mail.sent":
            out.mails += 1
            ends = [k for k in history if k in MAIL_END_KINDS]
            assert len(ends) == 1, (stream, history)
            assert history in (
                ["mail.sent", "mail.collected", "mail.delivered"],
                ["mail.sent", "mail.dead_lettered"],
                ["mail.sent", "mail.collected", "mail.dead_lettered"],
            ), (stream, history)
            if ends[0] == "mail.delivered":
                out.delivered += 1
            else:
                out.dead += 1
    for key, delivered in deliveries.items():
        order = [m for m in sent_order[key] if m in set(delivered)]
        assert delivered == order, f"per-sender order broken for {key}"
    assert not set(invoked) - set(kinds), "an invocation of an event the log does not know"

    for line in read_lines(ack):
        what, _, rest = line.partition(" ")
        ids = rest.split()
        out.acks += 1
        if what == "event":
            assert kinds.get(ids[0], [""])[0] == "event.appended", line
        elif what == "mail":
            assert kinds.get(ids[0], [""])[0] == "mail.sent", line
        elif what == "source+":
            assert ids[0] in sources_added, line
        elif what == "source-":
            assert ids[0] in sources_deleted, line
        elif what == "joined":
            for i in ids:
                assert any(k in TERMINAL_KINDS for k in kinds.get(i, [])), line
        else:
            raise AssertionError(f"unknown ack line {line!r}")
    return out
