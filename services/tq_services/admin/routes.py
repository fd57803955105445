"""The owner's API under ``/api/owner/queues``: queues with live metrics, jobs, DLQ, pause/resume.

Every operation is the tq library's own (``tq.jobs``, ``tq.dlq``, ``tq.config``, ``tq.stats``), the
same functions the ``tq`` CLI calls on Redis; this module only checks input, calls, and answers with
the models of ``schemas`` (so the OpenAPI document describes every answer).
Queue names contain a colon (``ai:content``); it is accepted raw or URL-encoded (``ai%3Acontent``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import select
from tq import cancel, config, dlq, jobs
from tq.envelope import JobState
from tq.errors import TqError
from tq.models import QueueMetricAggregate
from tq.registry import get_queue

from tq_services.admin.auditing import AuditedRoute, data_access, note
from tq_services.admin.consumers import live_consumers
from tq_services.admin.deps import Owner, Reader
from tq_services.admin.errors import from_tq_error, invalid
from tq_services.admin.schemas import (
    EPOCH_MAX,
    BulkDeadLettersRequest,
    BulkJobsRequest,
    BulkOutcome,
    BulkResult,
    CancelResult,
    Consumer,
    DeadLetterAction,
    DeadLetterDetail,
    DeadLetterGroup,
    DeadLetterGroups,
    DeadLetterPage,
    DeadLetterSummary,
    DeleteResult,
    Job,
    JobAction,
    JobDetail,
    JobPage,
    MatchCount,
    MetricBucket,
    PauseResult,
    PurgeRequest,
    PurgeResult,
    QueueConfigView,
    QueueSummary,
    RemoveResult,
    ReplayManyResult,
    ReplayOneResult,
    ReplayRequest,
    RetryPolicyView,
    RetryResult,
)
from tq_services.admin.state import admin_state
from tq_services.admin.summaries import all_queue_summaries, queue_summary

JOB_ID = r"^[A-Za-z0-9_.:-]{1,128}$"  # tq.envelope.Envelope.id
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"  # a Redis stream entry id (a DLQ entry)
JOBS_CURSOR = r"^(job:[A-Za-z0-9_.:-]{1,128}|[0-9]{1,19}-[0-9]{1,19}|[0-9]{1,15})$"

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


# ---- queues ------------------------------------------------------------------------------------
@router.get("", name="queues.list", summary="Every queue with its counts and live stats")
async def list_queues(request: Request, _: Reader) -> list[QueueSummary]:
    return await all_queue_summaries(admin_state(request).redis)


@router.get("/{queue}/stats", name="queue.stats", summary="One queue's counts and live stats")
async def queue_stats(request: Request, queue: Queue, _: Reader) -> QueueSummary:
    _known(queue)
    return await queue_summary(admin_state(request).redis, queue)


@router.get("/{queue}/metrics", name="queue.metrics", summary="The queue's 5-minute aggregates, oldest first")
async def queue_metrics(
    request: Request, queue: Queue, _: Reader, hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24
) -> list[MetricBucket]:
    _known(queue)
    since = datetime.now(UTC) - timedelta(hours=hours)
    stmt = (
        select(QueueMetricAggregate)
        .where(QueueMetricAggregate.queue == queue, QueueMetricAggregate.bucket_start >= since)
        .order_by(QueueMetricAggregate.bucket_start)
    )
    async with admin_state(request).engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
    aggregates = [name for name in MetricBucket.model_fields if name != "bucket_start"]
    return [
        MetricBucket.model_validate(
            {"bucket_start": row["bucket_start"].isoformat(), **{name: row[name] for name in aggregates}}
        )
        for row in rows
    ]


@router.get("/{queue}/config", name="queue.config", summary="The config the queue's consumers run with")
async def queue_config(request: Request, queue: Queue, _: Reader) -> QueueConfigView:
    _known(queue)
    state = admin_state(request)
    cfg = await config.read(state.redis, queue, state.settings)
    return QueueConfigView(
        queue=queue,
        concurrency=cfg.concurrency,
        paused=cfg.paused,
        retry=RetryPolicyView.model_validate(cfg.retry.model_dump()),
        timeout_s=cfg.timeout_s,
        rate_limit_jobs=cfg.rate_limit.jobs if cfg.rate_limit else None,
        rate_limit_per_s=cfg.rate_limit.per_s if cfg.rate_limit else None,
        visibility_timeout_s=cfg.visibility_timeout_s,
        retention_completed=cfg.retention_completed,
        retention_failed=cfg.retention_failed,
        generation=cfg.generation,
        managed=cfg.generation > 0,  # only the operator writes a QueueConfig's generation
    )


@router.get("/{queue}/consumers", name="queue.consumers", summary="The queue's consumer processes")
async def queue_consumers(request: Request, queue: Queue, _: Reader) -> list[Consumer]:
    _known(queue)
    state = admin_state(request)
    return await live_consumers(state.redis, state.settings, [queue])


@router.post("/{queue}/pause", name="queue.pause", summary="Stop consumers fetching (in-flight jobs finish)")
async def pause(request: Request, queue: Queue, _: Owner) -> PauseResult:
    with tq_errors():
        await config.set_paused(admin_state(request).redis, queue, True)
    return PauseResult(queue=queue, paused=True)


@router.post("/{queue}/resume", name="queue.resume", summary="Let consumers fetch again")
async def resume(request: Request, queue: Queue, _: Owner) -> PauseResult:
    with tq_errors():
        await config.set_paused(admin_state(request).redis, queue, False)
    return PauseResult(queue=queue, paused=False)


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
) -> JobPage:
    _known(queue)
    if cursor and state not in (JobState.WAITING, JobState.ACTIVE) and not cursor.isdigit():
        raise invalid([{"field": "query.cursor", "message": f"not a cursor of {state.value} jobs"}])
    with tq_errors():
        page = await jobs.list_jobs(
            admin_state(request).redis, queue, state, cursor=cursor, limit=limit, search=search
        )
    note(request, count=len(page.items))
    return JobPage(items=[Job.model_validate(j.to_dict()) for j in page.items], next_cursor=page.next_cursor)


@router.get("/{queue}/jobs/{job_id}", name="job.read", summary="One job: payload, attempts, errors, timeline")
@data_access
async def get_job(request: Request, queue: Queue, job_id: JobId, _: Reader) -> JobDetail:
    with tq_errors():
        rec = await jobs.get_job(admin_state(request).redis, queue, job_id)
    return JobDetail.model_validate({**rec.to_dict(), "timeline": rec.timeline()})


@router.post("/{queue}/jobs/bulk", name="jobs.bulk", summary="Retry, remove or cancel the selected jobs")
async def bulk_jobs(request: Request, queue: Queue, body: BulkJobsRequest, _: Owner) -> BulkResult:
    _known(queue)
    client = admin_state(request).redis

    async def act(job_id: str) -> str | None:
        if body.action is JobAction.RETRY:
            return await jobs.retry_job(client, queue, job_id)
        if body.action is JobAction.CANCEL:
            await cancel.cancel_job(client, queue, job_id)
        else:
            await jobs.remove_job(client, queue, job_id)
        return None

    return await _bulk(request, body.action.value, body.job_ids, act)


async def _bulk(
    request: Request, action: str, ids: list[str], act: Callable[[str], Awaitable[str | None]]
) -> BulkResult:
    """``act`` on each id once, in the order given, each on its own (a failure is its outcome, and
    the rest go on); ``act`` answers the job that runs now (retry, replay) or None."""
    outcomes = []
    for one in dict.fromkeys(ids):
        try:
            outcomes.append(BulkOutcome(id=one, ok=True, job_id=await act(one)))
        except (TqError, ValueError) as exc:
            outcomes.append(BulkOutcome(id=one, ok=False, error=from_tq_error(exc).message))
    done = sum(o.ok for o in outcomes)
    note(request, action=action, done=done, failed=len(outcomes) - done, ids=[o.id for o in outcomes][:100])
    return BulkResult(action=action, done=done, failed=len(outcomes) - done, outcomes=outcomes)


@router.post(
    "/{queue}/jobs/{job_id}/retry", name="job.retry", summary="Run a dead, failed or delayed job now"
)
async def retry_job(request: Request, queue: Queue, job_id: JobId, _: Owner) -> RetryResult:
    with tq_errors():
        new_id = await jobs.retry_job(admin_state(request).redis, queue, job_id)
    note(request, job_id=new_id)
    return RetryResult(queue=queue, job_id=new_id, replayed=new_id != job_id)


@router.delete("/{queue}/jobs/{job_id}", name="job.remove", summary="Delete a job that is not running")
async def remove_job(request: Request, queue: Queue, job_id: JobId, _: Owner) -> RemoveResult:
    with tq_errors():
        was = await jobs.remove_job(admin_state(request).redis, queue, job_id)
    note(request, removed_from=was.value)
    return RemoveResult(queue=queue, job_id=job_id, removed_from=was)


@router.post(
    "/{queue}/jobs/{job_id}/cancel",
    name="job.cancel",
    summary="Cancel a job: remove it if it waits, cancel its run if it runs",
    responses={404: {"description": "no such job"}, 409: {"description": "the job already ended"}},
)
async def cancel_job(request: Request, queue: Queue, job_id: JobId, _: Owner) -> CancelResult:
    with tq_errors():
        done = await cancel.cancel_job(admin_state(request).redis, queue, job_id)
    note(request, outcome=done.outcome.value, was=done.was.value)
    return CancelResult(queue=queue, job_id=job_id, outcome=done.outcome.value, was=done.was)


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
) -> DeadLetterPage:
    _known(queue)
    with tq_errors():
        page = await dlq.list_dead(
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
    items = [DeadLetterSummary.model_validate(d.to_dict()) for d in page.items]  # without the envelope
    return DeadLetterPage(items=items, next_cursor=page.next_cursor)


MAX_SCAN_PAGES = 20  # pages of the DLQ read to group or count (each scans up to 10,000 entries)


async def _scan_letters(
    client: Any,
    queue: str,
    visit: Callable[[Any], None],
    *,
    since: float | None,
    until: float | None,
    error_type: str | None,
    text: str | None,
) -> bool:
    """Hand every dead letter the filters select to ``visit``, newest first, a page at a time (so
    memory holds one page, whatever the DLQ's size); whether that was all of them."""
    cursor = None
    for _page in range(MAX_SCAN_PAGES):
        page = await dlq.list_dead(
            client,
            queue,
            since=since,
            until=until,
            error_type=error_type,
            text=text,
            cursor=cursor,
            limit=1000,
        )
        for d in page.items:
            visit(d)
        cursor = page.next_cursor
        if cursor is None:
            return True
    return False


@router.get("/{queue}/dlq/groups", name="dlq.groups", summary="Dead letters grouped by error type, counted")
async def dead_letter_groups(
    request: Request, queue: Queue, _: Reader, since: Epoch = None, until: Epoch = None, text: Text = None
) -> DeadLetterGroups:
    _known(queue)
    groups: dict[str, DeadLetterGroup] = {}

    def count(d: Any) -> None:  # newest first: the first of a type is its newest
        g = groups.get(d.error_type)
        if g is None:
            groups[d.error_type] = DeadLetterGroup(
                error_type=d.error_type, count=1, newest_at=d.failed_at, example=d.error[:300]
            )
        else:
            g.count += 1

    with tq_errors():
        complete = await _scan_letters(
            admin_state(request).redis, queue, count, since=since, until=until, error_type=None, text=text
        )
    ordered = sorted(groups.values(), key=lambda g: (-g.count, g.error_type))
    return DeadLetterGroups(groups=ordered, total=sum(g.count for g in ordered), complete=complete)


@router.get(
    "/{queue}/dlq/count", name="dlq.count", summary="How many entries a filtered replay would touch (dry run)"
)
async def dead_letter_count(
    request: Request,
    queue: Queue,
    _: Reader,
    since: Epoch = None,
    until: Epoch = None,
    error_type: Text = None,
    text: Text = None,
) -> MatchCount:
    _known(queue)
    matching = 0

    def count(_d: Any) -> None:
        nonlocal matching
        matching += 1

    with tq_errors():
        complete = await _scan_letters(
            admin_state(request).redis,
            queue,
            count,
            since=since,
            until=until,
            error_type=error_type,
            text=text,
        )
    return MatchCount(matching=matching, complete=complete)


@router.post("/{queue}/dlq/bulk", name="dlq.bulk", summary="Replay or delete the selected DLQ entries")
async def bulk_dead_letters(
    request: Request, queue: Queue, body: BulkDeadLettersRequest, _: Owner
) -> BulkResult:
    _known(queue)
    client = admin_state(request).redis

    async def act(dlq_id: str) -> str | None:
        if body.action is DeadLetterAction.REPLAY:
            return await dlq.replay_one(client, queue, dlq_id)
        await dlq.delete(client, queue, dlq_id)
        return None

    return await _bulk(request, body.action.value, body.dlq_ids, act)


@router.post("/{queue}/dlq/replay", name="dlq.replay_many", summary="Replay all, or up to N, filtered")
async def replay_many(request: Request, queue: Queue, body: ReplayRequest, _: Owner) -> ReplayManyResult:
    _known(queue)
    with tq_errors():
        r = await dlq.replay(
            admin_state(request).redis,
            queue,
            limit=None if body.all and body.limit is None else body.limit,
            error_type=body.error_type,
            text=body.text,
            since=body.since,
            until=body.until,
        )
    note(request, replayed=r.replayed, skipped=r.skipped, job_ids=r.job_ids[:100])
    return ReplayManyResult(replayed=r.replayed, skipped=r.skipped, job_ids=r.job_ids)


@router.post(
    "/{queue}/dlq/purge", name="dlq.purge", summary="Delete every DLQ entry; confirm = the queue name"
)
async def purge(request: Request, queue: Queue, body: PurgeRequest, _: Owner) -> PurgeResult:
    with tq_errors():
        n = await dlq.purge(admin_state(request).redis, queue, body.confirm)
    note(request, purged=n)
    return PurgeResult(queue=queue, purged=n)


@router.get("/{queue}/dlq/{dlq_id}", name="dlq.read", summary="One DLQ entry with payload and stack")
@data_access
async def get_dead(request: Request, queue: Queue, dlq_id: DlqId, _: Reader) -> DeadLetterDetail:
    with tq_errors():
        d = await dlq.get_dead(admin_state(request).redis, queue, dlq_id)
    return DeadLetterDetail.model_validate(d.to_dict())


@router.post("/{queue}/dlq/{dlq_id}/replay", name="dlq.replay", summary="Replay one DLQ entry")
async def replay_one(request: Request, queue: Queue, dlq_id: DlqId, _: Owner) -> ReplayOneResult:
    with tq_errors():
        new_id = await dlq.replay_one(admin_state(request).redis, queue, dlq_id)
    note(request, job_id=new_id)
    return ReplayOneResult(queue=queue, dlq_id=dlq_id, job_id=new_id)


@router.delete("/{queue}/dlq/{dlq_id}", name="dlq.delete", summary="Delete one DLQ entry")
async def delete_dead(request: Request, queue: Queue, dlq_id: DlqId, _: Owner) -> DeleteResult:
    with tq_errors():
        await dlq.delete(admin_state(request).redis, queue, dlq_id)
    return DeleteResult(queue=queue, dlq_id=dlq_id, deleted=True)
