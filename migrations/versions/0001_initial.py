"""The log: runs, streams, records and the head row.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "lionstore_runs",
        sa.Column("run_no", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("started_at_us", sa.BigInteger(), nullable=False),
        sa.Column("parent_run_no", sa.Integer(), nullable=True),
        sa.Column("forked_at_position", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_run_no"],
            ["lionstore_runs.run_no"],
            name=op.f("fk_lionstore_runs_parent_run_no_lionstore_runs"),
        ),
        sa.PrimaryKeyConstraint("run_no", name=op.f("pk_lionstore_runs")),
        sa.UniqueConstraint("label", name=op.f("uq_lionstore_runs_label")),
        sa.UniqueConstraint("run_id", name=op.f("uq_lionstore_runs_run_id")),
    )
    op.create_table(
        "lionstore_streams",
        sa.Column("stream_no", BigID, autoincrement=False, nullable=False),
        sa.Column("run_no", sa.Integer(), nullable=False),
        sa.Column("stream_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_no"],
            ["lionstore_runs.run_no"],
            name=op.f("fk_lionstore_streams_run_no_lionstore_runs"),
        ),
        sa.PrimaryKeyConstraint("stream_no", name=op.f("pk_lionstore_streams")),
        sa.UniqueConstraint(
            "run_no", "stream_id", name=op.f("uq_lionstore_streams_run_no_stream_id")
        ),
    )
    op.create_table(
        "lionstore_records",
        sa.Column("position", BigID, autoincrement=False, nullable=False),
        sa.Column("run_no", sa.Integer(), nullable=False),
        sa.Column("stream_no", BigID, nullable=False),
        sa.Column("stream_version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("kind_version", sa.SmallInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("recorded_at_us", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.CheckConstraint(
            "stream_version >= 1", name=op.f("ck_lionstore_records_stream_version_positive")
        ),
        sa.ForeignKeyConstraint(
            ["run_no"],
            ["lionstore_runs.run_no"],
            name=op.f("fk_lionstore_records_run_no_lionstore_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["stream_no"],
            ["lionstore_streams.stream_no"],
            name=op.f("fk_lionstore_records_stream_no_lionstore_streams"),
        ),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_lionstore_records")),
        sa.UniqueConstraint(
            "stream_no",
            "stream_version",
            name=op.f("uq_lionstore_records_stream_no_stream_version"),
        ),
    )
    op.create_index(
        "ix_lionstore_records_run_position",
        "lionstore_records",
        ["run_no", "position"],
        unique=False,
    )
    head = op.create_table(
        "lionstore_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("last_stream_no", sa.BigInteger(), nullable=False),
        sa.Column("last_run_no", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_lionstore_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lionstore_head")),
    )
    op.bulk_insert(head, [{"id": 1, "last_position": 0, "last_stream_no": 0, "last_run_no": 0}])


def downgrade() -> None:
    op.drop_table("lionstore_head")
    op.drop_index("ix_lionstore_records_run_position", table_name="lionstore_records")
    op.drop_table("lionstore_records")
    op.drop_table("lionstore_streams")
    op.drop_table("lionstore_runs")
