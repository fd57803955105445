"""Delivery against a real Redis: completion, retry with backoff, dead-lettering with every field,
bad input at consume, idempotent skip, pause, live concurrency, reclaim, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
from support import fast_settings, published_events, running, tiny_retry, wait_for
from support.cut_proxy import CutProxy
from tq import config, dlq, jobs, keys
from tq.envelope import JobState
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer
from tq.queue_config import RetryPolicy
from tq.registry import get_queue
from tq.retry import backoff_s
from tq.worker import Worker

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}


async def _count(client: Any, name: str, queue: str = Q) -> int:
    return int(await client.hget(keys.counters(queue), name) or 0)


async def test_completes_with_validated_payload_and_acks(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    got: list[Any] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> dict[str, str]:
        got.append((ctx.job_id, ctx.attempt, payload))
        return {"sent_to": payload.to}

    p = Producer(redis_client, s)
    async with published_events(redis_client) as seen, running(redis_client, s, h):
        ids = [await p.enqueue(Q, "send-email", EMAIL) for _ in range(20)]
        await wait_for(lambda: _count(redis_client, "completed"), what="completions")
        await wait_for(lambda: len([e for e in seen if e["type"] == "job.completed"]) == 20, what="events")
    assert sorted(g[0] for g in got) == sorted(ids)
    assert all(isinstance(g[2], SendEmail) and g[1] == 1 for g in got)
    assert await _count(redis_client, "completed") == 20
    assert await redis_client.xlen(keys.stream(Q)) == 0  # acked and deleted
    assert (await redis_client.xpending(keys.stream(Q), keys.GROUP))["pending"] == 0
    rec = await jobs.get_job(redis_client, Q, ids[0])
    assert (
        rec.state is JobState.COMPLETED and rec.attempts == 1 and rec.result == {"sent_to": "a@example.com"}
    )
    assert rec.finished_at is not None and rec.started_at is not None and rec.duration_ms is not None


def test_backoff_doubles_from_2s_and_caps_at_2min() -> None:
    policy = RetryPolicy(jitter=0)
    assert [backoff_s(policy, n) for n in range(1, 10)] == [2, 4, 8, 16, 32, 64, 120, 120, 120]
    jittery = RetryPolicy()  # default jitter 0.2
    for n in range(1, 10):
        base = min(2 * 2 ** (n - 1), 120)
        draws = [backoff_s(jittery, n) for _ in range(200)]
        assert all(base * 0.8 <= d <= min(base * 1.2, 120) for d in draws)
        assert max(draws) - min(draws) > 0  # jitter spreads retries


async def test_retries_follow_backoff_and_fifth_failure_dead_letters(
    redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url, queues={Q: tiny_retry(attempts=5, initial_s=0.04, max_s=0.2)})
    h = HandlerRegistry()
    attempts: list[int] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError(f"smtp down on attempt {ctx.attempt}")

    p = Producer(redis_client, s)
    async with published_events(redis_client) as seen, running(redis_client, s, h):
        job_id = await p.enqueue(Q, "send-email", EMAIL, trace_id="trace-42", idempotency_key="once")
        await wait_for(lambda: redis_client.xlen(keys.dlq(Q)), what="dead letter")
        await wait_for(lambda: any(e["type"] == "dlq.added" for e in seen), what="dlq event")
    assert attempts == [1, 2, 3, 4, 5]
    retrying = [e for e in seen if e["type"] == "job.retrying"]
    assert [e["data"]["attempt"] for e in retrying] == [1, 2, 3, 4]
    for e in retrying:  # 0.04 s * 2**(n-1), capped at 0.2 s
        expected = min(0.04 * 2 ** (e["data"]["attempt"] - 1), 0.2)
        assert abs((e["data"]["due"] - e["at"]) - expected) < 0.01
    [letter] = (await dlq.list_dead(redis_client, Q)).items
    assert (letter.job_id, letter.queue, letter.name) == (job_id, Q, "send-email")
    assert (letter.error_type, letter.error, letter.attempts) == (
        "ConnectionError",
        "smtp down on attempt 5",
        5,
    )
    assert "raise ConnectionError" in letter.stack and letter.trace_id == "trace-42"
    assert letter.payload["to"] == "a@example.com" and letter.idempotency_key == "once"
    assert abs(letter.failed_at - time.time()) < 5
    rec = await jobs.get_job(redis_client, Q, job_id)
    assert rec.state is JobState.DEAD and rec.dlq_id == letter.dlq_id and len(rec.failures) == 5
    # a dead job keeps its idempotency key until the key's TTL ends
    assert await redis_client.get(keys.idempotency(Q, "once")) == job_id.encode()


async def test_non_retryable_error_dead_letters_at_once(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    calls = 0

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        nonlocal calls
        calls += 1
        raise NonRetryableError("mailbox does not exist")

    async with running(redis_client, s, h):
        await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
        await wait_for(lambda: redis_client.xlen(keys.dlq(Q)), what="dead letter")
    [letter] = (await dlq.list_dead(redis_client, Q)).items
    assert calls == 1 and letter.error_type == "NonRetryableError" and letter.attempts == 1
    assert await _count(redis_client, "retried") == 0


def _recording(hold: asyncio.Event | None = None) -> tuple[HandlerRegistry, list[str]]:
    """A send-email handler that records each job's id as it starts, then waits for ``hold``."""
    h = HandlerRegistry()
    ran: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        ran.append(ctx.job_id)
        if hold is not None:
            await hold.wait()

    return h, ran


