"""The webhooks family through the real engine: a local receiver (http.server) that records every
request, the suite's Redis, SQLite and PostgreSQL.

deliver-webhook signs the JSON body (the receiver's ``verify_signature`` accepts it), sends the
delivery headers with a delivery id that stays the same across retries, retries 503 and timeouts,
dead-letters 400 at once, deactivates the endpoint on 410, refuses loopback and metadata URLs
unless private networks are allowed, and writes a WebhookDeliveryLog row per attempt.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
import tq_services.webhooks.handlers  # noqa: F401  (registers the handler)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, http_server, running, settled_job, tiny_retry, wait_for
from support.settings import clear_settings_caches
from tq import dlq, jobs, keys
from tq.db import make_sessionmaker
from tq.envelope import JobState
from tq.handlers import default_handlers
from tq.producer import Producer
from tq.settings import Settings
from tq_services import load_handlers
from tq_services.store import dispose_engines
from tq_services.webhooks.delivery import check_url, is_public, pinned, post
from tq_services.webhooks.errors import DeliveryDeferred, UnsafeUrl
from tq_services.webhooks.models import WebhookDeliveryLog, WebhookEndpoint
from tq_services.webhooks.settings import get_webhook_settings
from tq_services.webhooks.signing import sign, verify_signature

WQ = "webhooks:deliver"
SECRET = "whsec-test-secret"
MAX_KEPT = 64


# ---- a local receiver ---------------------------------------------------------------------------
@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next step of ``plan`` (the last one repeats): a status, or
    ``("sleep", seconds, status)`` to answer late. Every answer's body is longer than the part the
    log keeps."""

    plan: list[Any] = field(default_factory=lambda: [200])
    requests: list[Seen] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with rx.lock:
                rx.requests.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                step = rx.plan.pop(0) if len(rx.plan) > 1 else rx.plan[0]
            if isinstance(step, tuple):
                _, seconds, status = step
                time.sleep(seconds)
            else:
                status = step
            reply = f"status {status} ".encode() + b"x" * 500
            try:
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:  # the client gave up (timeout)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as base:
        rx.url = base + "/hooks"
        yield rx


@pytest.fixture
async def env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Settings]:
    values = {
        "TQ_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # the receiver is on 127.0.0.1
        "TQ_WEBHOOK_TIMEOUT_S": "0.5",
        "TQ_WEBHOOK_MAX_RESPONSE_BYTES": str(MAX_KEPT),
        "TQ_WEBHOOK_USER_AGENT": "tq-webhooks/test",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    clear_settings_caches()
    yield fast_settings(redis_url, queues={WQ: tiny_retry(attempts=3)})
    clear_settings_caches()
    await dispose_engines()


async def _endpoint(engine: AsyncEngine, url: str, **kw: Any) -> int:
    async with make_sessionmaker(engine)() as session, session.begin():
        row = WebhookEndpoint(url=url, secret=SECRET, **kw)
        session.add(row)
    return row.id


async def _settled(client: Any, job_id: str) -> jobs.JobRecord:
    return await settled_job(client, WQ, job_id)


async def _logs(engine: AsyncEngine, job_id: str) -> list[WebhookDeliveryLog]:
    async with make_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(WebhookDeliveryLog)
            .where(WebhookDeliveryLog.job_id == job_id)
            .order_by(WebhookDeliveryLog.id)
        )
        return list(rows.scalars())


async def _active(engine: AsyncEngine, endpoint_id: int) -> bool:
    async with make_sessionmaker(engine)() as session:
        row = await session.get(WebhookEndpoint, endpoint_id)
        assert row is not None
        return row.active


# ---- without the engine -------------------------------------------------------------------------
def test_verify_signature_accepts_only_the_signed_body() -> None:
    body = b'{"id":"d1","event":"article.published"}'
    header = sign(SECRET, 1700000000, body)
    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
    assert verify_signature(SECRET, "1700000000", body, header)
    assert verify_signature(SECRET, 1700000000, body.decode(), header)
    assert not verify_signature(SECRET, "1700000001", body, header)  # another timestamp
    assert not verify_signature(SECRET, "1700000000", body + b" ", header)  # another body
    assert not verify_signature("other-secret", "1700000000", body, header)
    assert not verify_signature(SECRET, "1700000000", body, header.removeprefix("sha256="))
    assert not verify_signature(SECRET, "1700000000", body, None)
    assert verify_signature(SECRET, "1700000000", body, header, tolerance_s=300, now=1700000299)
    assert not verify_signature(SECRET, "1700000000", body, header, tolerance_s=300, now=1700000301)
    assert not verify_signature(SECRET, "soon", body, sign(SECRET, "soon", body), tolerance_s=300)


