"""The attack list of issue 17, re-run: bodies before tokens, crafted Last-Event-IDs, refusals
filling the audit table, a change answered 500 after it was made, forged events injecting frames,
tokens that live forever or cannot be revoked, addresses in public answers, unaudited invalid
bodies, a delayed count that its listing contradicts, control characters in audit targets. Each
against the admin app under uvicorn, the suite's real redis-server and a real database."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from support import running, tiny_retry, wait_for
from support.admin import (
    ADMIN_KEY,
    NO_HANDLER_JOB,
    Q,
    Served,
    admin_settings,
    assert_error,
    audit_rows,
    auth,
    frames,
    next_frame,
    serving,
    sqlite_database,
    token,
)
from support.redis_server import free_port
from tq import keys
from tq.config import read as read_config
from tq.envelope import Event, EventType
from tq.handlers import HandlerRegistry
from tq.payloads import ProcessEmailQueue
from tq.producer import Producer
from tq_services.admin import auditing, metrics, revocation
from tq_services.admin.auth import mint_token
from tq_services.admin.hub import Hub, Item
from tq_services.admin.realtime import sse_frame

CAP = 4096  # TQ_ADMIN_MAX_BODY_BYTES of these tests
BASE = "/api/owner/queues"
SSE = "/api/realtime/queue-events"


@pytest.fixture
def served(redis_url: str, tmp_path: Path) -> Iterator[Served]:
    with serving(admin_settings(redis_url, sqlite_database(tmp_path), admin_max_body_bytes=CAP)) as s:
        yield s


def _raw(url: str, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[bytes, float]:
    """Send a request head (and the start of a body) on a raw socket; the answer, and how long it
    took to come. The rest of the declared body is never sent."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer, time.monotonic() - started


def _head(path: str, headers: dict[str, str]) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: admin", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


# ---- 1. the token before the body; bodies capped ---------------------------------------------


def test_a_100_mb_body_without_a_token_is_refused_unread(served: Served) -> None:
    path = f"{BASE}/{Q}/dlq/replay"
    for framing in ({"Content-Length": str(100 * 1024 * 1024)}, {"Transfer-Encoding": "chunked"}):
        # only 1 KiB of the 100 MB is ever sent: an answer proves the server did not wait for the rest
        start = b"400\r\n" + b"[" * 1024 + b"\r\n" if "Transfer-Encoding" in framing else b"[" * 1024
        answer, took = _raw(served.url, _head(path, framing), start)
        status, _, rest = answer.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 401"), answer[:300]
        assert b"connection: close" in rest.lower()
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "unauthorized"
        assert took < 3


def test_four_big_bodies_at_once_without_a_token_do_not_grow_the_server(served: Served) -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; the server is in this process
    host, port = served.url.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(4)]
    try:
        head = _head(f"{BASE}/{Q}/dlq/purge", {"Content-Length": str(50 * 1024 * 1024)}).encode()
        for s in socks:
            s.sendall(head)
        sent = 0
        for s in socks:  # push 8 MiB on each; the server closes instead of buffering it
            try:
                for _ in range(128):
                    s.sendall(b"{" * 65536)
                    sent += 65536
            except OSError:
                pass
    finally:
        for s in socks:
            s.close()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 20, f"the server grew {grown_mib:.0f} MiB"


async def test_oversize_bodies_with_a_token_are_413_and_invalid_ones_without_one_401(served: Served) -> None:
    owner = auth(token(served))
    path = f"{BASE}/{Q}/dlq/replay"
    answer, took = _raw(served.url, _head(path, {**owner, "Content-Length": str(100 * 1024 * 1024)}))
    assert answer.startswith(b"HTTP/1.1 413") and took < 3, answer[:300]
    assert b"TQ_ADMIN_MAX_BODY_BYTES" in answer
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        big = await http.post(path, content=b" " * (CAP + 1), headers=owner)
        assert_error(big, 413, "payload_too_large")

        async def chunks() -> Any:
            for _ in range(4):
                yield b" " * 2048

        chunked = await http.post(path, content=chunks(), headers=owner)  # no Content-Length
        assert_error(chunked, 413, "payload_too_large")
        fits = await http.post(path, json={"limit": 1}, headers=owner)
        assert fits.status_code == 200, fits.text
        for body in (b"{", b"[" * 3000, b'{"limit": 1' + b"}" * 10, "é".encode("latin-1")):
            r = await http.post(path, content=body, headers={"Content-Type": "application/json"})
            assert_error(r, 401, "unauthorized")
            wrong = await http.post(path, content=body, headers={"Authorization": "Bearer nope"})
            assert_error(wrong, 401, "unauthorized")