async def test_bad_entries_at_consume_are_dead_lettered_with_the_reason(
    redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url)
    h, ran = _recording()

    def env(**over: Any) -> str:
        base = {
            "id": "forged-1",
            "queue": Q,
            "name": "send-email",
            "payload": EMAIL,
            "attempt": 1,
            "enqueued_at": time.time(),
        }
        return json.dumps({**base, **over})

    stream = keys.stream(Q)
    await redis_client.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
    forged = [
        {"j": env(id="bad-payload", payload={"to": "nobody", "template": "w"})},
        {"j": env(id="bad-type", payload={"to": "a@b.co", "template": 7})},
        {"j": env(id="unknown-job", name="send-fax")},
        {"j": env(id="quoted-name", name='send-"fax"\\')},
        {"j": env(id='bad"id')},
        {"j": env(id="wrong-queue", queue="otp:send")},
        {"j": "{not json"},
        {"j": b"\xff\xfe\xfa invalid utf-8"},
        {"other": "no envelope at all"},
        {"j": env(id="bad-attempt"), "a": "many"},
    ]
    for fields in forged:
        await redis_client.xadd(stream, fields)
    good = await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
    async with published_events(redis_client) as seen, running(redis_client, s, h):
        await wait_for(lambda: _count(redis_client, "completed"), what="the good job")
        await wait_for(lambda: _count(redis_client, "dead"), what="dead letters")
        await wait_for(async_eq(lambda: _count(redis_client, "dead"), 9), what="all bad ones")
        await wait_for(lambda: len([e for e in seen if e["type"] == "dlq.added"]) == 9, what="valid events")
    assert sorted(ran) == sorted([good, "bad-attempt"])  # an unreadable attempt field is not fatal
    letters = {d.job_id: d for d in (await dlq.list_dead(redis_client, Q)).items}
    assert letters["bad-payload"].error_type == "InvalidPayload" and "to" in letters["bad-payload"].error
    assert letters["bad-type"].error_type == "InvalidPayload" and "template" in letters["bad-type"].error
    assert letters["unknown-job"].error_type == "UnknownJob" and "send-fax" in letters["unknown-job"].error
    assert letters["wrong-queue"].error_type == "WrongQueue"
    assert letters["quoted-name"].error_type == "UnknownJob"
    invalid = [d for d in letters.values() if d.error_type == "InvalidEnvelope"]
    assert len(invalid) == 4 and all(d.attempts == 1 for d in letters.values())  # bad"id among them
    assert await _count(redis_client, "retried") == 0  # bad input is never retried
    assert (await redis_client.xpending(stream, keys.GROUP))["pending"] == 0


