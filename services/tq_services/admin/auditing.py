"""Audit rows for the admin API: every call that changes something, and every read of payloads.

``AuditedRoute`` wraps a route's handler (so also the parts FastAPI runs before the endpoint: the
token check, the rate limit, body validation) and writes one ``AuditLog`` row whatever the outcome,
once the caller is known: actor = the token's subject, action = the route's name, target =
``queue[/id]``, outcome = ``ok`` or the error code (``forbidden``, ``rate_limited``, ``not_found``,
``invalid_input``, ``conflict``, ``internal_error``), details = request id, client address,
method, path, status, role, the error message or what the call did. Calls without a valid token
write no row: there is no actor, and anyone could fill the table with them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from tq.audit import record

from tq_services.admin.auth import Principal
from tq_services.admin.errors import ApiError, error_code, request_id, validation_fields
from tq_services.admin.state import admin_state

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_DATA_ACCESS = "__tq_admin_data_access__"
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def data_access(fn: F) -> F:
    """Mark a read endpoint whose answer holds job payloads: its calls are audited too."""
    setattr(fn, _DATA_ACCESS, True)
    return fn


def note(request: Request, **result: Any) -> None:
    """What a successful call did, for its audit row's details."""
    request.state.audit_result = result


def _clean(value: str, limit: int) -> str:
    return value.replace("\x00", "")[:limit]  # PostgreSQL text refuses NUL


def _target(request: Request) -> str:
    params = request.path_params
    parts = [str(params[k]) for k in ("queue", "job_id", "dlq_id") if k in params]
    return _clean("/".join(parts) or request.url.path, 300)


class AuditedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        writes = bool((self.methods or set()) & _WRITES)
        if not writes and not getattr(self.endpoint, _DATA_ACCESS, False):
            return handler
        action = f"admin.{self.name}"

        async def audited(request: Request) -> Response:
            status, message = 500, "internal error"
            try:
                response = await handler(request)
                status, message = response.status_code, ""
                return response
            except ApiError as exc:
                status, message = exc.status, exc.message
                raise
            except RequestValidationError as exc:
                status = 422
                message = "; ".join(f"{f['field']}: {f['message']}" for f in validation_fields(exc))
                raise
            except StarletteHTTPException as exc:
                status, message = exc.status_code, str(exc.detail)
                raise
            except RedisError as exc:  # answered 503 by errors.install
                status, message = 503, f"Redis is unavailable: {exc}"
                raise
            finally:
                principal: Principal | None = getattr(request.state, "principal", None)
                if principal is not None:
                    await _write(
                        request, principal, action, status, message, kind="write" if writes else "read"
                    )

        return audited


async def _write(
    request: Request, principal: Principal, action: str, status: int, message: str, kind: str
) -> None:
    details: dict[str, Any] = {
        "request_id": request_id(request),
        "client": request.client.host if request.client else None,
        "method": request.method,
        "path": _clean(request.url.path, 500),
        "status": status,
        "role": principal.role.value,
        "kind": "data_access" if kind == "read" else "change",
    }
    if message:
        details["error"] = _clean(message, 2000)
    result = getattr(request.state, "audit_result", None)
    if result and status < 400:
        details["result"] = result
    outcome = "ok" if status < 400 else error_code(status)
    try:
        await record(
            admin_state(request).engine,
            actor=_clean(principal.subject, 200),
            action=action,
            target=_target(request),
            outcome=outcome,
            details=details,
        )
    except Exception:
        # the call has happened (or been refused) and is answered; an unwritten row must not pass
        # unnoticed, so it is logged loudly and the request fails with a 500
        log.exception("admin audit row not written: %s %s by %s", action, _target(request), principal.subject)
        raise
