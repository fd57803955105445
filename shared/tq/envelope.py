"""The job envelope that travels through the stream, job states, and the event schema."""

from __future__ import annotations

import binascii
import functools
import json
import os
import re
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


FINISHED_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED})  # the job ended


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
# A job's stream entry carries its envelope as separate fields (names below), the payload once, as
# the producer encoded it. The job record (``tq.keys.job``) holds the same fields only while no
# entry carries them (delayed, in backoff, finished), so a job's payload is stored once. Field
# names are one or two letters and optional fields are left out: a waiting job's stream entry is
# most of what it costs in Redis (docs/engine.md, "Storage").
#
#   i id   n name   p payload JSON   t enqueued at (ms)   k idempotency key   tr trace id
#   nb not before (ms)   rp replay of   m max attempts   a attempt (retries)   sx suspect flag
#
# Entries written before this layout carry the whole envelope as JSON in ``j`` (``LEGACY_FIELD``):
# they are still read (``entry_envelope``), and the scripts keep handling records with ``e``.

WIRE_FORMAT_VERSION = 1  # docs/wire-format.md: the contract with non-Python producers; bump on any change
LEGACY_FIELD = b"j"
_ID_ALPHABET = bytes.maketrans(b"+/", b"_.")  # base64 without the '-' a CLI would take for an option


_ids: list[str] = []  # made ahead, 256 per os.urandom call: a producer's hot path pays one list.pop
os.register_at_fork(after_in_child=_ids.clear)  # a forked process never hands out its parent's ids


def _more_ids() -> None:
    # each id's 16 bytes followed by 2 zero bytes: 18 bytes are 24 base64 characters whose first 22
    # are the 16 bytes' own, so one encoding of the whole buffer gives all 256 (half the cost of
    # encoding each id alone)
    raw, buf = os.urandom(16 * 256), bytearray(18 * 256)
    for k in range(16):
        buf[k::18] = raw[k::16]
    text = binascii.b2a_base64(buf, newline=False).translate(_ID_ALPHABET).decode()
    _ids.extend(text[i : i + 22] for i in range(0, len(text), 24))


def new_job_id() -> str:
    """128 random bits as 22 characters (base64 with '_' and '.'): as unique as a uuid4, and ten
    characters shorter than its hex in every key, entry and index that names the job. Thread-safe:
    ``list.pop`` is atomic, and threads that refill at once only add more ids."""
    while True:
        try:
            return _ids.pop()
        except IndexError:
            _more_ids()


def ms_to_s(value: bytes | None) -> float | None:
    """A stored time in ms (entry and record fields) as epoch seconds; None when absent."""
    return int(value) / 1000 if value else None


def entry_id_order(eid: bytes | str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (ms, seq)."""
    ms, _, seq = (eid if isinstance(eid, bytes) else eid.encode()).partition(b"-")
    return int(ms or 0), int(seq or 0)


_PLAIN_ID = re.compile(rb"[A-Za-z0-9_.:-]{1,128}")  # Envelope.id's pattern
_PLAIN_NAME = re.compile(rb'[^"\\\x00-\x1f\x7f-\xff]{1,200}')  # no JSON escaping needed
_PLAIN_FIELDS = frozenset((b"i", b"n", b"p", b"t"))


@functools.lru_cache(maxsize=256)
def _queue_json(queue: str) -> bytes:
    return json.dumps(queue).encode()


def entry_fields(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's or hash's fields as Redis sends them, ``[f1, v1, f2, v2, ...]``, as a dict.
    A fresh job's four fields (the consumer's hot path) as one dict display: a third of the cost."""
    if len(flat) == 8:
        return {flat[0]: flat[1], flat[2]: flat[3], flat[4]: flat[5], flat[6]: flat[7]}
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=True))  # an odd list: ValueError


def plain_entry(fields: dict[bytes, bytes]) -> bool:
    """A fresh job's entry as producers write it: id, name, payload and time only, the id, name
    and time well-formed (``Envelope``'s patterns). Its envelope says nothing else: the queue is the
    stream's, the attempt the first, the rest unset (the consumer's hot path, ``tq.worker``)."""
    if fields.keys() != _PLAIN_FIELDS:
        return False
    t = fields[b"t"]
    well_formed = _PLAIN_ID.fullmatch(fields[b"i"]) and _PLAIN_NAME.fullmatch(fields[b"n"])
    # a time in ms: more than 3 digits, and few enough that int() takes it (a forged one of
    # thousands of digits raises there: unreadable, dead-lettered the slow way)
    return bool(well_formed and t.isdigit() and 3 < len(t) <= 16)


