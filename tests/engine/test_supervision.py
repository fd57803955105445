"""The worker's supervision (``tq.supervise``), handlers that raise a ``BaseException``, and the
per-job time limit. A handler's ``CancelledError`` (or another ``BaseException`` that is not the
process's own stop) is settled like any failure and its slot lives on; a failing task is
restarted, counted and reported; a job past its time limit is cancelled and fails with
``JobTimeout``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from support import fast_settings, running, tiny_retry, wait_for
from tq import dlq, jobs, keys
from tq.envelope import JobState
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer
from tq.registry import get_queue
from tq.supervise import REASONS, Supervisor, reason_of
from tq.worker import Worker

Q = "email:send"


class Boom(BaseException):
    """A BaseException a library might raise (not Exception, not the process's own stop)."""


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ReadOnlyError("You can't write against a read only replica.", status_code="READONLY"), "READONLY"),
        (BusyLoadingError("Redis is loading the dataset in memory", status_code="LOADING"), "LOADING"),
        (MasterDownError("Link with MASTER is down", status_code="MASTERDOWN"), "MASTERDOWN"),
        (ResponseError("BUSY Redis is busy running a script."), "BUSY"),
        (ClusterDownError("The cluster is down", status_code="CLUSTERDOWN"), "CLUSTERDOWN"),
        (TryAgainError("Multiple keys request during rehashing", status_code="TRYAGAIN"), "TRYAGAIN"),
        (MovedError("3999 127.0.0.1:6381", status_code="MOVED"), "MOVED"),
        (AskError("3999 127.0.0.1:6381", status_code="ASK"), "ASK"),
        (ResponseError("UNBLOCKED force unblock from blocking operation"), "UNBLOCKED"),
        (RedisConnectionError("Connection reset by peer"), "connection"),
        (ConnectionResetError(104, "reset"), "connection"),
        (RedisTimeoutError("Timeout reading from socket"), "timeout"),
        (TimeoutError(), "timeout"),
        (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), "redis_error"),
        (KeyError("x"), "error"),
    ],
)
def test_every_failure_has_a_bounded_reason(exc: BaseException, reason: str) -> None:
    assert reason_of(exc) == reason and reason in REASONS


