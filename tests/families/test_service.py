"""The family service (``tq serve``): probes, Prometheus metrics from a real scrape, SIGTERM drain;
and the worker's metrics observer in-process."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from alembic.script import ScriptDirectory
from support import app_service, fast_settings, helper_command, tiny_retry, wait_for, wait_until
from support.redis_server import free_port, start_redis_server
from support.services import (
    http_get,
    http_status,
    messaging_db,
    sample,
    scrape,
    serve_family,
    service_env,
    stop_process,
    wait_ready,
)
from tq import config, keys
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer, SyncProducer
from tq.registry import families, get_queue, unregister_queue
from tq.supervise import REASONS, TASKS
from tq.worker import Worker
from tq_services import schema
from tq_services.metrics import OUTCOMES, UNKNOWN_JOB, make_registry

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}
OTP = {"user_id": 1, "channel": "sms", "destination": "+15550100"}


def test_serve_messaging_probes_and_metrics(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    proc, port = serve_family(redis_url, TQ_DATABASE_URL=messaging_db(tmp_path))
    try:
        status, body = http_get(port, "/healthz")
        assert status == 200 and json.loads(body)["alive"] is True
        status, body = http_get(port, "/readyz")
        assert status == 200 and json.loads(body) == {"ready": True, "reason": "ok", "family": "messaging"}

        _, before = scrape(port)
        for spec in families()["messaging"]:  # every series exists at zero from start-up
            for job in spec.jobs:
                labels = {"queue": spec.name, "job": job}
                assert sample(before, "tq_jobs_completed_total", **labels) == 0
                for outcome in OUTCOMES:
                    assert sample(before, "tq_jobs_failed_total", outcome=outcome, **labels) == 0
                assert sample(before, "tq_job_duration_seconds_count", **labels) == 0
                assert sample(before, "tq_job_wait_seconds_count", **labels) == 0
            assert sample(before, "tq_jobs_reclaimed_total", queue=spec.name) == 0
            for gauge in ("waiting", "active", "delayed", "dlq", "paused"):
                assert sample(before, f"tq_queue_{gauge}", queue=spec.name, family="messaging") == 0
            assert sample(before, "tq_queue_consumers", queue=spec.name, family="messaging") == 1
            for gauge in ("tq_queue_config_generation", "tq_consumer_config_generation"):
                assert sample(before, gauge, queue=spec.name, family="messaging") == 0
        assert sample(before, "tq_redis_up") == 1
        for task in TASKS:  # supervised task failures: every (task, reason) at zero from start-up
            for reason in REASONS:
                assert sample(before, "tq_worker_task_restarts_total", task=task, reason=reason) == 0
        for spec in families()["messaging"]:
            for job in spec.jobs:
                assert sample(before, "tq_worker_loop_blocked_total", queue=spec.name, job=job) == 0
        assert any(name == "process_cpu_seconds_total" for name, _ in before)

        # The messaging handlers refuse these for good (a welcome email without its ``name``
        # variable, an SMS with no provider configured): dead-lettered at once, outcome=dead_lettered.
        producer = SyncProducer(client, fast_settings(redis_url))
        producer.enqueue_many(Q, [("send-email", EMAIL)] * 3)
        producer.enqueue("otp:send", "send-otp", OTP)
        wait_until(
            lambda: client.xlen(keys.dlq(Q)) == 3 and client.xlen(keys.dlq("otp:send")) == 1, 15, "DLQ"
        )
        _, after = scrape(port)
        email = {"queue": Q, "job": "send-email"}
        assert sample(after, "tq_jobs_failed_total", outcome="dead_lettered", **email) == 3
        assert sample(after, "tq_jobs_failed_total", outcome="invalid", **email) == 0
        assert sample(after, "tq_jobs_completed_total", **email) == 0
        assert sample(after, "tq_job_wait_seconds_count", **email) == 3
        assert sample(after, "tq_job_duration_seconds_count", **email) == 3
        otp = {"queue": "otp:send", "job": "send-otp"}
        assert sample(after, "tq_jobs_failed_total", outcome="dead_lettered", **otp) == 1
        assert sample(after, "tq_queue_dlq", queue=Q, family="messaging") == 3
        assert sample(after, "tq_queue_dlq", queue="otp:send", family="messaging") == 1
        assert sample(after, "tq_jobs_enqueued_total", queue=Q) == 3
        assert sample(after, "tq_queue_waiting", queue=Q, family="messaging") == 0

        # a new config generation: in Redis at once, applied by the service's worker (config poll)
        client.hset(keys.config("otp:send"), "generation", "7")

        def applied() -> bool:
            _, samples = scrape(port)
            gen = {"queue": "otp:send", "family": "messaging"}
            return (
                sample(samples, "tq_queue_config_generation", **gen) == 7
                and sample(samples, "tq_consumer_config_generation", **gen) == 7
            )

        wait_until(applied, 15, "generation 7 applied")
    finally:
        rc = stop_process(proc)
        client.close()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    assert client.zcard(keys.consumers(Q)) == 0  # signed off


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (Debian package prometheus)"
)
def test_promtool_accepts_a_real_scrape(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    proc, port = serve_family(redis_url, TQ_DATABASE_URL=messaging_db(tmp_path))
    try:
        SyncProducer(client, fast_settings(redis_url)).enqueue(Q, "send-email", EMAIL)
        wait_until(lambda: client.xlen(keys.dlq(Q)) == 1, 15, "DLQ")
        body, _ = scrape(port)
    finally:
        stop_process(proc)
        client.close()
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_unknown_family_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tq_cli", "serve", "no-such-family"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown family" in proc.stderr


def test_readyz_503_when_redis_is_unreachable(redis_url: str, tmp_path: Path) -> None:
    server, port_r, workdir = start_redis_server()  # a private Redis: never kill the suite's
    try:
        proc, port = serve_family(f"redis://127.0.0.1:{port_r}/0", TQ_DATABASE_URL=messaging_db(tmp_path))
        try:
            server.kill()
            server.wait(10)

            def not_ready() -> bool:
                status, body = http_get(port, "/readyz")
                return status == 503 and "redis unreachable" in json.loads(body)["reason"]

            wait_until(not_ready, 15, "/readyz 503")
            assert http_status(port, "/healthz") == 200  # alive, just not ready
            _, samples = scrape(port)
            assert sample(samples, "tq_redis_up") == 0
            assert not any(name == "tq_queue_waiting" for name, _ in samples)  # absent, not stale
        finally:
            rc = stop_process(proc)
        assert rc == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def test_readyz_503_and_no_job_taken_until_the_schema_is_migrated(redis_url: str, tmp_path: Path) -> None:
    """A real SQLite database: fresh (never migrated) -> 503 naming the revision needed, the job
    waits untouched; `tq migrate` -> the service turns ready and takes the job."""
    head = ScriptDirectory.from_config(schema.alembic_config()).get_current_head()
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    client = redis.Redis.from_url(redis_url)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tq_cli", "serve", "messaging", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=service_env(redis_url, TQ_DATABASE_URL=url),
    )
    try:
        seen: dict[str, Any] = {}

        def not_ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"service exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                seen["status"], body = http_get(port, "/readyz")
            except OSError:
                return False
            seen["body"] = json.loads(body)
            return bool(seen["status"] == 503 and "needs" in seen["body"]["reason"])

        wait_until(not_ready, 30, "/readyz 503 naming the revision")
        reason = seen["body"]["reason"]
        assert f"needs {head}" in reason and "never migrated" in reason and "tq migrate" in reason
        assert http_status(port, "/healthz") == 200

        SyncProducer(client, fast_settings(redis_url)).enqueue(Q, "send-email", EMAIL)
        time.sleep(1.0)  # the worker would have taken it by now
        assert client.xlen(keys.stream(Q)) == 1
        assert client.xlen(keys.dlq(Q)) == 0
        assert client.zcard(keys.consumers(Q)) == 0  # no consumer at all
        status, body = http_get(port, "/readyz")
        assert status == 503 and json.loads(body)["reason"] == reason

        schema.migrate(url)
        wait_ready(proc, port)  # the next check (every SCHEMA_POLL_S) starts the worker
        done = keys.counters(Q)
        wait_until(
            lambda: client.xlen(keys.dlq(Q)) + int(client.hget(done, "completed") or 0) == 1, 15, "job taken"
        )
    finally:
        rc = stop_process(proc)
        client.close()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""


@pytest.fixture
def svc_queue() -> Any:
    app_service.register()
    yield app_service.QUEUE
    unregister_queue(app_service.QUEUE)


def test_sigterm_turns_readyz_503_and_drains(redis_url: str, svc_queue: str) -> None:
    client = redis.Redis.from_url(redis_url)
    port = free_port()
    proc = subprocess.Popen(
        helper_command("app_service", redis_url, str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=service_env(redis_url),
    )
    try:
        wait_ready(proc, port)
        # long enough that a loaded machine still sees the drain before the job ends
        job_id = SyncProducer(client, fast_settings(redis_url)).enqueue(svc_queue, "sleep", {"seconds": 8.0})
        # started, not only delivered: an entry fetched but not yet in a slot is given back at
        # SIGTERM, and rightly does not complete in this drain
        wait_until(lambda: client.hget(keys.job(svc_queue, job_id), "pm") == b"started", 10, "started")
        proc.send_signal(signal.SIGTERM)

        def draining() -> bool:
            status, body = http_get(port, "/readyz")
            return status == 503 and json.loads(body)["reason"] == "draining"

        wait_until(draining, 5, "/readyz 503 while draining")
        _, samples = scrape(port)  # still scrapable while the in-flight job finishes
        assert sample(samples, "tq_queue_active", queue=svc_queue, family=app_service.FAMILY) == 1
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    assert int(client.hget(keys.counters(svc_queue), "completed") or 0) == 1  # finished in the drain
    assert client.xpending(keys.stream(svc_queue), keys.GROUP)["pending"] == 0
    client.close()


# ---- the observer, in-process -------------------------------------------------------------------
def _dead(registry: Any) -> float:
    return sum(
        registry.get_sample_value("tq_jobs_failed_total", {"queue": Q, "job": job, "outcome": o}) or 0
        for job in ("send-email", UNKNOWN_JOB)
        for o in ("dead_lettered", "invalid")
    )


async def test_observer_counts_every_outcome(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, queues={Q: tiny_retry()})
    spec = get_queue(Q)
    registry, observer, collector = make_registry([spec], redis_client)
    h = HandlerRegistry()
    failed_once: set[str] = set()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "flaky" and ctx.job_id not in failed_once:
            failed_once.add(ctx.job_id)
            raise RuntimeError("try again")
        if payload.template == "fatal":
            raise NonRetryableError("bad recipient")

    stream = keys.stream(Q)
    await redis_client.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
    forged = {"id": "forged-1", "queue": Q, "name": "send-fax", "payload": EMAIL, "enqueued_at": time.time()}
    await redis_client.xadd(stream, {"j": json.dumps(forged)})  # unknown job: invalid
    await redis_client.xadd(stream, {"j": "{not json"})  # unreadable entry: invalid
    producer = Producer(redis_client, s)
    await producer.enqueue_many(
        Q,
        [("send-email", EMAIL)] * 4
        + [("send-email", {**EMAIL, "template": "flaky"})] * 2
        + [("send-email", {**EMAIL, "template": "fatal"})],
    )
    worker = Worker(redis_client, [spec], h, s, observer=observer)
    await worker.start()
    try:

        def settled() -> bool:
            done = registry.get_sample_value("tq_jobs_completed_total", {"queue": Q, "job": "send-email"})
            return done == 6

        await wait_for(settled, what="6 completions")
        await wait_for(lambda: _dead(registry) == 3, what="3 dead letters")
    finally:
        await worker.stop()

    def v(name: str, job: str = "send-email", **labels: str) -> float | None:
        return registry.get_sample_value(name, {"queue": Q, "job": job, **labels})

    assert v("tq_jobs_completed_total") == 6
    assert v("tq_jobs_failed_total", outcome="retried") == 2
    assert v("tq_jobs_failed_total", outcome="dead_lettered") == 1
    assert v("tq_jobs_failed_total", outcome="invalid") == 0
    assert v("tq_jobs_failed_total", job=UNKNOWN_JOB, outcome="invalid") == 2  # forged names stay bounded
    assert v("tq_jobs_completed_total", job="process-email-queue") == 0
    # duration: every attempt run here (6 completed + 2 retried + 1 dead); wait: first attempts only
    assert v("tq_job_duration_seconds_count") == 9
    assert v("tq_job_wait_seconds_count") == 7
    assert v("tq_job_duration_seconds_bucket", le="+Inf") == 9
    assert v("tq_job_duration_seconds_count", job=UNKNOWN_JOB) == 2
    assert registry.get_sample_value("tq_jobs_reclaimed_total", {"queue": Q}) == 0

    assert await collector.refresh()
    gauges = {"queue": Q, "family": spec.family}
    assert registry.get_sample_value("tq_queue_dlq", gauges) == 3
    assert registry.get_sample_value("tq_queue_waiting", gauges) == 0
    assert registry.get_sample_value("tq_jobs_enqueued_total", {"queue": Q}) == 7
    # the DLQ's cap (the registry's) and what it trimmed; the audit backlog and its bound
    assert registry.get_sample_value("tq_queue_dlq_max", gauges) == spec.defaults.dlq_max_len
    assert registry.get_sample_value("tq_dlq_trimmed_total", gauges) == 0
    assert registry.get_sample_value("tq_queue_audit_backlog", gauges) == 0  # audit off here
    assert registry.get_sample_value("tq_queue_audit_backlog_max", gauges) == s.audit_backlog_max
    await redis_client.xadd(keys.audit(Q), {"a": "job.completed"})
    await config.write(redis_client, Q, config.override(generation=1, dlq_max_len=3))  # a QueueConfig's
    await redis_client.hset(keys.counters(Q), "dlq_trimmed", 2)
    assert await collector.refresh()
    assert registry.get_sample_value("tq_queue_dlq_max", gauges) == 3
    assert registry.get_sample_value("tq_dlq_trimmed_total", gauges) == 2
    assert registry.get_sample_value("tq_queue_audit_backlog", gauges) == 1


async def test_observer_counts_reclaimed_jobs(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, reclaim_interval_s=0.05, queues={Q: {"visibility_timeout_s": 0.3}})
    registry, observer, _ = make_registry([get_queue(Q)], redis_client)
    await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
    await redis_client.xgroup_create(keys.stream(Q), keys.GROUP, id="0", mkstream=True)
    # a consumer that took the job and died
    await redis_client.xreadgroup(keys.GROUP, "dead-consumer", {keys.stream(Q): ">"}, count=1)
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        return None

    labels = {"queue": Q, "job": "send-email"}
    worker = Worker(redis_client, [get_queue(Q)], h, s, observer=observer)
    await worker.start()
    try:
        await wait_for(
            lambda: registry.get_sample_value("tq_jobs_completed_total", labels) == 1,
            what="the reclaimed job to complete",
        )
    finally:
        await worker.stop()
    assert registry.get_sample_value("tq_jobs_reclaimed_total", {"queue": Q}) == 1
    assert registry.get_sample_value("tq_jobs_failed_total", {**labels, "outcome": "retried"}) == 1
    # the reclaimed attempt did not run here; the run after it is attempt 2: a duration, no wait
    assert registry.get_sample_value("tq_job_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("tq_job_wait_seconds_count", labels) == 0


async def test_oldest_waiting_and_paused_gauges(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    spec = get_queue("otp:send")
    registry, _, collector = make_registry([spec], redis_client)
    await Producer(redis_client, s).enqueue_many("otp:send", [("send-otp", OTP)] * 3)
    await config.set_paused(redis_client, "otp:send", True)
    await asyncio.sleep(0.05)
    assert await collector.refresh()
    labels = {"queue": "otp:send", "family": "messaging"}
    assert registry.get_sample_value("tq_queue_waiting", labels) == 3
    assert registry.get_sample_value("tq_queue_paused", labels) == 1
    assert registry.get_sample_value("tq_queue_consumers", labels) == 0
    oldest = registry.get_sample_value("tq_queue_oldest_waiting_seconds", labels)
    assert oldest is not None and 0.05 <= oldest < 10


async def test_config_generation_gauges(redis_client: Any, redis_url: str) -> None:
    """``tq_queue_config_generation`` (in Redis) and ``tq_consumer_config_generation`` (what this
    process's worker applied): 0 from start-up, apart while a new config is not applied yet."""
    s = fast_settings(redis_url)
    spec = get_queue(Q)
    registry, _, collector = make_registry([spec], redis_client)
    labels = {"queue": Q, "family": spec.family}

    def generations() -> tuple[float | None, float | None]:
        return (
            registry.get_sample_value("tq_queue_config_generation", labels),
            registry.get_sample_value("tq_consumer_config_generation", labels),
        )

    assert await collector.refresh()
    assert generations() == (0, 0)  # defaults, and no worker attached yet
    worker = Worker(redis_client, [spec], HandlerRegistry(), s)
    collector.worker = worker
    await config.write(redis_client, Q, config.defaults(Q, s).model_copy(update={"generation": 4}))
    assert await collector.refresh()
    assert generations() == (4, 0)  # written, not applied yet
    await worker.runners[Q].refresh_config()
    assert await collector.refresh()
    assert generations() == (4, 4)
    await config.reset(redis_client, Q)  # back to defaults
    await worker.runners[Q].refresh_config()
    assert await collector.refresh()
    assert generations() == (0, 0)
    collector.client = None  # Redis gone: the queue's gauge is absent, the process's one stays
    assert not await collector.refresh()
    assert generations() == (None, 0)
