"""Job outcomes reach the AuditLog table in batches, off the worker's hot path."""

from __future__ import annotations

import asyncio
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


async def test_a_full_audit_backlog_holds_intake_and_drops_nothing(
    redis_client: Any, redis_url: str, db_engine: AsyncEngine
) -> None:
    """No writer (the database is away): the audit records stay in Redis - none trimmed - up to
    the bound, where the consumer takes no new job; jobs it holds still settle. Once a writer
    drains the backlog below 90 % of the bound, intake resumes, and every job has its one row."""
    n, bound, concurrency = 600, 60, 5
    s = fast_settings(
        redis_url, audit_enabled=True, audit_backlog_max=bound, queues={Q: {"concurrency": concurrency}}
    )
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        await asyncio.sleep(0.01)  # about 500 jobs/s: the bound is reached well before the end

    p = Producer(redis_client, s)
    worker = Worker(redis_client, [get_queue(Q)], h, s)
    await worker.start()
    try:
        await p.enqueue_many(Q, [("send-email", {"to": f"u{i}@b.co", "template": "w"}) for i in range(n)])
        runner = worker.runners[Q]
        await wait_for(lambda: runner.audit_full, what="intake held at the bound")
        await wait_for(lambda: not runner.held, what="the held jobs settled")
        completed = int(await redis_client.hget(keys.counters(Q), "completed"))
        # past the bound by at most what was read before the check saw it: a config poll's worth
        assert bound <= completed < n
        assert await redis_client.xlen(keys.audit(Q)) == completed  # every record kept
        await asyncio.sleep(1.0)  # held: nothing more is taken
        assert int(await redis_client.hget(keys.counters(Q), "completed")) == completed

        writer = AuditWriter(redis_client, db_engine, s)
        stop = asyncio.Event()
        writing = asyncio.create_task(writer.run_forever(stop))
        try:
            await wait_for(
                lambda: _counter_is(redis_client, "completed", n), timeout=60, what="every job done"
            )
            await wait_for(lambda: _xlen_is(redis_client, 0), timeout=30, what="every record written")
        finally:
            stop.set()
            await writing
    finally:
        await worker.stop()
    async with db_engine.connect() as conn:
        targets = (await conn.execute(select(AuditLog.target))).scalars().all()
    assert len(targets) == len(set(targets)) == n


async def _counter_is(client: Any, name: str, n: int) -> bool:
    return int(await client.hget(keys.counters(Q), name) or 0) == n
