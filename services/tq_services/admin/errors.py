"""One JSON error shape for every failure of the admin API:
``{"error": {"code", "message", "request_id", "fields"?}}``, and the mapping of tq's own errors to
HTTP statuses (unknown queue/job/entry 404, wrong state 409, bad input 422)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from tq.errors import ConfirmationRequired, NotFound, TqError, UnknownJob, UnknownQueue

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


REDIS_UNAVAILABLE = "Redis is unavailable; try again later"


def error_code(status: int) -> str:
    """The ``code`` of an error answer (and the ``outcome`` of its audit row) for an HTTP status."""
    return _CODES.get(status, "error")


class ApiError(Exception):
    """An answer other than success, raised anywhere in a request and rendered by the handlers
    ``install`` registers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields
        self.headers = headers or {}

    @property
    def code(self) -> str:
        return error_code(self.status)


def from_tq_error(exc: TqError | ValueError) -> ApiError:
    """The HTTP answer for an error the tq library raised on the caller's input."""
    if isinstance(exc, (UnknownQueue, UnknownJob, NotFound)):
        return ApiError(404, str(exc))
    if isinstance(exc, ConfirmationRequired):
        return ApiError(422, str(exc), fields=[{"field": "body.confirm", "message": str(exc)}])
    if isinstance(exc, TqError):  # a job in the wrong state for the action
        return ApiError(409, str(exc))
    return ApiError(422, str(exc))


def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(request: Request, err: ApiError) -> JSONResponse:
    return error_json(err, request_id(request))


def error_json(err: ApiError, rid: str | None) -> JSONResponse:
    body: dict[str, Any] = {"code": err.code, "message": err.message, "request_id": rid}
    if err.fields:
        body["fields"] = err.fields
    return JSONResponse({"error": body}, status_code=err.status, headers=err.headers)


def invalid(fields: list[dict[str, str]]) -> ApiError:
    """A 422 naming each invalid field, in ``fields`` and in its message (``field: message; ...``)."""
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields) or "invalid request"
    return ApiError(422, summary, fields=fields)


def validation_fields(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", "invalid"))}
        for e in exc.errors()
    ]


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the JSON shape above."""

    async def _api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(request, exc)

    async def _validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(request, invalid(validation_fields(exc)))

    async def _http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(
            request, ApiError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        )

    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        # the reason (host, port) goes to the log, never to the caller
        log.warning("admin API: Redis failed on %s %s: %s", request.method, request.url.path, exc)
        unavailable = ApiError(503, REDIS_UNAVAILABLE, headers={"Retry-After": "5"})
        return error_response(request, unavailable)

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("admin API: unexpected error on %s %s", request.method, request.url.path)
        return error_response(request, ApiError(500, "internal error; see the service log"))

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RedisError, _redis_down)
    app.add_exception_handler(Exception, _unexpected)
