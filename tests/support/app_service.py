"""A ``tq_services`` family service process with a slow test handler, for the drain test."""

from __future__ import annotations

import asyncio
import sys

from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import Payload
from tq.registry import QueueSpec, register_queue
from tq.settings import Settings
from tq_services.family_service import serve

QUEUE = "svctest"
FAMILY = "svctest"


class Sleep(Payload):
    seconds: float


def register() -> None:
    register_queue(QueueSpec(QUEUE, FAMILY, {"sleep": Sleep}))


def main(url: str, port: int) -> None:
    register()
    handlers = HandlerRegistry()

    @handlers.register(QUEUE, "sleep")
    async def sleep(ctx: JobContext, payload: Sleep) -> None:
        await ctx.progress(0.0, "started")  # what the drain test waits for
        await asyncio.sleep(payload.seconds)

    settings = Settings(redis_url=url, audit_enabled=False, shutdown_grace_s=10, block_ms=50)
    serve(FAMILY, host="127.0.0.1", port=port, settings=settings, handlers=handlers, check_schema=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