# ---- 2. crafted Last-Event-ID ------------------------------------------------------------------


async def test_crafted_last_event_ids_get_the_state_and_leave_no_subscriber(served: Served) -> None:
    boot = served.hub.boot
    crafted = [
        f"{boot}-{'9' * 5000}",
        f"{boot}-²",
        f"{boot}-1²",
        "²-1",
        f"{boot}--1",
        f"{boot}-0x10",
        "-" * 300,
    ]
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        for last in crafted:
            # latin-1 on the wire: the server reads "²" back, a character str.isdigit() accepts
            headers = {**auth(token(served)), "Last-Event-ID": last.encode("latin-1")}
            async with http.stream("GET", SSE, headers=headers) as r:
                assert r.status_code == 200, last
                assert (await next_frame(frames(r).__aiter__(), "state")).data["queues"]
            await wait_for(
                lambda: not served.hub.subscribers, what=f"the stream of {last[:20]!r} to unsubscribe"
            )
    hub = Hub(client=None, buffer_size=4, client_queue=4)
    for last in crafted:
        sub, missed, _ = hub.subscribe(last)
        assert missed is None
        hub.unsubscribe(sub)
    assert not hub.subscribers


async def test_a_stream_that_fails_after_subscribing_unsubscribes(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tq_services.admin import realtime

    async def broken(_client: Any) -> list[Any]:
        raise RuntimeError("state unavailable")

    monkeypatch.setattr(realtime, "all_queue_summaries", broken)
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        http.stream("GET", SSE, headers=auth(token(served))) as r,
    ):
        with pytest.raises(httpx.HTTPError):
            async for _ in r.aiter_lines():
                pass
    await wait_for(lambda: not served.hub.subscribers, what="the failed stream to unsubscribe")


# ---- 3. refusals are counted, not written one row each -----------------------------------------


