"""Redis clients built from settings (the only place a URL becomes a client)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from tq.settings import Settings, get_settings


def async_client(settings: Settings | None = None, url: str | None = None) -> aioredis.Redis:
    s = settings or get_settings()
    return aioredis.Redis.from_url(url or s.redis_url, health_check_interval=30, socket_keepalive=True)


def sync_client(settings: Settings | None = None, url: str | None = None) -> redis.Redis:
    s = settings or get_settings()
    return redis.Redis.from_url(url or s.redis_url, health_check_interval=30, socket_keepalive=True)


def text(value: Any) -> str:
    """A Redis reply (bytes or str or None) as str."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
