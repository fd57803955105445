"""One process per Redis does each periodic duty (the stats writer, the scheduler).

The holder of a lock key does the work: ``SET NX PX`` with a random token, renewed on every tick by
a compare-and-PEXPIRE script and released by compare-and-DEL on stop, so another process takes
over at once after a clean stop and within the lock's TTL after a crash. ``run_periodic`` is the
supervised loop every such duty runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from tq.supervise import Supervisor

log = logging.getLogger("tq.election")

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def new_token() -> str:
    """``host:pid:random``: who holds a lock, readable in Redis and the logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


class LeaderLock:
    """The lock of one duty (``duty`` names it in the logs)."""

    def __init__(self, client: Any, key: str, ttl_s: float, duty: str, token: str | None = None) -> None:
        self.key = key
        self.ttl_s = ttl_s
        self.duty = duty
        self.token = token or new_token()
        self.is_leader = False
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    async def acquire(self) -> bool:
        """Take the lock, or renew it when this process holds it."""
        ok = bool(await self._acquire(keys=[self.key], args=[self.token, int(self.ttl_s * 1000)]))
        if ok != self.is_leader:
            log.info("%s %s: %s", self.duty, self.token, "elected" if ok else "lost the lock")
        self.is_leader = ok
        return ok

    async def release(self) -> None:
        """Give the lock up (only if this process holds it), so another takes over at once."""
        with contextlib.suppress(RedisError, OSError):
            await self._release(keys=[self.key], args=[self.token])
        self.is_leader = False


async def run_periodic(
    task: str,
    tick: Callable[[], Awaitable[Any]],
    interval_s: float,
    stop: asyncio.Event,
    release: Callable[[], Awaitable[None]],
    supervisor: Supervisor | None = None,
) -> None:
    """``tick()`` every ``interval_s`` until ``stop`` is set, then ``release()``. Supervised
    (``tq.supervise``): a failed tick is logged once per outage, counted as a restart of ``task``,
    and retried after a backoff capped at the interval."""
    sup = supervisor or Supervisor()

    async def wait(seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    async def ticks() -> None:
        while not stop.is_set():
            await tick()
            sup.recovered(task)
            await wait(interval_s)

    try:
        await sup.run(task, task, ticks, stop.is_set, sleep=wait, backoff_max_s=interval_s)
    finally:
        await release()