async def test_100_refused_calls_write_at_most_one_row_per_token_and_window(
    redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    db = sqlite_database(tmp_path)
    s = admin_settings(
        redis_url,
        db,
        admin_rate_limit=3,
        admin_rate_window_s=60,
        admin_viewer_enabled=True,
        admin_refusal_audit_window_s=1.5,
    )
    limited_before = metrics.REFUSED.labels("rate_limited")._value.get()
    forbidden_before = metrics.REFUSED.labels("forbidden")._value.get()
    with serving(s) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            alice, val = auth(token(s, subject="alice")), auth(token(s, "viewer", subject="val"))
            answers = [(await http.post(f"{BASE}/{Q}/pause", headers=alice)).status_code for _ in range(103)]
            assert answers == [200] * 3 + [429] * 100
            assert {(await http.post(f"{BASE}/{Q}/resume", headers=val)).status_code for _ in range(3)} == {
                403
            }
            metrics_text = (await http.get("/metrics")).text
            assert 'tq_admin_refused_total{reason="rate_limited"}' in metrics_text
            await asyncio.sleep(1.6)  # a new refusal window: one more row, saying how many came before
            assert (await http.post(f"{BASE}/{Q}/pause", headers=alice)).status_code == 429
    assert metrics.REFUSED.labels("rate_limited")._value.get() - limited_before == 101
    assert metrics.REFUSED.labels("forbidden")._value.get() - forbidden_before == 3
    rows = [
        (r.actor, r.outcome, r.details.get("refusals", {}).get("previous_window"))
        for r in await audit_rows(db)
    ]
    assert rows == [
        ("alice", "ok", None),
        ("alice", "ok", None),
        ("alice", "ok", None),
        ("alice", "rate_limited", 0),
        ("val", "forbidden", 0),
        ("alice", "rate_limited", 100),
    ]


# ---- 4. a change made while the audit database is unavailable ----------------------------------


async def test_a_change_made_while_the_database_refuses_its_row_answers_200_and_the_row_follows(
    redis_url: str, tmp_path: Path, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auditing, "SPOOL_FLUSH_S", 0.3)
    db = sqlite_database(tmp_path)
    s = admin_settings(redis_url, db)
    spooled_before = metrics.AUDIT_FAILURES.labels("spooled")._value.get()
    with serving(s) as served:
        lock = sqlite3.connect(db.removeprefix("sqlite+aiosqlite:///"), timeout=1, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # the database now refuses every write (after its busy timeout)
        try:
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
                r = await http.post(f"{BASE}/{Q}/pause", headers=auth(token(served, subject="ops")))
            assert r.status_code == 200, r.text  # the queue was paused, and the answer says so
            assert r.json()["paused"] is True
            assert (await read_config(redis_client, Q)).paused
            assert await redis_client.llen(auditing.SPOOL_KEY) == 1
            assert metrics.AUDIT_FAILURES.labels("spooled")._value.get() - spooled_before == 1
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        await wait_for(lambda: _llen(redis_client), timeout=10, what="the spooled row to be written")
    rows = await audit_rows(db)
    assert [(r.actor, r.action, r.outcome, r.details["status"]) for r in rows] == [
        ("ops", "admin.queue.pause", "ok", 200)
    ]


async def _llen(client: Any) -> bool:
    return int(await client.llen(auditing.SPOOL_KEY)) == 0


async def test_a_payload_read_whose_row_is_lost_is_refused(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*_a: Any, **_k: Any) -> int:
        raise RuntimeError("database down")

    class NoSpool:  # the state's Redis, except that it refuses the spooled row
        def __init__(self, real: Any) -> None:
            self.real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

        async def rpush(self, *_a: Any) -> int:
            raise ConnectionError("redis down")

    monkeypatch.setattr(auditing, "record", refuse)
    state = served.app.state.admin
    lost_before = metrics.AUDIT_FAILURES.labels("lost")._value.get()
    assert not await auditing.write_row(
        type(state)(**{**state.__dict__, "redis": NoSpool(state.redis)}),
        {"actor": "a", "action": "admin.x", "target": "t", "outcome": "ok", "details": {}},
    )
    assert metrics.AUDIT_FAILURES.labels("lost")._value.get() - lost_before == 1
    monkeypatch.setattr(state, "redis", NoSpool(state.redis))
    monkeypatch.setattr(auditing, "guard", _no_guard)
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        r = await http.get(f"{BASE}/{Q}/dlq", headers=auth(token(served)))
    assert r.status_code in (503,), r.text  # never handed out unaudited


async def _no_guard(request: Any, *, write: bool) -> Any:
    from tq_services.admin.auth import Principal, Role

    request.state.principal = Principal("alice", Role.OWNER, "t")
    request.state.guarded = (request.state.principal, True)
    return request.state.principal


# ---- 5. forged events ----------------------------------------------------------------------------


FORGED = [
    json.dumps({"type": "job.waiting\nevent: forged\ndata: {}", "queue": Q}),
    json.dumps({"type": "forged", "queue": Q}),
    json.dumps({"type": "job.waiting\r\n\r\nevent: forged", "queue": Q, "at": 1}),
    json.dumps({"type": "job.waiting", "queue": Q, "data": "event: forged"}),
    json.dumps({"type": "job.waiting", "queue": Q, "extra": "\n\nevent: forged\n"}),
    json.dumps({"type": "dlq.stats", "queue": Q, "data": {"size": "\nevent: forged"}}),
    "event: forged\ndata: {}\n\n",
    "[" * 100_000,
]


async def test_forged_events_on_tq_events_inject_no_frames(served: Served, redis_client: Any) -> None:
    rejected_before = metrics.EVENTS_REJECTED._value.get()
    crafted_queue = "x\n\nevent: forged\ndata: {}\n\nid: 1"
    valid = Event(
        type=EventType.JOB_PROGRESS, queue=crafted_queue, job_id="j\r\nevent: forged"
    ).model_dump_json()
    marker = Event(type=EventType.JOB_PROGRESS, queue=Q, job_id="marker").model_dump_json()
    ws_url = served.url.replace("http://", "ws://") + "/owner/realtime"
    owner = auth(token(served))
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        http.stream("GET", SSE, headers=owner) as r,
        websockets.connect(ws_url, additional_headers=owner) as ws,
    ):
        lines = r.aiter_lines().__aiter__()
        await wait_for(lambda: len(served.hub.subscribers) == 2, what="both clients to subscribe")
        for raw in [*FORGED, valid, marker]:
            await redis_client.publish(keys.EVENTS_CHANNEL, raw)
        sse_lines: list[str] = []
        while not any("marker" in line for line in sse_lines):
            sse_lines.append(await asyncio.wait_for(lines.__anext__(), 10))
        ws_messages: list[dict[str, Any]] = []
        while not ws_messages or ws_messages[-1]["data"].get("job_id") != "marker":
            ws_messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    names = {line.partition(":")[2].strip() for line in sse_lines if line.startswith("event:")}
    assert names <= {"state", "heartbeat", "job.progress"}, names
    assert all(line.partition(":")[0] in ("id", "event", "data", "retry", "") for line in sse_lines)
    progress = [m for m in ws_messages if m["event"] == "job.progress"]
    assert [m["data"]["queue"] for m in progress] == [crafted_queue, Q]  # the valid one, intact
    assert {m["event"] for m in ws_messages} <= {"state", "heartbeat", "job.progress"}
    assert metrics.EVENTS_REJECTED._value.get() - rejected_before == len(FORGED)
    with pytest.raises(ValueError):
        Item("", "job.waiting\nevent: forged", {})
    frame = sse_frame(Item("1a-2", "job.progress", {"queue": crafted_queue}))
    assert frame.count(b"\n\n") == 1 and frame.endswith(b"\n\n")


# ---- 6. token lifetime and revocation ------------------------------------------------------------


def _cli(redis_url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    from tq_cli.main import app as cli
    from tq_services.admin.settings import get_admin_settings
    from typer.testing import CliRunner

    monkeypatch.setenv("TQ_ADMIN_JWT_KEY", ADMIN_KEY)
    monkeypatch.setenv("TQ_REDIS_URL", redis_url)
    get_admin_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        get_admin_settings.cache_clear()


async def test_tokens_have_a_maximum_lifetime(
    served: Served, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    century = _cli(redis_url, monkeypatch, "token", "create", "--ttl", "36500d")
    assert century.exit_code == 2 and "TQ_ADMIN_TOKEN_MAX_TTL_S" in century.output
    month = _cli(redis_url, monkeypatch, "token", "create", "--ttl", "30d")
    assert month.exit_code == 0, month.output
    with pytest.raises(ValueError, match="at most"):
        mint_token(served.admin, subject="a", role="owner", ttl_s=31 * 86400)
    now = int(time.time())
    claims = {"iss": "tq", "aud": "tq-admin", "sub": "mallory", "role": "owner", "jti": "long"}
    forged_long = jwt.encode(
        {**claims, "iat": now, "exp": now + 100 * 365 * 86400}, ADMIN_KEY, algorithm="HS256"
    )
    backdated = jwt.encode(
        {**claims, "iat": now - 40 * 86400, "exp": now + 600}, ADMIN_KEY, algorithm="HS256"
    )
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        for tok in (forged_long, backdated):
            err = assert_error(await http.get(BASE, headers=auth(tok)), 401, "unauthorized")
            assert "TQ_ADMIN_TOKEN_MAX_TTL_S" in err["message"]
        assert (await http.get(BASE, headers=auth(month.stdout.strip()))).status_code == 200


async def test_a_revoked_token_is_refused_and_its_open_streams_closed(
    served: Served, redis_url: str, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocation, "CHECK_S", 0.3)
    tok, other = token(served, subject="leaked"), token(served, subject="kept")
    jti = jwt.decode(tok, options={"verify_signature": False})["jti"]
    ws_url = served.url.replace("http://", "ws://") + "/owner/realtime"
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        http.stream("GET", SSE, headers=auth(tok)) as sse,
        websockets.connect(ws_url, additional_headers=auth(tok)) as ws,
        http.stream("GET", SSE, headers=auth(other)) as kept,
    ):
        it = frames(sse).__aiter__()
        await next_frame(it, "state")
        await wait_for(lambda: len(served.hub.subscribers) == 3, what="three streams")
        revoked = await asyncio.to_thread(_cli, redis_url, monkeypatch, "token", "revoke", jti)
        assert revoked.exit_code == 0 and jti in revoked.output, revoked.output
        started = time.monotonic()
        ending = await next_frame(it, "revoked", timeout=5)
        assert ending.data["at"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert time.monotonic() - started < 3
        await wait_for(lambda: len(served.hub.subscribers) == 1, what="the revoked streams to go")
        assert kept.status_code == 200
        err = assert_error(await http.get(BASE, headers=auth(tok)), 401, "unauthorized")
        assert "revoked" in err["message"]
        assert (await http.get(BASE, headers=auth(other))).status_code == 200
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url, additional_headers=auth(tok)):
                pass
        assert refused.value.response.status_code == 401
    ttl = await redis_client.pttl(revocation.key(jti))
    assert 29 * 86400_000 < ttl <= 30 * 86400_000 + 1000  # only the id: kept for the longest lifetime
    by_token = token(served, subject="short", ttl_s=120)
    assert (await asyncio.to_thread(_cli, redis_url, monkeypatch, "token", "revoke", by_token)).exit_code == 0
    short_jti = jwt.decode(by_token, options={"verify_signature": False})["jti"]
    assert 0 < await redis_client.pttl(revocation.key(short_jti)) <= 122_000  # until the token expires
    assert (
        await asyncio.to_thread(_cli, redis_url, monkeypatch, "token", "revoke", "bad id!")
    ).exit_code == 2


async def test_an_open_stream_ends_when_its_token_expires(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocation, "CHECK_S", 0.3)
    tok = token(served, ttl_s=2)
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        http.stream("GET", SSE, headers=auth(tok)) as r,
    ):
        assert (await next_frame(frames(r).__aiter__(), "expired", timeout=6)).data["at"]
    await wait_for(lambda: not served.hub.subscribers, what="the expired stream to go")


# ---- 7. addresses, invalid bodies, delayed counts, control characters ----------------------------


async def test_readyz_and_503_do_not_show_where_redis_is(tmp_path: Path) -> None:
    port = free_port()
    s = admin_settings(f"redis://127.0.0.1:{port}/0", sqlite_database(tmp_path))
    with serving(s, wait_ready=False) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
            answers = [
                await http.get("/readyz"),
                await http.post(f"{BASE}/{Q}/pause", headers=auth(token(s))),
                await http.get(BASE, headers=auth(token(s))),
                await http.post(f"{BASE}/{Q}/dlq/replay", json={"all": True}, headers=auth(token(s))),
            ]
    assert [a.status_code for a in answers] == [503] * 4
    for a in answers:
        assert str(port) not in a.text and "127.0.0.1" not in a.text, a.text


async def test_refused_change_calls_with_invalid_bodies_are_audited(served: Served) -> None:
    owner = auth(token(served, subject="alice"))
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        bad_json = await http.post(
            f"{BASE}/{Q}/dlq/purge", content=b"{", headers={**owner, "Content-Type": "application/json"}
        )
        assert_error(bad_json, 422, "invalid_input")
        nested = await http.post(
            f"{BASE}/{Q}/dlq/replay",
            content=b"[" * 3000,
            headers={**owner, "Content-Type": "application/json"},
        )
        assert nested.status_code in (400, 422), nested.text
        wrong_type = await http.post(f"{BASE}/{Q}/dlq/replay", json=[1], headers=owner)
        assert_error(wrong_type, 422, "invalid_input")
    rows = await audit_rows(served.settings.database_url)
    assert [(r.actor, r.action, r.outcome) for r in rows] == [
        ("alice", "admin.dlq.purge", "invalid_input"),
        ("alice", "admin.dlq.replay_many", nested.json()["error"]["code"]),
        ("alice", "admin.dlq.replay_many", "invalid_input"),
    ]
    assert all(r.details["token_id"] for r in rows)


async def test_the_delayed_count_agrees_with_the_delayed_listing(
    redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    s = admin_settings(
        redis_url, sqlite_database(tmp_path), queues={Q: tiny_retry(attempts=3, initial_s=600, max_s=600)}
    )
    producer = Producer(redis_client, s.settings)
    for i in range(2):
        await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1}, delay=3600)
    failing = HandlerRegistry()

    @failing.register(Q, NO_HANDLER_JOB)
    async def fail(_ctx: Any, _payload: ProcessEmailQueue) -> None:
        raise ConnectionError("smtp down")

    retrying_id = await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": 9})

    async def backing_off() -> bool:
        return bool(await redis_client.zscore(keys.delayed(Q), retrying_id))

    async with running(redis_client, s.settings, failing, queue=Q):
        await wait_for(backing_off, what="the failing job to back off")
    with serving(s) as served:
        owner = auth(token(served))
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            counts = (await http.get(f"{BASE}/{Q}/stats", headers=owner)).json()["counts"]
            delayed = (await http.get(f"{BASE}/{Q}/jobs", params={"state": "delayed"}, headers=owner)).json()
            failed = (await http.get(f"{BASE}/{Q}/jobs", params={"state": "failed"}, headers=owner)).json()
            listed = {q["queue"]: q for q in (await http.get(BASE, headers=owner)).json()}
    assert counts["delayed"] == len(delayed["items"]) == 2
    assert counts["retrying"] == len(failed["items"]) == 1
    assert [j["id"] for j in failed["items"]] == [retrying_id]
    assert listed[Q]["counts"]["delayed"] == 2 and listed[Q]["counts"]["retrying"] == 1


