"""A family service process for the Prometheus end-to-end test: one test queue in its own family,
whose handler succeeds, fails a given number of attempts first, or refuses for good."""

from __future__ import annotations

import sys

from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import Payload
from tq.queue_config import QueueDefaults
from tq.registry import QueueSpec, register_queue
from tq.settings import Settings
from tq_services.family_service import serve

FAMILIES = {"e2e-alpha": "e2e:alpha", "e2e-beta": "e2e:beta"}
JOB = "work"
ATTEMPTS = 3


class Work(Payload):
    fail_attempts: int = 0  # attempts that raise before one succeeds
    fatal: bool = False  # refuse for good: dead-lettered at once


def register(family: str) -> str:
    queue = FAMILIES[family]
    defaults = QueueDefaults.model_validate(
        {"retry": {"attempts": ATTEMPTS, "initial_s": 0.01, "max_s": 0.05, "jitter": 0}}
    )
    register_queue(QueueSpec(queue, family, {JOB: Work}, defaults=defaults))
    return queue


def main(family: str, url: str, port: int) -> None:
    queue = register(family)
    handlers = HandlerRegistry()

    @handlers.register(queue, JOB)
    async def work(ctx: JobContext, payload: Work) -> str:
        if payload.fatal:
            raise NonRetryableError("refused for good")
        if ctx.attempt <= payload.fail_attempts:
            raise RuntimeError(f"failing attempt {ctx.attempt}")
        return "done"

    settings = Settings(
        redis_url=url, audit_enabled=False, block_ms=50, promote_interval_s=0.05, uvloop=False
    )
    serve(family, host="127.0.0.1", port=port, settings=settings, handlers=handlers, check_schema=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
