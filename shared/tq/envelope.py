"""The job envelope that travels through the stream, job states, and the event schema."""

from __future__ import annotations

import functools
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
    CANCELLED = "cancelled"  # cancelled while running (tq.cancel): not retried, not dead-lettered


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


# ---- the wire encoding ------------------------------------------------------------------------
# A new job's envelope is written by ``new_job_json`` (the producer's hot path: no model built, the
# payload already validated and encoded) and read back by consumers with
# ``Envelope.model_validate_json``; a replay rewrites a dead-lettered one with ``replayed_json``.
# tests/engine/test_envelope.py checks that what these write parses back into ``Envelope`` with the
# same values, and that every field they leave out has a default.


@functools.lru_cache(maxsize=4096)
def _json_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _json_opt(value: str | None) -> str:
    """A string (or None) as JSON; queue and job names repeat, so their encoding is cached."""
    return "null" if value is None else _json_str(value)


@functools.lru_cache(maxsize=256, typed=True)
def _json_time(value: float) -> str:
    """A time as JSON: every job of a bulk chunk shares one, and a float's repr costs more than
    the rest of the envelope."""
    return repr(value)


def new_job_json(
    job_id: str,
    queue: str,
    name: str,
    payload_json: str,
    enqueued_at: float,
    idempotency_key: str | None = None,
    trace_id: str | None = None,
    not_before: float | None = None,
) -> str:
    """The JSON of a new job's ``Envelope`` (attempt 1; ``max_attempts`` and ``replay_of`` left to
    their defaults), assembled around ``payload_json``, the payload already validated and encoded.
    ``job_id`` must need no JSON escaping (the producer's ids are hex)."""
    return (
        f'{{"id":"{job_id}","queue":{_json_opt(queue)},"name":{_json_opt(name)},"payload":{payload_json},'
        f'"attempt":1,"idempotency_key":{_json_opt(idempotency_key)},"trace_id":{_json_opt(trace_id)},'
        f'"enqueued_at":{_json_time(enqueued_at)}'
        + ("}" if not_before is None else f',"not_before":{_json_time(not_before)}}}')
    )


def replayed_json(envelope: dict[str, Any], job_id: str, enqueued_at: float, replay_of: str) -> str:
    """A dead-lettered job's envelope (parsed JSON) as a new job replaying it: a new id, attempt 1,
    due now, linked to the job it replays; payload, name, keys and trace id kept."""
    envelope = {
        **envelope,
        "id": job_id,
        "attempt": 1,
        "enqueued_at": enqueued_at,
        "not_before": None,
        "replay_of": replay_of,
    }
    return json.dumps(envelope, separators=(",", ":"))


class EventType(str, Enum):
    JOB_WAITING = "job.waiting"
    JOB_DELAYED = "job.delayed"
    JOB_COMPLETED = "job.completed"
    JOB_SKIPPED = "job.skipped"
    JOB_RETRYING = "job.retrying"
    JOB_FAILED = "job.failed"
    JOB_REMOVED = "job.removed"
    JOB_CANCELLED = "job.cancelled"  # cancelled (tq.cancel); data: from (the state it was in), attempt
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


class ProgressData(BaseModel):
    """``job.progress``: ``JobContext.progress`` sends ``fraction`` (0-1) and ``message``; other
    producers of the kind (a plugin's own events) add their own fields."""

    model_config = ConfigDict(extra="allow")

    fraction: float | None = Field(None, ge=0, le=1)
    message: str | None = Field(None, max_length=500)


class CancelledData(BaseModel):
    """``job.cancelled``: the state the job was cancelled from and the attempt it was on."""

    model_config = ConfigDict(extra="forbid")

    was: Literal["waiting", "delayed", "failed", "active"]
    attempt: int


EVENT_DATA_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.JOB_PROGRESS: ProgressData,
    EventType.JOB_CANCELLED: CancelledData,
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
