"""Tracing switched on the production way, end to end: `tq enqueue` and `tq serve messaging`, each
a real process with OTEL_* variables, export over OTLP/HTTP to a local receiver; the service's run
of the job continues the CLI's publish span, with the SMTP send and the SQL of the email log as
its children (real redis-server, real SMTP server, migrated SQLite)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from support import wait_until
from support.mailbox import Mailbox, running_mailbox
from support.otlp_receiver import otlp_receiver
from support.services import messaging_db, serve_family, service_env, stop_process
from tq.envelope import JobState
from tq.jobs import get_job

pytestmark = pytest.mark.timeout(120)
TQ = Path(sys.executable).parent / "tq"
DATA = '{"to": "t@example.com", "template": "welcome", "variables": {"name": "Ada"}}'
CONSUMER, PRODUCER, CLIENT = 5, 4, 3  # the OTLP proto's SpanKind numbers


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with running_mailbox() as served:
        yield served


async def _record(redis_url: str, job_id: str) -> Any:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await get_job(client, "email:send", job_id)
    finally:
        await client.aclose()


def test_cli_and_service_export_one_trace(
    redis_url: str, tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> None:
    with otlp_receiver() as (endpoint, receiver):
        otel = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        env = {
            "TQ_DATABASE_URL": messaging_db(tmp_path),
            "TQ_SMTP_HOST": "127.0.0.1",
            "TQ_SMTP_PORT": str(mailbox[1]),
            "TQ_SMTP_TLS": "none",
            **otel,
        }
        proc, _ = serve_family(redis_url, "messaging", OTEL_SERVICE_NAME="tq-messaging", **env)
        try:
            run = subprocess.run(
                [str(TQ), "enqueue", "email:send", "send-email", "--data", DATA],
                env=service_env(redis_url, OTEL_SERVICE_NAME="tq-cli", **env),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert run.returncode == 0, run.stdout + run.stderr
            job_id = run.stdout.strip().splitlines()[-1]

            def spans_in() -> bool:
                names = {(s.service_name, s.kind) for s in receiver.spans}
                return {("tq-cli", PRODUCER), ("tq-messaging", CONSUMER)} <= names and bool(
                    receiver.named("smtp send")
                )

            wait_until(spans_in, 30, "the CLI's and the service's spans")
        finally:
            stop_process(proc)
    record = asyncio.run(_record(redis_url, job_id))
    assert record.state is JobState.COMPLETED, record
    assert mailbox[0].recipients == ["t@example.com"]
    (publish,) = [s for s in receiver.spans if s.kind == PRODUCER]
    (process,) = [s for s in receiver.spans if s.kind == CONSUMER]
    assert publish.attributes["messaging.message.id"] == job_id
    assert process.trace_id == publish.trace_id and process.parent_span_id == publish.span_id
    assert process.attributes["tq.job.outcome"] == "completed"
    children = [s for s in receiver.spans if s.parent_span_id == process.span_id]
    (smtp,) = [s for s in children if s.name == "smtp send"]
    assert smtp.kind == CLIENT and smtp.attributes["server.port"] == mailbox[1]
    sql = [s for s in children if s.attributes.get("db.system") == "sqlite" or "INSERT" in s.name]
    assert sql, [s.name for s in children]  # the email log's INSERT, through SQLAlchemy
