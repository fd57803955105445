"""A worker process with tracing switched on the production way: ``OTEL_*`` variables read by
``tq_services.tracing.setup_from_env``, then a FastStream-hosted ``WorkerApp``. Its handler calls
an HTTP URL with httpx (a child span) and fails when the payload says so."""

from __future__ import annotations

import asyncio
import sys

import httpx
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import Payload
from tq.registry import QueueSpec, register_queue
from tq.settings import Settings
from tq.worker_app import WorkerApp
from tq_services.tracing import setup_from_env

QUEUE = "tracetest"


class Call(Payload):
    url: str
    fail: bool = False


def register() -> None:
    register_queue(QueueSpec(QUEUE, "tracetest", {"call": Call}))


def main(url: str) -> None:
    if not setup_from_env():
        raise SystemExit("tracing is not switched on by the environment")
    register()
    handlers = HandlerRegistry()

    @handlers.register(QUEUE, "call")
    async def call(ctx: JobContext, payload: Call) -> int:
        async with httpx.AsyncClient() as client:
            status = (await client.get(payload.url)).status_code
        if payload.fail:
            raise RuntimeError("told to fail")
        return status

    settings = Settings(
        redis_url=url,
        audit_enabled=False,
        shutdown_grace_s=5,
        config_poll_s=30,
        block_ms=50,
        uvloop=False,
        queues={QUEUE: {"retry": {"attempts": 1}}},
    )
    asyncio.run(WorkerApp([QUEUE], settings, handlers).app.run())


if __name__ == "__main__":
    main(sys.argv[1])
