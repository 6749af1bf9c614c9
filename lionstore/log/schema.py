"""The log's tables, as SQLAlchemy Core metadata (Alembic migrations are checked against it).

``lionstore_records`` is the log. Three choices are worth knowing:

* ``position`` is assigned by the writer from ``lionstore_head.last_position``
  while it holds the write lock, so positions are gapless, never reused (not even
  after a run is deleted) and equal to commit order on every backend. On
  PostgreSQL the row lock on ``lionstore_head`` is what serializes appends.
* Streams are keyed by an integer surrogate (``stream_no``, handed out in
  creation order), not by their UUID. ``UNIQUE(stream_no, stream_version)`` then
  takes nearly sequential inserts; with random UUID4 text in that index batched
  appends cost about 3x more here (shared/reference/sqlite-baseline.md section 4).
  The UUID lives once per stream in ``lionstore_streams``.
* Streams belong to a run: the same event id may appear in two runs (a fork).
* ``digest`` chains each run's records: it hashes the previous record's digest
  in the run with this record's columns (``lionstore.log.digest``). A row edited
  or deleted behind lionstore's back breaks the chain there, which ``verify``
  reports with the position.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "metadata",
    "runs",
    "streams",
    "records",
    "head",
    "checkpoints",
    "TABLE_NAMES",
    "VERSION_TABLE",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only makes an INTEGER PRIMARY KEY an alias of the rowid (the fast path);
# PostgreSQL wants 64 bits.
BigID = BigInteger().with_variant(Integer(), "sqlite")

VERSION_TABLE = "lionstore_alembic_version"

runs = Table(
    "lionstore_runs",
    metadata,
    Column("run_no", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(36), nullable=False, unique=True),
    Column("label", String(200), nullable=True, unique=True),
    Column("started_at_us", BigInteger, nullable=False),
    Column("parent_run_no", Integer, ForeignKey("lionstore_runs.run_no"), nullable=True),
    Column("forked_at_position", BigInteger, nullable=True),
    # The parent's id: still known after the parent run is deleted (parent_run_no,
    # a foreign key, is then cleared). Added in 0002.
    Column("parent_run_id", String(36), nullable=True),
)

streams = Table(
    "lionstore_streams",
    metadata,
    Column("stream_no", BigID, primary_key=True, autoincrement=False),
    Column("run_no", Integer, ForeignKey("lionstore_runs.run_no"), nullable=False),
    Column("stream_id", String(36), nullable=False),
    UniqueConstraint("run_no", "stream_id"),
)

records = Table(
    "lionstore_records",
    metadata,
    Column("position", BigID, primary_key=True, autoincrement=False),
    Column("run_no", Integer, ForeignKey("lionstore_runs.run_no"), nullable=False),
    Column("stream_no", BigID, ForeignKey("lionstore_streams.stream_no"), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("kind", String(100), nullable=False),
    Column("kind_version", SmallInteger, nullable=False),
    Column("data", Text, nullable=False),
    Column("recorded_at_us", BigInteger, nullable=False),
    Column("digest", String(32), nullable=False),
    UniqueConstraint("stream_no", "stream_version"),
    CheckConstraint("stream_version >= 1", name="stream_version_positive"),
    Index("ix_lionstore_records_run_position", "run_no", "position"),
)

head = Table(
    "lionstore_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_position", BigInteger, nullable=False),
    Column("last_stream_no", BigInteger, nullable=False),
    Column("last_run_no", Integer, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

checkpoints = Table(
    "lionstore_checkpoints",
    metadata,
    Column("run_no", Integer, ForeignKey("lionstore_runs.run_no"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("digest", String(32), nullable=False),
    Column("format_version", Integer, nullable=False),
    Column("snapshot", Text, nullable=False),
    Column("written_at_us", BigInteger, nullable=False),
)
"""Projection snapshots (``lionstore.projections.snapshot``): a cache, never the truth.
One row per run and projection name; ``digest`` is the digest of the record at
``position``, so a snapshot of a log that has changed since is recognised."""

TABLE_NAMES = frozenset(t.name for t in metadata.sorted_tables)
