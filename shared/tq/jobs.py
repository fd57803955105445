"""Job records (``tq:{q}:job:<id>``): inspect, list by state with a cursor and text search,
retry now, remove. Also the per-queue counts that ``tq queues`` shows."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from tq import config, keys
from tq.connection import text
from tq.dlq import attempt_failures, replay_one
from tq.envelope import (
    FINISHED_STATES,
    Event,
    EventType,
    JobState,
    entry_fields,
    entry_job_id,
    ms_to_s,
    record_envelope,
)
from tq.errors import NotFound, TqError
from tq.paging import Page
from tq.registry import get_queue
from tq.scripts import Scripts


@dataclass
class JobRecord:
    id: str
    queue: str
    name: str
    state: JobState
    attempts: int
    payload: dict[str, Any]
    enqueued_at: float | None
    started_at: float | None = None
    finished_at: float | None = None
    duration_ms: float | None = None
    due_at: float | None = None
    error_type: str | None = None
    error: str | None = None
    stack: str | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    idempotency_key: str | None = None
    trace_id: str | None = None
    max_attempts: int | None = None
    dlq_id: str | None = None
    replay_of: str | None = None
    replayed_as: str | None = None
    consumer: str | None = None
    entry_id: str | None = None
    progress: float | None = None  # the handler's last ctx.progress (tq.progress): fraction 0-1
    progress_message: str | None = None
    progress_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d

    def timeline(self) -> list[dict[str, Any]]:
        """What happened to the job, in order: enqueued, each failed attempt, the last outcome."""
        out: list[dict[str, Any]] = [{"at": self.enqueued_at, "event": "enqueued"}]
        # a failure's own "at" is epoch milliseconds (as stored); every step's "at" is seconds
        out += [{**f, "at": f.get("at", 0) / 1000, "event": "attempt failed"} for f in self.failures]
        if self.state in FINISHED_STATES and self.finished_at:
            out.append({"at": self.finished_at, "event": self.state.value, "attempt": self.attempts})
        return out


def _dead_letter_ms(h: dict[bytes, bytes]) -> bytes | None:
    """A dead job's finish time once its DLQ entry is gone: the entry's id (the XADD's milliseconds,
    on Redis's clock), which its record keeps in place of a finish time of its own."""
    dl = h.get(b"dl")
    return dl.split(b"-", 1)[0] if dl else None


def _record(
    queue: str,
    job_id: str,
    h: dict[bytes, bytes],
    pending: bool,
    entry: dict[bytes, bytes] | None = None,
    dead: dict[bytes, bytes] | None = None,
    finished_ms: float | None = None,
) -> JobRecord:
    """A job from its record, the stream entry of a waiting or active job (its envelope is there),
    the DLQ entry of a dead one (its payload and stack are there) and a completed one's score in
    the completed index (``finished_ms``: its record keeps no finish time; a dead one's is its DLQ
    entry's id). Either storage layout."""
    env = record_envelope(h, entry, dead)
    state = JobState(text(h.get(b"s")) or "waiting")  # a waiting job's record holds only its entry id
    if state is JobState.WAITING and pending:
        state = JobState.ACTIVE
    result: Any = None
    if h.get(b"r"):
        try:
            result = json.loads(h[b"r"])
        except ValueError:
            result = text(h[b"r"])
    # a dead job's message and failures are in its dead letter (the record keeps their summary)
    dead = dead or {}
    stack = h.get(b"es") or dead.get(b"es")
    error = h.get(b"em") or dead.get(b"em")
    failures = json.loads(h[b"h"]) if h.get(b"h") else attempt_failures(dead) if dead else []
    return JobRecord(
        id=job_id,
        queue=queue,
        name=env.get("name", ""),
        state=state,
        attempts=int(h.get(b"a") or (1 if state is JobState.COMPLETED else 0)),  # a first one: no 'a'
        payload=env.get("payload", {}),
        enqueued_at=env.get("enqueued_at"),
        started_at=ms_to_s(h.get(b"st")),
        finished_at=ms_to_s(h.get(b"f") or dead.get(b"f") or _dead_letter_ms(h))
        or (int(finished_ms) / 1000 if finished_ms else None),
        duration_ms=float(h[b"d"]) if h.get(b"d") else None,
        due_at=ms_to_s(h.get(b"q")) if state in (JobState.DELAYED, JobState.FAILED) else None,
        error_type=text(h.get(b"et")) or None,
        error=text(error) or None,
        stack=text(stack) or None,
        failures=failures,
        result=result,
        idempotency_key=env.get("idempotency_key"),
        trace_id=env.get("trace_id"),
        max_attempts=env.get("max_attempts"),
        dlq_id=text(h.get(b"dl")) or None,
        replay_of=env.get("replay_of") or None,
        replayed_as=text(h.get(b"ra")) or None,
        consumer=text(h.get(b"c")) or None,
        entry_id=text(h.get(b"x")) or None,
        progress=float(h[b"pg"]) if h.get(b"pg") else None,
        progress_message=text(h.get(b"pm")) or None,
        progress_at=ms_to_s(h.get(b"pt")),
    )


async def _xpending(client: Any, stream: str, lo: str, hi: str, count: int) -> list[dict[str, Any]]:
    """XPENDING rows; none while no consumer has created the group yet (NOGROUP)."""
    try:
        return list(await client.xpending_range(stream, keys.GROUP, min=lo, max=hi, count=count))
    except ResponseError as exc:
        if "NOGROUP" in str(exc):
            return []
        raise


async def get_job(client: Any, queue: str, job_id: str) -> JobRecord:
    """One job, read in one round trip (``scripts/inspect.lua``)."""
    get_queue(queue)
    reply = await Scripts(client).inspect(
        keys=[keys.job(queue, job_id), keys.stream(queue), keys.dlq(queue), keys.completed_index(queue)],
        args=[keys.GROUP, job_id],
    )
    if not reply:
        raise NotFound(
            f"no job {job_id} on {queue} (never enqueued there, removed or cancelled before it ran, "
            "or trimmed by retention)"
        )
    h, entry, pending, dead, finished = reply
    finished_ms = float(finished) if finished else None
    return _record(
        queue, job_id, entry_fields(h), bool(pending), entry_fields(entry), entry_fields(dead), finished_ms
    )


def _matches(rec: JobRecord, needle: str | None) -> bool:
    if not needle:
        return True
    hay = " ".join([rec.id, rec.name, json.dumps(rec.payload), rec.error or "", rec.error_type or ""]).lower()
    return needle.lower() in hay


async def _load(client: Any, queue: str, ids: list[str]) -> list[tuple[str, dict[bytes, bytes]]]:
    async with client.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.hgetall(keys.job(queue, i))
        rows = await pipe.execute()
    return [(i, h) for i, h in zip(ids, rows, strict=True) if h]


async def list_jobs(
    client: Any,
    queue: str,
    state: JobState | str,
    *,
    cursor: str | None = None,
    limit: int = 50,
    search: str | None = None,
    scan_limit: int = 10_000,
) -> Page:
    """One page of jobs in ``state``. Waiting/active come from the stream (oldest first); delayed and
    failed from the delayed set (soonest first); completed and dead from their indexes (newest first).
    ``cursor`` is opaque; ``search`` matches id, name, payload and error text; at most ``scan_limit``
    records are examined per call so a rare match cannot make a call unbounded."""
    get_queue(queue)
    state = JobState(state)
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    found: list[JobRecord] = []
    scanned = 0
    chunk = max(limit, 100)
    pos = cursor
    while len(found) < limit and scanned < scan_limit:
        entries: dict[str, dict[bytes, bytes]] = {}  # a waiting or active job's envelope is in its entry
        finished: dict[str, float] = {}  # index scores: a completed job's is its finish time
        if state in (JobState.WAITING, JobState.ACTIVE):
            ids, next_pos, entries = await _stream_ids(client, queue, state, pos, chunk)
        else:
            ids, next_pos, finished = await _index_ids(client, queue, state, pos, chunk)
        if not ids:
            pos = None
            break
        scanned += len(ids)
        rows = await _load(client, queue, ids)
        dead = await _dead_entries(client, queue, rows) if state is JobState.DEAD else {}
        for job_id, h in rows:
            active = state is JobState.ACTIVE
            finished_ms = (
                finished.get(job_id) if state is JobState.COMPLETED else None
            )  # a score, not a due time
            rec = _record(queue, job_id, h, active, entries.get(job_id), dead.get(job_id), finished_ms)
            if rec.state is state and _matches(rec, search):
                found.append(rec)
                if len(found) == limit:
                    next_pos = _cursor_after(state, job_id, ids, next_pos, pos)
                    break
        pos = next_pos
        if pos is None:
            break
    return Page(found, pos)


def _cursor_after(
    state: JobState, job_id: str, ids: list[str], chunk_next: str | None, chunk_pos: str | None
) -> str | None:
    """Resume right after ``job_id`` inside the chunk that held it."""
    idx = ids.index(job_id)
    if idx == len(ids) - 1:
        return chunk_next
    if state in (JobState.WAITING, JobState.ACTIVE):
        return f"job:{job_id}"
    return str(int(chunk_pos or 0) + idx + 1)


async def _dead_entries(
    client: Any, queue: str, rows: list[tuple[str, dict[bytes, bytes]]]
) -> dict[str, dict[bytes, bytes]]:
    """The DLQ entries of dead jobs (their payload and stack are there), by job id."""
    dead = [(job_id, text(h[b"dl"])) for job_id, h in rows if h.get(b"dl")]
    found = await _entries(client, keys.dlq(queue), [dl for _, dl in dead])
    by_dlq = dict(found)
    return {job_id: by_dlq[dl] for job_id, dl in dead if dl in by_dlq}


async def _stream_ids(
    client: Any, queue: str, state: JobState, pos: str | None, count: int
) -> tuple[list[str], str | None, dict[str, dict[bytes, bytes]]]:
    """Job ids of waiting (undelivered) or active (pending) entries after the entry cursor ``pos``."""
    stream = keys.stream(queue)
    if pos and pos.startswith("job:"):  # resume after a job: find its entry
        eid = text(await client.hget(keys.job(queue, pos[4:]), "x"))
        pos = eid or None
    if state is JobState.ACTIVE:
        rows = await _xpending(client, stream, f"({pos}" if pos else "-", "+", count)
        eids = [text(r["message_id"]) for r in rows]
        entries = [(e, f) for e, f in await _entries(client, stream, eids)]
    else:
        start = pos
        if start is None:
            groups = await client.xinfo_groups(stream) if await client.exists(stream) else []
            delivered = next(
                (text(g["last-delivered-id"]) for g in groups if text(g["name"]) == keys.GROUP), "0-0"
            )
            start = delivered
        raw = await client.xrange(stream, min=f"({start}", max="+", count=count)
        entries = [(text(e), f) for e, f in raw]
    by_id = {job_id: f for _eid, f in entries if (job_id := entry_job_id(f)) is not None}  # forged: not jobs
    next_pos = entries[-1][0] if len(entries) == count else None
    return list(by_id), next_pos, by_id


async def _entries(client: Any, stream: str, eids: list[str]) -> list[tuple[str, dict[bytes, bytes]]]:
    async with client.pipeline(transaction=False) as pipe:
        for e in eids:
            pipe.xrange(stream, min=e, max=e)
        rows = await pipe.execute()
    return [(e, r[0][1]) for e, r in zip(eids, rows, strict=True) if r]


async def _index_ids(
    client: Any, queue: str, state: JobState, pos: str | None, count: int
) -> tuple[list[str], str | None, dict[str, float]]:
    """Ids of one chunk of an index, and their scores (a completed job's is when it finished)."""
    offset = int(pos or 0)
    if state in (JobState.DELAYED, JobState.FAILED):
        raw = await client.zrange(keys.delayed(queue), offset, offset + count - 1, withscores=True)
    else:
        # cancelled jobs share the completed index (and its retention)
        finished = (JobState.COMPLETED, JobState.CANCELLED)
        index = keys.completed_index(queue) if state in finished else keys.dead_index(queue)
        raw = await client.zrevrange(index, offset, offset + count - 1, withscores=True)
    scores = {text(i): float(score) for i, score in raw}
    return list(scores), (str(offset + count) if len(raw) == count else None), scores


async def retry_job(client: Any, queue: str, job_id: str) -> str:
    """Run a job again now: a dead job is replayed from the DLQ (returns the new job id); a job in
    backoff or delayed is made due now (returns its id)."""
    rec = await get_job(client, queue, job_id)
    if rec.state is JobState.DEAD:
        if not rec.dlq_id:
            raise TqError(f"job {job_id} has no DLQ entry to replay")
        return await replay_one(client, queue, rec.dlq_id)
    if rec.state in (JobState.DELAYED, JobState.FAILED):
        await client.zadd(keys.delayed(queue), {job_id: int(time.time() * 1000)}, xx=True)
        return job_id
    raise TqError(f"job {job_id} is {rec.state.value}; only dead, failed or delayed jobs can be retried")


async def remove_job(client: Any, queue: str, job_id: str) -> JobState:
    """Delete a job that is not running. Returns the state it was removed from."""
    rec = await get_job(client, queue, job_id)
    if rec.state is not JobState.ACTIVE:
        outcome = await Scripts(client).remove(
            keys=[
                keys.stream(queue),
                keys.delayed(queue),
                keys.completed_index(queue),
                keys.dead_index(queue),
                keys.job(queue, job_id),
            ],
            args=[keys.GROUP, rec.entry_id if rec.state is JobState.WAITING and rec.entry_id else "", job_id],
        )
        if text(outcome) == "removed":
            await client.publish(
                keys.EVENTS_CHANNEL,
                Event(
                    type=EventType.JOB_REMOVED, queue=queue, job_id=job_id, name=rec.name
                ).model_dump_json(),
            )
            return rec.state
    raise TqError(f"job {job_id} is running; it cannot be removed")


async def counts(client: Any, queue: str) -> dict[str, Any]:
    """Counts by state plus totals, from cheap commands only."""
    get_queue(queue)
    stream = keys.stream(queue)
    now_ms = int(time.time() * 1000)
    async with client.pipeline(transaction=False) as pipe:
        pipe.xlen(stream)
        pipe.exists(stream)
        pipe.zcard(keys.delayed(queue))
        pipe.xlen(keys.dlq(queue))
        pipe.hgetall(keys.counters(queue))
        pipe.zcount(keys.consumers(queue), now_ms, "+inf")
        length, exists, delayed, dead, totals, consumers = await pipe.execute()
    active = 0
    if exists:
        try:
            active = int((await client.xpending(stream, keys.GROUP))["pending"])
        except ResponseError:  # no group yet: nothing delivered
            active = 0
    cfg = await config.read(client, queue)
    t = {text(k): int(v) for k, v in totals.items()}
    return {
        "queue": queue,
        "waiting": max(0, length - active),
        "active": active,
        "delayed": delayed,
        "completed": t.get("completed", 0),
        "dead": dead,
        "cancelled": t.get("cancelled", 0),
        "retried": t.get("retried", 0),
        "enqueued": t.get("enqueued", 0),
        "paused": cfg.paused,
        "concurrency": cfg.concurrency,
        "consumers": consumers,
    }
