"""Cancelling jobs against real redis-servers (issue 18, "Progress and cancel"): waiting and delayed
jobs are removed before they run; a running job is cancelled on the worker process that runs it
(its handler cleans up), ends ``cancelled`` - not retried, not dead-lettered - counted, published
and audited; the durable marker reaches a process that missed the control message; the races
(cancel between fetch and start, cancel as the job completes) and unknown or finished ids."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support import (
    cancel_worker,
    fast_settings,
    helper_command,
    helper_env,
    published_events,
    running,
    tiny_retry,
    wait_for,
)
from tq import jobs, keys
from tq.cancel import CancelOutcome, JobFinished, cancel_job, wait_settled
from tq.envelope import EVENT_DATA_MODELS, CancelledData, Event, JobState
from tq.errors import NotFound
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer
from tq.registry import unregister_queue

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}
CQ = cancel_worker.QUEUE


async def _counters(client: Any, queue: str = Q) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await client.hgetall(keys.counters(queue))).items()}


async def _audit(client: Any, queue: str) -> list[dict[str, str]]:
    rows = await client.xrange(keys.audit(queue))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _eid, fields in rows]


# ---- without a worker: waiting, delayed, unknown ---------------------------------------------
async def test_cancel_waiting_and_delayed_jobs_removes_them(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, audit_enabled=True)
    p = Producer(redis_client, s)
    waiting = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="k-wait")
    delayed = await p.enqueue(Q, "send-email", EMAIL, delay=3600)
    async with published_events(redis_client) as seen:
        done = await cancel_job(redis_client, Q, waiting, s)
        assert (done.outcome, done.was) == (CancelOutcome.REMOVED, JobState.WAITING)
        done = await cancel_job(redis_client, Q, delayed, s)
        assert (done.outcome, done.was) == (CancelOutcome.REMOVED, JobState.DELAYED)
        await asyncio.sleep(0.1)
    assert await redis_client.xlen(keys.stream(Q)) == 0
    assert await redis_client.zcard(keys.delayed(Q)) == 0
    for job_id in (waiting, delayed):
        with pytest.raises(NotFound):
            await jobs.get_job(redis_client, Q, job_id)
    # the idempotency key stays bound, as for a removal: the same key gives the cancelled job's id
    assert await p.enqueue(Q, "send-email", EMAIL, idempotency_key="k-wait") == waiting
    assert (await _counters(redis_client)).get("cancelled") == 2
    cancelled = [e for e in seen if e["type"] == "job.cancelled"]
    for e in cancelled:  # what the cancel script publishes passes the admin's validation
        CancelledData.model_validate(Event.model_validate(e).data)
    assert [(e["job_id"], e["data"]["was"]) for e in cancelled] == [
        (waiting, "waiting"),
        (delayed, "delayed"),
    ]
    rows = await _audit(redis_client, Q)
    assert [(r["id"], r["a"], r["o"]) for r in rows] == [
        (waiting, "job.cancelled", "cancelled"),
        (delayed, "job.cancelled", "cancelled"),
    ]
    # a second cancel of a removed job: unknown now
    with pytest.raises(NotFound):
        await cancel_job(redis_client, Q, waiting, s)


async def test_cancel_of_unknown_or_finished_job_is_refused(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        return None

    with pytest.raises(NotFound, match="no job nope"):
        await cancel_job(redis_client, Q, "nope", s)
    p = Producer(redis_client, s)
    async with running(redis_client, s, h):
        job_id = await p.enqueue(Q, "send-email", EMAIL)
        await wait_for(
            lambda: _state_is(redis_client, Q, job_id, JobState.COMPLETED), what="the job completed"
        )
    with pytest.raises(JobFinished, match="already completed"):
        await cancel_job(redis_client, Q, job_id, s)
    assert (await _counters(redis_client)).get("cancelled", 0) == 0


async def _state_is(client: Any, queue: str, job_id: str, state: JobState) -> bool:
    return (await jobs.get_job(client, queue, job_id)).state is state


# ---- in one process: running, fetched-not-started, the completion race ----------------------------
async def test_cancel_a_running_job_in_process(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, audit_enabled=True)
    h = HandlerRegistry()
    started, cleaned = asyncio.Event(), []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append(ctx.job_id)

    p = Producer(redis_client, s)
    async with published_events(redis_client) as seen, running(redis_client, s, h) as worker:
        job_id = await p.enqueue(Q, "send-email", EMAIL)
        await asyncio.wait_for(started.wait(), 10)
        done = await cancel_job(redis_client, Q, job_id, s)
        assert done.outcome is CancelOutcome.REQUESTED
        assert await wait_settled(redis_client, Q, job_id, 10) is JobState.CANCELLED
        # the slot that ran it is fine: the next job runs and completes
        started.clear()
        cleaned.clear()
        h.add(Q, "send-email", _quick)
        nxt = await p.enqueue(Q, "send-email", EMAIL)
        assert await wait_settled(redis_client, Q, nxt, 10) is JobState.COMPLETED
        await asyncio.sleep(0.1)
        assert not worker.cancels.running and not worker.cancels.cancelling
    rec = await jobs.get_job(redis_client, Q, job_id)
    assert rec.state is JobState.CANCELLED and rec.attempts == 1 and rec.finished_at
    assert rec.timeline()[-1]["event"] == "cancelled"
    c = await _counters(redis_client)
    assert c.get("cancelled") == 1 and c.get("retried", 0) == 0 and c.get("dead", 0) == 0
    assert await redis_client.zcard(keys.delayed(Q)) == 0 and await redis_client.xlen(keys.dlq(Q)) == 0
    assert not await redis_client.hlen(keys.cancels(Q)), "the marker is dropped at settle"
    assert [e["data"] for e in seen if e["type"] == "job.cancelled"] == [{"was": "active", "attempt": 1}]
    for e in seen:  # what the settle script publishes passes the admin's validation (tq.envelope)
        event = Event.model_validate(e)
        model = EVENT_DATA_MODELS.get(event.type)
        if model is not None:
            model.model_validate(event.data)
    assert [r["o"] for r in await _audit(redis_client, Q) if r["id"] == job_id] == ["cancelled"]
    listed = await jobs.list_jobs(redis_client, Q, JobState.CANCELLED)
    assert [j.id for j in listed.items] == [job_id]


async def _quick(ctx: JobContext, payload: SendEmail) -> None:
    return None


async def test_cancel_between_fetch_and_start_never_runs(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, queues={Q: {"concurrency": 1}})
    h = HandlerRegistry()
    release = asyncio.Event()
    ran: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        ran.append(ctx.job_id)
        if len(ran) == 1:
            await release.wait()

    p = Producer(redis_client, s)
    async with running(redis_client, s, h):
        first = await p.enqueue(Q, "send-email", EMAIL)
        await wait_for(lambda: ran == [first], what="the first job runs")
        second = await p.enqueue(Q, "send-email", EMAIL)

        async def fetched() -> bool:  # delivered to the worker (pending) while the only slot is busy
            return int((await redis_client.xpending(keys.stream(Q), keys.GROUP))["pending"]) == 2

        await wait_for(fetched, what="the second job fetched")
        done = await cancel_job(redis_client, Q, second, s)
        assert done.outcome is CancelOutcome.REQUESTED  # delivered: the worker holds it
        await asyncio.sleep(0.2)  # the control message arrives before the slot frees
        release.set()
        assert await wait_settled(redis_client, Q, second, 10) is JobState.CANCELLED
        assert await wait_settled(redis_client, Q, first, 10) is JobState.COMPLETED
    assert ran == [first], "the cancelled job never ran"


async def test_cancel_racing_completion_has_one_outcome(redis_client: Any, redis_url: str) -> None:
    """Cancels aimed at the moment jobs end: each job ends exactly once, completed or cancelled, and
    its record, counters, events and audit agree."""
    s = fast_settings(redis_url, audit_enabled=True, queues={Q: {"concurrency": 4}})
    h = HandlerRegistry()
    started: dict[str, asyncio.Event] = {}

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        started.setdefault(ctx.job_id, asyncio.Event()).set()
        await asyncio.sleep(0.02)

    n = 40
    p = Producer(redis_client, s)
    rng = random.Random(7)
    refused = 0
    async with published_events(redis_client) as seen, running(redis_client, s, h):
        ids = []
        for _ in range(n):
            job_id = await p.enqueue(Q, "send-email", EMAIL)
            ids.append(job_id)
            await asyncio.wait_for(started.setdefault(job_id, asyncio.Event()).wait(), 10)
            await asyncio.sleep(rng.uniform(0.0, 0.04))  # before, at or after its end (20 ms)
            try:
                await cancel_job(redis_client, Q, job_id, s)
            except JobFinished:
                refused += 1
        finals = {j: await wait_settled(redis_client, Q, j, 10) for j in ids}
        await asyncio.sleep(0.3)
    assert set(finals.values()) <= {JobState.COMPLETED, JobState.CANCELLED}, finals
    by_state = {
        st: sum(1 for v in finals.values() if v is st) for st in (JobState.COMPLETED, JobState.CANCELLED)
    }
    assert by_state[JobState.CANCELLED] > 0 and by_state[JobState.COMPLETED] > 0, by_state
    assert by_state[JobState.COMPLETED] >= refused, "a refused cancel means the job had completed"
    c = await _counters(redis_client)
    assert c.get("completed", 0) == by_state[JobState.COMPLETED]
    assert c.get("cancelled", 0) == by_state[JobState.CANCELLED]
    assert c.get("retried", 0) == 0 and c.get("dead", 0) == 0
    ends = {}
    for e in seen:
        if e["type"] in ("job.completed", "job.cancelled"):
            assert e["job_id"] not in ends, f"two outcomes for {e['job_id']}"
            ends[e["job_id"]] = e["type"]
    audit = {}
    for r in await _audit(redis_client, Q):
        assert r["id"] not in audit, f"two audit rows for {r['id']}"
        audit[r["id"]] = r["o"]
    for j, st in finals.items():
        assert ends[j] == f"job.{st.value}" and audit[j] == st.value, (j, st, ends.get(j), audit.get(j))


async def test_cancel_after_the_handler_returned_loses_to_completion(
    redis_client: Any, redis_url: str
) -> None:
    """The cancel lands after the handler returned and before its outcome is settled: the job is
    recorded completed (only), and the cancel marker is dropped by the next poll."""
    s = fast_settings(redis_url, audit_enabled=True, queues={Q: {"visibility_timeout_s": 0.6}})
    h = HandlerRegistry()
    returned: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        returned.append(ctx.job_id)

    p = Producer(redis_client, s)
    async with published_events(redis_client) as seen, running(redis_client, s, h) as worker:
        runner = worker.runners[Q]
        async with runner._flushing:  # the settler waits: the outcome stays in memory
            job_id = await p.enqueue(Q, "send-email", EMAIL)
            await wait_for(lambda: returned == [job_id], what="the handler returned")
            await asyncio.sleep(0.05)
            done = await cancel_job(redis_client, Q, job_id, s)
            assert done.outcome is CancelOutcome.REQUESTED  # still pending: it may be running
            await asyncio.sleep(0.1)
        assert await wait_settled(redis_client, Q, job_id, 10) is JobState.COMPLETED

        async def marker_dropped() -> bool:
            return not await redis_client.hexists(keys.cancels(Q), job_id)

        await wait_for(marker_dropped, timeout=5, what="the stale marker dropped")
    assert (await _counters(redis_client)).get("cancelled", 0) == 0
    assert [e["type"] for e in seen if e.get("job_id") == job_id][-1] == "job.completed"
    assert not [e for e in seen if e["type"] == "job.cancelled"]
    assert [r["o"] for r in await _audit(redis_client, Q) if r["id"] == job_id] == ["completed"]
    with pytest.raises(JobFinished):
        await cancel_job(redis_client, Q, job_id, s)


# ---- two worker processes ----------------------------------------------------------------------
@contextmanager
def workers(url: str, *args: tuple[str, ...]) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [
        subprocess.Popen(
            helper_command("cancel_worker", url, *a), stdout=subprocess.PIPE, text=True, env=helper_env()
        )
        for a in args
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY", "a cancel worker did not start"
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


async def _cancel_on_other_process(redis_client: Any, redis_url: str, *worker_args: tuple[str, ...]) -> str:
    cancel_worker.register()
    try:
        return await _cancel_on_registered(redis_client, redis_url, *worker_args)
    finally:  # the registry is process-wide: later tests see only the product's queues
        unregister_queue(CQ)


async def _cancel_on_registered(redis_client: Any, redis_url: str, *worker_args: tuple[str, ...]) -> str:
    s = cancel_worker.settings(redis_url)
    p = Producer(redis_client, s)
    with workers(redis_url, *worker_args) as procs:
        job_id = await p.enqueue(CQ, "slow", {"sleep_s": 60})

        async def started() -> bool:
            return bool(await redis_client.hget(cancel_worker.STARTED, job_id))

        await wait_for(started, timeout=15, what="the job started on a worker process")
        owner = (await redis_client.hget(cancel_worker.STARTED, job_id)).decode()

        async def reported() -> bool:
            return (await jobs.get_job(redis_client, CQ, job_id)).progress is not None

        await wait_for(reported, timeout=5, what="progress on the record")
        began = time.monotonic()
        done = await cancel_job(redis_client, CQ, job_id, s)
        assert done.outcome is CancelOutcome.REQUESTED
        assert await wait_settled(redis_client, CQ, job_id, 15) is JobState.CANCELLED
        took = time.monotonic() - began
        assert all(proc.poll() is None for proc in procs), "a worker process died"
        assert (await redis_client.hget(cancel_worker.CLEANUP, job_id)).decode() == owner, "cleanup ran"
    rec = await jobs.get_job(redis_client, CQ, job_id)
    assert rec.state is JobState.CANCELLED and rec.attempts == 1 and rec.consumer == owner
    c = await _counters(redis_client, CQ)
    assert c.get("cancelled") == 1 and c.get("retried", 0) == 0 and c.get("dead", 0) == 0
    assert await redis_client.xlen(keys.dlq(CQ)) == 0 and await redis_client.zcard(keys.delayed(CQ)) == 0
    rows = [r for r in await _audit(redis_client, CQ) if r["id"] == job_id]
    assert [(r["a"], r["o"]) for r in rows] == [("job.cancelled", "cancelled")]
    assert not await redis_client.hlen(keys.cancels(CQ))
    return f"{owner} {took:.2f}"


async def test_cancel_running_job_on_another_process(redis_client: Any, redis_url: str) -> None:
    """Two worker processes; the job runs on one of them; this process only talks to Redis."""
    out = await _cancel_on_other_process(redis_client, redis_url, ("cw-a",), ("cw-b",))
    assert float(out.split()[1]) < 2.0, f"a control message cancels at once: {out}"


async def test_cancel_reaches_a_process_that_missed_the_message(redis_client: Any, redis_url: str) -> None:
    """The only worker does not subscribe to tq:control (its message is lost): the durable marker,
    polled every touch interval (1 s here), still cancels the job."""
    await _cancel_on_other_process(redis_client, redis_url, ("cw-deaf", "--no-control"))


async def test_a_cancelled_job_is_counted_in_the_metrics(redis_client: Any, redis_url: str) -> None:
    from prometheus_client import CollectorRegistry
    from tq.registry import get_queue
    from tq.worker import Worker
    from tq_services.metrics import JobMetrics

    registry = CollectorRegistry()
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    began = asyncio.Event()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        began.set()
        await asyncio.sleep(60)

    worker = Worker(redis_client, [get_queue(Q)], h, s, observer=JobMetrics(registry, [get_queue(Q)]))
    await worker.start()
    try:
        job_id = await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
        await asyncio.wait_for(began.wait(), 10)
        await cancel_job(redis_client, Q, job_id, s)
        assert await wait_settled(redis_client, Q, job_id, 10) is JobState.CANCELLED
    finally:
        await worker.stop()
    labels = {"queue": Q, "job": "send-email"}
    assert registry.get_sample_value("tq_jobs_cancelled_total", labels) == 1
    assert registry.get_sample_value("tq_jobs_completed_total", labels) == 0
    assert registry.get_sample_value("tq_job_duration_seconds_count", labels) == 0  # not an attempt's end


async def test_cancel_and_the_time_limit_and_the_stop_keep_their_meanings(
    redis_client: Any, redis_url: str
) -> None:
    """Under a time limit, a cancel still ends the job ``cancelled`` (not ``JobTimeout``) and the
    limit still fails the job it hits; a handler that raises CancelledError on its own fails
    (issue 15); the worker's stop past its grace leaves a running job pending, not cancelled."""
    s = fast_settings(redis_url, queues={Q: {"concurrency": 3, "timeout_s": 1.0, **tiny_retry(attempts=1)}})
    h = HandlerRegistry()
    began: dict[str, asyncio.Event] = {}
    seen_cancel: dict[str, bool] = {}

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        began.setdefault(ctx.job_id, asyncio.Event()).set()
        if payload.template == "raises":
            raise asyncio.CancelledError("the handler's own")
        try:
            await asyncio.sleep(30)
        finally:
            seen_cancel[ctx.job_id] = ctx.cancel_requested

    p = Producer(redis_client, s)
    async with running(redis_client, s, h):
        asked = await p.enqueue(Q, "send-email", EMAIL)
        timed = await p.enqueue(Q, "send-email", EMAIL)
        raises = await p.enqueue(Q, "send-email", {**EMAIL, "template": "raises"})
        await asyncio.wait_for(began.setdefault(asked, asyncio.Event()).wait(), 10)
        await cancel_job(redis_client, Q, asked, s)
        assert await wait_settled(redis_client, Q, asked, 10) is JobState.CANCELLED
        assert await wait_settled(redis_client, Q, timed, 10) is JobState.DEAD
        assert await wait_settled(redis_client, Q, raises, 10) is JobState.DEAD
    assert seen_cancel == {asked: True, timed: False}
    assert (await jobs.get_job(redis_client, Q, timed)).error_type == "JobTimeout"
    assert (await jobs.get_job(redis_client, Q, raises)).error_type == "CancelledError"

    # the stop: the job stays pending for reclaim; nothing is counted cancelled
    s2 = fast_settings(redis_url, shutdown_grace_s=0.1)
    stopped = await p.enqueue(Q, "send-email", EMAIL)
    async with running(redis_client, s2, h):
        await asyncio.wait_for(began.setdefault(stopped, asyncio.Event()).wait(), 10)
    rec = await jobs.get_job(redis_client, Q, stopped)
    assert rec.state is JobState.ACTIVE and seen_cancel[stopped] is False
    assert (await _counters(redis_client)).get("cancelled") == 1
