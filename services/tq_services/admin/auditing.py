"""Audit rows for the admin API: every call that changes something, and every read of payloads.

``AuditedRoute`` wraps a route's handler: it checks the caller first (``deps.guard``: token,
revocation, rate limit, role; before the body is parsed, so a call with an invalid body is still
rate-limited and audited), then runs the handler and writes one ``AuditLog`` row whatever the
outcome: actor = the token's subject, action = the route's name, target = ``queue[/id]``, outcome =
``ok`` or the error code (``not_found``, ``invalid_input``, ``conflict``, ``unavailable``,
``internal_error``), details = request id, client address, method, path, status, role, token id,
the error message or what the call did. Calls without a valid token write no row: there is no
actor, and anyone could fill the table with them.

* **Refusals** (403 ``forbidden``, 429 ``rate_limited``, 413 ``payload_too_large``) are counted in
  ``tq_admin_refused_total`` and write at most one row per token per
  ``TQ_ADMIN_REFUSAL_AUDIT_WINDOW_S`` (the first refusal of a window; its details say how many
  refusals the token had in its previous window): a token holder cannot grow the table without
  bound by being refused.
* **Order**: the call is made first, then its row written, and the answer tells what the call did.
  A row the database refuses is spooled to Redis (``SPOOL_KEY``) and written later by ``flush_spool``
  (the service retries every ``SPOOL_FLUSH_S``), logged and counted in
  ``tq_admin_audit_write_failures_total{fate="spooled"}``; the answer stays the call's own (a pause
  that happened answers 200). Only when Redis refuses the row too is it lost (logged at ERROR,
  ``fate="lost"``): a change is still answered truthfully; a payload read is then refused (503), so
  payloads are never handed out unaudited.
* Text (actor, target, path, messages) is written with control characters escaped: CR, LF, NUL and
  the rest become ``\\r``, ``\\n``, ``\\x00``, ``\\xNN`` (and ``\\`` becomes ``\\\\``), so a crafted
  queue name cannot forge a line of a log made from the table, and nothing is silently dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from redis.exceptions import RedisError
from sqlalchemy import insert
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from tq.audit import record
from tq.models import AuditLog

from tq_services.admin import metrics
from tq_services.admin.auth import Principal
from tq_services.admin.deps import guard
from tq_services.admin.errors import (
    ApiError,
    error_code,
    error_response,
    invalid,
    request_id,
    validation_fields,
)
from tq_services.admin.state import AdminState, admin_state

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_DATA_ACCESS = "__tq_admin_data_access__"
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
REFUSALS = {403, 413, 429}
SPOOL_KEY = "tq:admin:audit:spool"  # LIST of JSON rows the database refused, oldest first
SPOOL_LOCK = "tq:admin:audit:spool:lock"  # STRING (expiring): one replica flushes at a time
SPOOL_FLUSH_S = 5.0
SPOOL_BATCH = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}

# KEYS[1] the token's refusal window; ARGV: now ms, window ms, key ttl ms. Returns -1 inside a
# window (count it, no row), else the refusals of the previous window (write a row).
_REFUSAL = """
local now = tonumber(ARGV[1])
local start = tonumber(redis.call('HGET', KEYS[1], 'start') or '-1')
local count = tonumber(redis.call('HGET', KEYS[1], 'count') or '0')
if start >= 0 and now - start < tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], 'count', 1)
  return -1
