"""A worker process for the rate-limit tests: consumes the ``rated`` queue until SIGTERM.

Usage: ``rate_worker.py REDIS_URL CONSUMER_ID CONCURRENCY``. Prints ``READY`` once consuming; on
SIGTERM drains (``Worker.stop``) and exits 0.

Job ``work`` appends ``<epoch s> <consumer> <n> <attempt>`` to ``STARTS`` as it starts and sleeps
``hold_s`` (5 ms unless given). Job ``limited`` raises ``RateLimited(retry_after)`` on its first
run (counted in ``LIMITED``), as a handler does on a provider's 429 with Retry-After, and
completes after.
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis
from tq.errors import RateLimited
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import Payload
from tq.registry import QueueSpec, get_queue, register_queue
from tq.settings import Settings
from tq.worker import Worker

from support import serve_until_sigterm

QUEUE = "rated"
STARTS = "tq:{rated}:test:starts"  # LIST of "<epoch s> <consumer> <n> <attempt>" (under tq:*: cleaned)
LIMITED = "tq:{rated}:test:limited"  # HASH job number -> runs of ``limited`` (the first raised)


class Work(Payload):
    n: int
    hold_s: float = 0.005  # how long the job keeps its slot


class Limited(Payload):
    n: int
    retry_after: float


def register() -> None:
    register_queue(QueueSpec(QUEUE, "rated", {"work": Work, "limited": Limited}))


def settings(url: str, concurrency: int) -> Settings:
    return Settings(
        redis_url=url,
        audit_enabled=False,
        events=False,
        uvloop=False,
        block_ms=200,
        config_poll_s=0.5,
        promote_interval_s=0.05,
        reclaim_interval_s=0.5,
        heartbeat_ttl_s=5.0,
        shutdown_grace_s=5.0,
        queues={QUEUE: {"concurrency": concurrency, "visibility_timeout_s": 3.0}},
    )


async def main(url: str, consumer_id: str, concurrency: int) -> None:
    register()
    client = aioredis.Redis.from_url(url)
    handlers = HandlerRegistry()

    @handlers.register(QUEUE, "work")
    async def work(ctx: JobContext, payload: Work) -> None:
        await ctx.redis.rpush(STARTS, f"{time.time():.6f} {ctx.consumer_id} {payload.n} {ctx.attempt}")
        await asyncio.sleep(payload.hold_s)

    @handlers.register(QUEUE, "limited")
    async def limited(ctx: JobContext, payload: Limited) -> None:
        if await ctx.redis.hincrby(LIMITED, str(payload.n), 1) == 1:
            raise RateLimited(payload.retry_after, "provider answered 429")
        await ctx.redis.rpush(STARTS, f"{time.time():.6f} {ctx.consumer_id} {payload.n} {ctx.attempt}")

    worker = Worker(client, [get_queue(QUEUE)], handlers, settings(url, concurrency), consumer_id=consumer_id)
    await serve_until_sigterm(worker, client)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
