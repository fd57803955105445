"""One rate limit per queue across every replica (issue 18, "Rate limits"): the limiter in Redis
(``tq.ratelimit``), checked at intake by several worker PROCESSES on a real redis-server; a live
change of the limit; ``RateLimited`` pausing every replica without charging an attempt; a killed
worker leaking no permit past its lease; the waits counted as metrics."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from support import fast_settings, helper_command, helper_env, running, settled_job, wait_for, wait_until
from support import rate_worker as rw
from tq import config, keys
from tq.envelope import JobState
from tq.errors import RateLimited
from tq.handlers import HandlerRegistry, JobContext
from tq.producer import JobRequest, Producer, SyncProducer
from tq.queue_config import RateLimit
from tq.ratelimit import LEASE_MARGIN_MS, RateLimiter
from tq.registry import get_queue, unregister_queue
from tq_services.metrics import JobMetrics

Q = rw.QUEUE
SLACK_S = 0.05  # start times are taken in the handler, after the permit: jitter between processes


@pytest.fixture(autouse=True)
def rated_queue() -> Iterator[None]:
    rw.register()
    yield
    unregister_queue(Q)


def _start(url: str, consumer_id: str, concurrency: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        helper_command("rate_worker", url, consumer_id, str(concurrency)),
        stdout=subprocess.PIPE,
        text=True,
        env=helper_env(),
    )


def _workers(url: str, count: int, concurrency: int) -> list[subprocess.Popen[str]]:
    procs = [_start(url, f"rate-{i}", concurrency) for i in range(count)]  # start all, then wait
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return procs


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _starts(client: redis.Redis) -> list[tuple[float, str, int, int]]:
    """(epoch s, consumer, n, attempt) of every job start, in time order."""
    rows = []
    for raw in client.lrange(rw.STARTS, 0, -1):
        at, consumer, n, attempt = raw.decode().split()
        rows.append((float(at), consumer, int(n), int(attempt)))
    return sorted(rows)


def _busiest_window(times: list[float], per_s: float) -> int:
    """The most starts in any window of ``per_s`` seconds (less the measuring slack)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - (per_s - SLACK_S):
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _set_limit(client: redis.Redis, jobs: int, per_s: float) -> None:
    """A live change, as the operator or ``tq queue`` writes it (hash + control signal)."""
    change = config.override(rate_limit={"jobs": jobs, "per_s": per_s})
    client.hset(keys.config(Q), mapping=config.to_hash(change))
    client.publish(keys.CONTROL_CHANNEL, f'{{"queue": "{Q}"}}')


def _enqueue_work(client: redis.Redis, url: str, numbers: range, **work: float) -> None:
    SyncProducer(client, rw.settings(url, 1)).enqueue_many(
        Q, [JobRequest("work", {"n": n, **work}) for n in numbers]
    )


def _counter(client: redis.Redis, name: str) -> int:
    return int(client.hget(keys.counters(Q), name) or 0)


# ---- the script, in process ----------------------------------------------------------------------
async def test_permits_leases_and_pause_in_the_script(redis_client: Any) -> None:
    limit = RateLimit(jobs=5, per_s=1.0)
    a = RateLimiter(redis_client, Q, "a", block_ms=100)
    b = RateLimiter(redis_client, Q, "b", block_ms=100)
    first = await a.take(4, limit)
    assert (first.permits, first.paused) == (4, False)
    second = await b.take(4, limit)
    assert second.permits == 1, "a lease in flight counts against the limit"
    none = await b.take(4, limit)
    assert none.permits == 0 and 0 < none.wait_s <= 0.1, "held by leases only: ask again soon"
    await a.commit(first, 1, limit)  # the read received one entry: three permits go back
    assert await redis_client.zcard(keys.rate_window(Q)) == 1
    back = await b.take(4, limit)
    assert back.permits == 3
    await b.commit(second, 1, limit)
    await b.commit(back, 3, limit)
    full = await a.take(1, limit)
    assert full.permits == 0 and 0.8 < full.wait_s <= 1.0, "the window is full until the first start ages out"
    assert await redis_client.zcard(keys.rate_leases(Q)) == 0

    assert await a.pause(0.5) == pytest.approx(0.5, abs=0.01)
    assert await b.pause(0.1) > 0.4, "a shorter pause keeps the longer one in force"
    paused = await a.take(1, RateLimit(jobs=100, per_s=1.0))
    assert paused.paused and paused.permits == 0 and 0.3 < paused.wait_s <= 0.5


