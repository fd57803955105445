"""Redis clients built from settings (the only place a URL becomes a client).

With ``TQ_REDIS_CLUSTER=true`` the URL names any node of a Redis Cluster and the clients are
redis-py's cluster clients; every queue's keys share one hash tag, so the engine's code is the same.
With ``TQ_REDIS_SENTINELS`` the clients ask the Sentinels for the master (``TQ_REDIS_SENTINEL_MASTER``)
and follow it across a failover; the URL gives only the database number and credentials.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
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


async def connected(conn: Any) -> None:
    """Reconnect ``conn`` if a fault closed it, through ``connect()``: a Sentinel's connection asks
    for the master's address there, where a bare send would reconnect to the old master."""
    if not conn.is_connected:
        await conn.connect()


async def request(conn: Any, packed: bytes, ahead: Callable[[Any], None] | None = None) -> Any:
    """``packed`` (one command) sent on the connected asyncio ``conn`` and its reply, parsed there.
    With ``ahead``, ``packed`` holds one more command before that one, sent in the same write: its
    reply (an error as a ``ResponseError`` instance) goes to ``ahead`` as soon as it is read, before
    the wait for the other's (a blocking read's); a request that ends before that reply (a fault, a
    timeout, a cancellation) gives ``ahead`` None: the command may or may not have run.

    redis-py's own send and read bound each by an ``asyncio.timeout`` (its enter and exit look up
    the current task and the running loop and start and cancel a timer: 4 µs of CPU here, twice per
    command) and add a health check and coroutine layers; here one timer bounds the whole request,
    and when it expires it aborts the transport, which ends the read. The outcomes are redis-py's:
    a reply error is raised, a timeout is its ``TimeoutError``, a fault its ``ConnectionError``, and
    after any of them or a cancellation mid-reply (which would leave the connection out of step)
    the connection is dropped, to reconnect at its next use (``connected``)."""
    writer = conn._writer
    timeout = conn.socket_timeout
    expiry = writer._loop.call_later(timeout, writer.transport.abort) if timeout else None
    answered = False
    try:
        writer.write(packed)
        await writer.drain()  # at once unless the transport's buffer is full (a large batch)
        if ahead is not None:
            first = await conn._read_response_from_parser()
            answered = True
            ahead(first)
        reply = await conn._read_response_from_parser()
    except GeneratorExit:  # closed by the collector after its event loop ended: nothing to await
        raise
    except BaseException as exc:
        await conn.disconnect(nowait=True)
        if expiry is not None and expiry.when() <= writer._loop.time():
            raise RedisTimeoutError(f"Timeout reading from {conn._host_error()}") from None
        if isinstance(exc, OSError):
            raise RedisConnectionError(f"Error while reading from {conn._host_error()}: {exc}") from exc
        raise
    finally:
        if expiry is not None:
            expiry.cancel()
        if ahead is not None and not answered:
            ahead(None)
    if isinstance(reply, ResponseError):
        raise reply
    return reply


def bulk(word: str) -> str:
    """One RESP bulk string, as text (encoded with the rest of its command). Packing a command's
    words this way, those that never change once, costs a fraction of hiredis's ``pack_command``,
    which formats each word's length with sprintf (callgrind, docs/bench.md)."""
    return f"${len(word) if word.isascii() else len(word.encode())}\r\n{word}\r\n"


def packed_after(head: str, head_words: int, words: Sequence[str]) -> bytes:
    """A command as sent: its first ``head_words`` words already packed (``head``, by ``bulk``),
    then ``words``."""
    return f"*{head_words + len(words)}\r\n{head}{''.join(map(bulk, words))}".encode()


def evalsha_args(script: Any, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
    """The words of an EVALSHA of ``script`` (a redis-py Script) on ``keys`` and ``args``."""
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


async def call_script(conn: Any, script: Any, packed: bytes) -> Any:
    """``packed`` (an EVALSHA of ``script``, a redis-py Script) sent on ``conn``. After a NOSCRIPT
    (a restarted or flushed Redis) the script is loaded on this same connection, as the pool's other
    connections may be as stale as this one, and sent again."""
    await connected(conn)
    try:
        return await request(conn, packed)
    except NoScriptError:
        await conn.send_command("SCRIPT", "LOAD", script.script)
        await conn.read_response()
        await conn.send_packed_command(packed)
        return await conn.read_response()


def timeouts_in_kernel(conn: Any) -> None:
    """Move a connected sync connection's socket timeout into the kernel (SO_RCVTIMEO/SO_SNDTIMEO)
    and make the socket blocking for Python. A Python-level timeout costs a poll() system call
    before every send and every receive: 4 system calls a round trip instead of 2 (a single enqueue
    ran 8% faster without them). A timeout still ends a read: the kernel returns EAGAIN, which
    redis-py raises as a ConnectionError, and the connection is dropped as after any fault."""
    sock = conn._sock
    timeout = sock.gettimeout()
    if not timeout:  # blocking already (no timeout set), or non-blocking: nothing to move
        return
    seconds = int(timeout)
    timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    sock.settimeout(None)


class HeldConnection:
    """One connection of an asyncio client's pool, kept by one task (a queue's reader, its
    settler) for its hot commands, packed by their callers (``packed_after``, ``hiredis.pack_command``).

    redis-py's per-command path (pool checkout and release, the retry wrapper, reply callbacks)
    costs as much CPU as the round trip itself: a PING took 100 µs of CPU through the client and
    52 µs here. Replies come as the connection parses them, without redis-py's callbacks, and each
    command goes through ``request``, without the connection's own timeouts per send and read. After a
    fault the connection has closed itself (redis-py does) and reconnects at the next command; the
    error propagates and the caller, supervised, decides whether to send again. Not for a cluster
    client, which has no one pool: ``is_cluster`` callers use the client there."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._conn: Any = None

    async def _connection(self) -> Any:
        if self._conn is None:
            self._conn = await self.client.connection_pool.get_connection()
        else:
            await connected(self._conn)
        return self._conn

    async def send(self, packed: bytes) -> Any:
        """The reply to ``packed``, one command as sent (``packed_after``, ``pack_command``)."""
        return await request(await self._connection(), packed)

    async def send_behind(self, first: bytes, on_first: Callable[[Any], None], packed: bytes) -> Any:
        """``packed``'s reply, with the command ``first`` sent ahead of it in the same write (one
        system call, one wake-up of Redis for both); ``first``'s reply goes to ``on_first`` as soon
        as it is read, or None when the request ends before it (``request``), a failed
        reconnection included."""
        try:
            conn = await self._connection()
        except BaseException:
            on_first(None)
            raise
        return await request(conn, first + packed, on_first)

    async def call_script(self, script: Any, packed: bytes) -> Any:
        """``packed``, an EVALSHA of ``script`` as sent, loading the script after a NOSCRIPT."""
        return await call_script(await self._connection(), script, packed)

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.client.connection_pool.release(conn)


def text(value: Any) -> str:
    """A Redis reply (bytes or str or None) as str."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
