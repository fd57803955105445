"""Enqueue: validation before any write, idempotency, delay, bulk, size limit, one round trip."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import threading
import time
from typing import Any

import pytest
import redis
import redis.asyncio
from support import fast_settings
from support.redis_server import start_redis_server
from tq import keys, producer
from tq.envelope import entry_envelope
from tq.errors import InvalidPayload, PayloadTooLarge, UnknownJob, UnknownQueue
from tq.jobs import get_job
from tq.payloads import SendEmail
from tq.producer import JobRequest, Producer, SyncProducer
from tq.scripts import called_commands

EMAIL = {"to": "a@example.com", "template": "welcome"}
Q = "email:send"


async def _keys(client: Any) -> list[bytes]:
    return [k async for k in client.scan_iter(match="tq:*")]


async def test_enqueue_writes_record_and_entry(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    job_id = await p.enqueue("email:send", "send-email", EMAIL, trace_id="t-1")
    rec = await redis_client.hgetall(keys.job("email:send", job_id))
    entries = await redis_client.xrange(keys.stream("email:send"))
    assert len(entries) == 1 and rec == {b"x": entries[0][0]}  # the record: the entry id alone
    eid, fields = entries[0]
    env = entry_envelope(fields, "email:send", int(eid.split(b"-")[0]))
    assert env.payload == {**EMAIL, "locale": "en", "variables": {}, "email_queue_id": None}
    assert (env.id, env.queue, env.name) == (job_id, "email:send", "send-email")
    assert (env.attempt, env.trace_id) == (1, "t-1")
    assert set(fields) == {b"i", b"n", b"p", b"t", b"tr"}  # the payload once, no empty field


@pytest.mark.parametrize(
    ("queue", "job", "data", "error", "field"),
    [
        ("email:send", "send-email", {"to": "not-an-address", "template": "w"}, InvalidPayload, "to"),
        ("email:send", "send-email", {"to": "a@b.co", "template": ""}, InvalidPayload, "template"),
        ("email:send", "send-email", {"to": "a@b.co", "template": "w", "cc": "x"}, InvalidPayload, "cc"),
        ("email:send", "send-email", {"to": "a@b.co", "template": 5}, InvalidPayload, "template"),
        ("email:send", "send-email", ["not", "an", "object"], InvalidPayload, "(payload)"),
        ("email:send", "nope", EMAIL, UnknownJob, "nope"),
        ("nope:queue", "send-email", EMAIL, UnknownQueue, "nope:queue"),
    ],
)
async def test_bad_input_is_refused_and_nothing_written(
    redis_client: Any, redis_url: str, queue: str, job: str, data: Any, error: type[Exception], field: str
) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    with pytest.raises(error) as info:
        await p.enqueue(queue, job, data)
    assert field in str(info.value)
    if isinstance(info.value, InvalidPayload):
        assert any(f == field for f, _ in info.value.errors)
    assert await _keys(redis_client) == []


async def test_payload_size_limit(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url, max_payload_bytes=2000))
    with pytest.raises(PayloadTooLarge, match="limit is 2000"):
        await p.enqueue("email:send", "send-email", {**EMAIL, "variables": {"x": "y" * 5000}})
    assert await _keys(redis_client) == []


async def test_model_instances_are_accepted(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    job_id = await p.enqueue("email:send", "send-email", SendEmail(to="a@b.co", template="w"))
    assert await redis_client.exists(keys.job("email:send", job_id))


async def test_idempotency_key_returns_first_id_within_ttl(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    first = await p.enqueue_detailed("email:send", "send-email", EMAIL, idempotency_key="order-7")
    again = await p.enqueue_detailed(
        "email:send", "send-email", {**EMAIL, "template": "other"}, idempotency_key="order-7"
    )
    assert not first.duplicate and again.duplicate and again.id == first.id
    assert await redis_client.xlen(keys.stream("email:send")) == 1
    ttl = await redis_client.ttl(keys.idempotency("email:send", "order-7"))
    assert 86000 < ttl <= 86400
    # the TTL is the queue's live config: a shorter one applies to new keys
    await redis_client.hset(keys.config("email:send"), "idempotency_ttl_s", "1")
    await p.enqueue("email:send", "send-email", EMAIL, idempotency_key="short")
    assert await redis_client.ttl(keys.idempotency("email:send", "short")) == 1
    await asyncio.sleep(1.1)
    third = await p.enqueue_detailed("email:send", "send-email", EMAIL, idempotency_key="short")
    assert not third.duplicate


async def test_delay_goes_to_the_delayed_set(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    before = time.time()
    job_id = await p.enqueue("email:send", "send-email", EMAIL, delay=30)
    due = await redis_client.zscore(keys.delayed("email:send"), job_id)
    assert before + 29.99 <= due / 1000 <= time.time() + 30
    assert await redis_client.xlen(keys.stream("email:send")) == 0
    assert (await redis_client.hget(keys.job("email:send", job_id), "s")) == b"delayed"
    with pytest.raises(ValueError):
        await p.enqueue("email:send", "send-email", EMAIL, delay=-1)


async def test_enqueue_many_is_all_or_nothing_on_validation(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    jobs: list[Any] = [("send-email", EMAIL)] * 50 + [("send-email", {"to": "x"})]
    with pytest.raises(InvalidPayload):
        await p.enqueue_many("email:send", jobs)
    assert await _keys(redis_client) == []
    results = await p.enqueue_many(
        "email:send",
        [("send-email", EMAIL)] * 2500 + [JobRequest("send-email", EMAIL, idempotency_key="k", delay=10)] * 2,
        chunk=1000,
    )
    assert len(results) == 2502 and len({r.id for r in results}) == 2501
    assert results[-1].duplicate and results[-1].id == results[-2].id
    assert await redis_client.xlen(keys.stream("email:send")) == 2500
    assert await redis_client.zcard(keys.delayed("email:send")) == 1
    assert int(await redis_client.hget(keys.counters("email:send"), "enqueued")) == 2501


async def test_enqueue_many_holds_a_bounded_number_of_connections(redis_url: str) -> None:
    """Many chunks never take more pooled connections than CHUNKS_IN_FLIGHT (a pool of that size
    would otherwise run out: MaxConnectionsError)."""
    client = redis.asyncio.Redis.from_url(redis_url, max_connections=producer.CHUNKS_IN_FLIGHT)
    try:
        p = Producer(client, fast_settings(redis_url))
        results = await p.enqueue_many("email:send", [("send-email", EMAIL)] * 600, chunk=10)
        assert len(results) == 600 and await client.xlen(keys.stream("email:send")) == 600
        entries = await client.xrange(keys.stream("email:send"))
        assert {r.id for r in results} == {fields[b"i"].decode() for _, fields in entries}
    finally:
        await client.aclose()


async def test_events_published_for_enqueue(redis_client: Any, redis_url: str) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.EVENTS_CHANNEL)
    await pubsub.get_message(timeout=1)
    p = Producer(redis_client, fast_settings(redis_url))
    job_id = await p.enqueue("email:send", "send-email", EMAIL)
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    event = json.loads(msg["data"])
    assert event["type"] == "job.waiting" and event["job_id"] == job_id and event["queue"] == "email:send"
    await pubsub.aclose()


@pytest.mark.parametrize("how", ["sync", "async", "shared", "bulk"])
async def test_text_beyond_ascii_arrives_whole_by_every_enqueue_path(
    redis_client: Any, redis_url: str, how: str
) -> None:
    """The producers pack the enqueue call themselves, each word's length in bytes, not in
    characters: a payload, key and trace id outside ASCII arrive as sent, and the key holds."""
    data = {**EMAIL, "template": "bienvenue-é", "variables": {"name": "Zoë 日本"}}
    keys_ = [f"clé-{i}" for i in range(3)]
    trace = "trace-ü"
    settings = fast_settings(redis_url)

    async def enqueue_all() -> list[str]:
        if how == "sync":
            sync = SyncProducer(redis.Redis.from_url(redis_url), settings)
            try:
                return [sync.enqueue(Q, "send-email", data, idempotency_key=k, trace_id=trace) for k in keys_]
            finally:
                sync.close()
        p = Producer(redis_client, settings)
        if how == "bulk":
            jobs = [JobRequest("send-email", data, idempotency_key=k, trace_id=trace) for k in keys_]
            return [r.id for r in await p.enqueue_many(Q, jobs)]
        if how == "shared":  # one caller alone, the others sharing the next call
            calls = [p.enqueue(Q, "send-email", data, idempotency_key=k, trace_id=trace) for k in keys_]
            return list(await asyncio.gather(*calls))
        return [await p.enqueue(Q, "send-email", data, idempotency_key=k, trace_id=trace) for k in keys_]

    ids = await enqueue_all()
    entries = await redis_client.xrange(keys.stream(Q))
    assert len(entries) == 3
    for (eid, fields), job_id in zip(entries, ids, strict=True):
        env = entry_envelope(fields, Q, int(eid.split(b"-")[0]))
        assert (env.id, env.trace_id) == (job_id, trace)
        assert (env.payload["template"], env.payload["variables"]) == ("bienvenue-é", {"name": "Zoë 日本"})
    assert await enqueue_all() == ids  # each key found again: the same ids, nothing new written
    assert await redis_client.xlen(keys.stream(Q)) == 3


def test_sync_producer_single_enqueue_is_one_round_trip(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    p = SyncProducer(client, fast_settings(redis_url))
    p.enqueue("email:send", "send-email", EMAIL)  # loads the script once
    client.config_resetstat()
    for _ in range(100):
        p.enqueue("email:send", "send-email", EMAIL)
    # counted by the server: the commands clients sent, less what the script itself called
    in_script = called_commands("enqueue")
    stats = client.info("commandstats")
    sent = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    sent = {k: v for k, v in sent.items() if k not in in_script and k not in ("config|resetstat", "info")}
    assert sent == {"evalsha": 100}
    assert client.xlen(keys.stream("email:send")) == 101
    bulk = p.enqueue_many("email:send", [("send-email", EMAIL)] * 10)
    assert len(bulk) == 10
    client.close()


async def test_module_level_helpers(redis_url: str) -> None:
    producer._default = None
    try:
        job_id = await producer.enqueue_search_index("index-article", {"article_id": 5})
        rec = await get_job(producer.default_producer().client, "search:index", job_id)
        assert (rec.name, rec.payload["article_id"]) == ("index-article", 5)
        with pytest.raises(UnknownJob):
            await producer.enqueue_search_index("send-email", EMAIL)
    finally:
        await producer.default_producer().close()
        producer._default = None


def test_sync_producer_survives_script_flush_and_a_dropped_connection(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    p = SyncProducer(client, fast_settings(redis_url))
    p.enqueue("email:send", "send-email", EMAIL)
    client.script_flush()
    p.enqueue("email:send", "send-email", EMAIL)  # NOSCRIPT: loads it again
    client.client_kill_filter(_type="normal", skipme=True)  # drops the producer's held connection
    p.enqueue("email:send", "send-email", EMAIL)
    assert client.xlen(keys.stream("email:send")) == 3
    p.close()
    client.close()


def test_sync_producer_times_out_on_a_stalled_redis_and_loses_nothing() -> None:
    """The held connection's timeout lives in the kernel (no poll() per round trip): a Redis busy
    past it still ends the call with an error, not a hang, and once Redis answers again the
    producer goes on; the call that timed out, resent with its job's id, left at most one job."""
    proc, port, workdir = start_redis_server("--enable-debug-command", "yes")
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=0.5)
    p = SyncProducer(client, fast_settings(url))
    try:
        first = p.enqueue("email:send", "send-email", EMAIL)
        sleeper = threading.Thread(
            target=lambda: redis.Redis(port=port).execute_command("DEBUG", "SLEEP", "2")
        )
        sleeper.start()
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            p.enqueue("email:send", "send-email", EMAIL)
        assert time.monotonic() - started < 1.6  # two attempts of 0.5 s, not the whole sleep
        sleeper.join()
        last = p.enqueue("email:send", "send-email", EMAIL)
        ids = [fields[b"i"].decode() for _, fields in client.xrange(keys.stream("email:send"))]
        assert ids[0] == first and ids[-1] == last
        assert len(ids) in (2, 3) and len(set(ids)) == len(ids)
    finally:
        p.close()
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("idempotency_key", ""),
        ("idempotency_key", "a\x1fb"),
        ("idempotency_key", "k" * 257),
        ("trace_id", "t\n"),
    ],
)
async def test_bad_keys_are_refused(redis_client: Any, redis_url: str, option: str, value: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    with pytest.raises(InvalidPayload, match=option):
        await p.enqueue("email:send", "send-email", EMAIL, **{option: value})
    assert await _keys(redis_client) == []


async def test_concurrent_enqueues_share_round_trips_each_with_its_own_answer(
    redis_client: Any, redis_url: str
) -> None:
    """100 coroutines enqueueing at once: as few script calls as SHARED_BATCH allows, each caller its
    own id (or its own error, or the first job of its idempotency key); a lone caller still sends
    one call of its own."""
    p = Producer(redis_client, fast_settings(redis_url))
    await p.enqueue("email:send", "send-email", EMAIL)  # the script loaded: count only enqueues
    calls0 = (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"]

    async def one(i: int) -> Any:
        data = {"to": 5} if i == 7 else EMAIL  # one invalid payload among them
        key = "shared" if i % 10 == 0 else None
        try:
            return await p.enqueue_detailed("email:send", "send-email", data, idempotency_key=key)
        except InvalidPayload as exc:
            return exc

    results = await asyncio.gather(*(one(i) for i in range(100)))
    calls = (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"] - calls0
    # callers of one pass of the event loop go together: calls of SHARED_BATCH, none alone
    assert calls == -(-99 // producer.SHARED_BATCH), f"{calls} script calls for 100 concurrent enqueues"
    assert isinstance(results[7], InvalidPayload)
    ok = [r for i, r in enumerate(results) if i != 7]
    keyed = [r for i, r in enumerate(results) if i % 10 == 0]
    assert len({r.id for r in keyed}) == 1 and sum(not r.duplicate for r in keyed) == 1
    assert len({r.id for r in ok}) == 99 - 9  # the keyed ones share one job
    assert await redis_client.xlen(keys.stream("email:send")) == 1 + 90
    # a lone caller: one script call, sent at once
    before = (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"]
    await p.enqueue("email:send", "send-email", EMAIL)
    assert (await redis_client.info("commandstats"))["cmdstat_evalsha"]["calls"] - before == 1


async def test_concurrent_enqueues_each_get_the_error_of_their_shared_call(redis_url: str) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from support.redis_server import free_port

    client = redis.asyncio.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))  # nothing listens
    p = Producer(client, fast_settings(redis_url))
    try:
        results = await asyncio.gather(
            *(p.enqueue("email:send", "send-email", EMAIL) for _ in range(60)), return_exceptions=True
        )
        assert len(results) == 60 and all(isinstance(r, redis.exceptions.ConnectionError) for r in results)
        await asyncio.sleep(0.01)
        assert p._flusher is None and not p._queued and p._busy_on is None  # nothing left behind
    finally:
        await client.aclose()


async def test_a_caller_cancelled_while_its_shared_call_is_in_flight_fails_no_one_else(
    redis_client: Any, redis_url: str
) -> None:
    """Callers of one pass of the event loop share a call, sent by the flusher and not from the
    first caller's task: when that caller gives up (an ASGI request whose client went away), the
    others still get their ids, and every job of the call is enqueued once."""
    p = Producer(redis_client, fast_settings(redis_url))
    await p.enqueue("email:send", "send-email", EMAIL)  # connected, the script loaded
    await redis_client.client_pause(300, all=False)  # writes wait: the call stays in flight
    callers = [asyncio.create_task(p.enqueue("email:send", "send-email", EMAIL)) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert not p._queued  # all ten sent, in one call
    callers[0].cancel()
    ids = await asyncio.wait_for(asyncio.gather(*callers[1:]), 5)
    assert callers[0].cancelled() and len(set(ids)) == 9
    stream = {f[b"i"].decode() for _, f in await redis_client.xrange(keys.stream("email:send"))}
    assert set(ids) <= stream and len(stream) == 1 + 10  # the cancelled caller's job went too, once
    assert p._flusher is None and p._busy_on is None  # nothing left behind


async def test_a_producer_with_its_own_client_holds_few_connections_and_survives_their_loss(
    redis_client: Any, redis_url: str
) -> None:
    """With its own client, a producer keeps the connections its enqueue calls used (no pool checkout
    per call): never more than the calls once in flight at the same time, reconnected after a
    CLIENT KILL, the script loaded again after SCRIPT FLUSH, all given back on close."""

    async def enqueuers() -> set[str]:  # connections whose last command was an enqueue
        return {c["id"] for c in await redis_client.client_list(_type="normal") if c["cmd"] == "evalsha"}

    before = await enqueuers()  # other tests' leftovers, if any: not the producer's
    p = Producer(settings=fast_settings(redis_url))
    try:
        first = await asyncio.gather(*(p.enqueue("email:send", "send-email", EMAIL) for _ in range(300)))
        held = await enqueuers() - before
        assert 1 <= len(held) <= producer.SHARED_IN_FLIGHT + 1
        await redis_client.client_kill_filter(_type="normal", skipme=True)  # every connection of p's
        await redis_client.script_flush()
        second = await asyncio.gather(*(p.enqueue("email:send", "send-email", EMAIL) for _ in range(300)))
        assert len(set(first) | set(second)) == 600
        assert await redis_client.xlen(keys.stream("email:send")) == 600
        held_again = await enqueuers() - before
        assert 1 <= len(held_again) <= producer.SHARED_IN_FLIGHT + 1 and not held_again & held
    finally:
        await p.close()
    assert not (await enqueuers()) & held_again  # given back and closed with the producer's client


# the abandoned coroutines' own cleanup (redis-py's disconnect) fails on the closed loop, as it must
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_producer_outlives_an_event_loop_closed_with_its_enqueues_in_flight(redis_url: str) -> None:
    """A producer kept across event loops (a sync app calling asyncio.run per request, tests): a
    loop closed while one enqueue was in flight and others queued behind it leaves nothing that
    the next loop's callers would wait on; they are sent on their own event loop."""
    p = Producer(settings=fast_settings(redis_url))
    first = asyncio.new_event_loop()
    first.run_until_complete(p.enqueue("email:send", "send-email", EMAIL))  # connected
    admin = redis.Redis.from_url(redis_url)
    admin.client_pause(500, all=False)  # writes wait half a second: the first reply cannot come in time
    admin.close()
    pending = [first.create_task(p.enqueue("email:send", "send-email", EMAIL))]
    first.run_until_complete(asyncio.sleep(0.02))  # sent alone (no other caller in its pass)
    pending += [first.create_task(p.enqueue("email:send", "send-email", EMAIL)) for _ in range(4)]
    first.run_until_complete(asyncio.sleep(0.03))  # queued behind it
    assert p._in_flight == 1 and len(p._queued) == 4
    for task in pending:  # closed without finishing them (their replies never read)
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    first.close()
    del task

    async def later() -> list[str]:  # not closed after: its client's pool holds the first loop's
        # connections, which redis-py can't close from another loop
        ids = [await asyncio.wait_for(p.enqueue("email:send", "send-email", EMAIL), 10)]
        pending.clear()
        gc.collect()  # the first loop's coroutines closed: their cleanup runs now, on this loop
        ids += await asyncio.wait_for(
            asyncio.gather(*(p.enqueue("email:send", "send-email", EMAIL) for _ in range(20))), 10
        )
        ids.append(await asyncio.wait_for(p.enqueue("email:send", "send-email", EMAIL), 10))
        return ids

    ids = asyncio.run(later())
    assert len(set(ids)) == 22 and p._busy_on is None
    client = redis.Redis.from_url(redis_url)
    stream = {f[b"i"].decode() for _, f in client.xrange(keys.stream("email:send"))}
    client.close()
    assert set(ids) <= stream
