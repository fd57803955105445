"""Audit of enqueue calls (``produce``): counted summaries, not one row per call.

A producer token may enqueue thousands of jobs a minute; a row per call would put the database of
the audit log in every enqueue's path and bury the owner's changes under them. So each call is
counted in Redis, in a window of ``TQ_ADMIN_PRODUCE_AUDIT_WINDOW_S``, by (token, queue, job,
outcome), and when the window has closed one ``AuditLog`` row per such group is written: actor =
the token's subject, action ``admin.jobs.enqueue``, target ``queue/job``, outcome ``ok`` or the
error code (``invalid_input``, ``not_found``, ...), details = the window, the token's id and role,
and the counts (``calls``; for ``ok`` also ``created`` and ``duplicates``: jobs, a batch counts
each). Refusals (403, 413, 429) take the admin's usual path (``auditing.refused``).

Every replica counts into the same hash; any replica writes a closed window's rows: it claims the
hash by renaming it (one rename wins), writes the rows (``auditing.write_row``: spooled to Redis
when the database refuses them), then deletes it. A replica killed between the claim and the
delete loses that window's rows (the claimed hash expires); nothing is written twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ResponseError

from tq_services.admin.auditing import escape, write_row
from tq_services.admin.auth import Principal
from tq_services.admin.state import AdminState

ACTION = "admin.jobs.enqueue"
WINDOWS_KEY = "tq:admin:produce:windows"  # ZSET: window start (ms) of each window with counts
TALLY_TTL_MS = 7 * 86_400_000  # a window nobody flushed (no replica ran) is dropped after a week


def tally_key(window_start_ms: int) -> str:
    """HASH (expiring): the enqueue calls of one window; field = JSON [token id, subject, role,
    queue, job, outcome, measure], value = the count. The braces keep its claimed copy in the
    same cluster slot."""
    return f"tq:admin:produce:tally:{{{window_start_ms}}}"


def _window_ms(state: AdminState) -> int:
    return max(1, int(state.admin_settings.admin_produce_audit_window_s * 1000))


async def count(
    state: AdminState,
    principal: Principal,
    queue: str,
    job: str,
    outcome: str,
    *,
    created: int = 0,
    duplicates: int = 0,
) -> None:
    """Count one enqueue call (and, for ``ok``, the jobs it created or found already there)."""
    window_ms = _window_ms(state)
    now_ms = int(time.time() * 1000)
    start = now_ms - now_ms % window_ms
    key = tally_key(start)
    group = [principal.token_id, principal.subject, principal.role.value, queue, job, outcome]
    pipe = state.redis.pipeline(transaction=False)
    pipe.hincrby(key, json.dumps([*group, "calls"]), 1)
    if created:
        pipe.hincrby(key, json.dumps([*group, "created"]), created)
    if duplicates:
        pipe.hincrby(key, json.dumps([*group, "duplicates"]), duplicates)
    pipe.pexpire(key, TALLY_TTL_MS)
    pipe.zadd(WINDOWS_KEY, {str(start): start})
    await pipe.execute()


def _rows(window_start_ms: int, window_ms: int, tally: dict[Any, Any]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, ...], dict[str, int]] = defaultdict(dict)
    for raw_field, raw_value in tally.items():
        *group, measure = json.loads(raw_field)
        groups[tuple(group)][measure] = int(raw_value)
    rows = []
    for (token_id, subject, role, queue, job, outcome), counts in sorted(groups.items()):
        rows.append(
            {
                "actor": escape(subject, 200),
                "action": ACTION,
                "target": escape(f"{queue}/{job}", 300),
                "outcome": outcome,
                "details": {
                    "kind": "change",
                    "summary": True,
                    "window_start": datetime.fromtimestamp(window_start_ms / 1000, UTC).isoformat(),
                    "window_s": window_ms / 1000,
                    "token_id": token_id,
                    "role": role,
                    "counts": counts,
                },
            }
        )
    return rows


async def flush(state: AdminState, now: float | None = None) -> int:
    """Write the rows of every closed window; how many rows were written (or spooled)."""
    client = state.redis
    window_ms = _window_ms(state)
    now_ms = int((now if now is not None else time.time()) * 1000)
    written = 0
    for raw in await client.zrangebyscore(WINDOWS_KEY, "-inf", now_ms - window_ms):
        start = int(raw)
        claimed = f"{tally_key(start)}:flushing:{uuid.uuid4().hex}"
        try:
            await client.rename(tally_key(start), claimed)
        except ResponseError:  # no such key: another replica claimed it first
            await client.zrem(WINDOWS_KEY, raw)
            continue
        for row in _rows(start, window_ms, await client.hgetall(claimed)):
            await write_row(state, row)
            written += 1
        await client.delete(claimed)
        await client.zrem(WINDOWS_KEY, raw)
    return written


def flush_interval_s(state: AdminState) -> float:
    """How often closed windows are looked for: a fifth of the window, between 0.2 s and 5 s."""
    return min(5.0, max(0.2, state.admin_settings.admin_produce_audit_window_s / 5))
