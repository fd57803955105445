"""The bodies of the admin API, as pydantic models: what the routes accept and what they answer,
so the OpenAPI document (``/openapi.json``) describes every request and every response.

The answers mirror the tq library's own records (``tq.jobs.JobRecord``, ``tq.dlq.DeadLetter``,
``tq.jobs.counts``, ``tq.stats``) field for field, nulls included.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from tq.envelope import JobState

EPOCH_MAX = 1e11  # epoch seconds far beyond any real date: bounds what reaches Redis


# ---- requests ----------------------------------------------------------------------------------
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


MAX_BULK = 500  # ids one bulk call acts on


class JobAction(StrEnum):
    RETRY = "retry"
    REMOVE = "remove"
    CANCEL = "cancel"  # tq.cancel: waiting/delayed removed, running cancelled on its worker


class DeadLetterAction(StrEnum):
    REPLAY = "replay"
    DELETE = "delete"


class BulkJobsRequest(BaseModel):
    """Retry, remove or cancel the selected jobs, each on its own (one failing does not stop the rest)."""

    model_config = ConfigDict(extra="forbid")

    action: JobAction
    job_ids: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]] = Field(
        min_length=1, max_length=MAX_BULK
    )


class BulkDeadLettersRequest(BaseModel):
    """Replay or delete the selected DLQ entries, each on its own."""

    model_config = ConfigDict(extra="forbid")

    action: DeadLetterAction
    dlq_ids: list[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}-[0-9]{1,19}$")]] = Field(
        min_length=1, max_length=MAX_BULK
    )


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confirm: str = Field(max_length=200, description="the queue name again")


# ---- queues ------------------------------------------------------------------------------------
class QueueCounts(BaseModel):
    """Counts by state and totals (``tq.jobs.counts``), with the queue's runtime config."""

    queue: str
    waiting: int
    active: int
    delayed: int = Field(description="due later (`?state=delayed` lists them)")
    retrying: int | None = Field(
        description="waiting out a retry backoff (`?state=failed` lists them); null over 10,000 "
        "scheduled jobs, when `delayed` counts both"
    )
    completed: int
    dead: int
    cancelled: int = Field(0, description="jobs cancelled so far (removed before they ran, or while running)")
    retried: int
    enqueued: int
    paused: bool
    concurrency: int
    consumers: int = Field(description="consumers with a live heartbeat")


class QueueStats(BaseModel):
    """The stats leader's live snapshot (``tq.stats``; the field names of its ``tq:{q}:stats`` hash)."""

    waiting: int
    active: int
    delayed: int
    dlq: int
    consumers: int
    enqueued: int
    completed: int
    retried: int
    dead: int
    failed: int = Field(description="retried + dead")
    samples: int = Field(description="completed jobs the durations are taken over")
    paused: bool
    rate: float = Field(description="completed jobs per second over the last interval")
    avgDurationMs: float | None
    p95DurationMs: float | None
    lastUpdatedAt: float | None = Field(description="epoch seconds of the snapshot")


class QueueSummary(BaseModel):
    """A queue as the API and the live events show it: registry facts, counts, live stats."""

    queue: str
    family: str
    description: str
    jobs: list[str] = Field(description="the job names the queue takes")
    counts: QueueCounts
    stats: QueueStats | None = Field(description="null before a stats leader wrote a snapshot")


class MetricBucket(BaseModel):
    """One 5-minute aggregate of a queue (``queue_metric_aggregate``)."""

    bucket_start: str = Field(description="ISO 8601")
    enqueued: int
    completed: int
    failed: int
    retried: int
    dead: int
    avg_duration_ms: float | None
    p95_duration_ms: float | None
    max_waiting: int
    max_dlq: int


class RetryPolicyView(BaseModel):
    attempts: int = Field(description="runs in all, the first included")
    initial_s: float
    max_s: float
    jitter: float


class QueueConfigView(BaseModel):
    """The config the queue's consumers run with now (``tq.config.read``)."""

    queue: str
    concurrency: int = Field(description="in-flight jobs per consumer")
    paused: bool
    retry: RetryPolicyView
    timeout_s: float = Field(description="a job's time limit per attempt; 0: none")
    rate_limit_jobs: int | None
    rate_limit_per_s: float | None
    visibility_timeout_s: float
    retention_completed: int
    retention_failed: int
    generation: int = Field(description="the QueueConfig generation it came from; 0: none")
    managed: bool = Field(description="a QueueConfig (the operator) manages the queue's config")


class Consumer(BaseModel):
    """One consumer process, as its heartbeat reports it (``tq.worker.Worker.info``)."""

    id: str
    family: str | None
    host: str | None = Field(description="the host or pod name")
    pid: int | None
    queues: list[str]
    concurrency: dict[str, int] = Field(description="queue -> in-flight jobs allowed per consumer")
    in_flight: dict[str, int] = Field(description="queue -> jobs running now")
    started_at: float | None = Field(description="epoch seconds")
    last_heartbeat_at: float | None = Field(description="epoch seconds of its latest heartbeat")
    expires_at: float | None = Field(description="when its heartbeat runs out, epoch seconds")
    draining: bool


class MetricPoint(BaseModel):
    """Every queue's 5-minute aggregates of one bucket (or of one hour, for a week), added up."""

    at: float = Field(description="bucket start, epoch seconds")
    enqueued: int
    completed: int
    failed: int
    dead: int


class QueueTotals(BaseModel):
    queue: str
    enqueued: int
    completed: int
    failed: int
    dead: int