end
redis.call('HSET', KEYS[1], 'start', now, 'count', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return count
"""


def refusal_key(token_id: str) -> str:
    """HASH (expiring): one admin token's current refusal window (start ms, count)."""
    return f"tq:admin:refusals:{token_id}"


def data_access(fn: F) -> F:
    """Mark a read endpoint whose answer holds job payloads: its calls are audited too."""
    setattr(fn, _DATA_ACCESS, True)
    return fn


def note(request: Request, **result: Any) -> None:
    """What a successful call did, for its audit row's details."""
    request.state.audit_result = result


def escape(value: str, limit: int) -> str:
    """``value`` with control characters and backslashes escaped (never dropped), cut to ``limit``."""

    def one(m: re.Match[str]) -> str:
        c = m.group()
        return _ESCAPES.get(c) or f"\\x{ord(c):02x}"

    return _CONTROL.sub(one, value)[:limit]


def _target(request: Request) -> str:
    params = request.path_params
    parts = [str(params[k]) for k in ("queue", "job_id", "dlq_id") if k in params]
    return escape("/".join(parts) or request.url.path, 300)


def failure(exc: BaseException) -> tuple[int, str]:
    """The status and message an exception raised in a call is answered with (for its audit row)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, RequestValidationError):
        return 422, invalid(validation_fields(exc)).message
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, RedisError):  # answered 503 by errors.install; the row may say why
        return 503, f"Redis is unavailable: {exc}"
    return 500, "internal error"


class AuditedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        writes = bool((self.methods or set()) & _WRITES)
        audit = writes or getattr(self.endpoint, _DATA_ACCESS, False)
        action = f"admin.{self.name}"

        async def guarded(request: Request) -> Response:
            try:
                await guard(request, write=writes)  # before FastAPI reads and parses the body
                response = await handler(request)
            except Exception as exc:
                if audit:
                    status, message = failure(exc)
                    await _after(request, action, status, message, writes)
                raise
            if audit and not await _after(request, action, response.status_code, "", writes) and not writes:
                unaudited = ApiError(
                    503, "the read could not be audited; try again later", headers={"Retry-After": "5"}
                )
                return error_response(request, unaudited)
            return response

        return guarded


async def _after(request: Request, action: str, status: int, message: str, writes: bool) -> bool:
    """Write (or, for a refusal, count) the row of one call; False only when the row is lost."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        return True
    state = admin_state(request)
    row = audit_row(request, principal, action, status, message, kind="change" if writes else "data_access")
    if status in REFUSALS:
        await refused(state, principal, row)
        return True
    return await write_row(state, row)


def audit_row(
    request: Request, principal: Principal, action: str, status: int, message: str, *, kind: str
) -> dict[str, Any]:
    details: dict[str, Any] = {
        "request_id": request_id(request),
        "client": request.client.host if request.client else None,
        "method": request.method,
        "path": escape(request.url.path, 500),
        "status": status,
        "role": principal.role.value,
        "token_id": principal.token_id,
        "kind": kind,
    }
    if message:
        details["error"] = escape(message, 2000)
    result = getattr(request.state, "audit_result", None)
    if result and status < 400:
        details["result"] = result
    return {
        "actor": escape(principal.subject, 200),
        "action": action,
        "target": _target(request),
        "outcome": "ok" if status < 400 else error_code(status),
        "details": details,
    }


async def refused(state: AdminState, principal: Principal, row: dict[str, Any]) -> None:
    """Count a refused call; write its row only when it is the token's first in the window."""
    metrics.REFUSED.labels(row["outcome"]).inc()
    window_ms = int(state.admin_settings.admin_refusal_audit_window_s * 1000)
    try:
        earlier = int(
            await state.redis.eval(
                _REFUSAL, 1, refusal_key(principal.token_id), int(time.time() * 1000), window_ms, 86_400_000
            )
        )
    except RedisError as exc:  # cannot tell whether this window has its row: write one
        log.warning("admin audit: refusal window unavailable (%s); writing the row", exc)
        earlier = 0
    if earlier < 0:
        return
    row["details"]["refusals"] = {
        "window_s": state.admin_settings.admin_refusal_audit_window_s,
        "previous_window": earlier,
        "note": "further refusals of this token in the window are counted (tq_admin_refused_total), "
        "not written",
    }
    await write_row(state, row)


async def write_row(state: AdminState, row: dict[str, Any]) -> bool:
    """Write one row; if the database refuses it, spool it to Redis. False when both refuse."""
    try:
        await record(state.engine, **row)
        return True
    except Exception as exc:
        log.error(
            "admin audit row not written to the database (%s); spooling it: %s %s by %s",
            exc,
            row["action"],
            row["target"],
            row["actor"],
        )
    try:
        spooled = {**row, "created_at": datetime.now(UTC).isoformat()}
        await state.redis.rpush(SPOOL_KEY, json.dumps(spooled, default=str))
    except Exception:
        metrics.AUDIT_FAILURES.labels("lost").inc()
        log.exception(
            "admin audit row LOST (database and Redis refused it): %s", json.dumps(row, default=str)
        )
        return False
    metrics.AUDIT_FAILURES.labels("spooled").inc()
    return True


async def flush_spool(state: AdminState) -> int:
    """Write the spooled rows to the database, a batch at a time, oldest first; how many were written.
    At least once: rows are removed from the spool only after their batch committed."""
    client = state.redis
    if not await client.llen(SPOOL_KEY) or not await client.set(SPOOL_LOCK, "1", nx=True, px=60_000):
        return 0
    written = 0
    try:
        while raw := await client.lrange(SPOOL_KEY, 0, SPOOL_BATCH - 1):
            rows = []
            for item in raw:
                try:
                    data = json.loads(item)
                    rows.append({**data, "created_at": datetime.fromisoformat(data["created_at"])})
                except (ValueError, KeyError, TypeError):
                    log.error("admin audit: dropping a malformed spooled row: %r", item[:500])
            if rows:
                async with state.engine.begin() as conn:
                    await conn.execute(insert(AuditLog), rows)
            await client.ltrim(SPOOL_KEY, len(raw), -1)
            written += len(rows)
            metrics.SPOOL_FLUSHED.inc(len(rows))
    finally:
        await client.delete(SPOOL_LOCK)
    return written


async def run_spool_flusher(state: AdminState) -> None:
    """Retry the spooled rows every ``SPOOL_FLUSH_S`` until cancelled."""
    while True:
        every_s = SPOOL_FLUSH_S
        await asyncio.sleep(every_s)
        try:
            if n := await flush_spool(state):
                log.info("admin audit: %d spooled rows written", n)
        except Exception as exc:
            log.warning("admin audit: spooled rows not written yet (%s); again in %.0f s", exc, every_s)
