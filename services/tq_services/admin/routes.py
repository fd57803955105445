"""The owner's API under ``/api/owner/queues``: queues with live metrics, jobs, DLQ, pause/resume.

Every operation is the tq library's own (``tq.jobs``, ``tq.dlq``, ``tq.config``, ``tq.stats``), the
same functions the ``tq`` CLI calls on Redis; this module only checks input, calls, and shapes answers.
Queue names contain a colon (``ai:content``); it is accepted raw or URL-encoded (``ai%3Acontent``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from tq import config as runtime_config
from tq import dlq as dlq_ops
from tq import jobs as job_ops
from tq.envelope import JobState
from tq.errors import TqError
from tq.models import QueueMetricAggregate
from tq.registry import all_queues, get_queue
from tq.stats import read_stats

from tq_services.admin.auditing import AuditedRoute, data_access, note
from tq_services.admin.auth import Principal, authenticate, authorize
from tq_services.admin.errors import ApiError, from_tq_error
from tq_services.admin.ratelimit import SlidingWindow
from tq_services.admin.state import admin_state

JOB_ID = r"^[A-Za-z0-9_.:-]{1,128}$"  # tq.envelope.Envelope.id
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"  # a Redis stream entry id (a DLQ entry)
JOBS_CURSOR = r"^(job:[A-Za-z0-9_.:-]{1,128}|[0-9]{1,19}-[0-9]{1,19}|[0-9]{1,15})$"
EPOCH_MAX = 1e11  # epoch seconds far beyond any real date: bounds what reaches Redis

_bearer = HTTPBearer(auto_error=False, description="a JWT from `tq token create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _guard(
    request: Request, credentials: HTTPAuthorizationCredentials | None, write: bool
) -> Principal:
    state = admin_state(request)
    principal = authenticate(state.settings, credentials.credentials if credentials else None)
    request.state.principal = principal
    wait_s = await state.limiter.hit(principal.token_id)
    if wait_s:
        raise ApiError(
            429,
            f"rate limit of {state.settings.admin_rate_limit} requests per "
            f"{state.settings.admin_rate_window_s:g} s exceeded",
            headers={"Retry-After": SlidingWindow.retry_after(wait_s)},
        )
    authorize(state.settings, principal, write=write)
    return principal


async def reader(request: Request, credentials: Credentials) -> Principal:
    return await _guard(request, credentials, write=False)


async def owner(request: Request, credentials: Credentials) -> Principal:
    return await _guard(request, credentials, write=True)


Reader = Annotated[Principal, Depends(reader)]
Owner = Annotated[Principal, Depends(owner)]
Queue = Annotated[str, Path(min_length=1, max_length=200, description="e.g. ai:content (or ai%3Acontent)")]
JobId = Annotated[str, Path(pattern=JOB_ID)]
DlqId = Annotated[str, Path(pattern=STREAM_ID, description="the DLQ entry id, e.g. 1732000000000-0")]
Epoch = Annotated[float | None, Query(ge=0, le=EPOCH_MAX, allow_inf_nan=False, description="epoch seconds")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Text = Annotated[str | None, Query(max_length=200)]

router = APIRouter(prefix="/api/owner/queues", route_class=AuditedRoute, tags=["queues"])


@contextmanager
def tq_errors() -> Iterator[None]:
    """tq's errors on the caller's input as HTTP answers (404, 409, 422)."""
    try:
        yield
    except (TqError, ValueError) as exc:
        raise from_tq_error(exc) from None


def _known(queue: str) -> None:
    with tq_errors():
        get_queue(queue)


# ---- models ------------------------------------------------------------------------------------
class ReplayRequest(BaseModel):
    """Replay dead letters, oldest first: ``all`` of the matches, or at most ``limit``."""

    model_config = ConfigDict(extra="forbid")

    all: bool = Field(False, description="replay every matching entry")
    limit: int | None = Field(None, ge=1, le=1_000_000, description="replay at most this many")
    error_type: str | None = Field(None, max_length=200, description="exact error type, e.g. NoHandler")
    text: str | None = Field(None, max_length=200, description="text in job, error or payload")
    since: float | None = Field(None, ge=0, le=EPOCH_MAX, allow_inf_nan=False, description="epoch seconds")
    until: float | None = Field(None, ge=0, le=EPOCH_MAX, allow_inf_nan=False, description="epoch seconds")

    @model_validator(mode="after")
    def _bounded(self) -> ReplayRequest:
        if not self.all and self.limit is None:
            raise ValueError("give limit (at most N) or all=true")
        return self


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confirm: str = Field(max_length=200, description="the queue name again")


# ---- queues ------------------------------------------------------------------------------------
async def queue_summary(client: Any, queue: str) -> dict[str, Any]:
    """A queue as the API and the live events show it: registry facts, counts, live stats."""
    spec = get_queue(queue)
    return {
        "queue": spec.name,
        "family": spec.family,
        "description": spec.description,
        "jobs": list(spec.jobs),
        "counts": await job_ops.counts(client, spec.name),
        "stats": await read_stats(client, spec.name),
    }


async def all_queue_summaries(client: Any) -> list[dict[str, Any]]:
    return [await queue_summary(client, spec.name) for spec in all_queues()]


@router.get("", name="queues.list", summary="Every queue with its counts and live stats")
async def list_queues(request: Request, _: Reader) -> list[dict[str, Any]]:
    return await all_queue_summaries(admin_state(request).redis)


@router.get("/{queue}/stats", name="queue.stats", summary="One queue's counts and live stats")
async def queue_stats(request: Request, queue: Queue, _: Reader) -> dict[str, Any]:
    _known(queue)
    return await queue_summary(admin_state(request).redis, queue)


@router.get("/{queue}/metrics", name="queue.metrics", summary="The queue's 5-minute aggregates, oldest first")
async def queue_metrics(
    request: Request, queue: Queue, _: Reader, hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24
) -> list[dict[str, Any]]:
    _known(queue)
    since = datetime.now(UTC) - timedelta(hours=hours)
    stmt = (
        select(QueueMetricAggregate)
        .where(QueueMetricAggregate.queue == queue, QueueMetricAggregate.bucket_start >= since)
        .order_by(QueueMetricAggregate.bucket_start)
    )
    async with admin_state(request).engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    return [
        {
            "bucket_start": row["bucket_start"].isoformat(),
            **{name: row[name] for name in _AGGREGATE_FIELDS},
        }
        for row in rows
    ]


_AGGREGATE_FIELDS = (
    "enqueued",
    "completed",
    "failed",
    "retried",
    "dead",
    "avg_duration_ms",
    "p95_duration_ms",
    "max_waiting",
    "max_dlq",
)


@router.post("/{queue}/pause", name="queue.pause", summary="Stop consumers fetching (in-flight jobs finish)")
async def pause(request: Request, queue: Queue, _: Owner) -> dict[str, Any]:
    with tq_errors():
        await runtime_config.set_paused(admin_state(request).redis, queue, True)
    return {"queue": queue, "paused": True}


@router.post("/{queue}/resume", name="queue.resume", summary="Let consumers fetch again")
async def resume(request: Request, queue: Queue, _: Owner) -> dict[str, Any]:
    with tq_errors():
        await runtime_config.set_paused(admin_state(request).redis, queue, False)
    return {"queue": queue, "paused": False}


# ---- jobs --------------------------------------------------------------------------------------
@router.get("/{queue}/jobs", name="jobs.list", summary="Jobs in one state, a page at a time")
@data_access
async def list_jobs(
    request: Request,
    queue: Queue,
    _: Reader,
    state: JobState = JobState.WAITING,
    cursor: Annotated[str | None, Query(pattern=JOBS_CURSOR, description="next_cursor of a page")] = None,
    limit: Limit = 50,
    search: Text = None,
) -> dict[str, Any]:
    _known(queue)
    if cursor and state not in (JobState.WAITING, JobState.ACTIVE) and not cursor.isdigit():
        field = [{"field": "query.cursor", "message": f"not a cursor of {state.value} jobs"}]
        raise ApiError(422, f"query.cursor: not a cursor of {state.value} jobs", fields=field)
    with tq_errors():
        page = await job_ops.list_jobs(
            admin_state(request).redis, queue, state, cursor=cursor, limit=limit, search=search
        )
    note(request, count=len(page.items))
    return {"items": [j.to_dict() for j in page.items], "next_cursor": page.next_cursor}


@router.get("/{queue}/jobs/{job_id}", name="job.read", summary="One job: payload, attempts, errors, timeline")
@data_access
async def get_job(request: Request, queue: Queue, job_id: JobId, _: Reader) -> dict[str, Any]:
    with tq_errors():
        rec = await job_ops.get_job(admin_state(request).redis, queue, job_id)
    return {**rec.to_dict(), "timeline": rec.timeline()}


@router.post(
    "/{queue}/jobs/{job_id}/retry", name="job.retry", summary="Run a dead, failed or delayed job now"
)
async def retry_job(request: Request, queue: Queue, job_id: JobId, _: Owner) -> dict[str, Any]:
    with tq_errors():
        new_id = await job_ops.retry_job(admin_state(request).redis, queue, job_id)
    note(request, job_id=new_id)
    return {"queue": queue, "job_id": new_id, "replayed": new_id != job_id}


@router.delete("/{queue}/jobs/{job_id}", name="job.remove", summary="Delete a job that is not running")
async def remove_job(request: Request, queue: Queue, job_id: JobId, _: Owner) -> dict[str, Any]:
    with tq_errors():
        was = await job_ops.remove_job(admin_state(request).redis, queue, job_id)
    note(request, removed_from=was.value)
    return {"queue": queue, "job_id": job_id, "removed_from": was.value}


# ---- dead-letter queue -------------------------------------------------------------------------
@router.get("/{queue}/dlq", name="dlq.list", summary="Dead letters, newest first, filtered, a page at a time")
@data_access
async def list_dead(
    request: Request,
    queue: Queue,
    _: Reader,
    since: Epoch = None,
    until: Epoch = None,
    error_type: Text = None,
    text: Text = None,
    cursor: Annotated[str | None, Query(pattern=STREAM_ID, description="next_cursor of a page")] = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    _known(queue)
    with tq_errors():
        page = await dlq_ops.list_dead(
            admin_state(request).redis,
            queue,
            since=since,
            until=until,
            error_type=error_type,
            text=text,
            cursor=cursor,
            limit=limit,
        )
    note(request, count=len(page.items))
    items = [{k: v for k, v in d.to_dict().items() if k != "envelope"} for d in page.items]
    return {"items": items, "next_cursor": page.next_cursor}


@router.post("/{queue}/dlq/replay", name="dlq.replay_many", summary="Replay all, or up to N, filtered")
async def replay_many(request: Request, queue: Queue, body: ReplayRequest, _: Owner) -> dict[str, Any]:
    _known(queue)
    with tq_errors():
        r = await dlq_ops.replay(
            admin_state(request).redis,
            queue,
            limit=None if body.all and body.limit is None else body.limit,
            error_type=body.error_type,
            text=body.text,
            since=body.since,
            until=body.until,
        )
    note(request, replayed=r.replayed, skipped=r.skipped, job_ids=r.job_ids[:100])
    return {"replayed": r.replayed, "skipped": r.skipped, "job_ids": r.job_ids}


@router.post(
    "/{queue}/dlq/purge", name="dlq.purge", summary="Delete every DLQ entry; confirm = the queue name"
)
async def purge(request: Request, queue: Queue, body: PurgeRequest, _: Owner) -> dict[str, Any]:
    with tq_errors():
        n = await dlq_ops.purge(admin_state(request).redis, queue, body.confirm)
    note(request, purged=n)
    return {"queue": queue, "purged": n}


@router.get("/{queue}/dlq/{dlq_id}", name="dlq.read", summary="One DLQ entry with payload and stack")
@data_access
async def get_dead(request: Request, queue: Queue, dlq_id: DlqId, _: Reader) -> dict[str, Any]:
    with tq_errors():
        d = await dlq_ops.get_dead(admin_state(request).redis, queue, dlq_id)
    return d.to_dict()


@router.post("/{queue}/dlq/{dlq_id}/replay", name="dlq.replay", summary="Replay one DLQ entry")
async def replay_one(request: Request, queue: Queue, dlq_id: DlqId, _: Owner) -> dict[str, Any]:
    with tq_errors():
        new_id = await dlq_ops.replay_one(admin_state(request).redis, queue, dlq_id)
    note(request, job_id=new_id)
    return {"queue": queue, "dlq_id": dlq_id, "job_id": new_id}


@router.delete("/{queue}/dlq/{dlq_id}", name="dlq.delete", summary="Delete one DLQ entry")
async def delete_dead(request: Request, queue: Queue, dlq_id: DlqId, _: Owner) -> dict[str, Any]:
    with tq_errors():
        await dlq_ops.delete(admin_state(request).redis, queue, dlq_id)
    return {"queue": queue, "dlq_id": dlq_id, "deleted": True}
