"""The job envelope that travels through the stream, job states, and the event schema."""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

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


class Event(BaseModel):
    """One schema for everything on ``tq:events``. The Lua scripts emit the same shape."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    queue: str
    job_id: str | None = None
    name: str | None = None
    at: float = Field(default_factory=time.time, description="epoch seconds")
    data: dict[str, Any] = Field(default_factory=dict)
