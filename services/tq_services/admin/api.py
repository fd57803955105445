"""The admin service: ``create_app(settings, admin)`` builds the FastAPI app, ``serve`` runs it under
uvicorn (``tq serve admin``).

The lifespan opens one Redis client, one database engine (for AuditLog rows) and the live events'
hub (``hub.Hub``), kept for every request in ``state.AdminState``. A request with a body must carry
a valid token, checked before any of the body is read (401, and the connection closed, otherwise),
and a body of at most ``TQ_ADMIN_MAX_BODY_BYTES`` (413) (``BodyGuard``). Every answer carries a
request id (``X-Request-ID``: the caller's when it is a plain token, else a new one) and security
headers; CORS is closed unless ``TQ_ADMIN_CORS_ORIGINS`` lists origins. The OpenAPI document is at
``/openapi.json``; the interactive docs pages are off (they load scripts from a CDN, which the
content security policy forbids). The owner's web page is at ``/`` (``page``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import uuid
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tq.connection import async_client
from tq.db import make_engine
from tq.producer import Producer
from tq.settings import Settings, get_settings
from tq.supervise import Supervisor

from tq_services.admin import console, errors, metrics, page, produce, produce_audit, realtime, routes
from tq_services.admin.auditing import audit_row, refused, run_spool_flusher
from tq_services.admin.auth import bearer, signing_key
from tq_services.admin.deps import VERIFIED, verified
from tq_services.admin.errors import ApiError, error_json
from tq_services.admin.hub import Hub
from tq_services.admin.ratelimit import SlidingWindow, produce_key
from tq_services.admin.schemas import Health, Readiness
from tq_services.admin.settings import AdminSettings, get_admin_settings
from tq_services.admin.state import AdminState, admin_state
from tq_services.family_service import uvicorn_config

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Strict-Transport-Security": "max-age=31536000",
}


class RequestContext:
    """Pure ASGI (so streams are not buffered): a request id in ``request.state`` and the answer's
    headers, and the security headers on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)


# A chunked body past the cap: this much more of it is read and dropped (for at most this long)
# before the 413, so a client still sending a modest overflow reads the answer instead of a reset.
DISCARD_BYTES = 1024 * 1024
DISCARD_S = 1.0


async def _discard_rest(receive: Receive) -> None:
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DISCARD_S):
            while dropped <= DISCARD_BYTES:
                message = await receive()
                dropped += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return


class BodyGuard:
    """Pure ASGI, for requests with a body: the token is checked before any of the body is read
    (without a valid one: 401 and ``Connection: close``, the body never read), and the body is
    capped at ``max_bytes`` (a declared ``Content-Length`` over it: 413 at once, unread; a chunked
    body: 413 as soon as it passes the cap). What passes is handed on already read, so nothing
    after this buffers more than the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not chunked and declared in (None, "0"):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.admin
        try:
            principal = await verified(state, bearer(headers.get("authorization")))
        except ApiError as exc:
            await self._refuse(scope, send, exc)
            return
        except RedisError as exc:
            errors.log.warning("admin API: Redis failed checking a token: %s", exc)
            await self._refuse(
                scope, send, ApiError(503, errors.REDIS_UNAVAILABLE, headers={"Retry-After": "5"})
            )
            return
        scope.setdefault("state", {})[VERIFIED] = principal  # deps.caller takes it as checked
        too_large = ApiError(
            413, f"the request body is over the {self.max_bytes} bytes allowed (TQ_ADMIN_MAX_BODY_BYTES)"
        )
        length = int(declared) if declared and declared.isdigit() and len(declared) < 20 else None
        if (length is not None and length > self.max_bytes) or (length is None and not chunked):
            await self._too_large(scope, send, state, principal, too_large)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await _discard_rest(receive)
                await self._too_large(scope, send, state, principal, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(
        self, scope: Scope, send: Send, state: AdminState, principal: Any, err: ApiError
    ) -> None:
        row = audit_row(Request(scope), principal, "admin.request", 413, err.message, kind="change")
        await refused(state, principal, row)
        await self._refuse(scope, send, err)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, err: ApiError) -> None:
        err.headers = {**err.headers, "Connection": "close"}  # the unread body is not waited for
        rid = scope.get("state", {}).get("request_id")

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await error_json(err, rid)(scope, nothing, send)


def create_app(settings: Settings | None = None, admin: AdminSettings | None = None) -> FastAPI:
    """The app over the engine's ``settings`` (Redis, database, uvloop) and the admin service's own
    (tokens, rate limit, CORS, live events); each defaults to what the environment says."""
    settings = settings or get_settings()
    admin = admin or get_admin_settings()
    signing_key(admin)  # no key, or a short one: refuse to start rather than accept nothing

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = async_client(settings)
        engine = make_engine(settings.database_url)
        hub = Hub(client, admin.admin_sse_buffer, admin.admin_client_queue)
        app.state.admin = AdminState(
            settings=settings,
            admin_settings=admin,
            redis=client,
            engine=engine,
            limiter=SlidingWindow(client, admin.admin_rate_limit, admin.admin_rate_window_s),
            hub=hub,
            produce_limiter=SlidingWindow(
                client, admin.admin_produce_rate_limit, admin.admin_rate_window_s, produce_key
            ),
            producer=Producer(client, settings),
        )
        listener = asyncio.create_task(hub.run(), name="tq-admin-events")
        spool = asyncio.create_task(run_spool_flusher(app.state.admin), name="tq-admin-audit-spool")
        tallies = asyncio.create_task(
            Supervisor().every(
                "admin-produce-audit",
                "audit",
                produce_audit.flush_interval_s(app.state.admin),
                lambda: produce_audit.flush(app.state.admin),
                until=lambda: False,
            ),
            name="tq-admin-produce-audit",
        )
        try:
            yield
        finally:
            for task in (listener, spool, tallies):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.dispose()
            await client.aclose()

    app = FastAPI(
        title="tq admin",
        summary="The owner's API: queues, jobs, dead letters, live events",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(console.router)
    app.include_router(produce.router(admin))
    app.include_router(realtime.router)
    app.include_router(page.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Health:
        return Health(alive=True)

    @app.get("/readyz", include_in_schema=False, response_model_exclude_none=True)
    async def readyz(request: Request, response: Response) -> Readiness:
        state = admin_state(request)
        reason = None
        try:
            await asyncio.wait_for(state.redis.ping(), 1.0)
        except Exception as exc:  # the details (host, port) go to the log, not to the caller
            errors.log.warning("admin /readyz: Redis unreachable: %s", exc)
            reason = "redis unreachable"
        else:
            if not state.hub.subscribed.is_set():
                reason = "not subscribed to tq:events"
        if reason is not None:
            response.status_code = 503
        return Readiness(ready=reason is None, reason=reason)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyGuard, max_bytes=admin.admin_max_body_bytes)
    if admin.admin_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=admin.admin_cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "Last-Event-ID",
                "X-Request-ID",
            ],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContext)
    return app


class _Server(uvicorn.Server):
    """uvicorn without re-raising SIGTERM/SIGINT after a clean shutdown (which would end the
    process with 143 instead of 0); a second SIGINT still forces the exit."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(
    host: str = "0.0.0.0",
    port: int = 8000,
    settings: Settings | None = None,
    admin: AdminSettings | None = None,
) -> None:
    """Run the admin service under uvicorn until SIGTERM/SIGINT."""
    settings = settings or get_settings()
    _Server(uvicorn_config(create_app(settings, admin), host, port, settings)).run()