async def test_audit_text_has_cr_lf_and_nul_escaped_not_dropped(served: Served) -> None:
    tricky = token(served, subject="eve\r\nactor: root")
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
        r = await http.post(f"{BASE}/a%0D%0Ab%00c%5C/pause", headers=auth(tricky))
        assert_error(r, 404, "not_found")
    (row,) = await audit_rows(served.settings.database_url)
    assert row.target == "a\\r\\nb\\x00c\\\\"
    assert row.actor == "eve\\r\\nactor: root"
    assert "\n" not in row.details["path"] and "\\x00" in row.details["path"]


@pytest.mark.parametrize(  # PostgreSQL only; SQLite has the locked-database test above
    "database_backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_a_change_made_while_postgresql_is_unavailable_answers_200_and_the_row_follows(
    redis_url: str, database_url: str, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    monkeypatch.setattr(auditing, "SPOOL_FLUSH_S", 0.3)
    url = make_url(database_url)
    dbname = url.database

    async def allow(on: bool) -> None:
        conn = await asyncpg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password, database="postgres"
        )
        try:
            await conn.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(on).lower()}')
            if not on:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    dbname,
                )
        finally:
            await conn.close()

    with serving(admin_settings(redis_url, database_url)) as served:
        try:
            await allow(False)
        except asyncpg.PostgresError as exc:
            pytest.skip(f"cannot make the test database unavailable: {exc}")
        try:
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
                r = await http.post(f"{BASE}/{Q}/pause", headers=auth(token(served, subject="ops")))
            assert r.status_code == 200 and r.json()["paused"] is True, r.text
            assert (await read_config(redis_client, Q)).paused
            assert await redis_client.llen(auditing.SPOOL_KEY) == 1
        finally:
            await allow(True)
        await wait_for(lambda: _llen(redis_client), timeout=15, what="the spooled row to be written")
    rows = await audit_rows(database_url)
    assert [(r.actor, r.action, r.outcome) for r in rows] == [("ops", "admin.queue.pause", "ok")]