# ---- several worker processes ----------------------------------------------------------------------
@pytest.mark.serial
def test_four_processes_keep_one_limit_and_follow_a_live_change(redis_url: str) -> None:
    """4 replicas x concurrency 8 on ``20 per 2 s``: no 2-second window holds more than 20 starts
    (four per-process limits would allow 80), the backlog runs at the declared rate, no job is
    taken and put back or charged an attempt; then ``60 per 2 s`` applies live."""
    client = redis.Redis.from_url(redis_url)
    _set_limit(client, 20, 2.0)
    procs = _workers(redis_url, 4, concurrency=8)
    try:
        _enqueue_work(client, redis_url, range(60))
        wait_until(lambda: client.llen(rw.STARTS) >= 60, 15, "60 jobs started at 20 per 2 s")
        phase1 = [t for t, *_ in _starts(client)]
        assert _busiest_window(phase1, 2.0) <= 20, phase1
        span = phase1[-1] - phase1[0]  # 60 jobs in windows of 20: the third begins 4 s after the first
        assert 3.9 <= span < 4.8, f"60 jobs at 20 per 2 s took {span:.2f}s"
        assert client.llen(rw.STARTS) == 60, "nothing beyond the backlog"

        _set_limit(client, 60, 2.0)
        time.sleep(2.1)  # the change is in force on every replica, the last window has aged out
        _enqueue_work(client, redis_url, range(60, 240))
        wait_until(lambda: client.llen(rw.STARTS) >= 240, 15, "180 more jobs at 60 per 2 s")
        phase2 = [t for t, _c, n, _a in _starts(client) if n >= 60]
        busiest = _busiest_window(phase2, 2.0)
        assert 40 < busiest <= 60, f"the live limit of 60 per 2 s: busiest window {busiest}"
        span = phase2[-1] - phase2[0]
        assert 3.9 <= span < 4.8, f"180 jobs at 60 per 2 s took {span:.2f}s"

        wait_until(lambda: _counter(client, "completed") == 240, 10, "all completed")
        starts = _starts(client)
        assert all(attempt == 1 for *_, attempt in starts), "no attempt charged"
        assert len({n for _t, _c, n, _a in starts}) == 240, "each job ran once"
        for outcome in ("requeued", "retried", "reclaimed", "dead"):
            assert _counter(client, outcome) == 0, (outcome, client.hgetall(keys.counters(Q)))
        assert len({c for _t, c, _n, _a in starts}) >= 2, "the work spread over the replicas"
    finally:
        _stop(procs)
        client.close()


def test_rate_limited_pauses_every_replica_without_charging_an_attempt(redis_url: str) -> None:
    """A handler's ``RateLimited(1.5)`` puts its job back uncharged and pauses the (unlimited)
    queue's intake on all three replicas for 1.5 s; after it the queue runs again everywhere."""
    client = redis.Redis.from_url(redis_url)
    procs = _workers(redis_url, 3, concurrency=4)
    try:
        producer = SyncProducer(client, rw.settings(redis_url, 1))
        limited_id = producer.enqueue(Q, "limited", {"n": -1, "retry_after": 1.5})
        wait_until(lambda: client.pttl(keys.rate_pause(Q)) > 0, 10, "the queue paused")
        paused_at = time.time()
        left = client.pttl(keys.rate_pause(Q)) / 1000
        ends = paused_at + left
        assert 1.2 < left <= 1.5
        time.sleep(0.2)  # every replica has heard of it (control channel)
        # each job keeps its slot 0.3 s: two replicas can't drain the backlog before the third
        # resumes, even one descheduled for a while on a loaded machine (5 ms jobs were drained
        # by two in 17 ms)
        _enqueue_work(client, redis_url, range(30), hold_s=0.3)
        wait_until(lambda: client.llen(rw.STARTS) >= 31, 10, "the jobs ran after the pause")
        starts = _starts(client)
        first = starts[0][0]
        assert first >= ends - SLACK_S, f"a job started {ends - first:.3f}s before the pause ended"
        assert first < ends + 1.0, "the intake resumed at the end of the pause"
        assert len({c for _t, c, _n, _a in starts}) == 3, "every replica resumed"
        assert int(client.hget(rw.LIMITED, "-1") or 0) == 2, "limited once, then ran"
        rerun = [row for row in starts if row[2] == -1]
        assert [attempt for *_, attempt in rerun] == [1], "the limited job ran again on attempt 1"

        record = asyncio.run(_record(redis_url, limited_id))
        assert record.state is JobState.COMPLETED and record.attempts == 1 and not record.failures, record
        assert _counter(client, "retried") == 0 and _counter(client, "dead") == 0
        assert _counter(client, "requeued") >= 1  # the limited job itself went back to the stream
    finally:
        _stop(procs)
        client.close()


async def _record(url: str, job_id: str) -> Any:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        return await settled_job(client, Q, job_id, timeout=10)
    finally:
        await client.aclose()


