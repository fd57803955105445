"""The consumer processes, read from the heartbeats every ``tq.worker.Worker`` already writes: each
queue's ``consumers`` sorted set (consumer id -> heartbeat expiry, ms) and, per consumer, its
``consumer_info`` JSON (``Worker.info``: family, host, pid, queues, in-flight jobs, since when).
A process that consumes several queues writes the same info under each; it is listed once."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError
from tq import config, keys
from tq.connection import text
from tq.registry import all_queues
from tq.settings import Settings

from tq_services.admin.schemas import Consumer


async def live_consumers(client: Any, settings: Settings, queues: list[str] | None = None) -> list[Consumer]:
    """Every consumer with a live heartbeat on ``queues`` (default: every registered queue), by host
    and pid. The heartbeat's last beat is its expiry less the heartbeat TTL."""
    names = queues if queues is not None else [spec.name for spec in all_queues()]
    now_ms = int(time.time() * 1000)
    async with client.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.zrangebyscore(keys.consumers(q), now_ms, "+inf", withscores=True)
        per_queue = await pipe.execute()
    seen: dict[str, tuple[str, float]] = {}  # consumer id -> (a queue it beats on, latest expiry ms)
    for q, members in zip(names, per_queue, strict=True):
        for member, score in members:
            cid = text(member)
            if cid not in seen or score > seen[cid][1]:
                seen[cid] = (q, float(score))
    if not seen:
        return []
    async with client.pipeline(transaction=False) as pipe:  # the infos and the configs: one round trip
        for cid, (q, _) in seen.items():
            pipe.get(keys.consumer_info(q, cid))
        for q in names:
            pipe.hgetall(keys.config(q))
        replies = await pipe.execute()
    infos = replies[: len(seen)]
    ttl_s = settings.heartbeat_ttl_s
    concurrency = {
        q: config.from_hash(q, raw, settings).concurrency
        for q, raw in zip(names, replies[len(seen) :], strict=True)
    }
    out = []
    for (cid, (first_queue, expiry_ms)), raw in zip(seen.items(), infos, strict=True):
        info = _info(raw)
        served = [str(q) for q in info.get("queues") or [first_queue]]
        try:
            consumer = Consumer(
                id=cid,
                family=info.get("family"),
                host=info.get("host"),
                pid=info.get("pid"),
                queues=served,
                concurrency={q: concurrency[q] for q in served if q in concurrency},
                in_flight={str(k): int(v) for k, v in (info.get("in_flight") or {}).items()},
                started_at=info.get("started_at"),
                last_heartbeat_at=expiry_ms / 1000 - ttl_s,
                expires_at=expiry_ms / 1000,
                draining=bool(info.get("draining")),
            )
        except (ValidationError, TypeError, ValueError, AttributeError):  # a heartbeat of another shape
            consumer = Consumer(
                id=cid,
                family=None,
                host=None,
                pid=None,
                queues=[first_queue],
                concurrency={},
                in_flight={},
                started_at=None,
                last_heartbeat_at=expiry_ms / 1000 - ttl_s,
                expires_at=expiry_ms / 1000,
                draining=False,
            )
        out.append(consumer)
    return sorted(out, key=lambda c: (c.host or "", c.pid or 0, c.id))


def _info(raw: Any) -> dict[str, Any]:
    """A heartbeat's JSON; one that does not parse (or expired meanwhile) reads as empty."""
    try:
        info = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}
