"""On SQLite, commits no longer write the head row: it becomes a high-water mark.

No table changes. What changes is what a writer keeps in ``lionstore_head`` on
SQLite: its ``last_position`` and ``last_stream_no`` are written when a run is
created or deleted, not by every commit, and the log's last position is the
greater of the row and the last record (``lionstore.log.sqlite_commit``). A
lionstore that knows only 0002 would number from the row and collide with the
records after it, so the revision says which rule a file follows. PostgreSQL keeps
the row exact (its lock serializes commits), so there the revision changes
nothing.

Upgrading changes no data: a 0002 file's head row is exact, which a high-water
mark may be. Downgrading on SQLite makes the row exact again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # an exact head row is a valid high-water mark


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # exact there already
    op.execute(
        "UPDATE lionstore_head SET"
        " last_position = max(last_position,"
        "  coalesce((SELECT max(position) FROM lionstore_records), 0)),"
        " last_stream_no = max(last_stream_no,"
        "  coalesce((SELECT max(stream_no) FROM lionstore_streams), 0))"
        " WHERE id = 1"
    )