def entry_envelope(fields: dict[bytes, bytes], queue: str, entry_ms: int) -> Envelope:
    """The envelope of a stream entry (either layout); ``entry_ms``: when the entry was added (its
    id), the enqueue time of a fresh entry. Raises ``ValueError`` (a pydantic ``ValidationError``
    among them) for a forged or corrupt entry."""
    legacy = fields.get(LEGACY_FIELD)
    if legacy is not None:
        return Envelope.model_validate_json(legacy)
    if plain_entry(fields):  # one JSON parse
        t = fields[b"t"]
        # the payload's JSON is embedded as written; what it could add besides an object is
        # refused by the model (extra keys forbidden) or is what a forged 'i' or 'm' could say
        doc = b"".join(
            (
                b'{"id":"',
                fields[b"i"],
                b'","queue":',
                _queue_json(queue),
                b',"name":"',
                fields[b"n"],
                b'","payload":',
                fields[b"p"],
                b',"enqueued_at":',
                t[:-3],
                b".",
                t[-3:],
                b"}",
            )
        )
        # the validator itself: model_validate_json's keyword handling costs 0.4 µs a job
        return Envelope.__pydantic_validator__.validate_json(doc)
    try:
        payload = json.loads(fields[b"p"])
        raw = {
            "id": fields[b"i"].decode(),
            "queue": queue,
            "name": fields[b"n"].decode(),
            "payload": payload,
            "enqueued_at": ms_to_s(fields.get(b"t")) or entry_ms / 1000,
        }
        for field, key in ((b"k", "idempotency_key"), (b"tr", "trace_id"), (b"rp", "replay_of")):
            if field in fields:
                raw[key] = fields[field].decode()
        if b"nb" in fields:
            raw["not_before"] = ms_to_s(fields[b"nb"])
        if b"m" in fields:
            raw["max_attempts"] = int(fields[b"m"])
    except (KeyError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"entry without a readable {exc} field") from None
    return Envelope.model_validate(raw)


def entry_payload_json(fields: dict[bytes, bytes], env: Envelope) -> str:
    """The payload JSON as the entry holds it (re-encoded only for a legacy entry)."""
    raw = fields.get(b"p")
    return raw.decode() if raw is not None else json.dumps(env.payload, separators=(",", ":"))


def record_envelope(
    h: dict[bytes, bytes], entry: dict[bytes, bytes] | None = None, dead: dict[bytes, bytes] | None = None
) -> dict[str, Any]:
    """What a job record (merged with its stream entry's fields, when it has one) says of the job's
    envelope, as a dict of ``Envelope`` fields; either layout, forgiving (for inspection). A dead
    job's record has no payload: it is taken from its DLQ entry (``dead``, the envelope ``e``)."""
    env = _record_envelope(h, entry)
    if dead and not env.get("payload"):
        return {
            **_record_envelope({b"e": dead.get(b"e", b"")}, None),
            **{k: v for k, v in env.items() if k != "payload"},
        }
    return env


def _record_envelope(h: dict[bytes, bytes], entry: dict[bytes, bytes] | None) -> dict[str, Any]:
    legacy = h.get(b"e") or (entry or {}).get(LEGACY_FIELD)
    if legacy:
        try:
            env = json.loads(legacy)
        except (ValueError, RecursionError):
            env = None
        if isinstance(env, dict):
            return env
        # unreadable: what the record's own fields say (settled by this release, it has them)
    f = {**(entry or {}), **h}
    out: dict[str, Any] = {}
    try:
        out["payload"] = json.loads(f[b"p"]) if b"p" in f else {}
    except (ValueError, RecursionError):
        out["payload"] = f[b"p"].decode(errors="replace")
    for field, key in (
        (b"n", "name"),
        (b"k", "idempotency_key"),
        (b"tr", "trace_id"),
        (b"rp", "replay_of"),
    ):
        if field in f:
            out[key] = f[field].decode(errors="replace")
    if b"t" in f:
        out["enqueued_at"] = int(f[b"t"]) / 1000
    if f.get(b"m"):
        out["max_attempts"] = int(f[b"m"])
    return out


def envelope_json(env: Envelope) -> str:
    """An envelope as the JSON the DLQ entry keeps (``tq.dlq``)."""
    return env.model_dump_json()


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
    """The job id of a stream entry (either layout) without validating the rest, or None when the
    entry is forged or corrupt (not JSON, no id, absurdly nested...)."""
    if b"i" in fields:
        return fields[b"i"].decode(errors="replace")
    try:
        job_id = json.loads(fields.get(LEGACY_FIELD, b""))["id"]
    except (KeyError, ValueError, TypeError, RecursionError):
        return None
    return str(job_id)
