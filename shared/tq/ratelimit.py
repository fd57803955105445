"""One rate limit per queue across every replica, kept in Redis (``scripts/ratelimit.lua``).

What it counts: job starts per queue, i.e. entries the intake takes from the stream to run
(XREADGROUP deliveries), over a sliding window of ``per_s`` seconds on Redis's clock, summed over
every consumer of the queue. A retry, a delayed job and a reclaimed job count again when they are
delivered again (each is another run, another call to whatever the limit protects); a promotion
itself counts nothing. Entries given back unstarted (a pause, a shutdown) were counted when taken.

How: before a read the intake ``take``s up to k permits (a lease, counted against the limit while
the read is in flight), asks XREADGROUP for at most that many entries, and ``commit``s the lease
with the number received: those enter the window at that moment, the rest are given back. A limited
queue reads no more than its free slots, so what it receives starts at once: limited jobs stay
waiting in the stream, never taken and put back, never charged an attempt. A lease ends by itself
after ``lease_ms`` (a consumer killed mid-read leaks its permits for that long, not forever).

``pause`` is the cross-replica pause a handler asks with ``tq.errors.RateLimited``: ``take`` grants
nothing while it lasts, and every consumer learns of it through the control channel and its config
poll (``paused_for``), so an unlimited queue pays nothing for it on its hot path.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from tq import keys
from tq.queue_config import RateLimit
from tq.scripts import source

LEASE_MARGIN_MS = 2000  # a lease outlives its read (BLOCK) by this much


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer of ``take``: ``permits`` (0: none now), when to ask again, and the lease to
    ``commit`` after the read."""

    permits: int
    wait_s: float
    paused: bool
    lease: str


def _keys(queue: str) -> list[str]:
    return [keys.rate_window(queue), keys.rate_leases(queue), keys.rate_pause(queue)]


def _per_ms(limit: RateLimit) -> int:
    return max(1, round(limit.per_s * 1000))


class RateLimiter:
    """The limiter of one queue, as one consumer sees it."""

    def __init__(self, client: Any, queue: str, consumer_id: str, block_ms: int) -> None:
        self._client = client
        self._script = client.register_script(source("ratelimit"))
        self._queue = queue
        self._keys = _keys(queue)
        self._consumer = consumer_id
        self._serial = itertools.count(1)
        self.lease_ms = block_ms + LEASE_MARGIN_MS

    async def take(self, want: int, limit: RateLimit) -> Grant:
        """Up to ``want`` permits now, as one lease to ``commit`` after the read."""
        token = f"{self._consumer}:{next(self._serial)}"
        granted, wait_ms, paused = await self._script(
            keys=self._keys, args=["take", token, want, limit.jobs, _per_ms(limit), self.lease_ms]
        )
        granted = int(granted)
        return Grant(granted, int(wait_ms) / 1000, bool(int(paused)), f"{token}:{granted}")

    async def commit(self, grant: Grant, got: int, limit: RateLimit) -> None:
        """End the lease: ``got`` permits (the entries received) enter the window now."""
        await self._script(keys=self._keys, args=["commit", grant.lease, got, _per_ms(limit)])

    async def pause(self, seconds: float) -> float:
        """Pause the queue's intake on every replica for at least ``seconds`` (a longer pause in
        force is kept) and tell its consumers: the pause left (s)."""
        left = int(await self._script(keys=self._keys, args=["pause", max(1, round(seconds * 1000))]))
        await self._client.publish(keys.CONTROL_CHANNEL, json.dumps({"queue": self._queue}))
        return left / 1000


async def paused_for(client: Any, queue: str) -> float:
    """Seconds the queue's intake stays paused by a ``RateLimited`` (0: not paused)."""
    ms = await client.pttl(keys.rate_pause(queue))
    return ms / 1000 if ms > 0 else 0.0