async def test_check_url_refuses_non_public_addresses() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254"):
        assert not is_public(ipaddress.ip_address(address)), address
    for address in ("100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fd00:ec2::254"):
        assert not is_public(ipaddress.ip_address(address)), address
    assert not is_public(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not is_public(ipaddress.ip_address("::ffff:169.254.169.254"))
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:4700::1111"))

    for url in ("http://127.0.0.1:8080/x", "http://169.254.169.254/latest/meta-data/", "http://[::1]/"):
        with pytest.raises(UnsafeUrl, match=r"^SSRF: webhook URL host .* non-public address"):
            await check_url(url, allow_private=False)
    with pytest.raises(UnsafeUrl, match=r"SSRF: .*localhost"):
        await check_url("http://localhost/hook", allow_private=False)
    for url in ("ftp://example.com/x", "file:///etc/passwd", "http:///nohost"):
        with pytest.raises(UnsafeUrl, match="http"):
            await check_url(url, allow_private=True)
    await check_url("http://127.0.0.1:8080/x", allow_private=True)
    with pytest.raises(DeliveryDeferred, match="cannot resolve"):
        await check_url("http://no-such-host.invalid/x", allow_private=False)


def test_load_handlers_finds_the_webhooks_family() -> None:
    assert load_handlers(["webhooks"]) == ["tq_services.webhooks.handlers"]
    assert (WQ, "deliver-webhook") in default_handlers


# ---- deliver-webhook ----------------------------------------------------------------------------
async def test_delivery_is_signed_and_logged(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, receiver: Receiver
) -> None:
    endpoint_id = await _endpoint(db_engine, receiver.url, events=["article.published"])
    data = {"article_id": 7, "title": "Hello, «world»"}
    async with running(redis_client, env, default_handlers, WQ):
        job_id = await Producer(redis_client, env).enqueue(
            WQ,
            "deliver-webhook",
            {"endpoint_id": endpoint_id, "event": "article.published", "data": data},
            trace_id="trace-hook",
        )
        rec = await _settled(redis_client, job_id)
    assert rec.state is JobState.COMPLETED and rec.attempts == 1, rec
    assert rec.result is not None and rec.result["status_code"] == 200

    [seen] = receiver.requests
    assert seen.path == "/hooks"
    h = seen.headers
    assert h["content-type"] == "application/json" and h["user-agent"] == "tq-webhooks/test"
    assert h["x-tq-delivery"] == job_id and h["x-tq-event"] == "article.published"
    assert abs(int(h["x-tq-timestamp"]) - time.time()) < 60
    assert verify_signature(SECRET, h["x-tq-timestamp"], seen.body, h["x-tq-signature"], tolerance_s=60)
    assert not verify_signature("wrong", h["x-tq-timestamp"], seen.body, h["x-tq-signature"])
    assert json.loads(seen.body) == {
        "id": job_id,
        "event": "article.published",
        "data": data,
        "timestamp": int(h["x-tq-timestamp"]),
    }

    [row] = await _logs(db_engine, job_id)
    assert (row.endpoint_id, row.delivery_id, row.event, row.attempt) == (
        endpoint_id,
        job_id,
        "article.published",
        1,
    )
    assert (row.outcome, row.status_code, row.error, row.trace_id) == ("delivered", 200, None, "trace-hook")
    assert row.response_body == ("status 200 " + "x" * 500)[:MAX_KEPT]
    assert row.response_ms is not None and row.response_ms >= 0
    assert row.created_at.tzinfo is not None
    assert await _active(db_engine, endpoint_id)


async def test_503_then_200_retries_with_the_same_delivery_id(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, receiver: Receiver
) -> None:
    endpoint_id = await _endpoint(db_engine, receiver.url)
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, WQ):
        receiver.plan = [503, 200]
        given = await _settled(
            redis_client,
            await p.enqueue(
                WQ,
                "deliver-webhook",
                {"endpoint_id": endpoint_id, "event": "user.created", "data": {}, "delivery_id": "evt-42"},
            ),
        )
        receiver.plan = [503, 200]
        by_job = await _settled(
            redis_client,
            await p.enqueue(WQ, "deliver-webhook", {"endpoint_id": endpoint_id, "event": "e", "data": {}}),
        )
    assert given.state is JobState.COMPLETED and given.attempts == 2, given
    assert by_job.state is JobState.COMPLETED and by_job.attempts == 2, by_job
    assert [r.headers["x-tq-delivery"] for r in receiver.requests] == [
        "evt-42",
        "evt-42",
        by_job.id,
        by_job.id,
    ]
    assert [json.loads(r.body)["id"] for r in receiver.requests] == ["evt-42", "evt-42", by_job.id, by_job.id]
    for r in receiver.requests:  # every attempt signed afresh
        assert verify_signature(SECRET, r.headers["x-tq-timestamp"], r.body, r.headers["x-tq-signature"])

    for rec, delivery_id in ((given, "evt-42"), (by_job, by_job.id)):
        rows = await _logs(db_engine, rec.id)
        assert [(r.attempt, r.outcome, r.status_code, r.delivery_id) for r in rows] == [
            (1, "retrying", 503, delivery_id),
            (2, "delivered", 200, delivery_id),
        ]
        assert rows[0].error == "webhook receiver answered 503" and rows[1].error is None
        assert rows[0].response_body == ("status 503 " + "x" * 500)[:MAX_KEPT]
    assert int(await redis_client.hget(keys.counters(WQ), "retried") or 0) == 2


