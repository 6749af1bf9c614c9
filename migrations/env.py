"""Alembic environment for lionstore's tables.

One env.py serves three callers:

* ``alembic upgrade head`` from a checkout (``alembic.ini`` at the top names this
  folder; the database comes from ``-x url=...``, ``$LIONSTORE_URL`` or the ini).
  Before anything is written it makes the checks ``lionstore db upgrade`` makes: a
  database lionstore did not create, a damaged one or one of a newer lionstore is
  refused, and so is a synchronous URL (``sqlite:///...``), each with one line;
* lionstore itself (``lionstore.log.migrate``), which passes a live synchronous
  ``Connection`` in ``config.attributes["connection"]``;
* tests passing an ``AsyncEngine`` or an engine-like object.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from alembic.util import CommandError
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from lionstore.errors import LionstoreError
from lionstore.log.migrate import check_migratable, make_async_engine
from lionstore.log.schema import VERSION_TABLE, metadata

config = context.config


def _do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.run_sync(_do_run_migrations)
        await connection.commit()
    await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("LIONSTORE_URL")
    if not url:
        url = config.get_main_option("sqlalchemy.url") or "sqlite+aiosqlite:///lionstore.db"
    return url


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:  # the alembic command: check the target as lionstore does
        url = _url()
        try:
            check_migratable(url)
        except LionstoreError as exc:
            raise CommandError(str(exc)) from None  # the alembic command prints one line
        connectable = make_async_engine(url, poolclass=pool.NullPool)
    if isinstance(connectable, AsyncEngine):
        asyncio.run(_run_async(connectable))
    elif isinstance(connectable, Connection):
        _do_run_migrations(connectable)
    else:
        with connectable.connect() as connection:
            _do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
