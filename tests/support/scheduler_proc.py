"""A scheduler process (``tq.schedules.Scheduler``) for the failover tests: ``URL [LOCK_TTL_S]``
(default 1 s).
Registers the ``schedtest`` queue; runs until SIGTERM (releasing its lock) or SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import sys

import redis.asyncio as aioredis
from tq.payloads import Payload
from tq.registry import QueueSpec, register_queue
from tq.schedules import Scheduler
from tq.settings import Settings

QUEUE = "schedtest"


class Ping(Payload):
    n: int = 0
    day: str | None = None


def register() -> None:
    register_queue(QueueSpec(QUEUE, "schedtest", {"ping": Ping}))


async def run(url: str, lock_ttl_s: float) -> None:
    register()
    client = aioredis.Redis.from_url(url)
    settings = Settings(redis_url=url, audit_enabled=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    scheduler = Scheduler(client, settings, interval_s=0.1, lock_ttl_s=lock_ttl_s)
    await scheduler.run_forever(stop)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0))