def test_a_killed_worker_leaks_no_permit_past_its_lease(redis_url: str) -> None:
    """A replica SIGKILLed while its read holds every permit of ``8 per 1 s``: the survivor gets
    nothing until that lease ends (``block_ms`` + the margin), then the full rate."""
    client = redis.Redis.from_url(redis_url)
    _set_limit(client, 8, 1.0)
    procs = _workers(redis_url, 2, concurrency=8)
    try:

        def holder() -> str | None:
            leases = [m.decode() for m in client.zrange(keys.rate_leases(Q), 0, -1)]
            full = [m for m in leases if m.endswith(":8")]
            return full[0].split(":")[0] if full else None

        wait_until(lambda: holder() is not None, 5, "a replica reading with all 8 permits")
        victim = procs[int(str(holder()).split("-")[1])]
        victim.kill()
        victim.wait(5)
        killed_at = time.time()
        _enqueue_work(client, redis_url, range(24))
        wait_until(lambda: client.llen(rw.STARTS) >= 24, 15, "24 jobs ran on the survivor")
        times = [t for t, *_ in _starts(client)]
        lease_s = (rw.settings(redis_url, 1).block_ms + LEASE_MARGIN_MS) / 1000
        assert times[0] - killed_at < lease_s + 0.5, "the dead replica's permits came back with its lease"
        assert _busiest_window(times, 1.0) <= 8
        span = times[-1] - times[0]  # 24 jobs at 8 per 1 s: three windows, the last 2 s after the first
        assert 1.9 <= span < 2.8, f"the survivor ran at {24 / (span + 1):.1f} jobs/s"
        assert client.zcard(keys.rate_leases(Q)) <= 1, "only the survivor's lease is left"
    finally:
        _stop(procs)
        client.close()


# ---- metrics -------------------------------------------------------------------------------------
async def test_limited_waits_and_rate_limited_jobs_are_counted(redis_client: Any, redis_url: str) -> None:
    registry = CollectorRegistry()
    metrics = JobMetrics(registry, [get_queue(Q)])
    handlers = HandlerRegistry()
    seen: list[int] = []

    @handlers.register(Q, "work")
    async def work(ctx: JobContext, payload: rw.Work) -> None:
        seen.append(payload.n)

    @handlers.register(Q, "limited")
    async def limited(ctx: JobContext, payload: rw.Limited) -> None:
        if len([n for n in seen if n == payload.n]) == 0:
            seen.append(payload.n)
            raise RateLimited(payload.retry_after)

    await config.write(redis_client, Q, config.override(rate_limit={"jobs": 3, "per_s": 0.5}))
    settings = fast_settings(redis_url)
    producer = Producer(redis_client, settings)
    async with running(redis_client, settings, handlers, Q, observer=metrics):
        await producer.enqueue_many(Q, [JobRequest("work", {"n": n}) for n in range(6)])
        await wait_for(lambda: len(seen) == 6, timeout=5, what="six jobs at 3 per 0.5 s")
        job = await producer.enqueue(Q, "limited", {"n": 100, "retry_after": 0.3})
        rec = await settled_job(redis_client, Q, job, timeout=5)
    assert rec.state is JobState.COMPLETED and rec.attempts == 1

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, {"queue": Q, **labels}) or 0.0

    assert value("tq_rate_limit_waits_total", reason="limit") >= 1
    assert value("tq_rate_limit_wait_seconds_total", reason="limit") > 0.2
    assert value("tq_rate_limit_waits_total", reason="paused") == 1
    assert value("tq_rate_limit_wait_seconds_total", reason="paused") > 0.2
    assert value("tq_jobs_rate_limited_total", job="limited") == 1


async def test_an_unlimited_queue_never_calls_the_limiter(
    redis_client: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rateLimit: the intake reads as before, with no extra round trip per read."""

    async def refuse(*args: Any) -> None:
        raise AssertionError("the limiter was called for an unlimited queue")

    monkeypatch.setattr(RateLimiter, "take", refuse)
    monkeypatch.setattr(RateLimiter, "commit", refuse)
    handlers = HandlerRegistry()
    done: list[int] = []

    @handlers.register(Q, "work")
    async def work(ctx: JobContext, payload: rw.Work) -> None:
        done.append(payload.n)

    settings = fast_settings(redis_url)
    async with running(redis_client, settings, handlers, Q):
        await Producer(redis_client, settings).enqueue_many(
            Q, [JobRequest("work", {"n": n}) for n in range(200)]
        )
        await wait_for(lambda: len(done) == 200, timeout=10, what="200 jobs")
    assert not await redis_client.exists(keys.rate_window(Q), keys.rate_leases(Q))
