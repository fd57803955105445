"""Live events over HTTP: SSE (``/api/realtime/queue-events``) and WebSocket (``/owner/realtime``)
against the admin app under uvicorn and the suite's real redis-server. Each gets the state of every
queue on connect and then live events published by the real engine; SSE resumes with
Last-Event-ID inside the buffer; a client that does not read is dropped, not buffered for."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from support import wait_for
from support.admin import (
    NO_HANDLER_JOB,
    Frame,
    Q,
    Served,
    admin_settings,
    auth,
    frames,
    next_frame,
    serving,
    sqlite_database,
    token,
)
from tq import keys
from tq.envelope import Event, EventType
from tq.producer import Producer
from tq.registry import all_queues
from tq.stats import StatsLeader

SSE = "/api/realtime/queue-events"


async def publish(client: Any, n: int, *, blob: int = 10, job_prefix: str = "j") -> None:
    async with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            event = Event(
                type=EventType.JOB_PROGRESS, queue=Q, job_id=f"{job_prefix}{i}", data={"blob": "x" * blob}
            )
            pipe.publish(keys.EVENTS_CHANNEL, event.model_dump_json())
        await pipe.execute()


# ---- SSE ----------------------------------------------------------------------------------------


async def test_sse_sends_state_then_live_engine_events_and_heartbeats(
    served: Served, redis_client: Any
) -> None:
    producer = Producer(redis_client, served.settings)
    await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": 1})
    owner = auth(token(served))
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        http.stream("GET", SSE, headers=owner) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-content-type-options"] == "nosniff"
        it = frames(r).__aiter__()
        state = await next_frame(it, "state")
        assert state.id
        queues = {q["queue"]: q for q in state.data["queues"]}
        assert list(queues) == [spec.name for spec in all_queues()]
        assert queues[Q]["counts"]["waiting"] == 1
        await next_frame(it, "heartbeat")

        job_id = await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": 2})
        waiting = await next_frame(it, "job.waiting")
        assert waiting.data["job_id"] == job_id and waiting.data["queue"] == Q
        assert waiting.id and waiting.id != state.id

        async with httpx.AsyncClient(base_url=served.url) as api:
            assert (await api.post(f"/api/owner/queues/{Q}/pause", headers=owner)).status_code == 200
        paused = await next_frame(it, "queue.paused")
        assert paused.data["queue"] == Q

        await StatsLeader(redis_client, settings=served.settings).tick()
        stats, dlq_stats = None, None
        while stats is None or dlq_stats is None:
            f = await next_frame(it, "queue.stats") if stats is None else await next_frame(it, "dlq.stats")
            if f.data["queue"] == Q:
                stats, dlq_stats = (f, dlq_stats) if f.event == "queue.stats" else (stats, f)
        assert stats.data["data"]["waiting"] == 2 and stats.data["data"]["paused"] is True
        assert dlq_stats.data["data"]["size"] == 0
    await wait_for(lambda: not served.hub.subscribers, what="the closed stream to unsubscribe")


async def _first_events(served: Served, headers: dict[str, str], n: int) -> list[Frame]:
    out: list[Frame] = []
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        http.stream("GET", SSE, headers=headers) as r,
    ):
        async for f in frames(r):
            if f.event != "heartbeat":
                out.append(f)
            if len(out) == n:
                break
    return out


async def test_sse_resumes_from_last_event_id_within_the_buffer(
    redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), admin_sse_buffer=4)
    with serving(s) as served:
        owner = auth(token(s))
        async with (
            httpx.AsyncClient(base_url=served.url, timeout=10) as http,
            http.stream("GET", SSE, headers=owner) as r,
        ):
            it = frames(r).__aiter__()
            await next_frame(it, "state")
            await publish(redis_client, 1, job_prefix="seen")
            seen = await next_frame(it, "job.progress")
        await wait_for(lambda: not served.hub.subscribers, what="the first stream to close")

        await publish(redis_client, 3, job_prefix="missed")  # while disconnected
        await wait_for(lambda: served.hub.received == 4, what="the hub to receive the events")
        resumed = await _first_events(served, {**owner, "Last-Event-ID": seen.id or ""}, 3)
        assert [f.event for f in resumed] == ["job.progress"] * 3  # no state: it is up to date
        assert [f.data["job_id"] for f in resumed] == ["missed0", "missed1", "missed2"]

        foreign = await _first_events(served, {**owner, "Last-Event-ID": "otherboot-3"}, 1)
        assert foreign[0].event == "state"

        await publish(redis_client, 5, job_prefix="overflow")  # the buffer keeps only the last 4
        await wait_for(lambda: served.hub.received == 9, what="the hub to receive the events")
        too_old = await _first_events(served, {**owner, "Last-Event-ID": seen.id or ""}, 1)
        assert too_old[0].event == "state"
        last = resumed[-1].id or ""
        tail = await _first_events(served, {**owner, "Last-Event-ID": served.hub.buffer[0][1].id}, 3)
        assert [f.data["job_id"] for f in tail] == ["overflow2", "overflow3", "overflow4"]
        assert last


async def test_a_client_that_does_not_read_is_dropped(
    redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), admin_client_queue=8, admin_heartbeat_s=30)
    with serving(s) as served:
        host, port = served.url.removeprefix("http://").split(":")
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        stalled.sendall(
            f"GET {SSE} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token(s)}\r\n\r\n".encode()
        )
        await wait_for(lambda: len(served.hub.subscribers) == 1, what="the stalled client to subscribe")
        async with (
            httpx.AsyncClient(base_url=served.url, timeout=30) as http,
            http.stream("GET", SSE, headers=auth(token(s))) as r,
        ):
            it = frames(r).__aiter__()
            await next_frame(it, "state")
            healthy_seen = 0
            for _ in range(2000):  # up to 2000 x 4 x 8 KiB: far more than the socket buffers hold
                await publish(redis_client, 4, blob=8192)
                while True:  # the healthy client keeps up: it reads each burst before the next
                    f = await next_frame(it, "job.progress")
                    healthy_seen += 1
                    if f.data["job_id"] == "j3":
                        break
                if served.hub.dropped:
                    break
            assert served.hub.dropped == 1
            assert len(served.hub.subscribers) == 1  # only the healthy client is left
            await publish(redis_client, 1, job_prefix="after")
            assert (await next_frame(it, "job.progress")).data["job_id"] == "after0"
        # the server closed the stalled connection: reading on reaches the end
        stalled.settimeout(10)
        received = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            chunk = stalled.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
        else:
            raise AssertionError("the stalled connection was not closed")
        stalled.close()
        assert received < healthy_seen * 8192  # it got a part of the stream, then was cut off


# ---- WebSocket ----------------------------------------------------------------------------------


async def test_websocket_with_token_subprotocol_gets_state_then_events(
    served: Served, redis_client: Any
) -> None:
    tok = token(served)
    ws_url = served.url.replace("http://", "ws://") + "/owner/realtime"
    async with websockets.connect(ws_url, subprotocols=["tq.events.v1", f"bearer.{tok}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "tq.events.v1"
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["event"] == "state"
        assert {q["queue"] for q in first["data"]["queues"]} == {spec.name for spec in all_queues()}
        job_id = await Producer(redis_client, served.settings).enqueue(Q, NO_HANDLER_JOB, {"limit": 3})
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["event"] == "job.waiting":
                break
        assert message["data"]["job_id"] == job_id and message["id"]
    async with websockets.connect(ws_url, additional_headers=auth(tok)) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["event"] == "state"
        heartbeat = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert heartbeat["event"] == "heartbeat"
    await wait_for(lambda: not served.hub.subscribers, what="closed sockets to unsubscribe")


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("viewer", 403), ("bad-signature", 401)])
async def test_websocket_refuses_without_an_owner_token(
    served: Served, role: str | None, status: int
) -> None:
    ws_url = served.url.replace("http://", "ws://") + "/owner/realtime"
    protocols = ["tq.events.v1"]
    if role == "viewer":
        protocols.append(f"bearer.{token(served, 'viewer')}")
    elif role == "bad-signature":
        protocols.append(f"bearer.{token(served)[:-4]}AAAA")
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(ws_url, subprotocols=protocols):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == status
    assert json.loads(refused.value.response.body or b"{}")["error"]["code"] in ("unauthorized", "forbidden")
    assert not served.hub.subscribers


async def test_a_websocket_client_that_does_not_read_is_dropped(
    redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), admin_client_queue=8, admin_heartbeat_s=30)
    with serving(s) as served:
        ws_url = served.url.replace("http://", "ws://") + "/owner/realtime"
        # max_queue=1: the client stops reading its socket once one message waits unread
        async with websockets.connect(ws_url, additional_headers=auth(token(s)), max_queue=1) as ws:
            await wait_for(lambda: len(served.hub.subscribers) == 1, what="the client to subscribe")
            for _ in range(2000):
                await publish(redis_client, 4, blob=8192)
                await asyncio.sleep(0.001)
                if served.hub.dropped:
                    break
            assert served.hub.dropped == 1 and not served.hub.subscribers
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:  # drain what was sent before the drop, then the close
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013  # "try again later"


async def test_a_lost_subscription_is_restored_and_clients_told_to_resync(
    served: Served, redis_client: Any
) -> None:
    async with (
        httpx.AsyncClient(base_url=served.url, timeout=10) as http,
        http.stream("GET", SSE, headers=auth(token(served))) as r,
    ):
        it = frames(r).__aiter__()
        await next_frame(it, "state")
        killed = await redis_client.client_kill_filter(_type="pubsub")
        assert killed >= 1
        resync = await next_frame(it, "resync")  # after the hub's 1 s backoff
        assert resync.id
        await publish(redis_client, 1, job_prefix="later")
        assert (await next_frame(it, "job.progress")).data["job_id"] == "later0"