async def test_fresh_entries_refused_on_the_hot_path_are_reported_as_any_entry(
    redis_client: Any, redis_url: str
) -> None:
    """Entries in the fresh layout (id, name, payload, time) run without an envelope being built;
    what the hot path refuses is checked again the slow way and dead-lettered with the same reason,
    and a handler that reads ``ctx.envelope`` gets the whole envelope."""
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    seen: list[tuple[JobContext, Any]] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        seen.append((ctx, ctx.envelope))

    stream = keys.stream(Q)
    await redis_client.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
    t = str(int(time.time() * 1000))
    good = json.dumps(EMAIL)
    expected: dict[str, str] = {}
    for job_id, name, payload, error in [
        ("bad-payload", "send-email", '{"to": "nobody", "template": "w"}', "InvalidPayload"),
        ("unknown-job", "send-fax", good, "UnknownJob"),
        ("not-json", "send-email", "{not json", "InvalidEnvelope"),
        ("not-an-object", "send-email", "[1, 2]", "InvalidEnvelope"),
        # what the payload adds after itself is read as the envelope's (as before the hot path)
        ("trailing", "send-email", good + ', "queue": "otp:send"', "WrongQueue"),
        ("plain-ok", "send-email", good, ""),
    ]:
        eid = await redis_client.xadd(stream, {"i": job_id, "n": name, "p": payload, "t": t})
        if job_id.startswith("not-"):  # unreadable: dead-lettered under its entry id
            job_id = "entry-" + eid.decode()
        expected[job_id] = error
    # a time no int() reads (more than 4 300 digits): unreadable, not left pending for ever
    eid = await redis_client.xadd(stream, {"i": "long-time", "n": "send-email", "p": good, "t": "1" * 5000})
    expected["entry-" + eid.decode()] = "InvalidEnvelope"
    async with running(redis_client, s, h):
        await wait_for(async_eq(lambda: _count(redis_client, "dead"), 6), what="the refused ones")
        await wait_for(lambda: _count(redis_client, "completed"), what="the good one")
    letters = {d.job_id: d.error_type for d in (await dlq.list_dead(redis_client, Q)).items}
    assert letters == {k: v for k, v in expected.items() if v}
    [(ctx, envelope)] = seen
    assert (ctx.job_id, ctx.queue, ctx.name, ctx.attempt, ctx.trace_id) == (
        "plain-ok",
        Q,
        "send-email",
        1,
        None,
    )
    assert (envelope.id, envelope.queue, envelope.name, envelope.payload) == (
        "plain-ok",
        Q,
        "send-email",
        EMAIL,
    )
    assert envelope.enqueued_at == int(t) / 1000 and ctx.envelope is envelope


def async_eq(fn: Any, value: int) -> Any:
    async def check() -> bool:
        return bool(await fn() == value)

    return check


async def test_no_handler_goes_to_the_dlq(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    async with running(redis_client, s, HandlerRegistry()):
        job_id = await Producer(redis_client, s).enqueue(Q, "process-email-queue", {"limit": 5})
        await wait_for(lambda: redis_client.xlen(keys.dlq(Q)), what="dead letter")
    [letter] = (await dlq.list_dead(redis_client, Q)).items
    assert letter.job_id == job_id and letter.error_type == "NoHandler"


async def test_replay_of_a_job_whose_key_since_completed_does_not_run_twice(
    redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    effects: list[str] = []
    fail_first = True

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        nonlocal fail_first
        if fail_first:
            fail_first = False
            raise NonRetryableError("template engine crashed")
        effects.append(ctx.job_id)

    p = Producer(redis_client, s)
    async with running(redis_client, s, h):
        first = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="invoice-9")
        await wait_for(lambda: redis_client.xlen(keys.dlq(Q)), what="dead letter")
        # the dead job holds its key until the key's TTL ends: here the TTL ends (the key expires)
        assert await p.enqueue(Q, "send-email", EMAIL, idempotency_key="invoice-9") == first
        await redis_client.delete(keys.idempotency(Q, "invoice-9"))
        second = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="invoice-9")
        assert second != first
        await wait_for(lambda: _count(redis_client, "completed"), what="second job")
        [letter] = (await dlq.list_dead(redis_client, Q)).items
        replayed = await dlq.replay_one(redis_client, Q, letter.dlq_id)
        await wait_for(lambda: _count(redis_client, "skipped"), what="skip")
    assert effects == [second]
    rec = await jobs.get_job(redis_client, Q, replayed)
    assert rec.state is JobState.COMPLETED and rec.replay_of == first and "already completed" in rec.result


