"""OpenTelemetry: the producer's span travels in the envelope as a W3C traceparent and the worker
continues it for each run (in-memory exporter, real Redis); family clients are child spans; a real
worker process switched on by OTEL_* exports over OTLP/HTTP to a local receiver; off, nothing."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.trace import SpanKind, StatusCode
from support import (
    fast_settings,
    helper_command,
    helper_env,
    http_server,
    running,
    settled_job,
    tiny_retry,
    traced_worker,
)
from support.otlp_receiver import otlp_receiver
from support.traced_worker import QUEUE
from support.tracing import in_memory_tracing
from tq import keys, tracing
from tq.db import make_engine
from tq.envelope import JobState
from tq.errors import NonRetryableError, RateLimited
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import JobRequest, Producer, SyncProducer
from tq.registry import unregister_queue
from tq_services.tracing import TracingConfigError, exporter_asked

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}


def _hex(n: int, width: int) -> str:
    return f"{n:0{width}x}"


async def _entry_fields(client: Any, queue: str = Q) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await client.xrange(keys.stream(queue))]


def _consumers(exporter: Any) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]


def _producers(exporter: Any) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER]


async def test_off_by_default_no_span_and_no_tr_field(redis_client: Any, redis_url: str) -> None:
    assert tracing.tracer() is None
    env = type("E", (), {"trace_id": None, "id": "x", "name": "n"})()
    assert tracing.job_span(Q, env, 1, 3) is tracing.NO_SPAN  # the shared no-op, nothing allocated
    p = Producer(redis_client, fast_settings(redis_url))
    await p.enqueue(Q, "send-email", EMAIL)
    await p.enqueue(Q, "send-email", EMAIL, trace_id="corr-42")  # a caller's id goes through as is
    first, second = await _entry_fields(redis_client)
    assert b"tr" not in first and set(first) == {b"i", b"n", b"p", b"t"}
    assert second[b"tr"] == b"corr-42"


async def test_producer_span_continues_in_the_worker(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        pass

    with in_memory_tracing() as exporter:
        p = Producer(redis_client, s)
        job_id = await p.enqueue(Q, "send-email", EMAIL)
        (fields,) = await _entry_fields(redis_client)
        (producer,) = _producers(exporter)
        ctx = producer.context
        assert (
            fields[b"tr"].decode()
            == f"00-{_hex(ctx.trace_id, 32)}-{_hex(ctx.span_id, 16)}-{int(ctx.trace_flags):02x}"
        )
        assert producer.name == f"publish {Q}"
        assert producer.attributes["messaging.destination.name"] == Q
        assert producer.attributes["messaging.operation"] == "publish"
        assert producer.attributes["messaging.message.id"] == job_id
        async with running(redis_client, s, h):
            assert (await settled_job(redis_client, Q, job_id)).state == JobState.COMPLETED
        (consumer,) = _consumers(exporter)
    assert consumer.context.trace_id == ctx.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == ctx.span_id
    assert consumer.parent.is_remote
    assert consumer.name == f"process {Q}"
    attrs = consumer.attributes
    assert attrs["messaging.system"] == "tq"
    assert attrs["messaging.destination.name"] == Q
    assert attrs["messaging.operation"] == "process"
    assert attrs["messaging.message.id"] == job_id
    assert attrs["tq.job.name"] == "send-email"
    assert attrs["tq.job.attempt"] == 1
    assert attrs["tq.job.outcome"] == "completed"
    assert consumer.status.status_code == StatusCode.UNSET
    assert tracing.tracer() is None  # back off after the test


async def test_failures_mark_the_span_error_retry_then_dead(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, queues={Q: tiny_retry(attempts=2)})
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        raise ValueError(f"broken on attempt {ctx.attempt}")

    with in_memory_tracing() as exporter:
        job_id = await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
        async with running(redis_client, s, h):
            assert (await settled_job(redis_client, Q, job_id)).state == JobState.DEAD
        runs = sorted(_consumers(exporter), key=lambda sp: sp.attributes["tq.job.attempt"])
        (producer,) = _producers(exporter)
    assert [r.attributes["tq.job.outcome"] for r in runs] == ["retry", "dead"]
    for run in runs:  # each attempt continues the producer's trace
        assert run.context.trace_id == producer.context.trace_id
        assert run.status.status_code == StatusCode.ERROR
        assert "ValueError: broken on attempt" in (run.status.description or "")
        (event,) = [e for e in run.events if e.name == "exception"]
        assert event.attributes["exception.type"] == "ValueError"


async def test_non_retryable_is_dead_at_once(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        raise NonRetryableError("no such mailbox")

    with in_memory_tracing() as exporter:
        job_id = await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
        async with running(redis_client, s, h):
            await settled_job(redis_client, Q, job_id)
        (run,) = _consumers(exporter)
    assert run.attributes["tq.job.outcome"] == "dead"
    assert run.status.status_code == StatusCode.ERROR


async def test_httpx_and_sqlalchemy_calls_are_children_of_the_run(
    redis_client: Any, redis_url: str, tmp_path: Any
) -> None:
    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    s = fast_settings(redis_url)
    h = HandlerRegistry()
    with in_memory_tracing() as exporter, http_server(Ok) as base:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")  # after instrumenting

        @h.register(Q, "send-email")
        async def send(ctx: JobContext, payload: SendEmail) -> None:
            import httpx

            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{base}/hook")).status_code == 204
            async with engine.connect() as conn:
                assert (await conn.execute(sa.text("SELECT 7"))).scalar() == 7

        job_id = await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
        async with running(redis_client, s, h):
            assert (await settled_job(redis_client, Q, job_id)).state == JobState.COMPLETED
        await engine.dispose()
        spans = exporter.get_finished_spans()
    (run,) = [sp for sp in spans if sp.kind == SpanKind.CONSUMER]
    (http_call,) = [sp for sp in spans if sp.kind == SpanKind.CLIENT and sp.name.startswith("GET")]
    sql = [sp for sp in spans if "SELECT" in sp.name]
    assert http_call.parent is not None and http_call.parent.span_id == run.context.span_id
    assert http_call.context.trace_id == run.context.trace_id
    assert sql and all(q.parent is not None and q.parent.span_id == run.context.span_id for q in sql)


async def test_bulk_enqueue_one_publish_span_parent_of_every_run(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        pass

    with in_memory_tracing() as exporter:
        results = await Producer(redis_client, s).enqueue_many(Q, [JobRequest("send-email", EMAIL)] * 3)
        sync_id = await asyncio.to_thread(SyncProducer(settings=s).enqueue, Q, "send-email", EMAIL)
        async with running(redis_client, s, h):
            for job_id in [r.id for r in results] + [sync_id]:
                await settled_job(redis_client, Q, job_id)
        bulk, single = sorted(_producers(exporter), key=lambda sp: sp.start_time)
        runs = _consumers(exporter)
    assert bulk.attributes["messaging.batch.message_count"] == 3
    assert single.attributes["messaging.message.id"] == sync_id
    by_parent: dict[int, int] = {}
    for run in runs:
        assert run.parent is not None
        by_parent[run.parent.span_id] = by_parent.get(run.parent.span_id, 0) + 1
    assert by_parent == {bulk.context.span_id: 3, single.context.span_id: 1}


async def test_a_job_enqueued_inside_a_run_is_its_child(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    p = Producer(redis_client, s)
    follow_ups: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "welcome":  # the handler's own enqueue continues its trace
            follow_ups.append(await p.enqueue(Q, "send-email", {**EMAIL, "template": "next"}))

    with in_memory_tracing() as exporter:
        first = await p.enqueue(Q, "send-email", EMAIL)
        async with running(redis_client, s, h):
            await settled_job(redis_client, Q, first)
            await settled_job(redis_client, Q, follow_ups[0])
        spans = exporter.get_finished_spans()
    assert len({sp.context.trace_id for sp in spans}) == 1  # one trace across both jobs
    second_publish = [sp for sp in spans if sp.attributes.get("messaging.message.id") == follow_ups[0]]
    first_run = next(
        sp for sp in spans if sp.kind == SpanKind.CONSUMER and sp.attributes["messaging.message.id"] == first
    )
    publish = next(sp for sp in second_publish if sp.kind == SpanKind.PRODUCER)
    assert publish.parent is not None and publish.parent.span_id == first_run.context.span_id


async def test_an_entry_with_a_plain_trace_id_starts_a_new_trace(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        pass

    job_id = await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL, trace_id="legacy-7")  # off
    with in_memory_tracing() as exporter:
        async with running(redis_client, s, h):
            await settled_job(redis_client, Q, job_id)
        (run,) = _consumers(exporter)
    assert run.parent is None
    assert run.attributes["tq.trace_id"] == "legacy-7"
    assert run.attributes["tq.job.outcome"] == "completed"


def test_exporter_asked_by_the_standard_variables() -> None:
    assert exporter_asked({}) is None  # off by default
    assert exporter_asked({"OTEL_TRACES_EXPORTER": "otlp"}) == "otlp"
    assert exporter_asked({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert exporter_asked({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert exporter_asked(endpoint) is None
    assert exporter_asked({**endpoint, "OTEL_SDK_DISABLED": "false"}) == "otlp"
    with pytest.raises(TracingConfigError, match="zipkin"):
        exporter_asked({"OTEL_TRACES_EXPORTER": "zipkin"})


def _start_traced_worker(redis_url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        helper_command("traced_worker", redis_url), env=env, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def trace_queue() -> Iterator[None]:
    traced_worker.register()  # the helper process's queue, known here to enqueue to it
    yield
    unregister_queue(QUEUE)


async def test_worker_process_exports_over_otlp_http(
    redis_client: Any, redis_url: str, trace_queue: None
) -> None:
    """A real worker process switched on by OTEL_* exports its spans to a local OTLP/HTTP receiver;
    they continue the trace this process's producer started."""

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    s = fast_settings(redis_url)
    with otlp_receiver() as (endpoint, receiver), http_server(Ok) as target:
        env = helper_env(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_SERVICE_NAME="tq-trace-test",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        proc = _start_traced_worker(redis_url, env)
        try:
            with in_memory_tracing() as exporter:
                p = Producer(redis_client, s)
                ok = await p.enqueue(QUEUE, "call", {"url": f"{target}/ok"})
                bad = await p.enqueue(QUEUE, "call", {"url": f"{target}/bad", "fail": True})
                publishes = {sp.attributes["messaging.message.id"]: sp for sp in _producers(exporter)}
            await settled_job(redis_client, QUEUE, ok, timeout=30)
            await settled_job(redis_client, QUEUE, bad, timeout=30)
            deadline = time.monotonic() + 20
            while len(receiver.named("process ")) < 2 or len(receiver.named("GET")) < 2:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, f"spans received: {[sp.name for sp in receiver.spans]}"
                await asyncio.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(20)
    runs = {sp.attributes["messaging.message.id"]: sp for sp in receiver.named("process ")}
    for job_id, outcome, status in ((ok, "completed", 0), (bad, "dead", 2)):
        run, publish = runs[job_id], publishes[job_id]
        assert run.trace_id == _hex(publish.context.trace_id, 32)
        assert run.parent_span_id == _hex(publish.context.span_id, 16)
        assert run.kind == 5  # SPAN_KIND_CONSUMER
        assert run.service_name == "tq-trace-test"
        assert run.attributes["tq.job.outcome"] == outcome
        assert run.attributes["messaging.destination.name"] == QUEUE
        assert run.status_code == status
        (http_call,) = [sp for sp in receiver.named("GET") if sp.parent_span_id == run.span_id]
        assert http_call.trace_id == run.trace_id
    assert "exception" in runs[bad].events


async def test_time_limit_and_rate_limited_outcomes(redis_client: Any, redis_url: str) -> None:
    """A run cancelled at its time limit is an error (TimeoutError); a RateLimited run is not: it
    goes back to the stream uncharged, and its next run continues the same trace."""
    s = fast_settings(redis_url, queues={Q: {"timeout_s": 0.2, **tiny_retry(attempts=1)}})
    h = HandlerRegistry()
    limited_once: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "slow":
            await asyncio.sleep(5)
        elif not limited_once:
            limited_once.append(ctx.job_id)
            raise RateLimited(0.1)

    with in_memory_tracing() as exporter:
        p = Producer(redis_client, s)
        slow = await p.enqueue(Q, "send-email", {**EMAIL, "template": "slow"})
        limited = await p.enqueue(Q, "send-email", EMAIL)
        async with running(redis_client, s, h):
            assert (await settled_job(redis_client, Q, slow)).state == JobState.DEAD
            assert (await settled_job(redis_client, Q, limited)).state == JobState.COMPLETED
        runs = _consumers(exporter)
    (timed_out,) = [r for r in runs if r.attributes["messaging.message.id"] == slow]
    assert timed_out.attributes["tq.job.outcome"] == "dead"
    assert timed_out.status.status_code == StatusCode.ERROR
    assert [e.attributes["exception.type"] for e in timed_out.events] == ["TimeoutError"]
    again = sorted(
        (r for r in runs if r.attributes["messaging.message.id"] == limited), key=lambda r: r.start_time
    )
    assert [r.attributes["tq.job.outcome"] for r in again] == ["rate_limited", "completed"]
    assert [r.attributes["tq.job.attempt"] for r in again] == [1, 1]  # uncharged
    assert again[0].status.status_code == StatusCode.UNSET
    assert again[0].context.trace_id == again[1].context.trace_id


async def test_a_callers_traceparent_is_the_publish_spans_parent(redis_client: Any, redis_url: str) -> None:
    """A producer in another process (or language) passes its traceparent as ``trace_id``."""
    remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with in_memory_tracing() as exporter:
        p = Producer(redis_client, fast_settings(redis_url))
        await p.enqueue(Q, "send-email", EMAIL, trace_id=remote)
        await p.enqueue(Q, "send-email", EMAIL, trace_id="corr-9")  # a plain id: an attribute
        first, second = sorted(_producers(exporter), key=lambda sp: sp.start_time)
    assert _hex(first.context.trace_id, 32) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first.parent is not None and _hex(first.parent.span_id, 16) == "00f067aa0ba902b7"
    assert second.parent is None and second.attributes["tq.trace_id"] == "corr-9"
    entries = await _entry_fields(redis_client)
    assert [f[b"tr"].decode() for f in entries] == [
        f"00-{_hex(sp.context.trace_id, 32)}-{_hex(sp.context.span_id, 16)}-{int(sp.context.trace_flags):02x}"
        for sp in (first, second)
    ]