async def test_a_failing_task_is_logged_once_retried_with_capped_backoff_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str]] = []
    sup = Supervisor(on_restart=lambda task, reason: seen.append((task, reason)), backoff_max_s=0.4)
    pauses: list[float] = []
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs <= 6:
            raise ReadOnlyError("You can't write against a read only replica.", status_code="READONLY")
        assert sup.down == {
            "reader:q": "READONLY: ReadOnlyError: You can't write against a read only replica."
        }
        sup.recovered("reader:q")

    async def sleep(s: float) -> None:
        pauses.append(s)

    with caplog.at_level("WARNING", logger="tq.supervise"):
        await sup.run("reader:q", "reader", body, sleep=sleep)
    assert runs == 7 and pauses == [0.1, 0.2, 0.4, 0.4, 0.4, 0.4]
    assert seen == [("reader", "READONLY")] * 6 and sup.restarts == {("reader", "READONLY"): 6}
    assert sup.down == {}
    failed = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(failed) == 1 and "READONLY" in failed[0].getMessage()  # once per outage
    assert any("recovered" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("raised", [asyncio.CancelledError, Boom])
async def test_a_handler_raising_a_base_exception_is_settled_and_its_slot_lives_on(
    redis_client: Any, redis_url: str, raised: type[BaseException]
) -> None:
    s = fast_settings(redis_url, queues={Q: {"concurrency": 1, **tiny_retry(attempts=2)}})
    h = HandlerRegistry()
    ran: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        ran.append(payload.template)
        if payload.template == "bad":
            raise raised()

    p = Producer(redis_client, s)
    async with running(redis_client, s, h) as worker:
        bad = await p.enqueue(Q, "send-email", {"to": "a@example.com", "template": "bad"})
        rec = await _settled(redis_client, bad)
        assert rec.state is JobState.DEAD and rec.attempts == 2  # retried once, then dead-lettered
        [letter] = (await dlq.list_dead(redis_client, Q)).items
        assert letter.error_type == raised.__name__
        assert f"{raised.__name__} raised out of the handler" in letter.error
        assert [f["type"] for f in rec.failures] == [raised.__name__] * 2
        # the one slot lives on: later jobs run, nothing is held or left pending
        goods = [
            await p.enqueue(Q, "send-email", {"to": "a@example.com", "template": f"g{i}"}) for i in range(5)
        ]
        for job_id in goods:
            assert (await _settled(redis_client, job_id)).state is JobState.COMPLETED
        runner = worker.runners[Q]
        assert runner.held == set() and runner.running == 0 and len(runner.busy_slots()) == 1
        assert (await redis_client.xpending(keys.stream(Q), keys.GROUP))["pending"] == 0
        assert worker.supervisor.restarts == {}  # settled as the job's failure: no slot restart
    assert ran.count("bad") == 2


async def _settled(client: Any, job_id: str) -> jobs.JobRecord:
    async def done() -> bool:
        return (await jobs.get_job(client, Q, job_id)).state in (JobState.COMPLETED, JobState.DEAD)

    await wait_for(done, what=f"job {job_id} settled")
    return await jobs.get_job(client, Q, job_id)


async def test_a_duty_that_raises_any_error_is_restarted_and_counted(
    redis_client: Any, redis_url: str
) -> None:
    """A bug in a duty (not a Redis error) no longer ends it for good: restarted, counted."""
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    seen: list[tuple[str, str]] = []

    class Observer:
        def observe(self, queue: str, ops: Any) -> None: ...

        def task_restarted(self, task: str, reason: str) -> None:
            seen.append((task, reason))

    worker = Worker(redis_client, [get_queue(Q)], h, s, observer=Observer())
    calls = 0
    real = worker.runners[Q].promote_once

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ValueError("a bug")
        return await real()

    worker.runners[Q].promote_once = flaky  # type: ignore[method-assign]
    await worker.start()
    try:
        await wait_for(lambda: calls >= 4, what="the promoter to run again")
        assert seen == [("promoter", "error")] * 2 and "promoter" not in worker.supervisor.down
    finally:
        await worker.stop()


# ---- per-job time limit --------------------------------------------------------------------------


async def test_a_job_past_its_time_limit_is_cancelled_and_fails_with_job_timeout(
    redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url, queues={Q: {"concurrency": 2, "timeout_s": 0.2, **tiny_retry(attempts=2)}})
    h = HandlerRegistry()
    cancelled: list[int] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise

    p = Producer(redis_client, s)
    async with running(redis_client, s, h) as worker:
        slow = await p.enqueue(Q, "send-email", {"to": "a@example.com", "template": "slow"})
        quick = await p.enqueue(Q, "send-email", {"to": "a@example.com", "template": "quick"})
        rec = await _settled(redis_client, slow)
        assert rec.state is JobState.DEAD and rec.attempts == 2 and cancelled == [1, 2]
        assert [f["type"] for f in rec.failures] == ["JobTimeout", "JobTimeout"]
        assert "ran past its time limit of 0.2s" in rec.failures[0]["message"]
        assert rec.duration_ms is not None and rec.duration_ms < 2000
        assert (await _settled(redis_client, quick)).state is JobState.COMPLETED
        assert worker.runners[Q].held == set() and worker.supervisor.restarts == {}


async def test_time_limits_per_queue_per_job_and_their_overrides(redis_client: Any, redis_url: str) -> None:
    from dataclasses import replace

    from tq import config
    from tq.registry import register_queue, unregister_queue

    spec = replace(get_queue(Q), name="limits:q", family="limits", job_timeouts={"send-email": 5.0})
    register_queue(spec)
    try:
        worker = Worker(redis_client, [spec], HandlerRegistry(), fast_settings(redis_url))
        runner = worker.runners["limits:q"]
        await runner.refresh_config()
        assert runner.job_timeouts["send-email"] == 5.0  # the job's registry value
        assert runner.job_timeouts["process-email-queue"] == 0.0  # the queue's (no limit)
        await config.write(redis_client, "limits:q", config.override(timeout_s=2.5))
        await runner.refresh_config()
        assert set(runner.job_timeouts.values()) == {2.5}  # a live per-queue value applies to every job
        await config.reset(redis_client, "limits:q")
        await runner.refresh_config()
        assert runner.job_timeouts["send-email"] == 5.0
        env = fast_settings(redis_url, queues={"limits:q": {"timeout_s": 9}})
        runner = Worker(redis_client, [spec], HandlerRegistry(), env).runners["limits:q"]
        await runner.refresh_config()
        assert set(runner.job_timeouts.values()) == {9.0}  # TQ_QUEUES too
    finally:
        unregister_queue("limits:q")
    with pytest.raises(ValueError, match="job_timeouts"):
        replace(spec, job_timeouts={"nope": 1.0})


# ---- loop-lag watchdog ---------------------------------------------------------------------------


async def test_a_handler_blocking_the_loop_is_named_and_counted(
    redis_client: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import time as clock

    s = fast_settings(redis_url)
    h = HandlerRegistry()
    blocked: list[tuple[str, str]] = []

    class Observer:
        def observe(self, queue: str, ops: Any) -> None: ...

        def loop_blocked(self, queue: str, job: str) -> None:
            blocked.append((queue, job))

    @h.register(Q, "send-email")
    async def sync_send(ctx: JobContext, payload: SendEmail) -> None:
        clock.sleep(1.6)  # noqa: ASYNC251 - blocking on purpose: what asyncio.to_thread is for

    worker = Worker(redis_client, [get_queue(Q)], h, s, observer=Observer())
    await worker.start()
    try:
        with caplog.at_level("WARNING", logger="tq.loopwatch"):
            job_id = await Producer(redis_client, s).enqueue(
                Q, "send-email", {"to": "a@b.co", "template": "w"}
            )
            assert (await _settled(redis_client, job_id)).state is JobState.COMPLETED
            await wait_for(lambda: worker.watchdog is not None and worker.watchdog.blocked() is None)
        assert blocked == [(Q, "send-email")]
        [report] = [r.getMessage() for r in caplog.records if "blocked for" in r.getMessage()]
        assert f"job {job_id} ({Q} send-email) in handler" in report and "sync_send" in report
        assert "asyncio.to_thread" in report
        assert worker.intake_problem() is None
    finally:
        await worker.stop()


async def test_intake_problem_names_a_failing_reader_or_settler_and_a_hung_call(
    redis_client: Any, redis_url: str
) -> None:
    import time as clock

    worker = Worker(redis_client, [get_queue(Q)], HandlerRegistry(), fast_settings(redis_url))
    runner = worker.runners[Q]
    assert worker.intake_problem() is None
    worker.supervisor.failed(runner.read_unit, "reader", ReadOnlyError("read only", status_code="READONLY"))
    assert worker.intake_problem() == f"intake of {Q} down: READONLY: ReadOnlyError: read only"
    worker.supervisor.recovered(runner.read_unit)
    worker.supervisor.failed("promoter", "promoter", RedisConnectionError("refused"))
    assert worker.intake_problem() is None  # a background duty failing is logged and counted only
    runner.reading_since = clock.monotonic() - 1.0
    assert worker.intake_problem() is None  # a read within its BLOCK time + 3 s
    runner.reading_since = clock.monotonic() - 10.0
    assert (worker.intake_problem() or "").startswith(f"intake of {Q} stalled: a read has not returned")
    runner.reading_since = 0.0
    runner.settling_since = clock.monotonic() - 10.0
    assert (worker.intake_problem() or "").startswith(f"intake of {Q} stalled: a settle has not returned")
