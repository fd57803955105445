"""One async engine per database URL, shared by the handlers of every family in this process."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tq.db import make_engine, make_sessionmaker

_engines: dict[str, tuple[AsyncEngine, async_sessionmaker[AsyncSession]]] = {}


def sessions(url: str) -> async_sessionmaker[AsyncSession]:
    if url not in _engines:
        engine = make_engine(url)
        _engines[url] = (engine, make_sessionmaker(engine))
    return _engines[url][1]


async def dispose_engines() -> None:
    """Close every engine (tests, shutdown); the next use opens a new one."""
    engines = list(_engines.values())
    _engines.clear()
    for engine, _ in engines:
        await engine.dispose()
