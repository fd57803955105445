"""Job records: states through a real worker, listing by state with a cursor and search, retry now,
remove, retention, and the per-queue counts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from support import fast_settings, running, wait_for
from tq import config, keys
from tq.envelope import JobState
from tq.errors import NotFound, TqError, UnknownQueue
from tq.handlers import HandlerRegistry, JobContext
from tq.jobs import counts, get_job, list_jobs, remove_job, retry_job
from tq.producer import Producer
from tq.registry import get_queue
from tq.worker import Worker

Q = "email:send"
NO_HANDLER_JOB = "process-email-queue"  # never given a handler here: such jobs go to the DLQ


def email(n: int, template: str = "welcome") -> dict[str, Any]:
    return {"to": f"user{n}@example.com", "template": template}


async def wait_state(client: Any, job_id: str, state: JobState) -> None:
    async def reached() -> bool:
        try:
            return (await get_job(client, Q, job_id)).state is state
        except NotFound:
            return False

    await wait_for(reached, what=f"job {job_id} {state.value}")


async def page_through(client: Any, state: JobState, limit: int, **opts: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await list_jobs(client, Q, state, cursor=cursor, limit=limit, **opts)
        assert all(j.state is state for j in page.items)
        pages.append([j.id for j in page.items])
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 20, "paging does not end"


class Gate:
    """A handler that holds every job until released, and records what ran."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []

    async def __call__(self, ctx: JobContext, payload: Any) -> dict[str, Any]:
        self.started.append(ctx.job_id)
        await self.release.wait()
        return {"sent": True, "to": payload.to}


# ---- a job's record through its states ---------------------------------------------------------