async def test_pause_holds_new_jobs_while_in_flight_ones_finish(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, config_poll_s=5.0)  # the control signal, not the poll, must do it
    h = HandlerRegistry()
    release = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        started.append(ctx.job_id)
        await release.wait()
        finished.append(ctx.job_id)

    p = Producer(redis_client, s)
    async with running(redis_client, s, h) as w:
        in_flight = [await p.enqueue(Q, "send-email", EMAIL) for _ in range(2)]
        await wait_for(lambda: len(started) == 2, what="two running")
        t0 = time.monotonic()
        await config.set_paused(redis_client, Q, True)
        await wait_for(lambda: w.runners[Q].cfg.paused, timeout=1.0, what="pause within a second")
        assert time.monotonic() - t0 < 1.0
        held = [await p.enqueue(Q, "send-email", EMAIL) for _ in range(5)]
        release.set()
        await wait_for(lambda: len(finished) == 2, what="in-flight jobs finish")
        await asyncio.sleep(0.5)
        assert sorted(started) == sorted(in_flight)  # nothing new started while paused
        counts = await jobs.counts(redis_client, Q)
        assert counts["paused"] and counts["waiting"] == 5 and counts["completed"] == 2
        await config.set_paused(redis_client, Q, False)
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 7), what="resumed")
    assert sorted(finished) == sorted(in_flight + held)


async def test_concurrency_change_takes_effect_without_restart(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, queues={Q: {"concurrency": 2}})
    h = HandlerRegistry()
    now_running = 0
    peak: list[int] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        nonlocal now_running
        now_running += 1
        peak.append(now_running)
        await asyncio.sleep(0.03)
        now_running -= 1

    p = Producer(redis_client, s)
    async with running(redis_client, s, h) as w:
        await p.enqueue_many(Q, [("send-email", EMAIL)] * 20)
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 20), what="first batch")
        assert max(peak) == 2
        peak.clear()
        await config.set_concurrency(redis_client, Q, 6)
        await wait_for(lambda: w.runners[Q].cfg.concurrency == 6, timeout=1.0, what="new limit")
        await p.enqueue_many(Q, [("send-email", EMAIL)] * 60)
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 80), what="second batch")
        assert max(peak) == 6


async def test_delayed_job_runs_when_due(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    ran_at: list[float] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        ran_at.append(time.time())

    async with running(redis_client, s, h):
        t0 = time.time()
        await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL, delay=0.4)
        await wait_for(lambda: ran_at, what="delayed job")
    assert 0.39 <= ran_at[0] - t0 < 1.5


async def test_stalled_entries_are_reclaimed_with_an_attempt_counted(
    redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url, queues={Q: {"visibility_timeout_s": 0.3, **tiny_retry(attempts=3)}})
    h = HandlerRegistry()
    attempts: dict[str, int] = {}

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        attempts[ctx.job_id] = ctx.attempt

    p = Producer(redis_client, s)
    ids = [await p.enqueue(Q, "send-email", EMAIL) for _ in range(3)]
    # a consumer that reads and dies: its entries stay pending
    await redis_client.xgroup_create(keys.stream(Q), keys.GROUP, id="0", mkstream=True)
    await redis_client.xreadgroup(keys.GROUP, "dead-consumer", {keys.stream(Q): ">"}, count=10)
    # and a job on its last attempt that keeps killing its consumer
    poison = await p.enqueue(Q, "send-email", EMAIL)
    entry = (await redis_client.xrange(keys.stream(Q)))[-1]
    await redis_client.xdel(keys.stream(Q), entry[0])
    await redis_client.xadd(keys.stream(Q), {**entry[1], b"a": b"3"})
    await redis_client.xreadgroup(keys.GROUP, "dead-consumer", {keys.stream(Q): ">"}, count=10)
    async with running(redis_client, s, h):
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 3), what="reclaimed jobs")
        await wait_for(lambda: redis_client.xlen(keys.dlq(Q)), what="poison dead-lettered")
    assert attempts == {i: 2 for i in ids}
    [letter] = (await dlq.list_dead(redis_client, Q)).items
    assert letter.job_id == poison and letter.error_type == "StalledJob" and letter.attempts == 3
    assert await _count(redis_client, "reclaimed") == 4


async def test_slow_job_of_a_live_consumer_is_not_reclaimed(redis_client: Any, redis_url: str) -> None:
    s = fast_settings(redis_url, reclaim_interval_s=0.05, queues={Q: {"visibility_timeout_s": 0.3}})
    h = HandlerRegistry()
    runs: list[tuple[str, int]] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        runs.append((ctx.consumer_id, ctx.attempt))
        await asyncio.sleep(1.5)  # five visibility timeouts

    async with running(redis_client, s, h, consumer_id="a"), running(redis_client, s, h, consumer_id="b"):
        await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
        await wait_for(lambda: _count(redis_client, "completed"), timeout=5, what="slow job")
    assert len(runs) == 1 and runs[0][1] == 1
    assert await _count(redis_client, "reclaimed") == 0


