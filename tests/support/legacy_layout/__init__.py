"""Jobs written in the storage layout before issue 19 (the whole envelope as JSON in the record's
``e`` and in the stream entry's ``j``), by that release's own scripts, kept here verbatim
(enqueue.lua, settle.lua, promote.lua): what a running system holds when the new layout lands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tq import keys

_HERE = Path(__file__).parent


def _script(client: Any, name: str) -> Any:
    return client.register_script((_HERE / f"{name}.lua").read_text())


def envelope_json(
    job_id: str,
    queue: str,
    name: str,
    payload: dict[str, Any],
    enqueued_at: float,
    idempotency_key: str | None = None,
    not_before: float | None = None,
) -> str:
    env: dict[str, Any] = {
        "id": job_id,
        "queue": queue,
        "name": name,
        "payload": payload,
        "attempt": 1,
        "idempotency_key": idempotency_key,
        "trace_id": None,
        "enqueued_at": enqueued_at,
    }
    if not_before is not None:
        env["not_before"] = not_before
    return json.dumps(env, separators=(",", ":"))


async def enqueue(
    client: Any,
    queue: str,
    name: str,
    payload: dict[str, Any],
    *,
    delay_s: float = 0.0,
    idempotency_key: str | None = None,
) -> str:
    """One job by the legacy enqueue script; returns its (hex) id."""
    job_id = os.urandom(16).hex()
    now = time.time()
    not_before = now + delay_s if delay_s else None
    env = envelope_json(job_id, queue, name, payload, now, idempotency_key, not_before)
    due = int(not_before * 1000) if not_before else 0
    ks = [keys.stream(queue), keys.delayed(queue), keys.counters(queue), keys.config(queue)]
    args = [
        keys.prefix(queue),
        int(now * 1000),
        queue,
        86400,
        0,
        f"{job_id}\x1f{env}\x1f{name}\x1f{idempotency_key or ''}\x1f{due}",
    ]
    [reply] = await _script(client, "enqueue")(keys=ks, args=args)
    return reply.decode()


async def fail(client: Any, queue: str, consumer: str, *, dead: bool, due_s: float = 0.0) -> list[str]:
    """Read every waiting entry as consumer ``consumer`` and settle each by the legacy settle
    script as a failed attempt: into backoff (due in ``due_s``) or, with ``dead``, the DLQ."""
    reply = await client.xreadgroup(keys.GROUP, consumer, {keys.stream(queue): ">"}, count=1000)
    ops, ids = [], []
    now_ms = int(time.time() * 1000)
    for _stream, entries in reply or []:
        for eid, fields in entries:
            env = json.loads(fields[b"j"])
            failure = json.dumps({"type": "RuntimeError", "message": "legacy failure", "stack": "Traceback"})
            kind, a = ("d", "") if dead else ("r", str(now_ms + int(due_s * 1000)))
            ops.append(
                "\x1f".join(
                    [
                        kind,
                        eid.decode(),
                        env["id"],
                        env["name"],
                        "1",
                        str(now_ms),
                        "1.0",
                        env.get("idempotency_key") or "",
                        "",
                        a,
                        failure,
                    ]
                )
            )
            ids.append(env["id"])
    ks = [
        keys.stream(queue),
        keys.delayed(queue),
        keys.dlq(queue),
        keys.completed_index(queue),
        keys.dead_index(queue),
        keys.counters(queue),
        keys.audit(queue),
        keys.started(queue),
    ]
    args = [keys.prefix(queue), keys.GROUP, now_ms, queue, 1000, 1000, 0, 0, consumer, *ops]
    await _script(client, "settle")(keys=ks, args=args)
    return ids
