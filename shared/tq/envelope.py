"""The job envelope that travels through the stream, job states, and the event schema."""

from __future__ import annotations

import json
import time
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class JobState(str, Enum):
    WAITING = "waiting"  # in the stream, not yet delivered
    ACTIVE = "active"  # delivered to a consumer, running or about to
    DELAYED = "delayed"  # enqueued with a delay, waiting for its time
    FAILED = "failed"  # an attempt failed; waiting in backoff for the next attempt
    COMPLETED = "completed"
    DEAD = "dead"  # failed for good: in the dead-letter queue


class Envelope(BaseModel):
    """Immutable for the life of a job: the attempt number travels beside it in the stream entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    queue: str = Field(min_length=1)
    name: str = Field(min_length=1)
    payload: dict[str, Any]
    attempt: int = Field(1, ge=1, description="the attempt this envelope was enqueued for")
    max_attempts: int | None = Field(
        None, ge=1, description="None: the queue's live retry policy decides when a failure happens"
    )
    idempotency_key: str | None = None
    trace_id: str | None = None
    enqueued_at: float
    not_before: float | None = None
    replay_of: str | None = None


class EventType(str, Enum):
    JOB_WAITING = "job.waiting"
    JOB_DELAYED = "job.delayed"
    JOB_COMPLETED = "job.completed"
    JOB_SKIPPED = "job.skipped"
    JOB_RETRYING = "job.retrying"
    JOB_FAILED = "job.failed"
    JOB_REMOVED = "job.removed"
    JOB_PROGRESS = "job.progress"  # a handler's own progress (``JobContext.publish``)
    DLQ_ADDED = "dlq.added"
    DLQ_REPLAYED = "dlq.replayed"
    DLQ_DELETED = "dlq.deleted"
    DLQ_PURGED = "dlq.purged"
    QUEUE_PAUSED = "queue.paused"
    QUEUE_RESUMED = "queue.resumed"
    CONFIG_APPLIED = "config.applied"
    QUEUE_STATS = "queue.stats"  # the stats leader's snapshot (``tq.stats``); data = the snapshot
    DLQ_STATS = "dlq.stats"  # the stats leader's DLQ summary; data = DlqStatsData
    WORKFLOW_STEP = "workflow.step"  # a workflow step attempt changed state; data = WorkflowStepData
    AI_TASK = "ai.task"  # an AI job's progress (started, model answered, done); data = AiTaskData


class DlqStatsData(BaseModel):
    """``dlq.stats``: how a queue's dead-letter queue stands."""

    model_config = ConfigDict(extra="forbid")

    size: int
    added_last_interval: int = 0
    oldest_failed_at: float | None = None
    by_error_type: dict[str, int] = Field(default_factory=dict)


class WorkflowStepData(BaseModel):
    """``workflow.step``: one attempt of one step of a workflow instance."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: int
    instance_id: int
    step: int
    step_type: str
    attempt: int
    status: Literal["running", "completed", "failed", "retrying", "skipped"]
    error: str | None = None


class AiTaskData(BaseModel):
    """``ai.task``: progress of an AI job."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["started", "model_answered", "done", "failed"]
    article_id: int | None = None
    model: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost: float | None = None
    message: str | None = None


EVENT_DATA_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.DLQ_STATS: DlqStatsData,
    EventType.WORKFLOW_STEP: WorkflowStepData,
    EventType.AI_TASK: AiTaskData,
}
"""Event kinds whose ``data`` has a fixed shape (validated by ``JobContext.publish``)."""


class Event(BaseModel):
    """One schema for everything on ``tq:events``. The Lua scripts emit the same shape."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    queue: str
    job_id: str | None = None
    name: str | None = None
    at: float = Field(default_factory=time.time, description="epoch seconds")
    data: dict[str, Any] = Field(default_factory=dict)


def entry_job_id(fields: dict[bytes, bytes]) -> str | None:
    """The job id of a stream entry's envelope without validating the rest, or None when the entry
    is forged or corrupt (not JSON, no id, absurdly nested...)."""
    try:
        job_id = json.loads(fields.get(b"j", b""))["id"]
    except (KeyError, ValueError, TypeError, RecursionError):
        return None
    return str(job_id)