async def test_timeouts_retry_until_the_last_attempt(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, receiver: Receiver
) -> None:
    endpoint_id = await _endpoint(db_engine, receiver.url)
    receiver.plan = [("sleep", 1.5, 200)]
    async with running(redis_client, env, default_handlers, WQ):
        job_id = await Producer(redis_client, env).enqueue(
            WQ, "deliver-webhook", {"endpoint_id": endpoint_id, "event": "slow", "data": {}}
        )
        rec = await _settled(redis_client, job_id)
    assert rec.state is JobState.DEAD and rec.attempts == 3, rec
    [letter] = (await dlq.list_dead(redis_client, WQ)).items
    assert letter.error_type == "DeliveryDeferred" and "timed out" in letter.error
    rows = await _logs(db_engine, job_id)
    assert [(r.attempt, r.outcome, r.status_code) for r in rows] == [
        (1, "retrying", None),
        (2, "retrying", None),
        (3, "failed", None),
    ]
    assert all("timed out" in (r.error or "") for r in rows)
    assert len({r.headers["x-tq-delivery"] for r in receiver.requests}) == 1


async def test_400_and_redirects_dead_letter_at_once_and_410_deactivates(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, receiver: Receiver
) -> None:
    endpoint_id = await _endpoint(db_engine, receiver.url)
    p = Producer(redis_client, env)

    def hook(event: str) -> dict[str, Any]:
        return {"endpoint_id": endpoint_id, "event": event, "data": {"n": 1}}

    async with running(redis_client, env, default_handlers, WQ):
        receiver.plan = [400]
        bad = await _settled(redis_client, await p.enqueue(WQ, "deliver-webhook", hook("bad")))
        receiver.plan = [302]
        moved = await _settled(redis_client, await p.enqueue(WQ, "deliver-webhook", hook("moved")))
        assert await _active(db_engine, endpoint_id)
        receiver.plan = [410]
        gone = await _settled(redis_client, await p.enqueue(WQ, "deliver-webhook", hook("gone")))
        after = await _settled(redis_client, await p.enqueue(WQ, "deliver-webhook", hook("after")))
        missing = await _settled(
            redis_client,
            await p.enqueue(WQ, "deliver-webhook", {"endpoint_id": 999999, "event": "x", "data": {}}),
        )
    for rec in (bad, moved, gone, after, missing):
        assert rec.state is JobState.DEAD and rec.attempts == 1, rec
    assert int(await redis_client.hget(keys.counters(WQ), "retried") or 0) == 0
    assert [r.headers["x-tq-event"] for r in receiver.requests] == ["bad", "moved", "gone"]  # not "after"
    assert not await _active(db_engine, endpoint_id)

    letters = {letter.job_id: letter for letter in (await dlq.list_dead(redis_client, WQ)).items}
    assert letters[bad.id].error_type == "DeliveryRejected"
    assert letters[bad.id].error == "webhook receiver answered 400"
    assert letters[moved.id].error == "webhook receiver answered 302"
    assert letters[gone.id].error == "webhook receiver answered 410 (Gone): endpoint deactivated"
    assert letters[after.id].error_type == "EndpointUnavailable"
    assert letters[after.id].error == f"webhook endpoint {endpoint_id} is inactive"
    assert letters[missing.id].error == "webhook endpoint 999999 does not exist"

    for rec, status in ((bad, 400), (moved, 302), (gone, 410), (after, None)):
        [row] = await _logs(db_engine, rec.id)
        assert (row.outcome, row.status_code, row.attempt) == ("failed", status, 1)
        assert row.error == letters[rec.id].error
    assert await _logs(db_engine, missing.id) == []  # no endpoint to log against