async def test_outcomes_and_the_progress_mark_ride_on_the_next_read(
    redis_client: Any, redis_url: str
) -> None:
    """What the worker must write goes ahead of its next read, in the same write: the outcome of a
    job that ended at once as the settle call (which carries the progress mark, ``keys.progress``:
    what a reclaim after a crash reads), and the mark of a job still running as an HSET. Neither
    costs a request of its own, and the mark stored is the newest entry taken."""
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    release = asyncio.Event()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "slow":
            await release.wait()

    p = Producer(redis_client, s)
    watcher = type(redis_client).from_url(redis_url)  # MONITOR keeps a connection of its own
    commands: list[dict[str, Any]] = []
    try:
        async with watcher.monitor() as monitor, running(redis_client, s, h, consumer_id="c1") as w:

            async def listen() -> None:
                while True:
                    commands.append(dict(await monitor.next_command()))

            listener = asyncio.create_task(listen())
            for n in range(1, 11):  # one at a time: each taken alone, on an idle worker

                async def completed(n: int = n) -> bool:
                    return await _count(redis_client, "completed") >= n

                await p.enqueue(Q, "send-email", EMAIL)
                await wait_for(completed, what=f"job {n}")
            await p.enqueue(Q, "send-email", {**EMAIL, "template": "slow"})
            newest = (await redis_client.xinfo_stream(keys.stream(Q)))["last-generated-id"]

            async def slow_marked() -> bool:
                return await redis_client.hget(keys.progress(Q), "c1") == newest

            await wait_for(slow_marked, what="the slow job's mark, while it runs")
            release.set()
            await wait_for(async_eq(lambda: _count(redis_client, "completed"), 11), what="the slow job")
            await asyncio.sleep(0.1)  # anything still on its way
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            settle = f"EVALSHA {w.scripts.settle.sha} "
    finally:
        await watcher.aclose()
    reads = {c["client_port"] for c in commands if c["command"].startswith("XREADGROUP ")}
    assert len(reads) == 1  # the reader's one connection

    def read_right_behind(i: int) -> bool:
        behind = next(c for c in commands[i + 1 :] if c["client_port"] == commands[i]["client_port"])
        return commands[i]["client_port"] in reads and behind["command"].startswith("XREADGROUP ")

    settles = [i for i, c in enumerate(commands) if c["command"].startswith(settle)]
    marks = [i for i, c in enumerate(commands) if c["command"].startswith(f"HSET {keys.progress(Q)} ")]
    # the ten short jobs: a settle each, on the reader's connection with its read behind it, the
    # mark inside; the slow one: its mark ahead of a read while it runs, its settle from the
    # settler when it ends (the reader is blocked then)
    assert len(settles) == 11 and all(read_right_behind(i) for i in settles[:10])
    assert [commands[i]["client_type"] for i in marks] == ["lua"] * 10 + ["tcp"]
    assert read_right_behind(marks[-1])
    assert commands[settles[-1]]["client_port"] not in reads


async def test_outcomes_sent_ahead_of_a_read_that_fails_are_settled_by_the_settler(
    redis_client: Any, redis_url: str, proxy: CutProxy
) -> None:
    """The reader's connection cut as it sends a settle call ahead of its read (Redis gets
    neither): the settler sends the outcomes at once, each job settled once and run once."""
    s = fast_settings(redis_url)
    h, ran = _recording()

    client = type(redis_client).from_url(proxy.url)
    p = Producer(redis_client, s)
    try:
        async with running(client, s, h, consumer_id="c1") as w:
            w.supervisor.backoff_initial_s = 5.0  # the reader stays down long after the cut
            await p.enqueue(Q, "send-email", EMAIL)
            await wait_for(async_eq(lambda: _count(redis_client, "completed"), 1), what="a first job")
            # the read after the next job's: the one its settle call rides on
            proxy.cut_before(w.scripts.settle.sha.encode())
            job = await p.enqueue(Q, "send-email", EMAIL)
            await wait_for(lambda: job in ran, what="the job")
            await wait_for(
                async_eq(lambda: _count(redis_client, "completed"), 2),
                timeout=1.0,
                what="the job settled by the settler, the reader down",
            )
            assert proxy.cuts == 1
            assert (await redis_client.xpending(keys.stream(Q), keys.GROUP))["pending"] == 0
    finally:
        await client.aclose()
    assert len(ran) == len(set(ran)) == 2


