"""Enqueue is idempotent on the job id (issue 15): the id is chosen before anything is sent, and
the enqueue script answers an id that exists with that job. A connection cut after Redis ran the
script and before the reply came back (``support.cut_proxy``) ends in one job and success, for single
and bulk enqueues, sync and async."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry
from support import fast_settings
from support.cut_proxy import CutProxy
from tq import keys
from tq.producer import JobRequest, Producer, SyncProducer
from tq.registry import get_queue
from tq.scripts import source

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}
NO_RETRY = Retry(NoBackoff(), 0)  # the client's own retries off: the producer's resend is tested


def _state(client: redis.Redis) -> tuple[int, int, int]:
    """(stream entries, job records, the enqueued counter)."""
    records = sum(1 for _ in client.scan_iter(match=keys.job(Q, "*")))
    return client.xlen(keys.stream(Q)), records, int(client.hget(keys.counters(Q), "enqueued") or 0)


def _preload(redis_url: str) -> redis.Redis:
    """The script is loaded before the cut, so the cut request is one that runs it."""
    direct = redis.Redis.from_url(redis_url)
    direct.script_load(source("enqueue"))
    return direct


def test_sync_single_enqueue_cut_after_the_script_ran(redis_url: str, proxy: CutProxy) -> None:
    direct = _preload(redis_url)
    client = redis.Redis.from_url(proxy.url, retry=NO_RETRY)
    p = SyncProducer(client, fast_settings(redis_url))
    p.enqueue(Q, "send-email", EMAIL)  # a connection held before the cut
    proxy.cut_after(b"EVALSHA")
    job_id = p.enqueue(Q, "send-email", EMAIL)
    assert proxy.cuts == 1
    assert _state(direct) == (2, 2, 2)  # the script ran once for it, the resend wrote nothing
    assert direct.hget(keys.job(Q, job_id), "x") is not None
    p.close()
    client.close()


def test_sync_bulk_enqueue_cut_after_the_scripts_ran(redis_url: str, proxy: CutProxy) -> None:
    direct = _preload(redis_url)
    client = redis.Redis.from_url(proxy.url, retry=NO_RETRY)
    p = SyncProducer(client, fast_settings(redis_url))
    proxy.cut_after(b"EVALSHA")
    results = p.enqueue_many(Q, [JobRequest("send-email", EMAIL) for i in range(250)], chunk=100)
    assert proxy.cuts == 1
    assert len({r.id for r in results}) == 250 and not any(r.duplicate for r in results)
    assert _state(direct) == (250, 250, 250)
    p.close()
    client.close()


async def test_async_single_enqueue_cut_after_the_script_ran(redis_url: str, proxy: CutProxy) -> None:
    direct = _preload(redis_url)
    client = redis.asyncio.Redis.from_url(proxy.url, retry=NO_RETRY)
    p = Producer(client, fast_settings(redis_url))
    try:
        await p.enqueue(Q, "send-email", EMAIL)
        proxy.cut_after(b"EVALSHA")
        result = await p.enqueue_detailed(Q, "send-email", EMAIL, idempotency_key="order-2")
        assert proxy.cuts == 1 and not result.duplicate
        assert _state(direct) == (2, 2, 2)
        assert direct.get(keys.idempotency(Q, "order-2")) == result.id.encode()
    finally:
        await client.aclose()


async def test_async_bulk_enqueue_cut_after_the_script_ran(redis_url: str, proxy: CutProxy) -> None:
    direct = _preload(redis_url)
    client = redis.asyncio.Redis.from_url(proxy.url, retry=NO_RETRY)
    p = Producer(client, fast_settings(redis_url))
    try:
        proxy.cut_after(b"EVALSHA")
        results = await p.enqueue_many(Q, [("send-email", EMAIL)] * 300, chunk=100)
        assert proxy.cuts == 1
        assert len({r.id for r in results}) == 300
        assert _state(direct) == (300, 300, 300)
    finally:
        await client.aclose()


async def test_an_existing_id_is_answered_with_its_job_and_nothing_is_written(
    redis_client: Any, redis_url: str
) -> None:
    """The script's own rule, without a network: the same arguments twice make one job."""
    p = Producer(redis_client, fast_settings(redis_url))
    spec = get_queue(Q)
    args = p._enc.args(spec, [p._enc.prepare(spec, "send-email", EMAIL, idempotency_key="same")])
    first = await p._scripts.enqueue(keys=p._enc.keys(Q), args=args)
    again = await p._scripts.enqueue(keys=p._enc.keys(Q), args=args)
    assert first == again
    assert await redis_client.xlen(keys.stream(Q)) == 1
    assert int(await redis_client.hget(keys.counters(Q), "enqueued")) == 1
