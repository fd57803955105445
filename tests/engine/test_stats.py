"""The stats leader (``tq.stats``) against a real Redis and both databases: the snapshot matches
what was done, expires, rates come from counter deltas, p95 is right, one writer among several,
takeover on stop and on death, and the 5-minute aggregates with a fake clock."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from support import fast_settings, running, wait_for
from tq import jobs, keys
from tq.envelope import Event, EventType
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.models import AuditLog, QueueMetricAggregate
from tq.payloads import SendEmail
from tq.producer import Producer
from tq.registry import get_queue
from tq.stats import AGGREGATE_S, StatsLeader, bucket_of, percentile, read_stats

Q = "email:send"
Q2 = "otp:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}
BOOM = {"to": "a@example.com", "template": "boom"}
T0 = 1_800_000_000.0 + 10  # a fake clock: 10 s into a 5-minute bucket


class FakeClock:
    def __init__(self, at: float = T0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def leader(client: Any, redis_url: str, **kwargs: Any) -> StatsLeader:
    kwargs.setdefault("queues", [get_queue(Q), get_queue(Q2)])
    kwargs.setdefault("clock", FakeClock())
    return StatsLeader(client, settings=fast_settings(redis_url), **kwargs)


async def fake_completed(client: Any, queue: str, jobs_: list[tuple[str, float, float]]) -> None:
    """Completed job records as the settle script leaves them: (id, finished at s, duration ms)."""
    async with client.pipeline(transaction=False) as pipe:
        for job_id, finished, duration in jobs_:
            pipe.hset(
                keys.job(queue, job_id), mapping={"s": "completed", "f": int(finished * 1000), "d": duration}
            )
            pipe.zadd(keys.completed_index(queue), {job_id: int(finished * 1000)})
        await pipe.execute()


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 95) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile(list(range(1, 21)), 95) == 19  # ceil(0.95 * 20) = 19th
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([5, 1, 3, 2, 4], 50) == 3


async def test_snapshot_matches_what_was_done(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "boom":
            raise NonRetryableError("mailbox does not exist")
        await asyncio.sleep(0.001)

    p = Producer(redis_client, s)
    async with running(redis_client, s, h):
        for data in [EMAIL] * 6 + [BOOM] * 2:  # M = 6 complete, K = 2 dead-lettered
            await p.enqueue(Q, "send-email", data)
        await wait_for(lambda: jobs_done(redis_client), what="all settled")
    for _ in range(3):  # 12 enqueued in all: 3 more wait, 1 more is delayed
        await p.enqueue(Q, "send-email", EMAIL)
    await p.enqueue(Q, "send-email", EMAIL, delay=3600)

    clock = FakeClock()
    a = leader(redis_client, redis_url, clock=clock, interval_s=10)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.EVENTS_CHANNEL)
    assert await a.tick()
    got = await read_stats(redis_client, Q)
    assert got is not None
    counts = await jobs.counts(redis_client, Q)
    assert {k: got[k] for k in ("waiting", "active", "delayed", "dlq", "completed", "dead", "enqueued")} == {
        "waiting": 3,
        "active": 0,
        "delayed": 1,
        "dlq": 2,
        "completed": 6,
        "dead": 2,
        "enqueued": 12,
    }
    assert got["failed"] == got["retried"] + got["dead"] == 2  # NonRetryableError: no retries
    assert got["consumers"] == counts["consumers"] == 0 and got["paused"] is False
    assert got["rate"] == 0.0 and got["lastUpdatedAt"] == T0  # first snapshot: no delta yet
    records = [
        (await jobs.get_job(redis_client, Q, i)).duration_ms for i in await completed_ids(redis_client)
    ]
    durations = [float(d) for d in records if d is not None]
    assert got["samples"] == 6 == len(durations)
    assert got["avgDurationMs"] == pytest.approx(sum(durations) / 6)
    assert got["p95DurationMs"] == max(durations)  # nearest rank of 6 samples: the 6th
    ttl = await redis_client.pttl(keys.stats(Q))
    assert 0 < ttl <= 30_000  # three intervals
    empty = await read_stats(redis_client, Q2)
    assert empty is not None and empty["completed"] == 0 and empty["avgDurationMs"] is None

    seen: dict[str, Event] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(seen) < 2 and loop.time() < deadline:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if msg is None:
            continue
        event = Event.model_validate(json.loads(msg["data"]))  # the one schema of tq:events
        if event.type is EventType.QUEUE_STATS:
            seen[event.queue] = event
    await pubsub.aclose()
    assert set(seen) == {Q, Q2}
    assert seen[Q].data == got and seen[Q].at == T0


async def jobs_done(client: Any) -> bool:
    return (
        int(await client.hget(keys.counters(Q), "completed") or 0) == 6
        and await client.xlen(keys.dlq(Q)) == 2
    )


async def completed_ids(client: Any) -> list[str]:
    return [i.decode() for i in await client.zrange(keys.completed_index(Q), 0, -1)]


async def test_rate_comes_from_counter_deltas(redis_client: Any, redis_url: str) -> None:
    clock = FakeClock()
    a = leader(redis_client, redis_url, clock=clock)
    await redis_client.hset(keys.counters(Q), mapping={"completed": 100})
    assert await a.tick()
    assert (await read_stats(redis_client, Q) or {})["rate"] == 0.0
    clock.at += 10
    await redis_client.hincrby(keys.counters(Q), "completed", 50)
    await a.tick()
    assert (await read_stats(redis_client, Q) or {})["rate"] == 5.0
    # a new leader continues from the snapshot in Redis
    await a.release()
    b = leader(redis_client, redis_url, clock=clock)
    clock.at += 20
    await redis_client.hincrby(keys.counters(Q), "completed", 40)
    assert await b.tick()
    assert (await read_stats(redis_client, Q) or {})["rate"] == 2.0


async def test_durations_come_from_the_newest_500_records(redis_client: Any, redis_url: str) -> None:
    # 600 records finished at 1..600 s with d = 1..600 ms: the newest 500 are d = 101..600
    await fake_completed(redis_client, Q, [(f"j{i}", float(i), float(i)) for i in range(1, 601)])
    a = leader(redis_client, redis_url)
    await a.tick()
    got = await read_stats(redis_client, Q)
    assert got is not None and got["samples"] == 500
    assert got["avgDurationMs"] == pytest.approx(350.5)
    assert got["p95DurationMs"] == 575.0  # the 475th of 101..600


async def test_one_writer_then_takeover_on_stop_and_on_death(redis_client: Any, redis_url: str) -> None:
    a = leader(redis_client, redis_url, token="a", lock_ttl_s=30)
    b = leader(redis_client, redis_url, token="b", lock_ttl_s=1.0)
    assert await a.tick() and not await b.tick()
    assert await a.tick() and not await b.tick()  # renewed, not re-won by chance
    assert (a.ticks_written, b.ticks_written) == (2, 0)
    assert await redis_client.get(keys.STATS_LEADER) == b"a"

    await a.release()  # a stops: b takes over at its next tick
    assert await b.tick() and not await a.tick()
    assert await redis_client.get(keys.STATS_LEADER) == b"b"

    # b dies (stops ticking without releasing): its lock expires and a takes over
    await wait_for(lambda: redis_client.exists(keys.STATS_LEADER), what="b holds it")
    assert not await a.tick()
    await wait_for(lambda: _gone(redis_client), timeout=5, what="b's lock to expire")
    assert await a.tick()
    assert (a.ticks_written, b.ticks_written) == (3, 1)
    await b.release()  # not b's any more: a keeps it
    assert await redis_client.get(keys.STATS_LEADER) == b"a"


async def _gone(client: Any) -> bool:
    return not await client.exists(keys.STATS_LEADER)


async def test_running_leaders_write_once_per_interval(redis_client: Any, redis_url: str) -> None:
    a = leader(redis_client, redis_url, interval_s=0.05, lock_ttl_s=10, token="a")
    b = leader(redis_client, redis_url, interval_s=0.05, lock_ttl_s=10, token="b")
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run_forever(stop_a))
    await wait_for(lambda: a.ticks_written >= 1, what="a elected")
    task_b = asyncio.create_task(b.run_forever(stop_b))
    await wait_for(lambda: a.ticks_written >= 5, what="a writing")
    assert b.ticks_written == 0 and not b.is_leader
    stop_a.set()
    await task_a  # releases the lock on the way out
    await wait_for(lambda: b.ticks_written >= 2, what="b takes over")
    stop_b.set()
    await task_b
    assert not await redis_client.exists(keys.STATS_LEADER)


# --------------------------------------------------------------------------- 5-minute aggregates


async def _rows(engine: AsyncEngine) -> list[QueueMetricAggregate]:
    async with AsyncSession(engine) as session:
        order = (QueueMetricAggregate.bucket_start, QueueMetricAggregate.queue)
        return list((await session.scalars(select(QueueMetricAggregate).order_by(*order))).all())


async def _audits(engine: AsyncEngine) -> list[AuditLog]:
    async with AsyncSession(engine) as session:
        return list((await session.scalars(select(AuditLog).order_by(AuditLog.id))).all())


async def test_aggregates_one_row_per_queue_per_bucket_never_twice(
    redis_client: Any, redis_url: str, db_engine: AsyncEngine
) -> None:
    clock = FakeClock()
    bucket = bucket_of(T0)
    a = leader(redis_client, redis_url, clock=clock, database=db_engine)
    await redis_client.hset(keys.counters(Q), mapping={"enqueued": 10, "completed": 3, "retried": 1})
    assert await a.tick()  # the baseline: no row yet
    assert await _rows(db_engine) == []

    await redis_client.hset(
        keys.counters(Q), mapping={"enqueued": 20, "completed": 9, "retried": 3, "dead": 2}
    )
    for _ in range(4):
        await redis_client.xadd(keys.stream(Q), {"e": "{}"})
    await redis_client.xadd(keys.dlq(Q), {"e": "{}"})
    clock.at += 100
    await a.tick()  # the leader sees 4 waiting, 1 dead letter in the bucket
    await redis_client.delete(keys.stream(Q))
    await fake_completed(
        redis_client,
        Q,
        [
            ("a", bucket + 20, 10.0),
            ("b", bucket + 30, 20.0),
            ("c", bucket + 299.5, 30.0),
            ("late", bucket + 301, 999.0),
        ],
    )

    clock.at = bucket + AGGREGATE_S + 1  # across the boundary
    await a.tick()
    rows = await _rows(db_engine)
    assert sorted((r.queue, r.bucket_start) for r in rows) == [
        (Q, datetime.fromtimestamp(bucket, UTC)),  # email:send
        (Q2, datetime.fromtimestamp(bucket, UTC)),  # otp:send
    ]
    by_queue = {r.queue: r for r in rows}
    r = by_queue[Q]
    assert r.bucket_start.tzinfo is not None
    assert (r.enqueued, r.completed, r.retried, r.dead, r.failed) == (10, 6, 2, 2, 4)
    assert (r.avg_duration_ms, r.p95_duration_ms) == (20.0, 30.0)  # "late" is the next bucket's
    assert (r.max_waiting, r.max_dlq) == (4, 1)
    r2 = by_queue[Q2]
    assert (r2.completed, r2.failed, r2.avg_duration_ms, r2.max_waiting) == (0, 0, None, 0)

    audits = await _audits(db_engine)
    assert sorted(x.target for x in audits) == [Q, Q2]
    for x in audits:
        assert (x.action, x.actor, x.outcome) == ("queue.metrics", "stats", "ok")
        assert x.details["aggregateAt"] == datetime.fromtimestamp(bucket, UTC).isoformat()
        assert x.details["stats"]["lastUpdatedAt"] == clock.at
    q_audit = next(x for x in audits if x.target == Q)
    assert q_audit.details["stats"]["completed"] == 9 and q_audit.details["aggregate"]["completed"] == 6

    clock.at += 10  # the same bucket again: nothing new
    await a.tick()
    assert len(await _rows(db_engine)) == 2 and len(await _audits(db_engine)) == 2

    # a leader that died after the commit but before moving the baseline on: its successor finds
    # the previous bucket still open and tries it again - the row exists, so nothing is written
    for q in (Q, Q2):
        await redis_client.hset(keys.stats_mark(q), "bucket", str(bucket))
    await a.release()
    b = leader(redis_client, redis_url, clock=clock, database=db_engine)
    assert await b.tick()
    assert len(await _rows(db_engine)) == 2 and len(await _audits(db_engine)) == 2
    assert await redis_client.hget(keys.stats_mark(Q), "bucket") == str(bucket + AGGREGATE_S).encode()

    # a gap of several buckets without any leader: the missed ones are not written
    clock.at = bucket + 4 * AGGREGATE_S + 5
    assert await b.tick()
    assert len(await _rows(db_engine)) == 2
    assert await redis_client.hget(keys.stats_mark(Q), "bucket") == str(bucket + 4 * AGGREGATE_S).encode()
    clock.at += AGGREGATE_S  # and the current one is, when it ends
    await b.tick()
    rows = await _rows(db_engine)
    assert len(rows) == 4 and {r.bucket_start for r in rows[2:]} == {
        datetime.fromtimestamp(bucket + 4 * AGGREGATE_S, UTC)
    }
    assert len(await _audits(db_engine)) == 4