async def test_a_settle_riding_on_a_read_after_a_script_flush_is_sent_again_by_the_settler(
    redis_client: Any, redis_url: str
) -> None:
    """A settle call sent ahead of a read answered NOSCRIPT (Redis restarted, scripts flushed):
    the read goes on, and the settler loads the script and settles the job."""
    s = fast_settings(redis_url)
    h, ran = _recording()

    p = Producer(redis_client, s)
    async with running(redis_client, s, h):
        await p.enqueue(Q, "send-email", EMAIL)
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 1), what="a first job")
        await redis_client.script_flush()
        await p.enqueue(Q, "send-email", EMAIL)  # the producer loads its script again
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 2), what="the job, settled")
        await p.enqueue(Q, "send-email", EMAIL)  # and the reader still reads
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 3), what="a third job")
    assert len(ran) == len(set(ran)) == 3


async def test_a_mark_sent_ahead_of_a_read_that_fails_is_sent_by_the_writer(
    redis_client: Any, redis_url: str, proxy: CutProxy
) -> None:
    """The reader's connection cut as it sends a running job's mark ahead of its read (Redis gets
    neither): the writer sends the mark, and the newest entry taken is stored."""
    s = fast_settings(redis_url)
    release = asyncio.Event()  # the job still runs when the next read goes out: an HSET rides on it
    h, ran = _recording(release)

    client = type(redis_client).from_url(proxy.url)
    p = Producer(redis_client, s)
    try:
        async with running(client, s, h, consumer_id="c1") as w:
            runner = w.runners[Q]
            w.supervisor.backoff_initial_s = 5.0  # the reader stays down long after the cut
            # the read after the job's: the one that carries its mark (the blocked one went up before)
            proxy.cut_before(keys.progress(Q).encode())
            job = await p.enqueue(Q, "send-email", EMAIL)
            await wait_for(lambda: job in ran, what="the job")
            newest = (await redis_client.xinfo_stream(keys.stream(Q)))["last-generated-id"]

            async def marked() -> bool:  # in Redis, and its reply read by the writer (Redis has
                # the value before the writer reads the reply that clears mark_in_hset)
                stored = await redis_client.hget(keys.progress(Q), "c1")
                return stored == newest and runner.marked == newest

            await wait_for(marked, timeout=1.0, what="the mark, sent by the writer, the reader down")
            assert proxy.cuts == 1 and not runner.mark_in_hset
            release.set()
            await wait_for(async_eq(lambda: _count(redis_client, "completed"), 1), what="the job")
    finally:
        release.set()
        await client.aclose()


async def test_a_mark_never_waits_behind_a_settle_in_flight(
    redis_client: Any, redis_url: str, proxy: CutProxy
) -> None:
    """While the settler's call is in flight (its reply held by a proxy) and a job that ended waits
    for the next one, a job taken meanwhile has its mark written at once (ahead of the next read, or
    by the writer), not a round trip later by that next settle: a job that kills its process soon
    after starting is still charged."""
    s = fast_settings(redis_url, queues={Q: {"concurrency": 3}})
    h = HandlerRegistry()
    ended: list[str] = []
    started_slow = asyncio.Event()
    finish = asyncio.Event()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "first":  # ends after the reader's next read went out: the settler
            await asyncio.sleep(0.05)  # sends its outcome (one ending at once rides on that read)
        if payload.template == "slow":
            started_slow.set()
            await finish.wait()
        ended.append(payload.template)

    client = type(redis_client).from_url(proxy.url)
    p = Producer(redis_client, s)
    try:
        async with running(client, s, h, consumer_id="c1") as w:
            proxy.hold_after(w.scripts.settle.sha.encode())
            await p.enqueue(Q, "send-email", {**EMAIL, "template": "first"})
            await wait_for(proxy.held.is_set, what="the first job's settle in flight")
            await p.enqueue(Q, "send-email", {**EMAIL, "template": "second"})
            await wait_for(lambda: len(ended) == 2, what="a second job ended behind it")
            await p.enqueue(Q, "send-email", {**EMAIL, "template": "slow"})
            newest = (await redis_client.xinfo_stream(keys.stream(Q)))["last-generated-id"]
            await asyncio.wait_for(started_slow.wait(), 5)
            assert w.runners[Q].ops, "the second job's outcome waits for the settle in flight"

            async def marked() -> bool:
                return await redis_client.hget(keys.progress(Q), "c1") == newest

            # well within a round trip here, and long before the held settle's read times out
            await wait_for(marked, timeout=1.0, what="the slow job's mark, the settle still in flight")
            proxy.release()
            finish.set()
            await wait_for(lambda: len(ended) == 3, what="the slow job")
    finally:
        proxy.release()
        finish.set()
        await client.aclose()


