"""Redis clients built from settings (the only place a URL becomes a client).

With ``TQ_REDIS_CLUSTER=true`` the URL names any node of a Redis Cluster and the clients are
redis-py's cluster clients; every queue's keys share one hash tag, so the engine's code is the same.
With ``TQ_REDIS_SENTINELS`` the clients ask the Sentinels for the master (``TQ_REDIS_SENTINEL_MASTER``)
and follow it across a failover; the URL gives only the database number and credentials.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from tq.settings import Settings, get_settings


def _master_kwargs(s: Settings) -> dict[str, Any]:
    """db and credentials of ``redis_url`` for a Sentinel-discovered master."""
    u = urlparse(s.redis_url)
    db = u.path.lstrip("/")
    return {
        "db": int(db) if db.isdigit() else 0,
        "username": unquote(u.username) if u.username else None,
        "password": unquote(u.password) if u.password else None,
        "socket_keepalive": True,
        "socket_timeout": 10,
    }


def async_client(settings: Settings | None = None, url: str | None = None) -> Any:
    """``redis.asyncio.Redis`` (found through Sentinel when configured), or
    ``redis.asyncio.cluster.RedisCluster`` on a cluster."""
    s = settings or get_settings()
    if s.sentinel_nodes and url is None:
        sentinel = AsyncSentinel(s.sentinel_nodes, sentinel_kwargs={"socket_timeout": 2})
        return sentinel.master_for(s.redis_sentinel_master, redis_class=aioredis.Redis, **_master_kwargs(s))
    if s.redis_cluster:
        return AsyncRedisCluster.from_url(url or s.redis_url, socket_keepalive=True)
    return aioredis.Redis.from_url(url or s.redis_url, health_check_interval=30, socket_keepalive=True)


def sync_client(settings: Settings | None = None, url: str | None = None) -> Any:
    """``redis.Redis`` (found through Sentinel when configured), or ``redis.cluster.RedisCluster``."""
    s = settings or get_settings()
    if s.sentinel_nodes and url is None:
        sentinel = Sentinel(s.sentinel_nodes, sentinel_kwargs={"socket_timeout": 2})
        return sentinel.master_for(s.redis_sentinel_master, redis_class=redis.Redis, **_master_kwargs(s))
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
