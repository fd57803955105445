"""The stats leader's ``dlq.stats`` event (``tq.envelope.DlqStatsData``), one per queue beside
``queue.stats``: size, entries added since the previous snapshot (also across a change of leader),
when the oldest entry failed, and error types over the newest ``DLQ_SAMPLE`` entries."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from support import fast_settings, running, tiny_retry, wait_for
from tq import dlq, keys
from tq.envelope import DlqStatsData, Event, EventType
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer
from tq.registry import get_queue
from tq.stats import DLQ_SAMPLE, StatsLeader

Q = "email:send"
Q2 = "otp:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}


class FakeClock:
    def __init__(self, at: float = 1_800_000_010.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def leader(client: Any, redis_url: str, clock: FakeClock, token: str) -> StatsLeader:
    return StatsLeader(
        client,
        [get_queue(Q), get_queue(Q2)],
        fast_settings(redis_url),
        clock=clock,
        token=token,
        interval_s=10,
    )


async def tick_events(client: Any, stats: StatsLeader) -> dict[str, Event]:
    """Tick once and return the ``dlq.stats`` events it published, by queue."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.EVENTS_CHANNEL)
    try:
        assert await stats.tick()
        seen: dict[str, Event] = {}
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg is None:
                continue
            event = Event.model_validate(json.loads(msg["data"]))
            if event.type is EventType.DLQ_STATS:
                seen[event.queue] = event
        return seen
    finally:
        await pubsub.aclose()


def data(event: Event) -> DlqStatsData:
    return DlqStatsData.model_validate(event.data)  # the typed shape, extra fields refused


async def test_dlq_stats_event_per_queue(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, queues={Q: tiny_retry(attempts=2)})
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "refused":
            raise NonRetryableError("mailbox does not exist")
        if payload.template == "flaky":
            raise RuntimeError("smtp timeout")  # on every attempt: dead after 2

    p = Producer(redis_client, s)
    await redis_client.xgroup_create(keys.stream(Q), keys.GROUP, id="0", mkstream=True)
    forged = {"id": "forged-1", "queue": Q, "name": "send-fax", "payload": EMAIL, "enqueued_at": time.time()}
    async with running(redis_client, s, h):
        await redis_client.xadd(keys.stream(Q), {"j": json.dumps(forged)})  # unknown job: invalid
        await p.enqueue_many(Q, [("send-email", {**EMAIL, "template": "refused"})] * 2)
        await p.enqueue(Q, "send-email", {**EMAIL, "template": "flaky"})
        await p.enqueue_many(Q, [("send-email", EMAIL)] * 3)  # completed: not in the DLQ
        await wait_for(lambda: _dlq_len(redis_client, 4), what="4 dead letters")

        clock = FakeClock()
        a = leader(redis_client, redis_url, clock, "a")
        first = await tick_events(redis_client, a)
        assert set(first) == {Q, Q2}
        got = data(first[Q])
        entries = (await dlq.list_dead(redis_client, Q, limit=100)).items
        assert got.size == 4 == len(entries)
        assert got.added_last_interval == 0  # the first snapshot has no baseline
        assert got.oldest_failed_at == min(e.failed_at for e in entries)
        assert got.by_error_type == dict(Counter(e.error_type for e in entries))
        assert got.by_error_type["NonRetryableError"] == 2 and len(got.by_error_type) == 3
        assert first[Q].at == clock.at
        assert data(first[Q2]) == DlqStatsData(size=0, added_last_interval=0, oldest_failed_at=None)

        # two more dead letters, one replayed out of the DLQ: added counts dead-letterings, not size
        await p.enqueue_many(Q, [("send-email", {**EMAIL, "template": "refused"})] * 2)
        await wait_for(lambda: _dlq_len(redis_client, 6), what="6 dead letters")
        newest = (await dlq.list_dead(redis_client, Q, limit=1)).items[0]
        await dlq.replay_one(redis_client, Q, newest.dlq_id)  # refused again: back in the DLQ
        await wait_for(lambda: _dlq_len(redis_client, 6), what="the replay dead-lettered again")
        clock.at += 10
        second = data((await tick_events(redis_client, a))[Q])
        assert second.size == 6
        assert second.added_last_interval == 3  # 2 new + the replayed one failing again
        assert second.oldest_failed_at == got.oldest_failed_at

        # a new leader carries on from the snapshot in Redis
        await a.release()
        await p.enqueue(Q, "send-email", {**EMAIL, "template": "refused"})
        await wait_for(lambda: _dlq_len(redis_client, 7), what="7 dead letters")
        b = leader(redis_client, redis_url, clock, "b")
        clock.at += 10
        third = data((await tick_events(redis_client, b))[Q])
        assert (third.size, third.added_last_interval) == (7, 1)


async def test_error_types_count_the_newest_entries_only(redis_client: Any, redis_url: str) -> None:
    total = DLQ_SAMPLE + 50
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(total):  # entries as the settle script writes them: oldest first
            error_type = "OldError" if i < 80 else "NewError"
            pipe.xadd(
                keys.dlq(Q), {"id": f"j{i}", "q": Q, "n": "send-email", "et": error_type, "f": 1000 + i}
            )
        await pipe.execute()
    stats = data((await tick_events(redis_client, leader(redis_client, redis_url, FakeClock(), "a")))[Q])
    assert stats.size == total
    assert stats.by_error_type == {"NewError": total - 80, "OldError": DLQ_SAMPLE - (total - 80)}
    assert stats.oldest_failed_at == 1.0  # the first entry's failure time (ms), in seconds


async def _dlq_len(client: Any, n: int) -> bool:
    return int(await client.xlen(keys.dlq(Q))) == n
