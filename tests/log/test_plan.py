"""The commit plan both backends share: the expected-version rule and the numbering."""

from __future__ import annotations

from lionstore import IDType
from lionstore.errors import ConcurrencyError
from lionstore.log.backend import AppendRequest
from lionstore.log.plan import Head, Plan, version_conflict

A, B, C = (IDType.create() for _ in range(3))


def rows(*sids: IDType) -> list[tuple[IDType, str, int, str, None]]:
    return [(sid, "plantest.row", 1, "{}", None) for sid in sids]


def test_the_expected_version_must_match_exactly() -> None:
    heads: dict[str, Head] = {A: (1, 3)}
    assert version_conflict({A: 3}, heads.get) is None
    assert version_conflict({B: 0}, heads.get) is None  # never written: version 0
    for wrong in (2, 4, 0):
        conflict = version_conflict({A: wrong}, heads.get)
        assert isinstance(conflict, ConcurrencyError)
        assert str(conflict) == f"stream {A} is at version 3, expected {wrong}"
    conflict = version_conflict({B: 1}, heads.get)
    assert str(conflict) == f"stream {B} is at version 0, expected 1"


def test_a_plan_numbers_streams_and_versions_and_refuses_a_conflict_whole() -> None:
    known: dict[str, Head] = {A: (4, 2)}
    plan = Plan(10, 4, known.get)
    plan.add(AppendRequest(rows(A, B, A), expected={A: 2}))
    plan.add(AppendRequest(rows(C, A), expected={A: 2}))  # A is at 4 now: refused
    plan.add(AppendRequest(rows(B), expected={A: 4, B: 1}, want_records=False))
    assert plan.numbers == [4, 5, 4, 5]
    assert plan.versions == [3, 1, 4, 2]
    assert plan.new_streams == [B]  # C's request was refused: no stream for it
    assert plan.position == 14 and plan.stream_no == 5
    records, refused, positions = plan.results
    assert isinstance(refused, ConcurrencyError)
    assert positions == range(14, 15)
    outcome = plan.outcome(IDType.create(), 7, ["d1", "d2", "d3", "d4"])
    assert outcome.head == 14 and outcome.last_stream_no == 5
    assert isinstance(records, list)
    assert [(r.position, r.stream_id, r.stream_version, r.digest) for r in records] == [
        (11, A, 3, "d1"),
        (12, B, 1, "d2"),
        (13, A, 4, "d3"),
    ]


def test_the_heads_a_plan_leaves_are_real_ones() -> None:
    """What a plan leaves in ``heads`` goes into the backend's stream cache: a stream
    only checked (expected new, not written) must not be cached as if it had a head."""
    known: dict[str, Head] = {A: (1, 5)}
    plan = Plan(0, 1, known.get)
    plan.add(AppendRequest(rows(B), expected={A: 5, C: 0}))
    assert plan.heads == {A: (1, 5), B: (2, 1)}


def test_a_request_with_no_rows_is_checked_and_adds_nothing() -> None:
    """(The store answers an empty append itself; a backend's plan still takes one:
    its expected versions are checked, and it numbers nothing.)"""
    known: dict[str, Head] = {A: (4, 2)}
    plan = Plan(10, 4, known.get)
    plan.add(AppendRequest([], expected={A: 2}))
    plan.add(AppendRequest([], expected={A: 1}))
    plan.add(AppendRequest(rows(A), expected={A: 2}))
    plan.outcome(IDType.create(), 7, ["d1"])
    empty, refused, records = plan.results
    assert isinstance(empty, list) and isinstance(records, list)
    assert empty == [] and isinstance(refused, ConcurrencyError)
    assert [(r.position, r.stream_version, r.digest) for r in records] == [(11, 3, "d1")]
    assert (plan.numbers, plan.versions, plan.position) == ([4], [3], 11)
