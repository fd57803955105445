"""Dead-letter queue operations: list (time range, error type, text; cursor), inspect, replay one,
replay up to N filtered, delete one, purge with the queue name as confirmation.

A DLQ entry (``tq:{q}:dlq``) holds: original job id, queue, job name, error type and message,
stack, attempts made, first and last failure time, every attempt's failure (type, message, time),
the envelope (payload, trace id, idempotency key): all it needs, so it outlives the job record
(trimmed by ``retention_failed``). The stream is capped per queue (``dlq_max_len``): at the cap each
new dead job trims the oldest entry, counted in the queue's ``dlq_trimmed`` counter. A replay
re-enqueues under a new id with a fresh attempt count and links old and new (``replay_of`` /
``replayed_as``); deleting the DLQ entry in the same script makes a replay happen at most once.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from tq import keys
from tq.connection import text
from tq.envelope import Event, EventType, new_job_id
from tq.errors import ConfirmationRequired, NotFound
from tq.paging import Page
from tq.registry import get_queue
from tq.scripts import Scripts
from tq.settings import get_settings


@dataclass
class DeadLetter:
    dlq_id: str
    job_id: str
    queue: str
    name: str
    error_type: str
    error: str
    stack: str
    attempts: int
    failed_at: float  # the last failure (the one that dead-lettered it)
    first_failed_at: float  # the first attempt's failure
    history: list[dict[str, Any]]  # every attempt's failure: attempt, type, message, at (epoch s)
    payload: Any
    trace_id: str | None
    idempotency_key: str | None
    enqueued_at: float | None
    envelope: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(value: bytes | None) -> int:
    try:
        return int(float(text(value) or 0))
    except ValueError:
        return 0


def _ms_to_s(value: bytes | None) -> float:
    return _ms(value) / 1000


def attempt_failures(f: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """A DLQ entry's failed attempts as stored (``at`` in ms): its ``h`` (none when forged), or for
    an entry that dead-lettered at its only failure (settle.lua writes ``h`` only after earlier
    ones) that one attempt, from the entry's own fields."""
    if not f.get(b"h"):
        return [
            {"attempt": int(f.get(b"a") or 1), "type": text(f.get(b"et")), "message": text(f.get(b"em")),
             "at": _ms(f.get(b"f"))}
        ]  # fmt: skip
    try:
        items = json.loads(f[b"h"])
    except (ValueError, RecursionError):
        return []
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _parse(queue: str, dlq_id: str, f: dict[bytes, bytes]) -> DeadLetter:
    failed_at = _ms_to_s(f.get(b"f"))
    raw = text(f.get(b"e"))
    try:
        env = json.loads(raw) if raw else {}
        env = env if isinstance(env, dict) else {}
    except (ValueError, RecursionError):  # forged: corrupt or absurdly nested
        env = {}
    return DeadLetter(
        dlq_id=dlq_id,
        job_id=text(f.get(b"id")),
        queue=text(f.get(b"q")) or queue,
        name=text(f.get(b"n")),
        error_type=text(f.get(b"et")),
        error=text(f.get(b"em")),
        stack=text(f.get(b"es")),
        attempts=int(f.get(b"a") or 0),
        failed_at=failed_at,
        first_failed_at=_ms_to_s(f.get(b"ff")) or failed_at,  # entries from before it had one
        history=[a | {"at": _ms_to_s(str(a.get("at", 0)).encode())} for a in attempt_failures(f)],
        payload=env.get("payload", raw if not env else None),
        trace_id=text(f.get(b"tr")) or env.get("trace_id"),
        idempotency_key=env.get("idempotency_key"),
        enqueued_at=env.get("enqueued_at"),
        envelope=raw,
    )


def _matches(d: DeadLetter, error_type: str | None, text_: str | None) -> bool:
    if error_type and d.error_type != error_type:
        return False
    if text_:
        hay = " ".join([d.job_id, d.name, d.error_type, d.error, d.envelope]).lower()
        return text_.lower() in hay
    return True


def _bounds(since: float | None, until: float | None) -> tuple[str, str]:
    lo = f"{int(since * 1000)}-0" if since is not None else "-"
    hi = f"{int(until * 1000)}-{2**63 - 1}" if until is not None else "+"
    return lo, hi


def _is_first_id(entry_id: str) -> bool:
    ms, _, seq = entry_id.partition("-")
    return ms.isdigit() and int(ms) == 0 and (not seq or (seq.isdigit() and int(seq) == 0))


async def list_dead(
    client: Any,
    queue: str,
    *,
    since: float | None = None,
    until: float | None = None,
    error_type: str | None = None,
    text: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    scan_limit: int = 10_000,
) -> Page:
    """Newest first. ``cursor`` is the last entry id of the previous page."""
    get_queue(queue)
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    lo, hi = _bounds(since, until)
    if cursor:
        if _is_first_id(cursor):  # nothing is older (and Redis refuses "(0-0" as an end)
            return Page([], None)
        hi = f"({cursor}"
    out: list[DeadLetter] = []
    scanned = 0
    chunk = max(limit, 200)
    next_cursor: str | None = None
    while len(out) < limit and scanned < scan_limit:
        rows = await client.xrevrange(keys.dlq(queue), max=hi, min=lo, count=chunk)
        if not rows:
            next_cursor = None
            break
        scanned += len(rows)
        for eid, f in rows:
            d = _parse(queue, eid.decode(), f)
            next_cursor = d.dlq_id
            if _matches(d, error_type, text):
                out.append(d)
                if len(out) == limit:
                    break
        if len(out) < limit:
            if len(rows) < chunk:
                next_cursor = None
                break
            hi = f"({next_cursor}"
    if next_cursor and len(out) == limit:
        more = await client.xrevrange(keys.dlq(queue), max=f"({next_cursor}", min=lo, count=1)
        next_cursor = next_cursor if more else None
    return Page(out, next_cursor)


