"""Redis clients built from settings (the only place a URL becomes a client).

With ``TQ_REDIS_CLUSTER=true`` the URL names any node of a Redis Cluster and the clients are
redis-py's cluster clients; every queue's keys share one hash tag, so the engine's code is the same.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from tq.settings import Settings, get_settings


def async_client(settings: Settings | None = None, url: str | None = None) -> Any:
    """``redis.asyncio.Redis``, or ``redis.asyncio.cluster.RedisCluster`` on a cluster."""
    s = settings or get_settings()
    if s.redis_cluster:
        return AsyncRedisCluster.from_url(url or s.redis_url, socket_keepalive=True)
    return aioredis.Redis.from_url(url or s.redis_url, health_check_interval=30, socket_keepalive=True)


def sync_client(settings: Settings | None = None, url: str | None = None) -> Any:
    """``redis.Redis``, or ``redis.cluster.RedisCluster`` on a cluster."""
    s = settings or get_settings()
    if s.redis_cluster:
        return RedisCluster.from_url(url or s.redis_url, socket_keepalive=True)
    return redis.Redis.from_url(url or s.redis_url, health_check_interval=30, socket_keepalive=True)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (its pipelines refuse PUBLISH and scripts)."""
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


def text(value: Any) -> str:
    """A Redis reply (bytes or str or None) as str."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
