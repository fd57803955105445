"""``ctx.progress`` against a real Redis (issue 18, "Progress and cancel"): the record and the
``job.progress`` event, throttled per job with the last report always written."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from support import fast_settings, published_events, running, settled_job
from tq import jobs, keys, progress
from tq.envelope import Event, ProgressData
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}


async def test_progress_is_written_published_and_throttled(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    seen_mid: list[Any] = []
    calls = 0

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        nonlocal calls
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < 1.6:  # a tight loop reporting on every step
            i += 1
            await ctx.progress(min(0.99, i / 100_000), f"step {i}")
            calls += 1
            await asyncio.sleep(0)
            if i == 2000:
                rec = await jobs.get_job(ctx.redis, Q, ctx.job_id)
                seen_mid.append((rec.state.value, rec.progress, rec.progress_message))
        await ctx.progress(1.0, "all done")  # the last report: inside the interval, still written

    p = Producer(redis_client, s)
    async with published_events(redis_client) as seen, running(redis_client, s, h):
        job_id = await p.enqueue(Q, "send-email", EMAIL)
        rec = await settled_job(redis_client, Q, job_id)
        await asyncio.sleep(0.2)
    assert calls > 1000, "the handler reported in a tight loop"
    mine = [e for e in seen if e.get("job_id") == job_id]
    reports = [e for e in mine if e["type"] == "job.progress"]
    # 1.6 s at one write per 0.5 s: the first at once, then at most one per interval, plus the last
    assert 3 <= len(reports) <= 6, len(reports)
    for e in reports:
        Event.model_validate(e)
        ProgressData.model_validate(e["data"])
    assert reports[-1]["data"] == {"fraction": 1.0, "message": "all done"}
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(reports[:-1])]  # the last: at the end
    assert all(g >= progress.INTERVAL_S - 0.05 for g in gaps), gaps
    # the last report lands before the outcome, on the record and on the wire
    order = [e["type"] for e in mine]
    assert order.index("job.completed") > len(order) - 2
    assert order[-2] == "job.progress"
    assert rec.progress == 1.0 and rec.progress_message == "all done" and rec.progress_at is not None
    assert seen_mid and seen_mid[0][1] is not None and seen_mid[0][2].startswith("step ")


async def test_progress_with_events_off_is_written_not_published(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, events=False)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        await ctx.progress(0.5, "half")

    p = Producer(redis_client, s)
    async with published_events(redis_client) as seen, running(redis_client, s, h):
        job_id = await p.enqueue(Q, "send-email", EMAIL)
        rec = await settled_job(redis_client, Q, job_id)
        await asyncio.sleep(0.2)
    assert rec.progress == 0.5 and rec.progress_message == "half"
    assert not [e for e in seen if e["type"] == "job.progress"], "TQ_EVENTS off: nothing published"


async def test_progress_rejects_a_fraction_outside_0_to_1(redis_client: Any) -> None:
    reporter = progress.ProgressReporter(redis_client, Q, "x1", "send-email")
    with pytest.raises(ValueError, match="progress"):
        await reporter.report(1.5, "too far")
    with pytest.raises(ValueError):
        await reporter.report(0.5, "m" * 501)


async def test_progress_never_recreates_a_removed_record(redis_client: Any, redis_url: str) -> None:
    reporter = progress.ProgressReporter(redis_client, Q, "gone", "send-email")
    await reporter.report(0.5, "half")
    await reporter.close()
    assert not await redis_client.exists(keys.job(Q, "gone"))
    assert reporter.writes == 1
