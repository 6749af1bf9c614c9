"""Feeding a projection's state record data directly, as a store would after decoding:
the in-memory fold tests of tests/mutation/ build their states with it."""

from __future__ import annotations

from typing import Any

from lionstore.domain.ids import IDType


class FoldLog:
    """Folds record data into ``state`` with stream versions and positions numbered as
    a log would number them (positions from 1, each stream's versions from 1)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.position = 0
        self.versions: dict[IDType, int] = {}

    def fold(self, sid: IDType, data: Any) -> None:
        self.position += 1
        self.versions[sid] = self.versions.get(sid, 0) + 1
        self.state.fold(sid, self.versions[sid], self.position, data)
