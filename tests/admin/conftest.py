"""The admin tests' app under uvicorn (``served``: the suite's redis-server, a migrated SQLite
database), an HTTP client of it and an owner's token; a module that needs other settings defines
its own ``served``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from support.admin import Served, admin_settings, auth, serving, sqlite_database, token


@pytest.fixture
def served(redis_url: str, tmp_path: Path) -> Iterator[Served]:
    with serving(admin_settings(redis_url, sqlite_database(tmp_path))) as s:
        yield s


@pytest.fixture
async def http(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        yield client


@pytest.fixture
def owner(served: Served) -> dict[str, str]:
    return auth(token(served, "owner", subject="alice"))
