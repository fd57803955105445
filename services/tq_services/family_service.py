"""One family as an ASGI service: ``tq serve FAMILY`` (the same code path for every family: a
family is data from the registry).

``FamilyService(family)`` builds a ``tq.worker_app.WorkerApp`` for the family's queues (its broker, worker,
control channel and audit writer) with the service's ``JobMetrics`` as the worker's observer, and
wraps it in FastStream's ``AsgiFastStream`` with three routes:

* ``GET /metrics``: Prometheus text format from the service's own ``CollectorRegistry``; the
  queue gauges are read from Redis just before rendering (``metrics.QueueCollector``);
* ``GET /healthz``: 200 while the process is alive (the event loop answers);
* ``GET /readyz``: 200 only when the worker is started and not draining, Redis answers and the
  consumer group of every queue exists; else 503 with ``{"ready": false, "reason": ...}``.

The schema gate (``check_schema``, on for ``tq serve``): at start-up the service compares the
database's alembic revision with the head of ``tq_services.schema``; while it is behind (or the
database cannot be read), the worker is not started, so no job is taken, and ``/readyz`` answers
503 with the revision it needs. It checks again every ``SCHEMA_POLL_S`` and starts the worker once
``tq migrate`` has run.

Shutdown (``serve``): the first SIGTERM/SIGINT starts the worker's drain at once (``/readyz`` turns
503, intake stops, in-flight jobs finish within ``TQ_SHUTDOWN_GRACE_S``, unstarted entries go back)
while HTTP keeps answering, so ``/metrics`` stays scrapable during the drain; then uvicorn shuts
down, and its lifespan shutdown runs the WorkerApp's stop hooks (idempotent after the drain), and
the process exits 0. A second SIGINT forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from types import FrameType
from typing import Any

import uvicorn
from faststream.asgi import AsgiFastStream, AsgiResponse
from faststream.asgi.types import Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from tq import keys
from tq.connection import text
from tq.handlers import HandlerRegistry, default_handlers
from tq.registry import families
from tq.settings import Settings, get_settings
from tq.worker_app import WorkerApp

from tq_services import load_handlers
from tq_services.metrics import make_registry
from tq_services.schema import schema_state

log = logging.getLogger("tq.service")
SCHEMA_POLL_S = 5.0  # how often a service whose schema is behind checks again
SCHEMA_TIMEOUT_S = 10.0  # one check's bound (an unreachable database must not hold up start-up)


def _json(status: int, data: dict[str, Any]) -> AsgiResponse:
    return AsgiResponse(json.dumps(data).encode(), status, {"content-type": "application/json"})


class FamilyService:
    """The ASGI app (``.asgi``) of one family; ``.worker_app`` hosts its worker."""

    def __init__(
        self,
        family: str,
        settings: Settings | None = None,
        handlers: HandlerRegistry | None = None,
        ready_timeout_s: float = 1.0,
        check_schema: bool = True,
        schema_poll_s: float = SCHEMA_POLL_S,
    ) -> None:
        known = families()
        if family not in known:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(known)}")
        self.family = family
        self.settings = settings or get_settings()
        self.specs = known[family]
        self.ready_timeout_s = ready_timeout_s
        self.registry, self.job_metrics, self.queue_collector = make_registry(self.specs, None)
        if handlers is None:  # the process-wide registry, with this family's handlers loaded into it
            load_handlers([family])
            handlers = default_handlers
        # None: the schema is current (or not checked); else why the worker waits (readiness says it)
        self.schema_problem: str | None = "database schema not checked yet" if check_schema else None
        self.worker_app = WorkerApp(
            [family],
            self.settings,
            handlers,
            observer=self.job_metrics,
            start_gate=self._schema_current if check_schema else None,
            gate_poll_s=schema_poll_s,
            on_worker_started=self._started,
        )
        self.asgi = AsgiFastStream.from_app(
            self.worker_app.app,
            asgi_routes=[("/metrics", self._metrics), ("/healthz", self._healthz), ("/readyz", self._readyz)],
        )
        self.asgi.after_startup(self._started)

    async def _started(self) -> None:
        if self.worker_app.worker is not None:
            self.queue_collector.client = self.worker_app.worker.client
            self.queue_collector.worker = self.worker_app.worker

    async def _schema_current(self) -> bool:
        """True when the database is at (or past) the schema's head; else records why not."""
        url = self.settings.database_url
        problem: str | None
        try:
            state = await asyncio.wait_for(asyncio.to_thread(schema_state, url), SCHEMA_TIMEOUT_S)
        except Exception as exc:  # unreachable, bad credentials, a timeout: not known to be current
            problem = f"database unreachable: {type(exc).__name__}: {exc}"[:500]
        else:
            problem = state.describe() if state.behind else None
        if problem != self.schema_problem:
            (log.warning if problem else log.info)(problem or "database schema current: starting the worker")
        self.schema_problem = problem
        return problem is None

    @property
    def client(self) -> Any:
        worker = self.worker_app.worker
        return worker.client if worker is not None else None

    # ---- probes ------------------------------------------------------------------------------
    async def readiness(self) -> tuple[bool, str]:
        """(ready, reason): the database schema is current (the schema gate), the worker runs and is
        not draining, Redis answers, groups exist, and every queue's intake runs
        (``Worker.intake_problem``: a reader or settler failing, a read hung)."""
        worker = self.worker_app.worker
        if self.schema_problem is not None or self.worker_app.start_error is not None:
            return False, self.schema_problem or self.worker_app.start_error or ""
        if worker is None:
            return False, "worker not started"
        if worker.stopping:
            return False, "draining"
        if not worker.ready:
            return False, "worker not started"
        try:
            groups = await asyncio.wait_for(self._groups(), self.ready_timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            return False, f"redis unreachable: {type(exc).__name__}: {exc}"[:500]
        missing = [s.name for s in self.specs if not groups.get(s.name)]
        if missing:
            return False, "consumer group missing for " + ", ".join(missing)
        problem = worker.intake_problem()  # Redis answers us, but a queue's intake fails or hangs
        if problem is not None:
            return False, problem[:500]
        return True, "ok"

    async def _groups(self) -> dict[str, bool]:
        async with self.client.pipeline(transaction=False) as pipe:
            for spec in self.specs:
                pipe.xinfo_groups(keys.stream(spec.name))
            replies = await pipe.execute(raise_on_error=False)
        out = {}
        for spec, reply in zip(self.specs, replies, strict=True):  # an error reply: no stream yet
            out[spec.name] = not isinstance(reply, Exception) and any(
                text(g.get("name")) == keys.GROUP for g in reply
            )
        return out

    # ---- routes (plain ASGI callables) -------------------------------------------------------
    @staticmethod
    async def _only_get(scope: Scope, receive: Receive, send: Send) -> bool:
        if scope.get("method") in ("GET", "HEAD"):
            return True
        await AsgiResponse(b"method not allowed", 405, {"allow": "GET, HEAD"})(scope, receive, send)
        return False

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self._only_get(scope, receive, send):
            await _json(200, {"alive": True, "family": self.family})(scope, receive, send)

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._only_get(scope, receive, send):
            return
        ok, reason = await self.readiness()
        await _json(200 if ok else 503, {"ready": ok, "reason": reason, "family": self.family})(
            scope, receive, send
        )

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._only_get(scope, receive, send):
            return
        await self.queue_collector.refresh()
        body = generate_latest(self.registry)
        await AsgiResponse(body, 200, {"content-type": CONTENT_TYPE_LATEST})(scope, receive, send)

    # ---- running -----------------------------------------------------------------------------
    async def drain(self) -> None:
        """Stop the worker gracefully (what SIGTERM does before the HTTP server stops)."""
        worker = self.worker_app.worker
        if worker is not None:
            await worker.stop()


class _Server(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains the worker before HTTP stops, and the signal
    is not re-raised after a clean shutdown (uvicorn's default would end the process with it)."""

    def __init__(self, config: uvicorn.Config, service: FamilyService) -> None:
        super().__init__(config)
        self.service = service
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None or not self.started:
            if self._drain is not None and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        if self._drain is None:
            log.info("signal received: draining, then stopping")
            self._drain = asyncio.create_task(self._drain_then_exit(), name="tq-service-drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self.service.drain()
        except Exception:
            log.exception("drain failed")
        finally:
            self.should_exit = True


def uvicorn_config(app: Any, host: str, port: int, settings: Settings) -> uvicorn.Config:
    """How every tq HTTP service runs under uvicorn (families and admin alike)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="info",
        access_log=False,
        loop="uvloop" if settings.uvloop else "asyncio",
        timeout_graceful_shutdown=5,
    )


def serve(
    family: str,
    host: str = "0.0.0.0",
    port: int = 8000,
    settings: Settings | None = None,
    handlers: HandlerRegistry | None = None,
    check_schema: bool = True,
) -> None:
    """Run one family under uvicorn until SIGTERM/SIGINT; returns after a graceful shutdown."""
    settings = settings or get_settings()
    service = FamilyService(family, settings, handlers, check_schema=check_schema)
    server = _Server(uvicorn_config(service.asgi, host, port, settings), service)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
