"""Per-token rate limit of the admin API: a sliding window log in Redis.

``key(token_id)``, ``tq:admin:ratelimit:<token id>``, is a sorted set of the token's requests
(member: a unique id, score: the time in ms). One script drops the members older than the window,
counts the rest and adds this request only when under the limit; so every replica of the admin
service shares the budget, and a refused request does not use any of it. The key expires with its
window.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from typing import Any

_SLIDE = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


def key(token_id: str) -> str:
    """ZSET (expiring): one admin API token's requests in its sliding window."""
    return f"tq:admin:ratelimit:{token_id}"


def produce_key(token_id: str) -> str:
    """ZSET (expiring): one token's enqueue calls (``produce``) in their own sliding window."""
    return f"tq:admin:ratelimit:produce:{token_id}"


class SlidingWindow:
    """``limit`` requests per ``window_s`` per token."""

    def __init__(self, client: Any, limit: int, window_s: float, key_of: Callable[[str], str] = key) -> None:
        self.limit = limit
        self.key_of = key_of
        self.window_ms = max(1, int(window_s * 1000))
        self._script = client.register_script(_SLIDE)

    async def hit(self, token_id: str, now: float | None = None) -> float:
        """Count one request; 0 when allowed, else the seconds until one is allowed again."""
        now_ms = int((now if now is not None else time.time()) * 1000)
        wait_ms = await self._script(
            keys=[self.key_of(token_id)],
            args=[now_ms, self.window_ms, self.limit, f"{now_ms}-{uuid.uuid4().hex}"],
        )
        return int(wait_ms) / 1000

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The Retry-After header value: whole seconds, rounded up."""
        return str(max(1, math.ceil(wait_s)))