async def test_a_prefetched_job_taken_while_a_settle_is_in_flight_has_its_mark_written_at_once(
    redis_client: Any, redis_url: str, proxy: CutProxy
) -> None:
    """One slot, three entries from the stream at once, run one after the other. The first one's
    settle goes out and hangs (a proxy holds it), carrying the second one's mark; when the second
    ends, the slot takes the third with no read to carry its mark and no settle able to go: the
    writer sends it at once, not after the settle in flight and the next one."""
    s = fast_settings(redis_url, queues={Q: {"concurrency": 1}})
    h = HandlerRegistry()
    started_slow = asyncio.Event()
    finish = asyncio.Event()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "first":  # ends after the reader's next read went out
            await asyncio.sleep(0.05)
        elif payload.template == "second":  # ends while the first one's settle hangs
            await asyncio.sleep(0.2)
        else:
            started_slow.set()
            await finish.wait()

    p = Producer(redis_client, s)
    jobs_ = [("send-email", {**EMAIL, "template": t}) for t in ("first", "second", "slow")]
    await p.enqueue_many(Q, jobs_)
    newest = (await redis_client.xinfo_stream(keys.stream(Q)))["last-generated-id"]
    client = type(redis_client).from_url(proxy.url)
    try:
        async with running(client, s, h, consumer_id="c1") as w:
            proxy.hold_after(w.scripts.settle.sha.encode())
            await wait_for(proxy.held.is_set, what="the first job's settle in flight")
            await asyncio.wait_for(started_slow.wait(), 5)

            async def marked() -> bool:
                return await redis_client.hget(keys.progress(Q), "c1") == newest

            await wait_for(marked, timeout=1.0, what="the third job's mark, the settle still in flight")
            proxy.release()
            finish.set()
            await wait_for(lambda: not w.runners[Q].held, what="every job settled")
    finally:
        proxy.release()
        finish.set()
        await client.aclose()


async def test_graceful_stop_finishes_in_flight_and_gives_back_the_rest(
    redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url, queues={Q: {"concurrency": 4}})
    h = HandlerRegistry()
    runs: dict[str, list[int]] = {}

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        runs.setdefault(ctx.job_id, []).append(ctx.attempt)
        await asyncio.sleep(0.2)

    p = Producer(redis_client, s)
    ids = [r.id for r in await p.enqueue_many(Q, [("send-email", EMAIL)] * 30)]
    w = Worker(redis_client, [get_queue(Q)], h, s)
    await w.start()
    await wait_for(lambda: len(runs) == 4, what="four running")
    runner = w.runners[Q]
    await wait_for(
        lambda: len(runner.held) == 12, what="prefetch"
    )  # 3 x concurrency: running, waiting, one read
    assert runner.running == 4 and len(runner.local) == 8
    await w.stop()
    assert await _count(redis_client, "completed") == 4  # in-flight finished
    assert await _count(redis_client, "requeued") == 8  # prefetched ones given back
    assert (await redis_client.xpending(keys.stream(Q), keys.GROUP))["pending"] == 0
    async with running(redis_client, s, h):
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 30), what="the rest")
    assert sorted(runs) == sorted(ids)
    assert all(attempts == [1] for attempts in runs.values())  # no attempt charged, nothing twice


@pytest.mark.parametrize("rate", [20])
async def test_rate_limit_in_one_worker(redis_client: Any, redis_url: str, rate: int) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    times: list[float] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        times.append(time.monotonic())

    await redis_client.hset(keys.config(Q), mapping={"rate_jobs": str(rate), "rate_per_s": "0.5"})
    async with running(redis_client, s, h):
        await Producer(redis_client, s).enqueue_many(Q, [("send-email", EMAIL)] * 50)
        await wait_for(async_eq(lambda: _count(redis_client, "completed"), 50), timeout=10, what="all")
    times.sort()
    # no half-second window holds more than `rate` starts
    # A busy machine can only delay a start past its admission, never advance it: so whatever ran in
    # the first window was admitted in it, and the whole run cannot be shorter than two refills.
    assert sum(1 for t in times if t < times[0] + 0.45) <= rate
    assert times[-1] - times[0] >= 0.9  # 50 jobs at 20 per 0.5 s need at least two refills


