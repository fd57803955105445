"""Live events: ``GET /api/realtime/queue-events`` (server-sent events) and ``WS /owner/realtime``.

One ``Hub`` per process subscribes to ``tq:events`` and fans each event out to every connected
client. A client gets, on connect, the current state of every queue (event ``state``), then every
event (its ``type`` as the event name: ``job.completed``, ``queue.stats``, ``dlq.stats``,
``workflow.step``, ``ai.task``, ...), and a ``heartbeat`` every ``TQ_ADMIN_HEARTBEAT_S``.

* Event ids are ``<boot>-<seq>``: the hub keeps the last ``TQ_ADMIN_SSE_BUFFER`` events, so an SSE
  client that reconnects with ``Last-Event-ID`` gets what it missed instead of a new ``state``;
  when the id is from another process or has left the buffer it gets a ``state`` again.
* Each client has a queue of at most ``TQ_ADMIN_CLIENT_QUEUE`` events. A client that does not read
  fast enough to keep it from filling is dropped (its queue freed, its connection closed); it may
  reconnect and resume. Memory per client stays bounded whatever the event rate.
* Both need an owner token: SSE in the ``Authorization: Bearer`` header; WebSocket in that header
  or, for browsers (which cannot set headers on a WebSocket), as the subprotocol
  ``bearer.<token>`` offered beside ``tq.events.v1`` (the server answers ``tq.events.v1``). Not in
  the query string, which proxies and access logs keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from redis.exceptions import RedisError
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect
from tq import keys

from tq_services.admin.auth import Principal, authenticate, authorize, bearer
from tq_services.admin.errors import ApiError
from tq_services.admin.ratelimit import SlidingWindow
from tq_services.admin.routes import Owner, all_queue_summaries
from tq_services.admin.state import admin_state

log = logging.getLogger(__name__)

WS_PROTOCOL = "tq.events.v1"
RESYNC = "resync"  # the hub lost tq:events for a while: what a client holds may be stale
WS_TOKEN_PREFIX = "bearer."


@dataclass(frozen=True)
class Item:
    """One event as clients get it: its id, its name and its JSON."""

    id: str
    event: str
    data: str


class Subscriber:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize)
        self.gone = asyncio.Event()  # set when the hub dropped this client


@dataclass
class Hub:
    """The process's one subscription to ``tq:events`` and its clients."""

    client: Any
    buffer_size: int
    client_queue: int
    boot: str = field(default_factory=lambda: format(int(time.time() * 1000), "x"))
    seq: int = 0
    subscribers: set[Subscriber] = field(default_factory=set)
    dropped: int = 0
    received: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.buffer: deque[tuple[int, Item]] = deque(maxlen=self.buffer_size)

    def last_id(self) -> str:
        return f"{self.boot}-{self.seq}"

    async def run(self) -> None:
        """Listen until cancelled; a lost Redis connection is retried with backoff (1 s doubling to 30 s)."""
        backoff = 1.0
        lost = False
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.EVENTS_CHANNEL)
                self.subscribed.set()
                backoff = 1.0
                if lost:  # events published meanwhile were not seen: tell clients to fetch the state
                    self.dispatch(json.dumps({"type": RESYNC, "queue": "", "at": time.time()}))
                    lost = False
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self.dispatch(message["data"])
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                lost = True
                log.warning("realtime: tq:events subscription lost (%s); again in %.0f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def dispatch(self, raw: bytes | str) -> None:
        try:
            event = json.loads(raw)
            name = str(event["type"])
        except (ValueError, KeyError, TypeError) as exc:  # not tq's Event schema: nothing to forward
            log.warning("realtime: ignoring a malformed message on tq:events: %s", exc)
            return
        self.received += 1
        self.seq += 1
        item = Item(f"{self.boot}-{self.seq}", name, json.dumps(event, separators=(",", ":")))
        self.buffer.append((self.seq, item))
        for sub in list(self.subscribers):
            try:
                sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                self.drop(sub)

    def drop(self, sub: Subscriber) -> None:
        """Free a slow client's queue and tell its sender to close the connection."""
        self.subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.gone.set()
        self.dropped += 1
        log.info("realtime: dropped a client that fell %d events behind", self.client_queue)

    def subscribe(self, last_event_id: str | None) -> tuple[Subscriber, list[Item] | None, str]:
        """Register a client. Returns it, the events it missed since ``last_event_id`` (None: it
        cannot resume and needs the state), and the id the state stands at."""
        sub = Subscriber(self.client_queue)
        self.subscribers.add(sub)
        return sub, self._missed(last_event_id), self.last_id()

    def _missed(self, last_event_id: str | None) -> list[Item] | None:
        if not last_event_id:
            return None
        boot, _, seq_text = last_event_id.partition("-")
        if boot != self.boot or not seq_text.isdigit() or int(seq_text) > self.seq:
            return None
        seq = int(seq_text)
        oldest = self.buffer[0][0] if self.buffer else self.seq + 1
        if seq + 1 < oldest:  # some of what it missed has left the buffer
            return None
        return [item for s, item in self.buffer if s > seq]

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)


async def _feed(
    request_or_ws: Request | WebSocket,
    sub: Subscriber,
    missed: list[Item] | None,
    at: str,
    heartbeat_s: float,
) -> AsyncIterator[Item]:
    """What one client gets: the state (or what it missed), then events and heartbeats."""
    state = admin_state(request_or_ws)
    if missed is None:
        queues = await all_queue_summaries(state.redis)
        yield Item(at, "state", json.dumps({"queues": queues, "at": time.time()}, separators=(",", ":")))
    else:
        for item in missed:
            yield item
    while True:
        try:
            item = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
        except TimeoutError:
            yield Item("", "heartbeat", json.dumps({"at": time.time()}))
            continue
        yield item