async def test_waiting_active_completed(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    gate = Gate()
    h = HandlerRegistry()
    h.add(Q, "send-email", gate)
    t0 = time.time()
    job_id = await Producer(redis_client, s).enqueue(
        Q, "send-email", email(1), trace_id="tr-9", idempotency_key="k-1"
    )

    rec = await get_job(redis_client, Q, job_id)  # no consumer group exists yet
    assert rec.state is JobState.WAITING and rec.attempts == 0 and rec.entry_id
    assert rec.payload["to"] == "user1@example.com" and rec.name == "send-email"
    assert (rec.trace_id, rec.idempotency_key) == ("tr-9", "k-1")
    assert rec.enqueued_at is not None and t0 - 0.01 <= rec.enqueued_at <= time.time() + 0.01
    assert rec.started_at is None and rec.finished_at is None and rec.result is None
    assert rec.timeline() == [{"at": rec.enqueued_at, "event": "enqueued"}]

    async with running(redis_client, s, h) as worker:
        await wait_state(redis_client, job_id, JobState.ACTIVE)  # delivered: its handler starts next
        await wait_for(lambda: gate.started == [job_id], what="its handler started")
        assert [j.id for j in (await list_jobs(redis_client, Q, JobState.ACTIVE)).items] == [job_id]
        assert (await list_jobs(redis_client, Q, JobState.WAITING)).items == []
        await asyncio.sleep(0.02)  # a measurable duration
        gate.release.set()
        await wait_state(redis_client, job_id, JobState.COMPLETED)

    rec = await get_job(redis_client, Q, job_id)
    assert rec.attempts == 1 and rec.consumer == worker.consumer_id and rec.entry_id is None
    assert rec.result == {"sent": True, "to": "user1@example.com"}
    assert rec.enqueued_at is not None and rec.started_at is not None and rec.finished_at is not None
    assert rec.enqueued_at <= rec.started_at + 0.002 and rec.started_at <= rec.finished_at
    assert rec.duration_ms is not None and rec.duration_ms >= 20
    assert rec.duration_ms <= (rec.finished_at - rec.started_at) * 1000 + 2
    assert rec.error_type is None and rec.failures == [] and rec.due_at is None
    assert [e["event"] for e in rec.timeline()] == ["enqueued", "completed"]
    assert rec.timeline()[-1] == {"at": rec.finished_at, "event": "completed", "attempt": 1}
    assert [j.id for j in (await list_jobs(redis_client, Q, JobState.COMPLETED)).items] == [job_id]


async def test_failed_with_error_and_due_time_then_dead(redis_client: Any, redis_url: str) -> None:
    # a long backoff keeps the job in "failed" until retry_job makes it due now
    slow_retry = {"attempts": 2, "initial_s": 30, "max_s": 60, "jitter": 0}
    s = fast_settings(redis_url, queues={Q: {"retry": slow_retry}})
    h = HandlerRegistry()
    attempts: list[int] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"relay said no (attempt {ctx.attempt})")

    job_id = await Producer(redis_client, s).enqueue(Q, "send-email", email(2))
    async with running(redis_client, s, h):
        await wait_state(redis_client, job_id, JobState.FAILED)
        rec = await get_job(redis_client, Q, job_id)
        assert rec.attempts == 1
        assert (rec.error_type, rec.error) == ("RuntimeError", "relay said no (attempt 1)")
        assert rec.stack and "RuntimeError: relay said no (attempt 1)" in rec.stack
        assert rec.finished_at is not None and rec.due_at is not None
        assert rec.due_at == pytest.approx(rec.finished_at + 30, abs=1)
        assert [(f["attempt"], f["type"]) for f in rec.failures] == [(1, "RuntimeError")]
        assert [e["event"] for e in rec.timeline()] == ["enqueued", "attempt failed"]
        assert [j.id for j in (await list_jobs(redis_client, Q, JobState.FAILED)).items] == [job_id]
        assert (await list_jobs(redis_client, Q, JobState.DELAYED)).items == []
        assert (await counts(redis_client, Q))["delayed"] == 1

        assert await retry_job(redis_client, Q, job_id) == job_id  # due now instead of in 30 s
        await wait_state(redis_client, job_id, JobState.DEAD)

    assert attempts == [1, 2]
    rec = await get_job(redis_client, Q, job_id)
    assert rec.attempts == 2 and rec.error == "relay said no (attempt 2)" and rec.due_at is None
    assert rec.dlq_id == (await redis_client.xrange(keys.dlq(Q)))[0][0].decode()
    assert [(f["attempt"], f["message"]) for f in rec.failures] == [
        (1, "relay said no (attempt 1)"),
        (2, "relay said no (attempt 2)"),
    ]
    assert [e["event"] for e in rec.timeline()] == ["enqueued", "attempt failed", "attempt failed", "dead"]
    assert [j.id for j in (await list_jobs(redis_client, Q, JobState.DEAD)).items] == [job_id]
    assert await redis_client.zcard(keys.delayed(Q)) == 0


# ---- retry and remove --------------------------------------------------------------------------


