"""A DLQ entry stands on its own (first and last failure, every attempt, the envelope): it outlives
the job record. The DLQ stream has a per-queue cap (registry default, ``TQ_QUEUES``, the live
config a QueueConfig writes): at it each new dead job trims the oldest entry, and the trimmed are
counted. Real workers against a real redis-server."""

from __future__ import annotations

import asyncio
import json
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


async def test_a_dead_record_is_a_short_summary_and_reads_whole_with_its_dead_letter(
    redis_client: Any, redis_url: str
) -> None:
    """The dead job's record keeps no message, history or finish time (its DLQ entry has them): it
    stays a listpack. Read through ``get_job`` it is whole; once its dead letter is replayed, the
    record still says when the job died and with which error type. A job that died at its first
    failure has a DLQ entry without ``ff``, ``h`` and ``q``, and the same history as one with them."""
    long_message = "smtp refused: " + "the server said no " * 8  # a record holding it: a hashtable
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        raise ConnectionError(f"{long_message} (attempt {ctx.attempt})")

    retry = {"attempts": 2, "initial_s": 0.05, "max_s": 0.05, "jitter": 0}
    once, twice = settings_for(redis_url), settings_for(redis_url, retry=retry)
    first = await Producer(redis_client, once).enqueue(Q, "send-email", EMAIL)
    async with running(redis_client, once, h):
        await wait_for(lambda: dlq_size(redis_client, 1), what="the first dead job")
    second = await Producer(redis_client, twice).enqueue(Q, "send-email", EMAIL)
    async with running(redis_client, twice, h):
        await wait_for(lambda: dlq_size(redis_client, 2), what="the second dead job")

    for job_id, attempts in ((first, 1), (second, 2)):
        record = keys.job(Q, job_id)
        assert await redis_client.object("ENCODING", record) == b"listpack"
        fields = await redis_client.hgetall(record)
        assert not {b"em", b"h", b"f", b"es", b"p"} & set(fields)
        job = await get_job(redis_client, Q, job_id)
        assert job is not None and job.state.value == "dead" and job.attempts == attempts
        assert job.error == f"{long_message} (attempt {attempts})" and "ConnectionError" in (job.stack or "")
        assert [f["attempt"] for f in job.failures] == list(range(1, attempts + 1))
        assert job.finished_at is not None and job.payload["to"] == EMAIL["to"]
        entry = await redis_client.xrange(keys.dlq(Q), fields[b"dl"], fields[b"dl"])
        written = set(entry[0][1])
        assert b"q" not in written and ({b"ff", b"h"} <= written) == (attempts > 1)
        (d,) = [x for x in (await dlq.list_dead(redis_client, Q)).items if x.job_id == job_id]
        assert [x["attempt"] for x in d.history] == list(range(1, attempts + 1))
        assert d.first_failed_at <= d.failed_at == job.finished_at

    dead = await get_job(redis_client, Q, first)
    assert dead is not None
    await dlq.replay_one(redis_client, Q, dead.dlq_id or "")
    after = await get_job(redis_client, Q, first)
    assert after is not None and after.state.value == "dead" and after.replayed_as
    assert after.error_type == "ConnectionError" and after.error is None and after.failures == []
    assert abs((after.finished_at or 0) - (dead.finished_at or 0)) < 0.05  # the entry id's time


async def test_a_dead_job_of_the_layout_before_the_summary_record_reads_the_same(redis_client: Any) -> None:
    """What the previous release's settle wrote for a dead job (landed in 2d5b94d): the record kept
    its message, history and finish time, and the letter its queue, ``ff`` and ``h`` for a single
    attempt. The readers take them from where they are."""
    job_id, now, history = (
        "OldDeadJob0000000000Aa",
        1_700_000_000_000,
        '[{"attempt":1,"type":"E","at":1700000000000,"message":"m"}]',
    )
    env = json.dumps({"id": job_id, "queue": Q, "name": "send-email", "payload": EMAIL, "attempt": 1})
    did = await redis_client.xadd(
        keys.dlq(Q),
        {"id": job_id, "q": Q, "n": "send-email", "et": "E", "em": "m", "es": "Traceback", "a": "1",
         "f": str(now), "ff": str(now), "e": env, "tr": "", "h": history},
    )  # fmt: skip
    await redis_client.hset(
        keys.job(Q, job_id),
        mapping={"s": "dead", "a": "1", "st": str(now - 5), "f": str(now), "d": "5", "et": "E", "em": "m",
                 "h": history, "dl": did, "c": "old", "x": "", "n": "send-email", "t": str(now - 9)},
    )  # fmt: skip
    job = await get_job(redis_client, Q, job_id)
    assert job is not None and (job.error_type, job.error, job.stack) == ("E", "m", "Traceback")
    assert job.finished_at == now / 1000 and [f["attempt"] for f in job.failures] == [1]
    (d,) = (await dlq.list_dead(redis_client, Q)).items
    assert (d.queue, d.first_failed_at, [h["message"] for h in d.history]) == (Q, now / 1000, ["m"])


async def dlq_size(client: Any, n: int) -> bool:
    return int(await client.xlen(keys.dlq(Q))) >= n


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