async def test_ssrf_loopback_and_metadata_are_refused_without_the_flag(
    env: Settings,
    redis_client: Any,
    db_engine: AsyncEngine,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TQ_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "false")
    clear_settings_caches()
    assert get_webhook_settings().webhook_allow_private_networks is False
    loopback = await _endpoint(db_engine, receiver.url)
    metadata = await _endpoint(db_engine, "http://169.254.169.254/latest/meta-data/")
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, WQ):
        recs = [
            await _settled(
                redis_client,
                await p.enqueue(WQ, "deliver-webhook", {"endpoint_id": e, "event": "x", "data": {}}),
            )
            for e in (loopback, metadata)
        ]
    assert receiver.requests == []
    letters = {letter.job_id: letter for letter in (await dlq.list_dead(redis_client, WQ)).items}
    for rec, address in zip(recs, ("127.0.0.1", "169.254.169.254"), strict=True):
        assert rec.state is JobState.DEAD and rec.attempts == 1, rec
        assert letters[rec.id].error_type == "UnsafeUrl"
        assert letters[rec.id].error.startswith("SSRF: ") and address in letters[rec.id].error
        [row] = await _logs(db_engine, rec.id)
        assert (row.outcome, row.status_code) == ("failed", None) and row.error == letters[rec.id].error
    assert await _active(db_engine, loopback) and await _active(db_engine, metadata)


