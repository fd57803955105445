"""An idempotency key stays bound from the first enqueue until its TTL ends, whatever happens to
the job in between (issue 15; docs/engine.md, "Idempotency keys"): retries, dead-lettering, a
replay (the key passes to the replaying job), removal by an operator. Only the TTL frees it."""

from __future__ import annotations

import asyncio
from typing import Any

from support import fast_settings, running, wait_for
from tq import dlq, jobs, keys
from tq.envelope import JobState
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}


async def _count(client: Any, name: str) -> int:
    return int(await client.hget(keys.counters(Q), name) or 0)


def _handler(fail: set[int], runs: list[tuple[str, int]]) -> HandlerRegistry:
    """Fails the calls whose number (from 1) is in ``fail``; records (job id, attempt) of each call."""
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        runs.append((ctx.job_id, ctx.attempt))
        if len(runs) in fail:
            raise (NonRetryableError if -1 in fail else RuntimeError)(f"call {len(runs)} fails")

    return h


async def test_key_stays_bound_through_retries(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(
        redis_url, queues={Q: {"retry": {"attempts": 3, "initial_s": 0.3, "max_s": 0.3, "jitter": 0}}}
    )
    p = Producer(redis_client, s)
    runs: list[tuple[str, int]] = []
    first = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="retry-k")
    async with running(redis_client, s, _handler({1}, runs)):
        await wait_for(lambda: _count(redis_client, "retried"), what="the first attempt failed")
        again = await p.enqueue_detailed(Q, "send-email", EMAIL, idempotency_key="retry-k")  # in backoff
        assert again.duplicate and again.id == first
        await wait_for(lambda: _count(redis_client, "completed"), what="the retry")
    after = await p.enqueue_detailed(Q, "send-email", EMAIL, idempotency_key="retry-k")
    assert after.duplicate and after.id == first
    assert runs == [(first, 1), (first, 2)]
    assert await redis_client.xlen(keys.stream(Q)) == 0


async def test_key_stays_bound_to_a_dead_job_and_passes_to_its_replay(
    redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url)
    p = Producer(redis_client, s)
    runs: list[tuple[str, int]] = []
    first = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="dlq-k")
    async with running(redis_client, s, _handler({1, -1}, runs)):
        await wait_for(lambda: redis_client.xlen(keys.dlq(Q)), what="dead letter")
        dup = await p.enqueue_detailed(Q, "send-email", EMAIL, idempotency_key="dlq-k")
        assert dup.duplicate and dup.id == first  # dead, and still bound: no second job
        assert await redis_client.xlen(keys.stream(Q)) == 0
        ttl = await redis_client.ttl(keys.idempotency(Q, "dlq-k"))
        [letter] = (await dlq.list_dead(redis_client, Q)).items
        replayed = await dlq.replay_one(redis_client, Q, letter.dlq_id)
        # the key passes to the job that runs the work now, with the TTL it had
        assert await redis_client.get(keys.idempotency(Q, "dlq-k")) == replayed.encode()
        assert 0 < await redis_client.ttl(keys.idempotency(Q, "dlq-k")) <= ttl
        await wait_for(lambda: _count(redis_client, "completed"), what="the replay")
        after = await p.enqueue_detailed(Q, "send-email", EMAIL, idempotency_key="dlq-k")
        assert after.duplicate and after.id == replayed
        await asyncio.sleep(0.2)  # a second run would have started by now
    assert runs == [(first, 1), (replayed, 1)]  # the work ran once more, by the replay, and only once
    assert (await jobs.get_job(redis_client, Q, replayed)).state is JobState.COMPLETED


async def test_key_stays_bound_after_an_operator_removes_the_job(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    first = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="rm-k")
    delayed = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="rm-delayed", delay=60)
    assert await jobs.remove_job(redis_client, Q, first) is JobState.WAITING
    assert await jobs.remove_job(redis_client, Q, delayed) is JobState.DELAYED
    for key, job_id in (("rm-k", first), ("rm-delayed", delayed)):
        again = await p.enqueue_detailed(Q, "send-email", EMAIL, idempotency_key=key)
        assert again.duplicate and again.id == job_id  # the removed job's id: nothing is enqueued
    assert await redis_client.xlen(keys.stream(Q)) == 0 and await redis_client.zcard(keys.delayed(Q)) == 0


async def test_only_the_ttl_frees_a_key(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    await redis_client.hset(keys.config(Q), "idempotency_ttl_s", 1)  # the live config's TTL
    first = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="ttl-k")
    assert 0 < await redis_client.ttl(keys.idempotency(Q, "ttl-k")) <= 1
    assert (await p.enqueue_detailed(Q, "send-email", EMAIL, idempotency_key="ttl-k")).id == first
    await wait_for(lambda: _gone(redis_client), timeout=3, what="the key's TTL")
    second = await p.enqueue_detailed(Q, "send-email", EMAIL, idempotency_key="ttl-k")
    assert not second.duplicate and second.id != first


async def _gone(client: Any) -> bool:
    return not await client.exists(keys.idempotency(Q, "ttl-k"))
