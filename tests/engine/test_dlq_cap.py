"""A DLQ entry stands on its own (first and last failure, every attempt, the envelope): it outlives
the job record. The DLQ stream has a per-queue cap (registry default, ``TQ_QUEUES``, the live
config a QueueConfig writes): at it each new dead job trims the oldest entry, and the trimmed are
counted. Real workers against a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

from support import fast_settings, running, tiny_retry, wait_for
from tq import config, dlq, keys
from tq.handlers import HandlerRegistry, JobContext
from tq.jobs import get_job
from tq.producer import Producer
from tq.queue_config import QueueDefaults
from tq.registry import get_queue
from tq.settings import Settings

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}


def settings_for(redis_url: str, **queue: Any) -> Settings:
    return fast_settings(redis_url, queues={Q: {"concurrency": 1, **tiny_retry(attempts=1), **queue}})


def failing() -> HandlerRegistry:
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        await asyncio.sleep(0.02)  # attempts apart in time
        raise ConnectionError(f"smtp refused on attempt {ctx.attempt}")

    return h


async def dead_in_order(client: Any, s: Settings, n: int, at_least: int | None = None) -> list[str]:
    """Enqueue ``n`` failing jobs one after the other (one slot: they die in this order)."""
    p = Producer(client, s)
    ids = [await p.enqueue(Q, "send-email", EMAIL | {"to": f"u{i}@example.com"}) for i in range(n)]
    target = at_least if at_least is not None else n

    async def all_dead() -> bool:
        return int(await client.hget(keys.counters(Q), "dead") or 0) >= target

    async with running(client, s, failing()):
        await wait_for(all_dead, what=f"{target} dead jobs")
    return ids


async def test_entry_has_first_and_last_failure_and_outlives_the_job_record(
    redis_client: Any, redis_url: str
) -> None:
    # retention_failed 0: the dead job's record is trimmed in the settle that dead-letters it
    retry = {"attempts": 3, "initial_s": 0.05, "max_s": 0.05, "jitter": 0}
    s = settings_for(redis_url, retry=retry, retention_failed=0)
    (job_id,) = await dead_in_order(redis_client, s, 1)
    assert not await redis_client.exists(keys.job(Q, job_id))  # the job record is gone

    (d,) = (await dlq.list_dead(redis_client, Q)).items
    assert d.job_id == job_id and d.attempts == 3
    assert [h["attempt"] for h in d.history] == [1, 2, 3]
    assert [h["message"] for h in d.history] == [f"smtp refused on attempt {i}" for i in (1, 2, 3)]
    assert d.first_failed_at == d.history[0]["at"] and d.failed_at == d.history[-1]["at"]
    assert d.failed_at - d.first_failed_at >= 0.1  # two backoffs of 50 ms (and the runs) apart
    assert d.error == "smtp refused on attempt 3" and d.payload["to"] == "u0@example.com"
    assert await dlq.get_dead(redis_client, Q, d.dlq_id) == d

    # and it still replays: the envelope is in the entry, not looked up in the job record
    new_id = await dlq.replay_one(redis_client, Q, d.dlq_id)
    replayed = await get_job(redis_client, Q, new_id)
    assert replayed is not None and replayed.replay_of == job_id
    assert replayed.payload["to"] == "u0@example.com"


async def test_the_cap_trims_the_oldest_and_counts_them(redis_client: Any, redis_url: str) -> None:
    assert get_queue(Q).defaults.dlq_max_len == QueueDefaults().dlq_max_len == 50_000  # the registry's
    s = settings_for(redis_url, dlq_max_len=3)  # TQ_QUEUES
    ids = await dead_in_order(redis_client, s, 5)
    kept = [d.job_id for d in (await dlq.list_dead(redis_client, Q)).items]
    assert kept == ids[:1:-1]  # newest first: the last three
    assert int(await redis_client.hget(keys.counters(Q), "dlq_trimmed")) == 2
    assert int(await redis_client.hget(keys.counters(Q), "dead")) == 5

    # the live config (what a QueueConfig's spec.dlqMaxLen writes) lowers it for the next deaths
    await config.write(redis_client, Q, config.override(generation=1, dlq_max_len=2))
    more = await dead_in_order(redis_client, s, 2, at_least=7)
    kept = [d.job_id for d in (await dlq.list_dead(redis_client, Q)).items]
    assert kept == more[::-1]
    assert int(await redis_client.hget(keys.counters(Q), "dlq_trimmed")) == 2 + 3  # 3 kept + 2 new - 2
