"""A task cancelled in the middle of a Redis call stops (``tq.cancelsafe``), against a real
redis-server. On Python 3.11 redis-py's write path used to lose about one cancellation in two when it
landed as the write completed: the task ran on, and whoever awaited it (a worker's stop, a lease's
release, a job's time limit) waited forever."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import redis.asyncio as aioredis

CANCELS = 300


async def test_a_task_cancelled_mid_call_always_stops(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)  # redis-py's default: a socket timeout is set
    rng = random.Random(7)
    lost: list[int] = []
    try:
        for i in range(CANCELS):

            async def renew() -> Any:
                while True:  # what a lease renewer or a handler's loop does
                    await asyncio.sleep(0)
                    await client.eval("return redis.call('PEXPIRE', KEYS[1], ARGV[1])", 1, "tq:k", 1000)

            task = asyncio.create_task(renew())
            await asyncio.sleep(rng.random() * 0.002)  # land the cancel anywhere in a call
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=2)
            if not done:
                lost.append(i)
                while not task.done():  # stop it for the next round; the cancel that counted was lost
                    task.cancel()
                    await asyncio.wait([task], timeout=0.1)
            else:
                assert task.cancelled()
    finally:
        await client.aclose()
    assert lost == [], f"{len(lost)} of {CANCELS} cancellations were lost (rounds {lost[:10]})"
