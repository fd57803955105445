"""The owner's reads and actions across queues, under ``/api/owner``: the overview's history (every
queue's 5-minute aggregates added up), the consumer processes (``consumers``), a job found by id in
whichever queue holds it, and the recurring schedules (``tq.schedules``: list with next runs,
run now, suspend, resume). Like ``routes``, it only checks input, calls the tq library, answers."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from sqlalchemy import func, select
from tq import jobs, keys, schedules
from tq.errors import NotFound, TqError
from tq.models import QueueMetricAggregate
from tq.registry import all_queues

from tq_services.admin.auditing import AuditedRoute, data_access, note
from tq_services.admin.consumers import live_consumers
from tq_services.admin.deps import Owner, Reader
from tq_services.admin.errors import ApiError, from_tq_error
from tq_services.admin.routes import JOB_ID
from tq_services.admin.schemas import (
    Consumer,
    FoundJob,
    JobDetail,
    MetricPoint,
    OverviewMetrics,
    QueueTotals,
    ScheduleRun,
    ScheduleView,
)
from tq_services.admin.state import admin_state

router = APIRouter(prefix="/api/owner", route_class=AuditedRoute, tags=["console"])

ScheduleName = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=200)]


class Range(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"


# how far back each range reaches, and the width of its points (a week in hours: 168 points)
_RANGES = {Range.HOUR: (3600, 300), Range.DAY: (86400, 300), Range.WEEK: (7 * 86400, 3600)}
_TOTALS = ("enqueued", "completed", "failed", "dead")


def _epoch(value: datetime) -> float:
    """A bucket start as epoch seconds (SQLite hands back naive datetimes; they are UTC)."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@router.get("/overview/metrics", name="overview.metrics", summary="Every queue's throughput over time")
async def overview_metrics(request: Request, _: Reader, range: Range = Range.HOUR) -> OverviewMetrics:
    span_s, width_s = _RANGES[range]
    since = datetime.now(UTC) - timedelta(seconds=span_s)
    row = QueueMetricAggregate
    sums = [func.sum(getattr(row, name)).label(name) for name in _TOTALS]
    recent = row.bucket_start >= since
    # added up by the database: one row per bucket and one per queue, not one per (queue, bucket)
    by_bucket = select(row.bucket_start, *sums).where(recent).group_by(row.bucket_start)
    by_queue = select(row.queue, *sums).where(recent).group_by(row.queue)
    async with admin_state(request).engine.connect() as conn:
        buckets = (await conn.execute(by_bucket)).mappings().all()
        queues = (await conn.execute(by_queue)).mappings().all()
    points: dict[float, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_TOTALS, 0))
    for b in buckets:
        at = _epoch(b["bucket_start"])
        point = points[at - at % width_s]
        for name in _TOTALS:
            point[name] += int(b[name])
    per_queue: dict[str, dict[str, int]] = {spec.name: dict.fromkeys(_TOTALS, 0) for spec in all_queues()}
    per_queue.update({q["queue"]: {name: int(q[name]) for name in _TOTALS} for q in queues})
    return OverviewMetrics(
        range=range.value,
        bucket_s=width_s,
        since=since.timestamp(),
        points=[MetricPoint(at=at, **counts) for at, counts in sorted(points.items())],
        queues=sorted(
            (QueueTotals(queue=q, **t) for q, t in per_queue.items()),
            key=lambda t: (-t.completed, -t.failed, t.queue),
        ),
    )


@router.get("/workers", name="workers.list", summary="Every consumer process with a live heartbeat")
async def workers(request: Request, _: Reader) -> list[Consumer]:
    state = admin_state(request)
    return await live_consumers(state.redis, state.settings)


@router.get("/jobs/{job_id}", name="job.find", summary="Find a job by id in whichever queue holds it")
@data_access
async def find_job(request: Request, job_id: Annotated[str, Path(pattern=JOB_ID)], _: Reader) -> FoundJob:
    client = admin_state(request).redis
    names = [spec.name for spec in all_queues()]
    async with client.pipeline(transaction=False) as pipe:  # one round trip to find the queue
        for name in names:
            pipe.exists(keys.job(name, job_id))
        held = await pipe.execute()
    for name, exists in zip(names, held, strict=True):
        if not exists:
            continue
        try:
            rec = await jobs.get_job(client, name, job_id)
        except NotFound:  # trimmed meanwhile
            continue
        note(request, queue=name)
        return FoundJob(
            queue=name, job=JobDetail.model_validate({**rec.to_dict(), "timeline": rec.timeline()})
        )
    raise ApiError(
        404, f"no job {job_id} in any queue (finished jobs are kept only up to each queue's retention)"
    )


# ---- recurring schedules -----------------------------------------------------------------------
@router.get("/schedules", name="schedules.list", summary="Every recurring schedule with its next run")
async def list_schedules(request: Request, _: Reader) -> list[ScheduleView]:
    return await _schedule_views(admin_state(request).redis)


async def _schedule_views(client: Any) -> list[ScheduleView]:
    now = time.time()
    return [_schedule_view(spec, seen, now) for spec, seen in await schedules.list_with_state(client)]


def _schedule_view(spec: schedules.ScheduleSpec, seen: dict[str, Any], now: float) -> ScheduleView:
    return ScheduleView(
        name=spec.name,
        queue=spec.queue,
        job=spec.job,
        every=schedules.describe(spec),
        suspend=spec.suspend,
        concurrency_policy=spec.concurrency_policy.value,
        payload=spec.payload,
        next_run_at=None if spec.suspend else spec.next_tick(now),
        last_run_at=seen["last"],
        last_job_id=seen["job"],
        last_outcome=seen["outcome"],
        last_error=seen["error"],
        fired=seen["fired"],
        skipped=seen["skipped"],
        missed=seen["missed"],
    )


def _unknown_schedule(name: str) -> ApiError:
    return ApiError(404, f"no schedule {name!r}; `tq schedule list` shows the schedules there are")


@router.post("/schedules/{name}/run-now", name="schedule.run_now", summary="Enqueue the schedule's job now")
async def run_schedule_now(request: Request, name: ScheduleName, _: Owner) -> ScheduleRun:
    state = admin_state(request)
    try:
        job_id = await schedules.run_now(state.redis, name, state.settings)
    except schedules.UnknownSchedule:
        raise _unknown_schedule(name) from None
    except (TqError, ValueError) as exc:  # its queue or job left the registry, or its payload no longer fits
        raise from_tq_error(exc) from None
    note(request, job_id=job_id)
    return ScheduleRun(name=name, job_id=job_id)


async def _suspend(request: Request, name: str, suspend: bool) -> ScheduleView:
    client = admin_state(request).redis
    try:
        spec = await schedules.set_suspended(client, name, suspend)
    except schedules.UnknownSchedule:
        raise _unknown_schedule(name) from None
    seen = schedules.parse_state(await client.hgetall(keys.schedule_state(name)))  # this one's state only
    return _schedule_view(spec, seen, time.time())


@router.post("/schedules/{name}/suspend", name="schedule.suspend", summary="Stop the schedule's ticks")
async def suspend_schedule(request: Request, name: ScheduleName, _: Owner) -> ScheduleView:
    return await _suspend(request, name, True)


@router.post("/schedules/{name}/resume", name="schedule.resume", summary="Let the schedule tick again")
async def resume_schedule(request: Request, name: ScheduleName, _: Owner) -> ScheduleView:
    return await _suspend(request, name, False)
