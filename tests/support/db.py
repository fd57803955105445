"""Database fixtures (a pytest plugin, loaded by conftest's ``pytest_plugins``).

SQLite always runs. PostgreSQL, for the whole session, is the first of:

1. ``TQ_TEST_DATABASE_URL`` (a throwaway database: tq's tables in it are dropped and recreated);
2. a testcontainers ``postgres`` container when a Docker engine answers;
3. the local server at 127.0.0.1:5432 (user ``postgres``, trust auth): a fresh database
   ``tq_test_<random>`` is created there and dropped at the end of the session;
4. none: the ``postgresql`` params skip.

``database_url`` runs each test on both, with a freshly migrated schema.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from tq.db import make_engine, normalize_url
from tq_services.schema import load_models, migrate_async

from support import docker_answers
from support.settings import clear_settings_caches

T = TypeVar("T")

LOCAL_PG_HOST = "127.0.0.1"
LOCAL_PG_PORT = 5432
LOCAL_PG_USER = "postgres"
NO_POSTGRES = "no PostgreSQL reachable: set TQ_TEST_DATABASE_URL"


@dataclass
class PostgresServer:
    url: str  # postgresql+asyncpg URL of the database this session uses
    source: str  # "env", "testcontainers" or "local"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a thread of its own (never on, or over, the test loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _render(url: Any) -> str:
    return normalize_url(url).render_as_string(hide_password=False)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


async def _local_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=LOCAL_PG_HOST, port=LOCAL_PG_PORT, user=LOCAL_PG_USER, database="postgres", timeout=5
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    env = os.environ.get("TQ_TEST_DATABASE_URL")
    if env:
        url = _render(env)
        if not url.startswith("postgresql+asyncpg://"):
            raise pytest.UsageError(f"TQ_TEST_DATABASE_URL must be a PostgreSQL URL, got {env!r}")
        yield PostgresServer(url=url, source="env")
        return
    if docker_answers():
        try:
            from testcontainers.community.postgres import (  # type: ignore[import-untyped]
                PostgresContainer,
            )
        except ImportError:  # older testcontainers layout
            from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as c:
            yield PostgresServer(url=_render(c.get_connection_url()), source="testcontainers")
        return
    if _port_open(LOCAL_PG_HOST, LOCAL_PG_PORT):
        name = f"tq_test_{secrets.token_hex(6)}"
        try:
            _run(_local_admin(f'CREATE DATABASE "{name}"'))
        except Exception:
            yield None  # a server answers, but not as trusted "postgres"
            return
        try:
            yield PostgresServer(
                url=f"postgresql+asyncpg://{LOCAL_PG_USER}@{LOCAL_PG_HOST}:{LOCAL_PG_PORT}/{name}",
                source="local",
            )
        finally:  # only ever the database created just above
            _run(_local_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    yield None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An unmigrated database URL for one test: a new SQLite file, or the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'tq.db'}"
    server: PostgresServer | None = request.getfixturevalue("postgres_server")
    if server is None:
        pytest.skip(NO_POSTGRES)
    return server.url


async def reset_postgres(url: str) -> None:
    """Drop tq's tables, every family's too (and Alembic's version table), so the next migration
    starts from nothing."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            for table in reversed(load_models().sorted_tables):
                await conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
            await conn.execute(text("DROP TABLE IF EXISTS alembic_version CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
async def database_url(database_backend: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A freshly migrated database, the whole schema (engine and every family; SQLite, then
    PostgreSQL); ``TQ_DATABASE_URL`` points at it."""
    url = database_backend
    if normalize_url(url).get_backend_name() == "postgresql":
        await reset_postgres(url)
    await migrate_async(url)
    monkeypatch.setenv("TQ_DATABASE_URL", url)
    clear_settings_caches()
    yield url
    clear_settings_caches()


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_url)
    yield engine
    await engine.dispose()