def _retry_after_receiver(
    status: int, answers: dict[str, list[str]], arrivals: dict[str, list[float]]
) -> type[BaseHTTPRequestHandler]:
    """A receiver that notes each POST's arrival under its path in ``arrivals`` and answers
    ``status`` with the next Retry-After of ``answers[path]`` (``date:N``: an HTTP date N s ahead),
    200 once the path's answers are used up."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            arrivals.setdefault(self.path, []).append(time.monotonic())
            todo = answers[self.path]
            header = todo.pop(0) if todo else None
            if header is not None and header.startswith("date:"):
                header = formatdate(time.time() + int(header[5:]), usegmt=True)
            self.send_response(status if header is not None else 200)
            if header is not None:
                self.send_header("retry-after", header)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


async def test_503_retry_after_seconds_or_http_date_sets_the_next_attempt(
    database_url: str,
    redis_url: str,
    redis_client: Any,
    db_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 503 with Retry-After (delta-seconds, or an HTTP date) is retried after that long, not the
    queue's backoff (10 ms here); a Retry-After beyond the queue's backoff max is capped at it."""
    arrivals: dict[str, list[float]] = {}
    answers: dict[str, list[str]] = {"/secs": ["1"], "/date": ["date:2"], "/long": ["3600"]}
    Handler = _retry_after_receiver(503, answers, arrivals)

    monkeypatch.setenv("TQ_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    clear_settings_caches()
    settings = fast_settings(
        redis_url, queues={WQ: {"retry": {"attempts": 3, "initial_s": 0.01, "max_s": 4.0, "jitter": 0}}}
    )
    try:
        with http_server(Handler) as base:
            ids = {path: await _endpoint(db_engine, base + path) for path in answers}
            p = Producer(redis_client, settings)
            async with running(redis_client, settings, default_handlers, WQ):
                job_ids = {
                    path: await p.enqueue(
                        WQ, "deliver-webhook", {"endpoint_id": eid, "event": "e", "data": {}}
                    )
                    for path, eid in ids.items()
                }
                records = {path: await _settled(redis_client, job_id) for path, job_id in job_ids.items()}
    finally:
        clear_settings_caches()
        await dispose_engines()
    for path, rec in records.items():
        assert rec.state is JobState.COMPLETED and rec.attempts == 2, (path, rec)
    gaps = {path: seen[1] - seen[0] for path, seen in arrivals.items()}
    assert 0.9 <= gaps["/secs"] < 2.5, gaps  # Retry-After: 1 (the backoff alone would be 10 ms)
    assert 0.9 <= gaps["/date"] < 3.5, gaps  # an HTTP date ~2 s ahead (whole seconds)
    assert 3.9 <= gaps["/long"] < 6.0, gaps  # 3600 s asked, capped at the queue's max_s = 4
    rows = await _logs(db_engine, records["/secs"].id)
    assert [(r.outcome, r.status_code) for r in rows] == [("retrying", 503), ("delivered", 200)]


async def test_429_retry_after_pauses_the_whole_queue_without_charging(
    database_url: str,
    redis_url: str,
    redis_client: Any,
    db_engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 429 with Retry-After is ``DeliveryRateLimited`` (``tq.errors.RateLimited``): the delivery
    goes back with no attempt charged (attempts=1 here: a charged failure would dead-letter) and the
    queue's intake pauses that long, so a delivery to another endpoint waits as well."""
    arrivals: dict[str, list[float]] = {}
    answers: dict[str, list[str]] = {"/busy": ["1"], "/other": []}
    Handler = _retry_after_receiver(429, answers, arrivals)

    monkeypatch.setenv("TQ_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    clear_settings_caches()
    settings = fast_settings(
        redis_url, queues={WQ: {"retry": {"attempts": 1, "initial_s": 0.01, "max_s": 4.0, "jitter": 0}}}
    )
    try:
        with http_server(Handler) as base:
            ids = {path: await _endpoint(db_engine, base + path) for path in answers}
            p = Producer(redis_client, settings)

            async def enqueue(path: str) -> str:
                payload = {"endpoint_id": ids[path], "event": "e", "data": {}}
                return await p.enqueue(WQ, "deliver-webhook", payload)

            async def paused() -> bool:
                return int(await redis_client.pttl(keys.rate_pause(WQ))) > 0

            async with running(redis_client, settings, default_handlers, WQ):
                busy = await enqueue("/busy")
                await wait_for(paused, timeout=10, what="the queue paused")
                other = await enqueue("/other")
                records = [await _settled(redis_client, job_id) for job_id in (busy, other)]
    finally:
        clear_settings_caches()
        await dispose_engines()
    for rec in records:
        assert rec.state is JobState.COMPLETED and rec.attempts == 1 and not rec.failures, rec
    assert int(await redis_client.hget(keys.counters(WQ), "retried") or 0) == 0
    limited_at = arrivals["/busy"][0]
    assert arrivals["/busy"][1] - limited_at >= 0.95, arrivals
    assert arrivals["/other"][0] - limited_at >= 0.95, "the other endpoint waited out the pause"
    rows = await _logs(db_engine, records[0].id)
    outcomes = [(r.outcome, r.status_code, r.attempt) for r in rows]
    assert outcomes == [("retrying", 429, 1), ("delivered", 200, 1)]
    assert rows[0].error == "webhook receiver answered 429"


async def test_the_post_goes_to_the_checked_address_not_a_new_lookup(receiver: Receiver) -> None:
    """DNS rebinding: the name is not resolved again at connect time. The URL names a host that
    does not resolve at all; pinned to the checked address the POST still arrives, Host intact."""
    port = httpx.URL(receiver.url).port
    assert await check_url("http://93.184.216.34/x", allow_private=False) == "93.184.216.34"
    url = f"http://hooks.rebind.invalid:{port}/hook"
    answer = await post(get_webhook_settings(), url, b"{}", {"content-type": "application/json"}, "127.0.0.1")
    assert answer.status_code == 200
    [seen] = receiver.requests
    assert seen.path == "/hook" and seen.headers["host"] == f"hooks.rebind.invalid:{port}"
    target, headers, extensions = pinned("https://user:pw@hooks.example.com/h?q=1", "2606:4700::1111", {})
    assert target == "https://user:pw@[2606:4700::1111]/h?q=1"
    assert headers["Host"] == "hooks.example.com" and extensions == {"sni_hostname": "hooks.example.com"}
