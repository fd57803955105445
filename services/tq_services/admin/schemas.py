"""The bodies of the admin API, as pydantic models: what the routes accept and what they answer,
so the OpenAPI document (``/openapi.json``) describes every request and every response.

The answers mirror the tq library's own records (``tq.jobs.JobRecord``, ``tq.dlq.DeadLetter``,
``tq.jobs.counts``, ``tq.stats``) field for field, nulls included.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
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
    failures: list[dict[str, Any]] = Field(description="every failed attempt: attempt, type, message, at")
    result: Any
    idempotency_key: str | None
    trace_id: str | None
    max_attempts: int | None
    dlq_id: str | None
    replay_of: str | None
    replayed_as: str | None
    consumer: str | None
    entry_id: str | None


class TimelineStep(BaseModel):
    """What happened to a job: ``enqueued``, ``attempt failed`` (with the failure's fields),
    ``completed`` or ``dead`` (with ``attempt``)."""

    model_config = ConfigDict(extra="allow")

    at: float | None
    event: str


class JobDetail(Job):
    timeline: list[TimelineStep]


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
