"""One group commit, planned the same way on every backend.

A backend finds the streams' heads in its own way (a cache, a look-up under its lock);
from there the rules are shared: the expected-version check (compare-and-set, one rule
for SQLite and PostgreSQL), the numbering of new streams and of each stream's versions,
and the records or positions each request gets back. The backend then writes the
columns (:class:`Plan`) and the digests in its own way. Records other writers committed
are read back through :class:`~lionstore.log.rows.RowDecoder`, as any read is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from lionstore.domain.ids import IDType
from lionstore.domain.records import Recorded
from lionstore.errors import ConcurrencyError
from lionstore.log.backend import AppendRequest, CommitOutcome
from lionstore.log.digest import chain_digests

__all__ = ["Head", "Plan", "version_conflict"]

#: A stream's ``(stream_no, version)``; version 0 is a stream never written.
Head = tuple[int, int]


def version_conflict(
    expected: Mapping[IDType, int], head_of: Callable[[str], Head | None]
) -> ConcurrencyError | None:
    """The compare-and-set rule: each stream named in ``expected`` must be at exactly
    that version (a stream with no head is at 0). The first one that is not is the
    conflict; None when every one is."""
    for sid, want in expected.items():
        head = head_of(sid)
        current = 0 if head is None else head[1]
        if current != want:
            return ConcurrencyError(f"stream {sid} is at version {current}, expected {want}")
    return None


class Plan:
    """The records one commit accepts, numbered, as columns in position order (no tuple
    per record for the garbage collector to look at).

    ``known(sid)`` is the backend's head of a stream before this commit (None: new).
    Requests are added in order; each sees the heads the ones before it leave.
    """

    __slots__ = (
        "_known",
        "_wanted",
        "heads",
        "kind_versions",
        "kinds",
        "last_position",
        "last_stream_no",
        "new_streams",
        "numbers",
        "results",
        "sids",
        "stream_no",
        "texts",
        "versions",
    )

    def __init__(
        self, last_position: int, last_stream_no: int, known: Callable[[str], Head | None]
    ) -> None:
        self.last_position = last_position
        self.last_stream_no = last_stream_no
        self.stream_no = last_stream_no  # the last stream number given out
        self._known = known
        #: stream_id -> head, as the requests planned so far leave it
        self.heads: dict[str, Head] = {}
        #: streams first written here, numbered from last_stream_no + 1 on
        self.new_streams: list[str] = []
        self.sids: list[str] = []
        self.numbers: list[int] = []
        self.versions: list[int] = []
        self.kinds: list[str] = []
        self.kind_versions: list[int] = []
        self.texts: list[str] = []
        #: per request: its records (want_records), its positions, or its conflict
        self.results: list[list[Recorded] | range | BaseException] = []
        self._wanted: list[tuple[list[Recorded], int, AppendRequest]] = []

    def head(self, sid: str) -> Head | None:
        head = self.heads.get(sid)
        if head is None:
            head = self._known(sid)
            if head is not None:
                self.heads[sid] = head
        return head

    def add_all(self, requests: Sequence[AppendRequest]) -> None:
        for req in requests:
            self.add(req)

    def add(self, req: AppendRequest) -> None:
        """Accept the request's records, or record its conflict (nothing of it is kept)."""
        conflict = version_conflict(req.expected, self.head)
        if conflict is not None:
            self.results.append(conflict)
            return
        start = len(self.numbers)
        rows = req.rows
        # The columns the rows give as they are, in one pass each (C loops) ...
        sids, kinds, kind_versions, texts, _ = zip(*rows, strict=True) if rows else ((),) * 5
        self.sids += sids
        self.kinds += kinds
        self.kind_versions += kind_versions
        self.texts += texts
        # ... and the stream numbers and versions, stream by stream.
        heads, known = self.heads, self._known
        add_number, add_version = self.numbers.append, self.versions.append
        for sid in sids:
            head = heads.get(sid)
            if head is None:
                head = known(sid)
                if head is None:  # a new stream
                    self.stream_no += 1
                    head = (self.stream_no, 0)
                    self.new_streams.append(sid)
            number, version = head[0], head[1] + 1
            heads[sid] = (number, version)
            add_number(number)
            add_version(version)
        first = self.last_position + 1
        if req.want_records:
            committed: list[Recorded] = []
            self._wanted.append((committed, start, req))
            self.results.append(committed)
        else:
            self.results.append(range(first + start, first + len(self.numbers)))

    @property
    def position(self) -> int:
        """The last position once the plan is written."""
        return self.last_position + len(self.numbers)

    def digests(self, tip: str, now_us: int) -> list[str]:
        """The digest chain of the accepted records, on from ``tip``."""
        return chain_digests(
            tip,
            self.last_position + 1,
            now_us,
            self.sids,
            self.versions,
            self.kinds,
            self.kind_versions,
            self.texts,
        )

    def outcome(self, run_id: IDType, now_us: int, digests: Sequence[str]) -> CommitOutcome:
        """The outcome to hand back, the records asked for filled in."""
        first = self.last_position + 1
        for committed, start, req in self._wanted:
            for i, (sid, kind, kind_version, text, data) in enumerate(req.rows, start):
                committed.append(
                    Recorded(
                        first + i,
                        run_id,
                        sid,
                        self.versions[i],
                        kind,
                        kind_version,
                        data,
                        now_us,
                        text,
                        digests[i],
                    )
                )
        return CommitOutcome(
            foreign=[], results=self.results, head=self.position, last_stream_no=self.stream_no
        )
