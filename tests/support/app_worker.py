"""A ``tq.worker_app.WorkerApp`` process (FastStream-hosted) for the shutdown tests."""

from __future__ import annotations

import asyncio
import sys

from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import Payload
from tq.registry import QueueSpec, register_queue
from tq.settings import Settings
from tq.worker_app import WorkerApp

QUEUE = "apptest"


class Sleep(Payload):
    seconds: float


def register() -> None:
    register_queue(QueueSpec(QUEUE, "apptest", {"sleep": Sleep}))


def main(url: str) -> None:
    register()
    handlers = HandlerRegistry()

    @handlers.register(QUEUE, "sleep")
    async def sleep(ctx: JobContext, payload: Sleep) -> None:
        await asyncio.sleep(payload.seconds)

    settings = Settings(
        redis_url=url,
        audit_enabled=False,
        shutdown_grace_s=10,
        config_poll_s=30,
        queues={QUEUE: {"concurrency": 3}},
    )
    app = WorkerApp(["apptest"], settings, handlers)
    asyncio.run(app.app.run())


if __name__ == "__main__":
    main(sys.argv[1])