async def test_retry_delayed_job_runs_now(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    ran: list[tuple[str, int]] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        ran.append((ctx.job_id, ctx.attempt))

    p = Producer(redis_client, s)
    job_id = await p.enqueue(Q, "send-email", email(3), delay=60)
    rec = await get_job(redis_client, Q, job_id)
    assert rec.state is JobState.DELAYED and rec.due_at == pytest.approx(time.time() + 60, abs=2)
    waiting_id = await p.enqueue(Q, "send-email", email(4))
    with pytest.raises(TqError, match="waiting"):
        await retry_job(redis_client, Q, waiting_id)
    with pytest.raises(NotFound):
        await retry_job(redis_client, Q, "no-such-job")

    async with running(redis_client, s, h):
        await wait_state(redis_client, waiting_id, JobState.COMPLETED)
        assert (await get_job(redis_client, Q, job_id)).state is JobState.DELAYED  # not due for a minute
        assert await retry_job(redis_client, Q, job_id) == job_id
        await wait_state(redis_client, job_id, JobState.COMPLETED)
    assert sorted(ran) == sorted([(waiting_id, 1), (job_id, 1)])
    with pytest.raises(TqError, match="completed"):
        await retry_job(redis_client, Q, job_id)


async def test_retry_dead_job_replays_once(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    ran: list[str] = []
    async with running(redis_client, s, h):
        old_id = await Producer(redis_client, s).enqueue(Q, NO_HANDLER_JOB, {"limit": 7})
        await wait_state(redis_client, old_id, JobState.DEAD)

        @h.register(Q, NO_HANDLER_JOB)
        async def process(ctx: JobContext, payload: Any) -> None:
            ran.append(ctx.job_id)

        new_id = await retry_job(redis_client, Q, old_id)
        assert new_id != old_id
        await wait_state(redis_client, new_id, JobState.COMPLETED)
        with pytest.raises(NotFound):  # its DLQ entry is gone: the dead job cannot be replayed twice
            await retry_job(redis_client, Q, old_id)
    assert ran == [new_id]
    assert (await get_job(redis_client, Q, old_id)).replayed_as == new_id
    assert (await get_job(redis_client, Q, new_id)).replay_of == old_id


async def test_remove_waiting_and_delayed_jobs_never_run(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    ran: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        ran.append(ctx.job_id)

    p = Producer(redis_client, s)
    doomed = await p.enqueue(Q, "send-email", email(1))
    kept = await p.enqueue(Q, "send-email", email(2))
    doomed_later = await p.enqueue(Q, "send-email", email(3), delay=0.2)
    kept_later = await p.enqueue(Q, "send-email", email(4), delay=0.3)

    assert await remove_job(redis_client, Q, doomed) is JobState.WAITING
    assert await remove_job(redis_client, Q, doomed_later) is JobState.DELAYED
    for gone in (doomed, doomed_later):
        with pytest.raises(NotFound):
            await get_job(redis_client, Q, gone)
        with pytest.raises(NotFound):
            await remove_job(redis_client, Q, gone)
    assert await redis_client.xlen(keys.stream(Q)) == 1
    assert await redis_client.zrange(keys.delayed(Q), 0, -1) == [kept_later.encode()]

    async with running(redis_client, s, h):
        await wait_state(redis_client, kept_later, JobState.COMPLETED)  # due after the removed one
        await wait_state(redis_client, kept, JobState.COMPLETED)
    assert sorted(ran) == sorted([kept, kept_later])


async def test_remove_refuses_an_active_job(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    gate = Gate()
    h = HandlerRegistry()
    h.add(Q, "send-email", gate)
    job_id = await Producer(redis_client, s).enqueue(Q, "send-email", email(5))
    async with running(redis_client, s, h):
        await wait_state(redis_client, job_id, JobState.ACTIVE)
        with pytest.raises(TqError, match="running"):
            await remove_job(redis_client, Q, job_id)
        assert (await get_job(redis_client, Q, job_id)).state is JobState.ACTIVE
        gate.release.set()
        await wait_state(redis_client, job_id, JobState.COMPLETED)
    assert await remove_job(redis_client, Q, job_id) is JobState.COMPLETED
    assert await redis_client.zcard(keys.completed_index(Q)) == 0


# ---- listing by state --------------------------------------------------------------------------


async def test_list_waiting_pages_oldest_first_and_searches(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    ids = [
        await p.enqueue(Q, "send-email", email(i, "receipt-needle" if i % 5 == 0 else "welcome"))
        for i in range(25)
    ]
    pages = await page_through(redis_client, JobState.WAITING, 10)
    assert [len(pg) for pg in pages] == [10, 10, 5]
    assert [i for pg in pages for i in pg] == ids  # oldest first, no duplicates, none skipped

    needles = [ids[i] for i in range(0, 25, 5)]
    assert await page_through(redis_client, JobState.WAITING, 3, search="RECEIPT-needle") == [
        needles[:3],
        needles[3:],
    ]
    assert await page_through(redis_client, JobState.WAITING, 10, search=ids[7]) == [[ids[7]]]  # by id
    assert await page_through(redis_client, JobState.WAITING, 10, search="user24@") == [[ids[24]]]
    assert await page_through(redis_client, JobState.WAITING, 10, search="nothing-like-this") == [[]]
    for state in (JobState.ACTIVE, JobState.DELAYED, JobState.FAILED, JobState.COMPLETED, JobState.DEAD):
        assert await page_through(redis_client, state, 10) == [[]]
    with pytest.raises(ValueError):
        await list_jobs(redis_client, Q, "bogus")
    with pytest.raises(ValueError):
        await list_jobs(redis_client, Q, JobState.WAITING, limit=0)
    with pytest.raises(UnknownQueue):
        await list_jobs(redis_client, "nope:queue", JobState.WAITING)


async def test_list_delayed_soonest_first(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    by_delay = {d: await p.enqueue(Q, "send-email", email(d), delay=d) for d in (300, 100, 200, 400, 50)}
    pages = await page_through(redis_client, JobState.DELAYED, 2)
    assert pages == [[by_delay[50], by_delay[100]], [by_delay[200], by_delay[300]], [by_delay[400]]]
    page = await list_jobs(redis_client, Q, JobState.DELAYED, search="user200@")
    assert [j.id for j in page.items] == [by_delay[200]] and page.items[0].due_at is not None


async def test_list_active_completed_and_dead_pages(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    gate = Gate()
    h = HandlerRegistry()
    h.add(Q, "send-email", gate)
    p = Producer(redis_client, s)
    sends = [await p.enqueue(Q, "send-email", email(i, "digest" if i < 4 else "welcome")) for i in range(12)]
    orphans = [await p.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1}) for i in range(3)]
    async with running(redis_client, s, h):
        for job_id in orphans:
            await wait_state(redis_client, job_id, JobState.DEAD)
        await wait_for(lambda: len(gate.started) == 12, what="12 jobs running")
        active = await page_through(redis_client, JobState.ACTIVE, 5)
        assert [len(pg) for pg in active] == [5, 5, 2]
        assert sorted(i for pg in active for i in pg) == sorted(sends)
        gate.release.set()
        for job_id in sends:
            await wait_state(redis_client, job_id, JobState.COMPLETED)

    completed = await page_through(redis_client, JobState.COMPLETED, 5)
    assert [len(pg) for pg in completed] == [5, 5, 2]
    flat = [i for pg in completed for i in pg]
    assert sorted(flat) == sorted(sends) and len(set(flat)) == 12
    finished = [(await get_job(redis_client, Q, i)).finished_at or 0 for i in flat]
    assert finished == sorted(finished, reverse=True)  # newest first
    digests = await page_through(redis_client, JobState.COMPLETED, 3, search="digest")
    assert [len(pg) for pg in digests] == [3, 1]
    assert sorted(i for pg in digests for i in pg) == sorted(sends[:4])

    dead = await page_through(redis_client, JobState.DEAD, 2)
    assert [len(pg) for pg in dead] == [2, 1]
    assert sorted(i for pg in dead for i in pg) == sorted(orphans)
    assert await page_through(redis_client, JobState.DEAD, 10, search="nohandler") == [
        [i for pg in dead for i in pg]
    ]  # error type is searchable


# ---- retention and counts ----------------------------------------------------------------------


async def test_retention_keeps_the_newest_completed_records(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, queues={Q: {"retention_completed": 5}})
    h = HandlerRegistry()
    order: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        order.append(ctx.job_id)

    p = Producer(redis_client, s)
    ids: list[str] = []
    async with running(redis_client, s, h):
        for i in range(20):  # one at a time, so completion order is known
            ids.append(await p.enqueue(Q, "send-email", email(i)))
            await wait_state(redis_client, ids[-1], JobState.COMPLETED)
    assert order == ids
    assert int(await redis_client.hget(keys.counters(Q), "completed")) == 20
    kept = sorted(i.decode() for i in await redis_client.zrange(keys.completed_index(Q), 0, -1))
    assert kept == sorted(ids[-5:])
    for job_id in ids[-5:]:
        assert await redis_client.exists(keys.job(Q, job_id))
    for job_id in ids[:-5]:
        assert not await redis_client.exists(keys.job(Q, job_id))
        with pytest.raises(NotFound, match="retention"):
            await get_job(redis_client, Q, job_id)
    assert sorted(j.id for j in (await list_jobs(redis_client, Q, JobState.COMPLETED)).items) == kept
    assert (await counts(redis_client, Q))["completed"] == 20  # a total, not the records kept


async def test_counts_by_state(redis_client: Any, redis_url: str) -> None:
    empty = await counts(redis_client, Q)  # nothing exists yet: no stream, no group
    assert {k: empty[k] for k in ("waiting", "active", "delayed", "completed", "dead", "paused")} == {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "completed": 0,
        "dead": 0,
        "paused": False,
    }
    with pytest.raises(UnknownQueue):
        await counts(redis_client, "nope:queue")

    s = fast_settings(redis_url)
    gate = Gate()
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        if payload.template == "hold":
            await gate(ctx, payload)

    p = Producer(redis_client, s)
    worker = Worker(redis_client, [get_queue(Q)], h, s)
    await worker.start()
    try:
        done = [await p.enqueue(Q, "send-email", email(i)) for i in range(3)]
        dead = [await p.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1}) for i in range(2)]
        held = await p.enqueue(Q, "send-email", email(9, "hold"))
        for job_id in done:
            await wait_state(redis_client, job_id, JobState.COMPLETED)
        for job_id in dead:
            await wait_state(redis_client, job_id, JobState.DEAD)
        await wait_state(redis_client, held, JobState.ACTIVE)
    finally:
        # the held job outlives the grace period: it stays delivered and unacknowledged (active)
        await worker.stop(grace_s=0.05)
    assert (await get_job(redis_client, Q, held)).state is JobState.ACTIVE

    waiting = [await p.enqueue(Q, "send-email", email(20 + i)) for i in range(2)]
    await p.enqueue(Q, "send-email", email(30), delay=60)
    await config.set_paused(redis_client, Q, True)
    c = await counts(redis_client, Q)
    assert {k: c[k] for k in ("waiting", "active", "delayed", "completed", "dead", "paused")} == {
        "waiting": 2,
        "active": 1,
        "delayed": 1,
        "completed": 3,
        "dead": 2,
        "paused": True,
    }
    assert c["enqueued"] == 3 + 2 + 1 + 2 + 1 and c["consumers"] == 0
    assert sorted(j.id for j in (await list_jobs(redis_client, Q, JobState.WAITING)).items) == sorted(waiting)

    await config.set_paused(redis_client, Q, False)
    assert (await counts(redis_client, Q))["paused"] is False


def test_timeline_gives_every_step_in_seconds() -> None:
    """A stored failure's ``at`` is epoch ms; the timeline (the CLI's and the admin API's) says
    seconds for every step, the failure's other fields kept."""
    from tq.jobs import JobRecord

    rec = JobRecord(
        id="j",
        queue="email:send",
        name="send-email",
        state=JobState.DEAD,
        attempts=2,
        payload={},
        enqueued_at=1_700_000_000.0,
        finished_at=1_700_000_003.0,
        failures=[
            {"at": 1_700_000_001_500, "attempt": 1, "type": "ValueError", "message": "bad"},
            {"at": 1_700_000_003_000, "attempt": 2, "type": "ValueError", "message": "bad"},
        ],
    )
    steps = rec.timeline()
    assert [s["at"] for s in steps] == [1_700_000_000.0, 1_700_000_001.5, 1_700_000_003.0, 1_700_000_003.0]
    assert [s["event"] for s in steps] == ["enqueued", "attempt failed", "attempt failed", "dead"]
    assert steps[1]["type"] == "ValueError" and steps[1]["attempt"] == 1
    assert rec.failures[0]["at"] == 1_700_000_001_500  # the record itself is left as stored