async def next_or_stop(frames: AsyncIterator[Item], watchers: Sequence[asyncio.Future[Any]]) -> Item | None:
    """The next item for a client, or None as soon as a watcher fires (the client left, or was
    dropped) even while the feed is waiting for an event."""
    if any(w.done() for w in watchers):
        return None
    upcoming = asyncio.ensure_future(frames.__anext__())
    done, _ = await asyncio.wait([upcoming, *watchers], return_when=asyncio.FIRST_COMPLETED)
    if upcoming not in done:
        upcoming.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await upcoming
        return None
    try:
        return upcoming.result()
    except StopAsyncIteration:
        return None


def sse_frame(item: Item) -> bytes:
    head = f"id: {item.id}\n" if item.id else ""
    return f"{head}event: {item.event}\ndata: {item.data}\n\n".encode()


class EventStream(Response):
    """A text/event-stream answer that ends when the client disconnects or the hub drops it.
    A send still blocked when the client is dropped is abandoned: returning with the response
    incomplete makes the server close the connection, so a stalled reader cannot hold a sender."""

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[Item], sub: Subscriber, on_close: Any, retry_ms: int) -> None:
        # no Response.__init__: it would declare a Content-Length for the empty body
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.frames = frames
        self.sub = sub
        self.on_close = on_close
        self.retry_ms = retry_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watchers: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(disconnected()),
            asyncio.ensure_future(self.sub.gone.wait()),
        ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if not await self._send(send, f"retry: {self.retry_ms}\n\n".encode(), watchers):
                return
            while (item := await next_or_stop(self.frames, watchers)) is not None:
                if not await self._send(send, sse_frame(item), watchers):
                    return
        finally:
            for w in watchers:
                w.cancel()
            self.on_close()
            with contextlib.suppress(Exception):
                await self.frames.aclose()  # type: ignore[attr-defined]

    async def _send(self, send: Send, body: bytes, watchers: Sequence[asyncio.Future[Any]]) -> bool:
        if any(w.done() for w in watchers):
            return False
        sending = asyncio.ensure_future(send({"type": "http.response.body", "body": body, "more_body": True}))
        done, _ = await asyncio.wait([sending, *watchers], return_when=asyncio.FIRST_COMPLETED)
        if sending not in done:
            sending.cancel()
            return False
        sending.result()
        return True


router = APIRouter(tags=["realtime"])


@router.get(
    "/api/realtime/queue-events",
    summary="Server-sent events: every queue's state, then each event from tq:events",
    response_class=EventStream,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def queue_events(request: Request, _: Owner) -> Response:
    state = admin_state(request)
    hub = state.hub
    sub, missed, at = hub.subscribe(request.headers.get("last-event-id"))
    heartbeat = state.settings.admin_heartbeat_s
    return EventStream(
        _feed(request, sub, missed, at, heartbeat),
        sub,
        on_close=lambda: hub.unsubscribe(sub),
        retry_ms=int(heartbeat * 1000),
    )


def _ws_token(websocket: WebSocket) -> tuple[str | None, bool]:
    """The token (header first, then the ``bearer.<token>`` subprotocol) and whether the client
    offered ``tq.events.v1``."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    token = bearer(websocket.headers.get("authorization"))
    if token is None:
        token = next((p[len(WS_TOKEN_PREFIX) :] for p in offered if p.startswith(WS_TOKEN_PREFIX)), None)
    return token, WS_PROTOCOL in offered


async def _ws_principal(websocket: WebSocket) -> Principal | None:
    """The owner behind a WebSocket handshake; refuses the handshake (401/403/429, JSON) otherwise."""
    state = admin_state(websocket)
    token, _ = _ws_token(websocket)
    try:
        principal = authenticate(state.settings, token)
        wait_s = await state.limiter.hit(principal.token_id)
        if wait_s:
            raise ApiError(
                429, "rate limit exceeded", headers={"Retry-After": SlidingWindow.retry_after(wait_s)}
            )
        authorize(state.settings, principal, write=True)  # live events are the owner's
    except ApiError as exc:
        body = {"error": {"code": exc.code, "message": exc.message}}
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(JSONResponse(body, exc.status, headers=exc.headers))
        else:
            await websocket.close(code=4000 + exc.status, reason=exc.message[:120])
        return None
    return principal


@router.websocket("/owner/realtime")
async def owner_realtime(websocket: WebSocket) -> None:
    if await _ws_principal(websocket) is None:
        return
    state = admin_state(websocket)
    _, wants_protocol = _ws_token(websocket)
    await websocket.accept(subprotocol=WS_PROTOCOL if wants_protocol else None)
    hub = state.hub
    sub, _missed, at = hub.subscribe(None)
    frames = _feed(websocket, sub, None, at, state.settings.admin_heartbeat_s)

    async def client_closed() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()  # clients have nothing to say; read to see them go

    watchers: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(client_closed()),
        asyncio.ensure_future(sub.gone.wait()),
    ]
    try:
        while (item := await next_or_stop(frames, watchers)) is not None:
            message = f'{{"id":"{item.id}","event":"{item.event}","data":{item.data}}}'
            sending = asyncio.ensure_future(websocket.send_text(message))
            done, _ = await asyncio.wait([sending, *watchers], return_when=asyncio.FIRST_COMPLETED)
            if sending not in done:
                sending.cancel()
                break
            sending.result()
        if sub.gone.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code=1013, reason="too slow: reconnect"), 1.0)
    except (WebSocketDisconnect, OSError):
        log.debug("realtime: a WebSocket client went away mid-send")
    finally:
        for w in watchers:
            w.cancel()
        hub.unsubscribe(sub)
        await frames.aclose()  # type: ignore[attr-defined]
