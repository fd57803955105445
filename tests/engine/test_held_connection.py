"""The lean request path of the connections the worker and the producer hold (``tq.connection.request``),
against a real redis-server: a reply that never comes times out as redis-py's would, a killed
connection is a ConnectionError, a cancellation mid-reply never leaves the connection out of step,
and after each the same held connection answers its next command."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from hiredis import pack_command
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from support.cut_proxy import CutProxy
from support.redis_server import free_port
from tq.connection import HeldConnection


def command(*words: Any) -> bytes:
    """One command as sent (what the held connection's callers pack)."""
    return pack_command(words)


async def test_a_reply_that_never_comes_times_out_and_the_connection_recovers(proxy: CutProxy) -> None:
    client = aioredis.Redis.from_url(proxy.url, socket_timeout=0.5)
    held = HeldConnection(client)
    try:
        assert await held.send(command("ECHO", "before")) == b"before"
        proxy.hold_after(b"held-back")
        t0 = time.monotonic()
        with pytest.raises(RedisTimeoutError, match="Timeout reading"):
            await held.send(command("ECHO", "held-back"))
        assert 0.4 < time.monotonic() - t0 < 3
        assert await held.send(command("ECHO", "after")) == b"after"  # reconnected, in step
    finally:
        proxy.release()
        await held.release()
        await client.aclose()


async def test_a_command_sent_ahead_hears_none_when_the_request_ends_before_its_reply(
    proxy: CutProxy,
) -> None:
    """What rides ahead of a read learns whether it may not have landed: its reply, or None when
    the request ended first (a timeout, a connection that can't be made), never nothing."""
    heard: list[object] = []
    client = aioredis.Redis.from_url(proxy.url, socket_timeout=0.5)
    held = HeldConnection(client)
    try:
        assert (
            await held.send_behind(command("ECHO", "first"), heard.append, command("ECHO", "then")) == b"then"
        )
        proxy.hold_after(b"held-back")
        with pytest.raises(RedisTimeoutError):
            await held.send_behind(command("ECHO", "held-back"), heard.append, command("ECHO", "then"))
        assert heard == [b"first", None]
    finally:
        proxy.release()
        await held.release()
        await client.aclose()
    nowhere = aioredis.Redis(port=free_port(), socket_timeout=0.5)  # nothing listens: no connection
    held = HeldConnection(nowhere)
    with pytest.raises(RedisConnectionError):
        await held.send_behind(command("ECHO", "first"), heard.append, command("ECHO", "then"))
    assert heard == [b"first", None, None]
    await nowhere.aclose()


async def test_a_killed_connection_is_a_connection_error_and_the_next_command_reconnects(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    admin = aioredis.Redis.from_url(redis_url)
    held = HeldConnection(client)
    try:
        await held.send(command("CLIENT", "SETNAME", "held-under-test"))
        blocked = asyncio.create_task(held.send(command("BLPOP", "tq:test:never", 4)))
        await asyncio.sleep(0.2)  # the BLPOP is waiting in Redis
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await held.send(command("ECHO", "again")) == b"again"
    finally:
        await held.release()
        await client.aclose()
        await admin.aclose()


async def test_a_cancellation_mid_reply_never_leaves_the_connection_out_of_step(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    held = HeldConnection(client)
    rng = random.Random(11)
    try:
        for i in range(200):
            call = asyncio.create_task(held.send(command("ECHO", f"cancelled-{i}")))
            await asyncio.sleep(rng.random() * 0.0005)  # land the cancel anywhere in the call
            call.cancel()
            await asyncio.wait([call], timeout=2)
            assert call.done()
            # whatever happened to it, the next reply is this command's own
            assert await held.send(command("ECHO", f"next-{i}")) == f"next-{i}".encode()
    finally:
        await held.release()
        await client.aclose()
