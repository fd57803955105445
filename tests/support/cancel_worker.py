"""A worker process for the cancel tests: consumes the ``cancelq`` queue until SIGTERM.

    python -m support.cancel_worker REDIS_URL CONSUMER_ID [--no-control]

Each job records that it started (``STARTED``: job id -> consumer id), reports progress while it
sleeps ``sleep_s`` in small steps, and on a cancellation records its cleanup (``CLEANUP``: job id ->
consumer id) before letting the cancellation go on. ``--no-control`` starts the worker without its
``tq:control`` subscription: a cancel reaches it only through the durable marker (a lost message).
"""

from __future__ import annotations

import argparse
import asyncio

import redis.asyncio as aioredis
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import Payload
from tq.queue_config import QueueDefaults, RetryPolicy
from tq.registry import QueueSpec, get_queue, register_queue, unregister_queue
from tq.settings import Settings
from tq.worker import Worker

from support import serve_until_sigterm

QUEUE = "cancelq"
STARTED = "tq:{cancelq}:test:started"  # under tq:* so the suite cleans it
CLEANUP = "tq:{cancelq}:test:cleanup"
VISIBILITY_S = 3.0  # touch and marker poll every second


class SlowJob(Payload):
    sleep_s: float = 30.0


def register() -> None:
    unregister_queue(QUEUE)
    register_queue(
        QueueSpec(
            QUEUE,
            "cancelq",
            {"slow": SlowJob},
            defaults=QueueDefaults(retry=RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)),
        )
    )


def settings(url: str) -> Settings:
    return Settings(
        redis_url=url,
        audit_enabled=True,  # the settle script writes the audit stream; no writer drains it here
        events=True,
        uvloop=False,
        block_ms=100,
        promote_interval_s=0.05,
        reclaim_interval_s=0.5,
        config_poll_s=1.0,
        shutdown_grace_s=5.0,
        queues={QUEUE: {"concurrency": 2, "visibility_timeout_s": VISIBILITY_S}},
    )


def handlers(consumer_id: str) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.register(QUEUE, "slow")
    async def slow(ctx: JobContext, payload: SlowJob) -> str:
        await ctx.redis.hset(STARTED, ctx.job_id, consumer_id)
        steps = max(1, int(payload.sleep_s / 0.05))
        try:
            for step in range(steps):
                await ctx.progress(step / steps, f"step {step} of {steps}")
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            await ctx.redis.hset(CLEANUP, ctx.job_id, consumer_id)
            raise
        return "done"

    return registry


async def main(args: argparse.Namespace) -> None:
    register()
    client = aioredis.Redis.from_url(args.url)
    worker = Worker(
        client,
        [get_queue(QUEUE)],
        handlers(args.consumer_id),
        settings(args.url),
        consumer_id=args.consumer_id,
    )
    await serve_until_sigterm(worker, client, listen_control=not args.no_control)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("consumer_id")
    parser.add_argument("--no-control", action="store_true")
    asyncio.run(main(parser.parse_args()))
