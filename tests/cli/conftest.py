"""Fixtures of the CLI tests: the commands run synchronously, so they read Redis with a sync client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
