"""Projection checkpoints, and each run's parent kept by id.

* ``lionstore_checkpoints``: one snapshot per run and projection (an executor or
  a mail router by name) with the position it covers and that record's digest.
  A cache: dropping every row loses nothing but time.
* ``lionstore_runs.parent_run_id``: the parent run's id, filled here from the
  existing ``parent_run_no`` links. ``parent_run_no`` is a foreign key, so it is
  cleared when the parent run is deleted (``lionstore runs delete``); the id
  keeps saying where a fork came from after that.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lionstore_checkpoints",
        sa.Column("run_no", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=False),
        sa.Column("format_version", sa.Integer(), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("written_at_us", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_no"],
            ["lionstore_runs.run_no"],
            name=op.f("fk_lionstore_checkpoints_run_no_lionstore_runs"),
        ),
        sa.PrimaryKeyConstraint("run_no", "name", name=op.f("pk_lionstore_checkpoints")),
    )
    op.add_column("lionstore_runs", sa.Column("parent_run_id", sa.String(36), nullable=True))
    # Data: every fork's parent id, from the parent_run_no links (plain SQL both
    # SQLite and PostgreSQL run as it is).
    runs = sa.table(
        "lionstore_runs",
        sa.column("run_no", sa.Integer()),
        sa.column("run_id", sa.String()),
        sa.column("parent_run_no", sa.Integer()),
        sa.column("parent_run_id", sa.String()),
    )
    parent = runs.alias("parent")
    op.execute(
        runs.update()
        .where(runs.c.parent_run_no.is_not(None))
        .values(
            parent_run_id=sa.select(parent.c.run_id)
            .where(parent.c.run_no == runs.c.parent_run_no)
            .scalar_subquery()
        )
    )


def downgrade() -> None:
    # parent_run_no is nullable at 0001: a fork whose parent was deleted keeps NULL.
    op.drop_column("lionstore_runs", "parent_run_id")
    op.drop_table("lionstore_checkpoints")
