"""Alembic environment for tq's durable history (async engines: SQLite/aiosqlite, PostgreSQL/asyncpg).

The URL comes from ``config.attributes["url"]`` (set by ``tq.db.alembic_config``), else the
``sqlalchemy.url`` option of an alembic.ini, else ``Settings.database_url``. A caller may also hand
a live sync connection in ``config.attributes["connection"]``.

This environment knows only the engine: its revisions (``versions/``) and its tables. The code
above it adds its own revisions as further version locations (one linear history across all of
them) and, in ``config.attributes``, an ``include_object`` hook for objects its models leave out on
purpose (e.g. a per-dialect index made by raw DDL) and the ``target_metadata`` to compare against
(default: ``Base.metadata``, which holds every table whose models were imported). See
``tq.db.alembic_config``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool
from tq.db import make_engine, normalize_url
from tq.models import Base

config = context.config
target_metadata = config.attributes.get("target_metadata", Base.metadata)
include_object = config.attributes.get("include_object")


def _url() -> Any:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return normalize_url(url)  # None -> settings.database_url


def _configure(**kwargs: Any) -> None:
    url = kwargs.pop("url", None)
    dialect = kwargs["connection"].dialect.name if "connection" in kwargs else url.get_backend_name()
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=dialect == "sqlite",
        compare_type=True,
        include_object=include_object,  # from the caller: what its models leave out on purpose
        **({"url": url} if url is not None else {}),
        **kwargs,
    )


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: emit the DDL instead of running it."""
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = make_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