async def get_dead(client: Any, queue: str, dlq_id: str) -> DeadLetter:
    get_queue(queue)
    rows = await client.xrange(keys.dlq(queue), min=dlq_id, max=dlq_id)
    if not rows:
        raise NotFound(f"no DLQ entry {dlq_id} on {queue}")
    return _parse(queue, dlq_id, rows[0][1])


@dataclass
class ReplayResult:
    replayed: int
    skipped: int
    job_ids: list[str]


async def _replay(client: Any, queue: str, letters: list[DeadLetter]) -> ReplayResult:
    settings = get_settings()
    scripts = Scripts(client)
    now = time.time()
    args: list[Any] = [keys.prefix(queue), int(now * 1000), queue, int(settings.events)]
    skipped = 0
    for d in letters:
        try:
            env = json.loads(d.envelope)
            if not isinstance(env, dict) or "payload" not in env:
                raise ValueError
            max_attempts = env.get("max_attempts")
            job_args = [
                d.dlq_id,
                d.job_id,
                new_job_id(),
                d.name or str(env.get("name", "")),
                json.dumps(env["payload"], separators=(",", ":")),
                str(env.get("idempotency_key") or ""),
                str(env.get("trace_id") or ""),
                "" if max_attempts is None else int(max_attempts),
            ]
        except (ValueError, TypeError, RecursionError):  # forged: no envelope to run again, it stays
            skipped += 1
            continue
        args += job_args
    if len(args) == 4:
        return ReplayResult(0, skipped, [])
    reply = await scripts.replay(keys=[keys.dlq(queue), keys.stream(queue), keys.counters(queue)], args=args)
    ids = [text(r) for r in reply if text(r)]
    return ReplayResult(len(ids), skipped + len(reply) - len(ids), ids)


async def replay_one(client: Any, queue: str, dlq_id: str) -> str:
    d = await get_dead(client, queue, dlq_id)
    result = await _replay(client, queue, [d])
    if not result.job_ids:
        raise NotFound(
            f"DLQ entry {dlq_id} on {queue} was replayed or removed meanwhile, or cannot be replayed"
        )
    return result.job_ids[0]


async def replay(
    client: Any,
    queue: str,
    *,
    limit: int | None = None,
    error_type: str | None = None,
    text: str | None = None,
    since: float | None = None,
    until: float | None = None,
    chunk: int = 200,
) -> ReplayResult:
    """Replay matching entries, oldest first, up to ``limit`` (all when None)."""
    get_queue(queue)
    lo, hi = _bounds(since, until)
    total = ReplayResult(0, 0, [])
    start = lo
    while limit is None or total.replayed < limit:
        rows = await client.xrange(keys.dlq(queue), min=start, max=hi, count=chunk)
        if not rows:
            break
        start = f"({rows[-1][0].decode()}"
        picked = [d for d in (_parse(queue, e.decode(), f) for e, f in rows) if _matches(d, error_type, text)]
        room = None if limit is None else limit - total.replayed
        cut = room is not None and len(picked) > room
        if cut:
            picked = picked[:room]
            # resume after the last entry taken, not after the chunk: if some of those are skipped
            # (no envelope) or gone, the next round must still see the matches cut off here
            start = f"({picked[-1].dlq_id}"
        if picked:
            r = await _replay(client, queue, picked)
            total.replayed += r.replayed
            total.skipped += r.skipped
            total.job_ids += r.job_ids
        if len(rows) < chunk and not cut:
            break
    return total


async def delete(client: Any, queue: str, dlq_id: str) -> None:
    get_queue(queue)
    if not await client.xdel(keys.dlq(queue), dlq_id):
        raise NotFound(f"no DLQ entry {dlq_id} on {queue}")
    await client.publish(
        keys.EVENTS_CHANNEL,
        Event(type=EventType.DLQ_DELETED, queue=queue, data={"dlq_id": dlq_id}).model_dump_json(),
    )


async def purge(client: Any, queue: str, confirm: str) -> int:
    """Delete every DLQ entry of ``queue``; ``confirm`` must equal the queue name."""
    get_queue(queue)
    if confirm != queue:
        raise ConfirmationRequired(f"purge needs the queue name {queue!r} as confirmation, got {confirm!r}")
    async with client.pipeline(transaction=True) as pipe:  # one key: one slot on a cluster
        pipe.xlen(keys.dlq(queue))
        pipe.delete(keys.dlq(queue))
        n, _ = await pipe.execute()
    # after the MULTI, not in it: a cluster pipeline refuses PUBLISH
    await client.publish(keys.EVENTS_CHANNEL, Event(type=EventType.DLQ_PURGED, queue=queue).model_dump_json())
    return int(n)