async def test_every_event_follows_the_one_schema(redis_client: Any, redis_url: str) -> None:
    from tq.envelope import Event, EventType

    s = fast_settings(redis_url, queues={Q: tiny_retry(attempts=2)})
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "bad":
            raise ValueError('a "quoted" message\nwith a newline')
        await ctx.publish(EventType.JOB_PROGRESS, step=1)

    p = Producer(redis_client, s)
    async with published_events(redis_client) as seen, running(redis_client, s, h):
        await p.enqueue(Q, "send-email", EMAIL)
        await p.enqueue(Q, "send-email", EMAIL, delay=0.05)
        await p.enqueue(Q, "send-email", {**EMAIL, "template": "bad"}, idempotency_key="e-1")
        await wait_for(lambda: redis_client.xlen(keys.dlq(Q)), what="dead letter")
        [letter] = (await dlq.list_dead(redis_client, Q)).items
        await dlq.replay_one(redis_client, Q, letter.dlq_id)
        await config.set_paused(redis_client, Q, True)
        await config.set_paused(redis_client, Q, False)
        waiting = await p.enqueue(Q, "send-email", EMAIL, delay=60)
        await jobs.remove_job(redis_client, Q, waiting)
        await wait_for(lambda: len({e["type"] for e in seen}) >= 11, what="every kind of event")
    parsed = [Event.model_validate(e) for e in seen]
    kinds = {e.type for e in parsed}
    assert {
        EventType.JOB_WAITING,
        EventType.JOB_DELAYED,
        EventType.JOB_COMPLETED,
        EventType.JOB_RETRYING,
        EventType.JOB_FAILED,
        EventType.DLQ_ADDED,
        EventType.DLQ_REPLAYED,
        EventType.QUEUE_PAUSED,
        EventType.QUEUE_RESUMED,
        EventType.JOB_REMOVED,
        EventType.JOB_PROGRESS,
    } <= kinds
    failed = next(e for e in parsed if e.type is EventType.JOB_RETRYING)
    assert failed.data["error"] == 'a "quoted" message\nwith a newline' and failed.queue == Q


async def test_stop_does_not_hang_when_redis_is_gone() -> None:
    import redis.asyncio as aioredis
    from support.redis_server import start_redis_server

    proc, port, _ = start_redis_server()
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url, socket_timeout=1)
    h = HandlerRegistry()
    release = asyncio.Event()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        await release.wait()

    s = fast_settings(url, queues={Q: {"concurrency": 1}})
    try:
        w = Worker(client, [get_queue(Q)], h, s)
        await w.start()
        await Producer(client, s).enqueue_many(Q, [("send-email", EMAIL)] * 3)
        await wait_for(lambda: w.runners[Q].running == 1, what="a job in flight")
        proc.kill()
        proc.wait()
        release.set()  # the job ends, but its outcome cannot be written: it stays pending in Redis
        t0 = time.monotonic()
        await w.stop(grace_s=1)
        assert time.monotonic() - t0 < 20
    finally:
        if proc.poll() is None:
            proc.kill()
        await client.aclose()


async def test_stop_does_not_hang_on_a_handler_that_swallows_its_cancellation(
    redis_client: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    s = fast_settings(redis_url, queues={Q: {"concurrency": 1}})
    h = HandlerRegistry()
    finished = asyncio.Event()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        while not finished.is_set():  # a handler bug: it catches the stop's cancellation and goes on
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    w = Worker(redis_client, [get_queue(Q)], h, s)
    await w.start()
    job_id = await Producer(redis_client, s).enqueue(Q, "send-email", EMAIL)
    await wait_for(lambda: w.runners[Q].running == 1, what="the job in flight")
    t0 = time.monotonic()
    try:
        await w.stop(grace_s=0.2)
        took = time.monotonic() - t0
    finally:
        finished.set()
    assert took < 15, f"stop took {took:.1f}s"
    assert "1 jobs ignored their cancellation" in caplog.text
    # it was never settled: its entry stays pending, for another consumer to reclaim
    assert (await redis_client.xpending(keys.stream(Q), keys.GROUP))["pending"] == 1
    assert (await jobs.get_job(redis_client, Q, job_id)).state is not JobState.COMPLETED
