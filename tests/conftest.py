"""Suite-wide fixtures: one real Redis for the whole run.

``TQ_TEST_REDIS_URL`` if set (its database is flushed only by keys this suite created, never
FLUSHDB); else testcontainers when a Docker engine answers; else a ``redis-server`` subprocess on a
free port that the suite owns and flushes between tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis
from support import docker_answers
from support.cut_proxy import CutProxy
from support.redis_server import RedisServer, start_redis_server
from support.settings import clear_settings_caches

pytest_plugins = ["support.db"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    url = os.environ.get("TQ_TEST_REDIS_URL")
    if url:
        yield RedisServer(url=_own_database(url), owned=False)
        return
    if docker_answers():
        from testcontainers.redis import RedisContainer  # type: ignore[import-untyped]

        with RedisContainer("redis:7") as c:
            yield RedisServer(
                url=f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0", owned=True
            )
        return
    proc, port, workdir = start_redis_server()
    try:
        yield RedisServer(url=f"redis://127.0.0.1:{port}/0", owned=True)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _own_database(url: str) -> str:
    """Under ``pytest -n`` each worker process cleans between its tests: on a shared Redis, each
    takes the database after the URL's by its number (gw0: the URL's own, gw1: the next)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0)
    if index == 0:
        return url
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0) + index
    return urlunsplit(parts._replace(path=f"/{db}"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The chaos tests kill and restart processes against a deadline: ``serial`` (``make test`` runs
    them after the others, one at a time)."""
    for item in items:
        if item.path.parent.name == "chaos":
            item.add_marker(pytest.mark.serial)


def _clean(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        if server.owned:
            client.flushdb()
        else:  # a Redis we did not start: delete only tq's keys
            for key in client.scan_iter(match="tq:*", count=1000):
                client.delete(key)
    finally:
        client.close()


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A clean Redis for one test; ``TQ_REDIS_URL`` points at it."""
    _clean(redis_server)
    monkeypatch.setenv("TQ_REDIS_URL", redis_server.url)
    clear_settings_caches()
    yield redis_server.url
    clear_settings_caches()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[CutProxy]:
    """A TCP proxy in front of the test's Redis that can drop or hold back a reply (``CutProxy``)."""
    with CutProxy(urlsplit(redis_url).port or 6379) as p:
        yield p


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
