"""A worker process for the chaos suite: consumes the ``chaos`` queue until killed or stopped.

    python chaos_worker.py REDIS_URL CONSUMER_ID [--concurrency N] [--visibility S] [--attempts N]

Job behaviour comes from the payload (``ChaosJob``): sleep ``sleep_s`` (plus a random pause of up
to ``jitter_s``), then add one to ``RUNS_KEY`` for its number (the job's visible effect); ``crash``
makes the process exit hard (``os._exit``) instead, every time the job runs (a poison message).
SIGTERM is graceful: in-flight jobs finish, unstarted ones are given back, then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random

import redis.asyncio as aioredis
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import Payload
from tq.queue_config import QueueDefaults, RetryPolicy
from tq.registry import QueueSpec, get_queue, register_queue, unregister_queue
from tq.settings import Settings
from tq.worker import Worker

from support import serve_until_sigterm

QUEUE = "chaos"
RUNS_KEY = "tq:{chaos}:test:runs"  # under tq:* so the suite cleans it even on a Redis it did not start


class ChaosJob(Payload):
    n: int
    sleep_s: float = 0.0
    jitter_s: float = 0.004
    crash: bool = False


def register(attempts: int = 5) -> None:
    unregister_queue(QUEUE)
    register_queue(
        QueueSpec(
            QUEUE,
            "chaos",
            {"work": ChaosJob},
            defaults=QueueDefaults(retry=RetryPolicy(attempts=attempts, initial_s=0.01, max_s=0.05)),
        )
    )


async def main(args: argparse.Namespace) -> None:
    register(args.attempts)
    client = aioredis.Redis.from_url(args.url)
    settings = Settings(
        redis_url=args.url,
        audit_enabled=False,
        reclaim_interval_s=0.2,
        promote_interval_s=0.05,
        shutdown_grace_s=30.0,
        queues={QUEUE: {"concurrency": args.concurrency, "visibility_timeout_s": args.visibility}},
    )
    handlers = HandlerRegistry()

    @handlers.register(QUEUE, "work")
    async def work(ctx: JobContext, payload: ChaosJob) -> None:
        if payload.crash:
            os._exit(3)  # the process dies with the job in hand, as a segfaulting library would
        await asyncio.sleep(payload.sleep_s + random.random() * payload.jitter_s)
        await ctx.redis.hincrby(RUNS_KEY, str(payload.n), 1)

    worker = Worker(client, [get_queue(QUEUE)], handlers, settings, consumer_id=args.consumer_id)
    await serve_until_sigterm(worker, client)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("consumer_id")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--visibility", type=float, default=1.0)
    parser.add_argument("--attempts", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
