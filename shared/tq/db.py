"""The durable history database: async engines, sessions and migrations (SQLAlchemy 2 + Alembic).

Two back ends are supported: SQLite through aiosqlite (``sqlite+aiosqlite:///path/tq.db``, the
default) and PostgreSQL through asyncpg (``postgresql+asyncpg://user:pw@host/db``). Driverless URLs
(``sqlite:///...``, ``postgresql://...``, ``postgres://...``) are given the async driver.

The engine's tables are owned by the Alembic migrations shipped inside the package
(``tq/migrations``); run ``migrate()`` (or ``migrate_async()`` from async code) before using a
database. Code above the engine that has tables of its own passes its revision folders as further
``version_locations`` (Alembic then runs one history across all of them) and, if its models leave
objects out on purpose, an ``include_object`` hook for the autogenerate comparison.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tq.settings import get_settings

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSIONS_DIR = MIGRATIONS_DIR / "versions"  # the engine's own revisions: its base (0001, 0002)
# the engine's later revisions: after the chain of the code above it (0010 follows its 0009) ...
VERSIONS_CHAINED_DIR = MIGRATIONS_DIR / "versions_chained"
# ... or, for a database of the engine alone, the same steps right after 0002 (0002a)
VERSIONS_ALONE_DIR = MIGRATIONS_DIR / "versions_alone"

# Alembic's include_object hook: (object, name, type_, reflected, compare_to) -> keep it?
IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def normalize_url(url: str | URL | None = None) -> URL:
    """The URL (default: ``settings.database_url``) with its async driver filled in."""
    u = make_url(url if url is not None else get_settings().database_url)
    if u.drivername in _ASYNC_DRIVERS:
        u = u.set(drivername=_ASYNC_DRIVERS[u.drivername])
    if u.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ValueError(
            f"unsupported database URL driver {u.drivername!r}: use sqlite+aiosqlite or postgresql+asyncpg"
        )
    return u


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_file(u: URL) -> Path | None:
    """The database file of a SQLite URL, None for in-memory databases."""
    database = u.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or u.query.get("mode") == "memory":
        return None
    return Path(database)


def make_engine(url: str | URL | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` (default: ``settings.database_url``).

    SQLite: the database file's directory is created, file databases run in WAL mode with a busy
    timeout, foreign keys are enforced. PostgreSQL: pooled connections are pre-pinged.
    Extra keyword arguments go to ``create_async_engine``.
    """
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        path = _sqlite_file(u)
        if path is not None:
            path.expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = sa_asyncio.create_async_engine(u, **kwargs)
        wal = path is not None

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                if wal:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=5000")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # looked up on the module at each call: tracing's SQLAlchemy instrumentation wraps it there
    return sa_asyncio.create_async_engine(u, **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine``; objects stay usable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(
    url: str | URL | None = None,
    *,
    version_locations: Sequence[str | Path] = (),
    include_object: IncludeObject | None = None,
) -> Any:
    """An ``alembic.config.Config`` for the packaged migrations, bound to ``url``.

    ``version_locations``: folders of further revisions (the caller's tables) that continue the
    engine's history; the engine's own ``versions`` folder is always first. The engine's later
    revisions then continue the caller's chain (``versions_chained``: the platform's 0010 follows
    its 0009); without further folders the engine alone runs the same steps right after its base
    (``versions_alone``: 0002a). ``include_object``:
    handed to ``env.py`` (``config.attributes``) for Alembic's autogenerate comparison.

    The URL travels in ``config.attributes["url"]`` (read by ``env.py``), so passwords holding ``%``
    need no configparser escaping; no alembic.ini is read.
    """
    from alembic.config import Config

    u = normalize_url(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    later = VERSIONS_CHAINED_DIR if version_locations else VERSIONS_ALONE_DIR
    locations = [str(VERSIONS_DIR), *(str(Path(loc)) for loc in version_locations), str(later)]
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(locations).replace("%", "%%"))
    cfg.attributes["url"] = u
    if include_object is not None:
        cfg.attributes["include_object"] = include_object
    return cfg


def _upgrade(url: str | URL | None, revision: str, kw: dict[str, Any]) -> None:
    from alembic import command

    command.upgrade(alembic_config(url, **kw), revision)


def migrate(
    url: str | URL | None = None,
    revision: str = "head",
    *,
    version_locations: Sequence[str | Path] = (),
    include_object: IncludeObject | None = None,
) -> None:
    """Upgrade the database at ``url`` (default: ``settings.database_url``) to ``revision``.

    Synchronous, for CLIs and deploy jobs. The migrations run on an async engine inside their own
    event loop, in a worker thread, so this never touches the caller's loop; called from async code
    it blocks that loop while it runs (use ``migrate_async`` there). A no-op when already at
    ``revision``. ``version_locations`` and ``include_object``: see ``alembic_config``; without
    them only the engine's tables are migrated.
    """
    kw = {"version_locations": version_locations, "include_object": include_object}
    _in_thread(lambda: _upgrade(url, revision, kw))


async def migrate_async(
    url: str | URL | None = None,
    revision: str = "head",
    *,
    version_locations: Sequence[str | Path] = (),
    include_object: IncludeObject | None = None,
) -> None:
    """``migrate`` without blocking the running event loop."""
    kw = {"version_locations": version_locations, "include_object": include_object}
    await asyncio.to_thread(_upgrade, url, revision, kw)


def current_revision(url: str | URL | None = None) -> str | None:
    """The revision the database at ``url`` is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    async def read() -> str | None:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        finally:
            await engine.dispose()

    return _in_thread(lambda: asyncio.run(read()))


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a thread of its own and wait: safe to call with an event loop running."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tq-db") as pool:
        return pool.submit(fn).result()
