"""A worker process for the crash tests: consumes the ``crash`` queue until killed.

Each run of a job adds one to ``RUNS_KEY`` for its number (the job's visible effect), after a
short random pause so that a kill lands mid-batch with many jobs in flight.
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

QUEUE = "crash"
RUNS_KEY = "tq:{crash}:test:runs"  # under tq:* so the suite cleans it even on a Redis it did not start


class CrashJob(Payload):
    n: int


def register() -> None:
    register_queue(QueueSpec(QUEUE, "crash", {"work": CrashJob}))


async def main(url: str, consumer_id: str) -> None:
    register()
    client = aioredis.Redis.from_url(url)
    settings = Settings(
        redis_url=url,
        audit_enabled=False,
        reclaim_interval_s=0.2,
        promote_interval_s=0.05,
        queues={QUEUE: {"concurrency": 50, "visibility_timeout_s": 1.0}},
    )
    handlers = HandlerRegistry()

    @handlers.register(QUEUE, "work")
    async def work(ctx: JobContext, payload: CrashJob) -> None:
        await asyncio.sleep(random.random() * 0.004)
        await ctx.redis.hincrby(RUNS_KEY, str(payload.n), 1)

    worker = Worker(client, [get_queue(QUEUE)], handlers, settings, consumer_id=consumer_id)
    await worker.start()
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