class OverviewMetrics(BaseModel):
    range: str
    bucket_s: int = Field(description="the width of each point, seconds")
    since: float = Field(description="epoch seconds")
    points: list[MetricPoint] = Field(description="oldest first; buckets with no rows are absent")
    queues: list[QueueTotals] = Field(description="each queue's totals over the range, busiest first")


class DeadLetterGroup(BaseModel):
    error_type: str
    count: int
    newest_at: float = Field(description="epoch seconds of the newest entry")
    example: str = Field(description="the newest entry's error message")


class DeadLetterGroups(BaseModel):
    groups: list[DeadLetterGroup] = Field(description="largest first")
    total: int
    complete: bool = Field(description="false: the DLQ is larger than was scanned")


class MatchCount(BaseModel):
    """What a filtered action would touch, counted without acting (a dry run)."""

    matching: int
    complete: bool = Field(description="false: more entries than were scanned; at least `matching`")


class BulkOutcome(BaseModel):
    id: str
    ok: bool
    job_id: str | None = Field(None, description="the job that runs now (retry, replay)")
    error: str | None = None


class BulkResult(BaseModel):
    action: str
    done: int
    failed: int
    outcomes: list[BulkOutcome]


class ScheduleView(BaseModel):
    """A recurring schedule and what the scheduler observed of it (``tq.schedules``)."""

    name: str
    queue: str
    job: str
    every: str = Field(description="cron expression and time zone, or the interval")
    suspend: bool
    concurrency_policy: str
    payload: dict[str, Any]
    next_run_at: float | None = Field(description="epoch seconds; null while suspended")
    last_run_at: float | None
    last_job_id: str | None
    last_outcome: str | None
    last_error: str | None
    fired: int
    skipped: int
    missed: int


class ScheduleRun(BaseModel):
    name: str
    job_id: str


class PauseResult(BaseModel):
    queue: str
    paused: bool


# ---- jobs --------------------------------------------------------------------------------------
class Job(BaseModel):
    """One job's record (``tq.jobs.JobRecord``)."""

    id: str
    queue: str
    name: str
    state: JobState
    attempts: int
    payload: dict[str, Any]
    enqueued_at: float | None
    started_at: float | None
    finished_at: float | None
    duration_ms: float | None
    due_at: float | None = Field(description="when a delayed or failed job runs (again)")
    error_type: str | None
    error: str | None
    stack: str | None
    failures: list[dict[str, Any]] = Field(
        description="every failed attempt: attempt, type, message, at (epoch milliseconds)"
    )
    result: Any
    idempotency_key: str | None
    trace_id: str | None
    max_attempts: int | None
    dlq_id: str | None
    replay_of: str | None
    replayed_as: str | None
    consumer: str | None
    entry_id: str | None
    progress: float | None = Field(None, description="the handler's last reported fraction done (0-1)")
    progress_message: str | None = Field(None, description="the message of its last progress report")
    progress_at: float | None = Field(None, description="when it reported it (epoch s)")


class TimelineStep(BaseModel):
    """What happened to a job: ``enqueued``, ``attempt failed`` (with the failure's fields),
    ``completed`` or ``dead`` (with ``attempt``)."""

    model_config = ConfigDict(extra="allow")

    at: float | None
    event: str


class JobDetail(Job):
    timeline: list[TimelineStep]


class FoundJob(BaseModel):
    queue: str
    job: JobDetail


class JobPage(BaseModel):
    items: list[Job]
    next_cursor: str | None = Field(description="the cursor of the next page; null: no more")


class RetryResult(BaseModel):
    queue: str
    job_id: str = Field(description="the job that runs now: a new id when a dead job was replayed")
    replayed: bool


class RemoveResult(BaseModel):
    queue: str
    job_id: str
    removed_from: JobState


class CancelResult(BaseModel):
    """What a cancel did (``tq.cancel``)."""

    queue: str
    job_id: str
    outcome: Literal["removed", "requested"] = Field(
        description="removed: it was waiting or delayed and never runs; requested: it was running "
        "(or fetched), the consumer holding it cancels it and it ends `cancelled`"
    )
    was: JobState = Field(description="the state it was cancelled from")


# ---- dead-letter queue -------------------------------------------------------------------------
class DeadLetterSummary(BaseModel):
    """A dead letter as listed (``tq.dlq.DeadLetter`` without its raw envelope)."""

    dlq_id: str
    job_id: str
    queue: str
    name: str
    error_type: str
    error: str
    stack: str
    attempts: int
    failed_at: float = Field(description="the last failure, which dead-lettered the job (epoch s)")
    first_failed_at: float = Field(description="the first attempt's failure (epoch s)")
    payload: Any
    trace_id: str | None
    idempotency_key: str | None
    enqueued_at: float | None


class DeadLetterDetail(DeadLetterSummary):
    envelope: str = Field(description="the job's envelope as it was dead-lettered (JSON)")
    history: list[dict[str, Any]] = Field(
        description="every attempt's failure: attempt, type, message, at (epoch s)"
    )


class DeadLetterPage(BaseModel):
    items: list[DeadLetterSummary]
    next_cursor: str | None = Field(description="the cursor of the next page; null: no more")


class ReplayManyResult(BaseModel):
    replayed: int
    skipped: int = Field(description="entries that could not be replayed (no envelope to run again)")
    job_ids: list[str]


class ReplayOneResult(BaseModel):
    queue: str
    dlq_id: str
    job_id: str


class DeleteResult(BaseModel):
    queue: str
    dlq_id: str
    deleted: bool


class PurgeResult(BaseModel):
    queue: str
    purged: int


# ---- the service -------------------------------------------------------------------------------
class Health(BaseModel):
    alive: bool


class Readiness(BaseModel):
    ready: bool
    reason: str | None = Field(None, description="why not (absent when ready)")
