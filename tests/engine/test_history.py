"""Job outcomes reach the AuditLog table in batches, off the worker's hot path."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, tiny_retry, wait_for
from tq import keys
from tq.audit import AuditWriter
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.models import AuditLog
from tq.payloads import SendEmail
from tq.producer import Producer
from tq.registry import get_queue
from tq.worker import Worker

Q = "email:send"


async def test_completed_and_failed_jobs_become_audit_rows(
    redis_client: Any, redis_url: str, db_engine: AsyncEngine
) -> None:
    s = fast_settings(redis_url, audit_enabled=True, queues={Q: tiny_retry(attempts=2)})
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "broken":
            raise NonRetryableError("template 'broken' does not exist")
        if payload.template == "flaky" and ctx.attempt == 1:
            raise TimeoutError("smtp timeout")

    p = Producer(redis_client, s)
    worker = Worker(redis_client, [get_queue(Q)], h, s)
    await worker.start()
    try:
        ok = [
            await p.enqueue(Q, "send-email", {"to": "a@b.co", "template": "w"}, trace_id=f"t{i}")
            for i in range(10)
        ]
        broken = await p.enqueue(Q, "send-email", {"to": "a@b.co", "template": "broken"})
        flaky = await p.enqueue(Q, "send-email", {"to": "a@b.co", "template": "flaky"})
        await wait_for(lambda: redis_client.xlen(keys.audit(Q)), what="audit entries")
        await wait_for(lambda: _xlen_is(redis_client, 13), what="13 audit entries")
    finally:
        await worker.stop()
    writer = AuditWriter(redis_client, db_engine, s)
    written = 0
    while (n := await writer.drain_once(block_ms=10)) > 0:
        written += n
    assert written == 13
    async with db_engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    AuditLog.action, AuditLog.outcome, AuditLog.target, AuditLog.trace_id, AuditLog.details
                )
            )
        ).all()
        total = (await conn.execute(select(func.count()).select_from(AuditLog))).scalar_one()
    assert total == 13
    by_target = {}
    for action, outcome, target, trace, details in rows:
        by_target.setdefault(target, []).append((action, outcome, trace, details))
    assert {by_target[f"{Q}/{i}"][0][:2] for i in ok} == {("job.completed", "completed")}
    assert {by_target[f"{Q}/{i}"][0][2] for i in ok} == {f"t{i}" for i in range(10)}
    [(action, outcome, _, details)] = by_target[f"{Q}/{broken}"]
    assert (action, outcome, details["error_type"]) == ("job.failed", "dead_lettered", "NonRetryableError")
    assert sorted(o for _, o, _, _ in by_target[f"{Q}/{flaky}"]) == ["completed", "retried"]
    assert await redis_client.xlen(keys.audit(Q)) == 0


async def _xlen_is(client: Any, n: int) -> bool:
    return bool(await client.xlen(keys.audit(Q)) == n)
