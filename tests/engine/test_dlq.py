"""The dead-letter queue library: what an entry records, listing (order, cursor, filters), inspect,
replay (one, many, at most once), delete and purge. Real workers fill the DLQ; nothing is mocked."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from support import fast_settings, running, tiny_retry, wait_for
from tq import dlq, keys
from tq.envelope import JobState, entry_id_order
from tq.errors import ConfirmationRequired, NotFound, UnknownQueue
from tq.handlers import HandlerRegistry, JobContext
from tq.jobs import get_job
from tq.producer import Producer
from tq.settings import Settings

Q = "email:send"
NO_HANDLER_JOB = "process-email-queue"  # a real job of the queue that these tests never give a handler
EMAIL = {"to": "a@example.com", "template": "welcome"}
EMAIL_FULL = {**EMAIL, "locale": "en", "variables": {}, "email_queue_id": None}


def settings_for(redis_url: str, attempts: int = 1) -> Settings:
    return fast_settings(redis_url, queues={Q: tiny_retry(attempts=attempts, max_s=0.02)})


async def dlq_len(client: Any) -> int:
    return int(await client.xlen(keys.dlq(Q)))


async def wait_dlq(client: Any, n: int) -> None:
    async def full() -> bool:
        return await dlq_len(client) >= n

    await wait_for(full, what=f"{n} DLQ entries")
    assert await dlq_len(client) == n


async def wait_state(client: Any, job_id: str, state: JobState) -> None:
    async def reached() -> bool:
        rec = await client.hget(keys.job(Q, job_id), "s")
        return rec == state.value.encode()

    await wait_for(reached, what=f"job {job_id} {state.value}")


async def fill_no_handler(client: Any, redis_url: str, n: int, *, tag: str = "x") -> list[str]:
    """Dead-letter ``n`` jobs through a worker with no handler for them; returns their job ids."""
    p = Producer(client, settings_for(redis_url))
    before = await dlq_len(client)
    ids = [await p.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1}, trace_id=f"{tag}-{i}") for i in range(n)]
    async with running(client, settings_for(redis_url), HandlerRegistry()):
        await wait_dlq(client, before + n)
    return ids


async def all_dead(client: Any) -> list[dlq.DeadLetter]:
    page = await dlq.list_dead(client, Q, limit=1000)
    assert page.next_cursor is None
    return page.items


# ---- what an entry records ---------------------------------------------------------------------


async def test_entry_records_every_field_for_a_handler_exception(redis_client: Any, redis_url: str) -> None:
    s = settings_for(redis_url, attempts=2)
    h = HandlerRegistry()
    runs: list[int] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        runs.append(ctx.attempt)
        raise ConnectionError(f"smtp refused {payload.to} on attempt {ctx.attempt}")

    t0 = time.time()
    job_id = await Producer(redis_client, s).enqueue(
        Q, "send-email", EMAIL, trace_id="trace-77", idempotency_key="welcome-a"
    )
    async with running(redis_client, s, h):
        await wait_dlq(redis_client, 1)
    t1 = time.time()

    (d,) = await all_dead(redis_client)
    assert runs == [1, 2]
    assert (d.job_id, d.queue, d.name) == (job_id, Q, "send-email")
    assert d.error_type == "ConnectionError"
    assert d.error == "smtp refused a@example.com on attempt 2"
    assert "Traceback" in d.stack and "ConnectionError: smtp refused a@example.com on attempt 2" in d.stack
    assert d.attempts == 2
    assert t0 - 0.01 <= d.failed_at <= t1 + 0.01
    assert d.payload == EMAIL_FULL
    assert d.trace_id == "trace-77"
    assert d.idempotency_key == "welcome-a"
    assert d.enqueued_at is not None and t0 - 0.01 <= d.enqueued_at <= d.failed_at
    assert json.loads(d.envelope)["id"] == job_id
    # the job record points at its DLQ entry, and the dead job keeps its idempotency key (its TTL)
    rec = await get_job(redis_client, Q, job_id)
    assert rec.state is JobState.DEAD and rec.dlq_id == d.dlq_id
    assert rec.payload == EMAIL_FULL and rec.stack == d.stack  # read from the DLQ entry, stored once
    assert await redis_client.get(keys.idempotency(Q, "welcome-a")) == job_id.encode()
    assert await dlq.get_dead(redis_client, Q, d.dlq_id) == d


async def test_entry_for_a_missing_handler(redis_client: Any, redis_url: str) -> None:
    (job_id,) = await fill_no_handler(redis_client, redis_url, 1)
    (d,) = await all_dead(redis_client)
    assert (d.job_id, d.name, d.error_type, d.attempts) == (job_id, NO_HANDLER_JOB, "NoHandler", 1)
    assert NO_HANDLER_JOB in d.error and d.stack == ""  # nothing ran, so there is no stack
    assert d.payload == {"limit": 1} and d.trace_id == "x-0" and d.idempotency_key is None


# ---- listing -----------------------------------------------------------------------------------


async def test_list_newest_first_with_cursor_paging(redis_client: Any, redis_url: str) -> None:
    job_ids = await fill_no_handler(redis_client, redis_url, 25)
    newest_first = [e.decode() for e, _ in await redis_client.xrevrange(keys.dlq(Q))]
    pages: list[list[dlq.DeadLetter]] = []
    cursor: str | None = None
    while True:
        page = await dlq.list_dead(redis_client, Q, limit=10, cursor=cursor)
        pages.append(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
        assert len(pages) < 5, "paging does not end"
    assert [len(p) for p in pages] == [10, 10, 5]
    seen = [d.dlq_id for p in pages for d in p]
    assert seen == newest_first  # newest first, no duplicates, nothing skipped
    assert [entry_id_order(i) for i in seen] == sorted((entry_id_order(i) for i in seen), reverse=True)
    assert sorted(d.job_id for p in pages for d in p) == sorted(job_ids)
    # a full last page still reports no next cursor
    exact = await dlq.list_dead(redis_client, Q, limit=5, cursor=seen[19])
    assert [d.dlq_id for d in exact.items] == seen[20:] and exact.next_cursor is None
    for first in ("0-0", "0"):  # nothing is older than the smallest id: an empty page, not an error
        empty = await dlq.list_dead(redis_client, Q, cursor=first)
        assert empty.items == [] and empty.next_cursor is None
    with pytest.raises(ValueError):
        await dlq.list_dead(redis_client, Q, limit=0)


async def test_list_filters_by_error_type_and_text(redis_client: Any, redis_url: str) -> None:
    s = settings_for(redis_url, attempts=1)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        raise ValueError(f"Mailbox full for {payload.to}")

    p = Producer(redis_client, s)
    invoices = [
        await p.enqueue(Q, "send-email", {"to": f"u{i}@example.com", "template": "invoice-reminder"})
        for i in range(3)
    ]
    welcomes = [
        await p.enqueue(Q, "send-email", {"to": f"w{i}@example.com", "template": "welcome"}) for i in range(2)
    ]
    orphans = [await p.enqueue(Q, NO_HANDLER_JOB, {"limit": 40 + i}) for i in range(6)]
    async with running(redis_client, s, h):
        await wait_dlq(redis_client, 11)

    async def ids(**filters: Any) -> list[str]:
        page = await dlq.list_dead(redis_client, Q, limit=100, **filters)
        assert page.next_cursor is None
        return sorted(d.job_id for d in page.items)

    assert await ids(error_type="NoHandler") == sorted(orphans)
    assert await ids(error_type="ValueError") == sorted(invoices + welcomes)
    assert await ids(error_type="TypeError") == []
    assert await ids(text="invoice-REMINDER") == sorted(invoices)  # payload text, any case
    assert await ids(text="mailbox full for w1@") == [welcomes[1]]  # error text
    assert await ids(text="mailbox full", error_type="NoHandler") == []
    # a filter pages with a cursor like the unfiltered list does
    first = await dlq.list_dead(redis_client, Q, error_type="NoHandler", limit=4)
    assert len(first.items) == 4 and first.next_cursor
    rest = await dlq.list_dead(redis_client, Q, error_type="NoHandler", limit=4, cursor=first.next_cursor)
    assert len(rest.items) == 2 and rest.next_cursor is None
    assert sorted(d.job_id for d in first.items + rest.items) == sorted(orphans)


async def test_list_filters_by_time_range(redis_client: Any, redis_url: str) -> None:
    early = await fill_no_handler(redis_client, redis_url, 3, tag="early")
    await asyncio.sleep(0.01)  # entry ids carry milliseconds: keep the batches apart
    mid = time.time()
    await asyncio.sleep(0.01)
    late = await fill_no_handler(redis_client, redis_url, 2, tag="late")

    async def ids(**bounds: float) -> list[str]:
        return sorted(d.job_id for d in (await dlq.list_dead(redis_client, Q, **bounds)).items)

    assert await ids(since=mid) == sorted(late)
    assert await ids(until=mid) == sorted(early)
    assert await ids(since=mid - 3600, until=mid) == sorted(early)
    assert await ids(since=mid + 3600) == []
    assert await ids() == sorted(early + late)
    replayed = await dlq.replay(redis_client, Q, since=mid)  # replay honours the range too
    assert replayed.replayed == 2 and await ids() == sorted(early)


async def test_get_dead_unknown_id_and_queue(redis_client: Any, redis_url: str) -> None:
    await fill_no_handler(redis_client, redis_url, 1)
    with pytest.raises(NotFound):
        await dlq.get_dead(redis_client, Q, "1-0")
    with pytest.raises(UnknownQueue):
        await dlq.get_dead(redis_client, "nope:queue", "1-0")
    with pytest.raises(UnknownQueue):
        await dlq.list_dead(redis_client, "nope:queue")


# ---- replay ------------------------------------------------------------------------------------


async def test_replay_one_links_old_and_new_and_runs_once(redis_client: Any, redis_url: str) -> None:
    s = settings_for(redis_url)
    h = HandlerRegistry()
    done: list[tuple[str, int, str | None]] = []
    async with running(redis_client, s, h):
        old_id = await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL, trace_id="tr-1")
        await wait_dlq(redis_client, 1)
        (d,) = await all_dead(redis_client)

        @h.register(Q, "send-email")  # the missing handler ships; the dead job can run again
        async def send(ctx: JobContext, payload: Any) -> dict[str, Any]:
            done.append((ctx.job_id, ctx.attempt, ctx.envelope.replay_of))
            return {"sent_to": payload.to}

        new_id = await dlq.replay_one(redis_client, Q, d.dlq_id)
        assert new_id != old_id
        assert await dlq_len(redis_client) == 0
        with pytest.raises(NotFound):
            await dlq.replay_one(redis_client, Q, d.dlq_id)
        await wait_state(redis_client, new_id, JobState.COMPLETED)

    assert done == [(new_id, 1, old_id)]
    new = await get_job(redis_client, Q, new_id)
    assert new.state is JobState.COMPLETED and new.attempts == 1 and new.result == {"sent_to": EMAIL["to"]}
    assert new.replay_of == old_id and new.payload == EMAIL_FULL and new.trace_id == "tr-1"
    old = await get_job(redis_client, Q, old_id)
    assert old.state is JobState.DEAD and old.replayed_as == new_id
    assert int((await redis_client.hgetall(keys.counters(Q)))[b"replayed"]) == 1
    assert await dlq_len(redis_client) == 0 and await redis_client.xlen(keys.stream(Q)) == 0


async def test_concurrent_replays_of_one_entry_enqueue_once(redis_client: Any, redis_url: str) -> None:
    await fill_no_handler(redis_client, redis_url, 1)
    (d,) = await all_dead(redis_client)
    outcomes = await asyncio.gather(
        *(dlq.replay_one(redis_client, Q, d.dlq_id) for _ in range(5)), return_exceptions=True
    )
    new_ids = [o for o in outcomes if isinstance(o, str)]
    assert len(new_ids) == 1
    assert all(isinstance(o, NotFound) for o in outcomes if not isinstance(o, str))
    entries = await redis_client.xrange(keys.stream(Q))
    assert [f[b"i"].decode() for _, f in entries] == new_ids


async def test_replay_many_filtered_limited_oldest_first(redis_client: Any, redis_url: str) -> None:
    s = settings_for(redis_url, attempts=1)
    h = HandlerRegistry()
    ran: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        raise ValueError("bounced")

    p = Producer(redis_client, s)
    async with running(redis_client, s, h):
        for i in range(4):  # one at a time, so DLQ order is enqueue order
            await p.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1})
            await wait_dlq(redis_client, i + 1)
        for _ in range(3):
            await p.enqueue(Q, "send-email", EMAIL)
        await wait_dlq(redis_client, 7)
        oldest_first = [d for d in reversed(await all_dead(redis_client)) if d.error_type == "NoHandler"]
        assert [d.payload["limit"] for d in oldest_first] == [1, 2, 3, 4]

        @h.register(Q, NO_HANDLER_JOB)
        async def process(ctx: JobContext, payload: Any) -> dict[str, int]:
            ran.append(ctx.job_id)
            return {"limit": payload.limit}

        r = await dlq.replay(redis_client, Q, limit=2, error_type="NoHandler")
        assert (r.replayed, r.skipped, len(r.job_ids)) == (2, 0, 2)
        for new_id in r.job_ids:
            await wait_state(redis_client, new_id, JobState.COMPLETED)
        replay_of = [(await get_job(redis_client, Q, i)).replay_of for i in r.job_ids]
        assert replay_of == [d.job_id for d in oldest_first[:2]]
        assert sorted(ran) == sorted(r.job_ids)

        left = await all_dead(redis_client)
        assert sorted(d.job_id for d in left if d.error_type == "NoHandler") == sorted(
            d.job_id for d in oldest_first[2:]
        )
        assert sum(d.error_type == "ValueError" for d in left) == 3

        rest = await dlq.replay(redis_client, Q, error_type="NoHandler")  # no limit: every match
        assert rest.replayed == 2
        for new_id in rest.job_ids:
            await wait_state(redis_client, new_id, JobState.COMPLETED)
        assert [d.error_type for d in await all_dead(redis_client)] == ["ValueError"] * 3
        assert (await dlq.replay(redis_client, Q, error_type="NoHandler")).replayed == 0


async def test_forged_entry_without_envelope_is_skipped_and_kept(redis_client: Any, redis_url: str) -> None:
    forged = (
        await redis_client.xadd(
            keys.dlq(Q),
            {
                "id": "entry-0-1",
                "q": Q,
                "n": "(unknown)",
                "et": "InvalidEnvelope",
                "em": "j: Field required",
                "es": "",
                "a": "1",
                "f": str(int(time.time() * 1000)),
                "tr": "",
            },
        )
    ).decode()
    real = await fill_no_handler(redis_client, redis_url, 2)

    fd = await dlq.get_dead(redis_client, Q, forged)
    assert (fd.job_id, fd.error_type, fd.attempts, fd.envelope) == ("entry-0-1", "InvalidEnvelope", 1, "")
    with pytest.raises(NotFound):
        await dlq.replay_one(redis_client, Q, forged)

    # the forged entry is the oldest: it must neither count as replayed nor use up the limit
    r = await dlq.replay(redis_client, Q, limit=2)
    assert (r.replayed, r.skipped) == (2, 1)
    assert sorted([(await get_job(redis_client, Q, i)).replay_of for i in r.job_ids]) == sorted(real)
    assert [d.dlq_id for d in await all_dead(redis_client)] == [forged]
    again = await dlq.replay(redis_client, Q)
    assert (again.replayed, again.skipped) == (0, 1)
    assert await dlq_len(redis_client) == 1


# ---- delete and purge --------------------------------------------------------------------------


async def test_delete_one(redis_client: Any, redis_url: str) -> None:
    await fill_no_handler(redis_client, redis_url, 3)
    victim, *others = await all_dead(redis_client)
    await dlq.delete(redis_client, Q, victim.dlq_id)
    assert [d.dlq_id for d in await all_dead(redis_client)] == [d.dlq_id for d in others]
    with pytest.raises(NotFound):
        await dlq.delete(redis_client, Q, victim.dlq_id)
    with pytest.raises(NotFound):
        await dlq.replay_one(redis_client, Q, victim.dlq_id)
    assert await redis_client.xlen(keys.stream(Q)) == 0


async def test_purge_needs_the_queue_name(redis_client: Any, redis_url: str) -> None:
    await fill_no_handler(redis_client, redis_url, 4)
    for wrong in ("", "yes", "email", "search:index"):
        with pytest.raises(ConfirmationRequired):
            await dlq.purge(redis_client, Q, wrong)
        assert await dlq_len(redis_client) == 4
    assert await dlq.purge(redis_client, Q, Q) == 4
    assert await dlq_len(redis_client) == 0
    assert (await dlq.list_dead(redis_client, Q)).items == []
    assert await dlq.purge(redis_client, Q, Q) == 0
