"""A worker process for the many-consumers test: consumes the ``multi`` queue until SIGTERM.

Usage: ``multi_worker.py REDIS_URL CONSUMER_ID CONCURRENCY``. Prints ``READY`` once consuming; on
SIGTERM drains like ``tq worker`` (``Worker.stop``) and exits 0.

Each job records, in one Lua step as it starts, the consumer that ran it (``owner``: first writer
wins), one more run of its number (``runs``) and this consumer's in-flight count, keeping the
highest seen (``max``); it then sleeps a few milliseconds so that concurrency builds up, and
lowers the in-flight count when it ends.
"""

from __future__ import annotations

import asyncio
import random
import sys

import redis.asyncio as aioredis
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import Payload
from tq.registry import QueueSpec, get_queue, register_queue
from tq.settings import Settings
from tq.worker import Worker

from support import serve_until_sigterm

QUEUE = "multi"
# under the queue's prefix: the suite's cleanup (tq:* keys) removes them, and one hash tag
OWNER = "tq:{multi}:test:owner"  # HASH job number -> consumer id of its first run
RUNS = "tq:{multi}:test:runs"  # HASH job number -> runs
MAX = "tq:{multi}:test:max"  # HASH consumer id -> highest in-flight count seen


def inflight(consumer_id: str) -> str:
    """STRING: the consumer's jobs in flight now."""
    return f"tq:{{multi}}:test:inflight:{consumer_id}"


VISIBILITY_TIMEOUT_S = 30.0  # far beyond any job here: a reclaim would mean a live consumer lost one

_BEGIN = """
local now = redis.call('INCR', KEYS[1])
local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if now > seen then redis.call('HSET', KEYS[2], ARGV[2], now) end
redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
return now
"""


class MultiJob(Payload):
    n: int


def register() -> None:
    register_queue(QueueSpec(QUEUE, "multi", {"work": MultiJob}))


def settings(url: str, concurrency: int) -> Settings:
    return Settings(
        redis_url=url,
        audit_enabled=False,
        events=False,
        uvloop=False,
        block_ms=100,
        read_batch=100,
        config_poll_s=1.0,
        promote_interval_s=0.1,
        reclaim_interval_s=0.5,  # reclaim runs often: any entry idle past the timeout would be taken
        heartbeat_ttl_s=15.0,
        shutdown_grace_s=10.0,
        queues={QUEUE: {"concurrency": concurrency, "visibility_timeout_s": VISIBILITY_TIMEOUT_S}},
    )


async def main(url: str, consumer_id: str, concurrency: int) -> None:
    register()
    client = aioredis.Redis.from_url(url)
    begin = client.register_script(_BEGIN)
    mine = inflight(consumer_id)
    handlers = HandlerRegistry()

    @handlers.register(QUEUE, "work")
    async def work(ctx: JobContext, payload: MultiJob) -> None:
        await begin(keys=[mine, MAX, OWNER, RUNS], args=[payload.n, ctx.consumer_id])
        try:
            await asyncio.sleep(0.002 + random.random() * 0.004)
        finally:
            await ctx.redis.decr(mine)

    worker = Worker(client, [get_queue(QUEUE)], handlers, settings(url, concurrency), consumer_id=consumer_id)
    await serve_until_sigterm(worker, client)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
