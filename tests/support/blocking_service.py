"""``tq serve FAMILY`` (the real command: ``tq_cli.main``) for a test family whose one handler
blocks the event loop with synchronous code (``time.sleep``), for the loop-watchdog probe test.

``tq serve`` loads handlers only from ``tq_services.<family>.handlers``, so this process first
registers the test queue and puts its handler on ``tq.handlers.default_handlers`` (what those
modules do), then runs the command line as the image does: ``python -m support.blocking_service
PORT`` is ``tq serve blocktest --host 127.0.0.1 --port PORT`` with that one handler more. Settings
come from the environment (``TQ_REDIS_URL``, ``TQ_DATABASE_URL`` for the schema gate, ...)."""

from __future__ import annotations

import sys
import time

from tq.handlers import JobContext, default_handlers
from tq.payloads import Payload
from tq.registry import QueueSpec, register_queue

QUEUE = "blocktest"
FAMILY = "blocktest"
JOB = "block"


class Block(Payload):
    seconds: float


def register() -> None:
    register_queue(QueueSpec(QUEUE, FAMILY, {JOB: Block}))


async def block_the_loop(ctx: JobContext, payload: Block) -> None:
    await ctx.progress(0.0, "started")  # what the test waits for before it probes
    time.sleep(payload.seconds)  # noqa: ASYNC251 - blocking on purpose: the fault under test


def main(port: int) -> None:
    register()
    default_handlers.register(QUEUE, JOB)(block_the_loop)
    from tq_cli.main import app

    app(["serve", FAMILY, "--host", "127.0.0.1", "--port", str(port)], prog_name="tq")


if __name__ == "__main__":
    main(int(sys.argv[1]))
