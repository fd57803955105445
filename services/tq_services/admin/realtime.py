"""Live events: ``GET /api/realtime/queue-events`` (server-sent events) and ``WS /owner/realtime``.

One ``hub.Hub`` per process subscribes to ``tq:events`` and fans each event out to every connected
client. A client gets, on connect, the current state of every queue (event ``state``), then every
event (its ``type`` as the event name: ``job.completed``, ``queue.stats``, ``dlq.stats``,
``workflow.step``, ``ai.task``, ...), and a ``heartbeat`` every ``TQ_ADMIN_HEARTBEAT_S``.

* Event ids are ``<boot>-<seq>``: the hub keeps the last ``TQ_ADMIN_SSE_BUFFER`` events, so an SSE
  client that reconnects with ``Last-Event-ID`` gets what it missed instead of a new ``state``;
  when the id is from another process or has left the buffer it gets a ``state`` again.
* Each client has a queue of at most ``TQ_ADMIN_CLIENT_QUEUE`` events. A client that does not read
  fast enough to keep it from filling is dropped (its queue freed, its connection closed); it may
  reconnect and resume. Memory per client stays bounded whatever the event rate.
* Frames are built by a serializer, never by formatting event text into them: an event's name is
  one of ``tq.envelope.EventType`` (``hub`` relays nothing else), its data JSON (``sse_frame``,
  ``ws_message``); so a forged message on ``tq:events`` cannot inject frames.
* A stream ends when its token expires or is revoked (``tq token revoke``; looked at every
  ``revocation.CHECK_S`` s): SSE with a last event ``revoked`` (or ``expired``), WebSocket with close
  code 1008.
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
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from tq_services.admin import revocation
from tq_services.admin.auth import Principal, authorize, bearer
from tq_services.admin.deps import Owner, rate_limited, verified
from tq_services.admin.errors import ApiError
from tq_services.admin.hub import Item, Subscriber
from tq_services.admin.state import AdminState, admin_state
from tq_services.admin.summaries import all_queue_summaries

log = logging.getLogger(__name__)

WS_PROTOCOL = "tq.events.v1"
WS_TOKEN_PREFIX = "bearer."


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
        queues = [q.model_dump(mode="json") for q in await all_queue_summaries(state.redis)]
        yield Item(at, "state", {"queues": queues, "at": time.time()})
    else:
        for item in missed:
            yield item
    while True:
        try:
            item = await asyncio.wait_for(sub.queue.get(), heartbeat_s)
        except TimeoutError:
            yield Item("", "heartbeat", {"at": time.time()})
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
    """One text/event-stream frame. ``Item`` admits only plain ids and names; the data is JSON,
    which has no raw line break, and is still split per line as the format requires."""
    fields = [("id", item.id)] if item.id else []
    fields.append(("event", item.event))
    fields += [("data", line) for line in item.json.splitlines() or [""]]
    for _name, value in fields:
        if "\n" in value or "\r" in value:
            raise ValueError("a line break inside an SSE field")
    return "".join(f"{name}: {value}\n" for name, value in fields).encode() + b"\n"


def ws_message(item: Item) -> str:
    """One WebSocket text message: ``{"id", "event", "data"}``, serialized as one JSON object."""
    return json.dumps({"id": item.id, "event": item.event, "data": item.data}, separators=(",", ":"))


async def token_ends(state: AdminState, principal: Principal) -> str:
    """Wait until the token of an open stream is revoked or expires; which of the two."""
    while True:
        left = principal.expires_at - time.time()
        if left <= 0:
            return "expired"
        await asyncio.sleep(min(revocation.CHECK_S, left))
        try:
            if await revocation.is_revoked(state.redis, principal.token_id):
                return "revoked"
        except Exception as exc:  # Redis away: look again next time
            log.debug("realtime: revocation check failed: %s", exc)


class EventStream(Response):
    """A text/event-stream answer that ends when the client disconnects or the hub drops it.
    A send still blocked when the client is dropped is abandoned: returning with the response
    incomplete makes the server close the connection, so a stalled reader cannot hold a sender."""

    media_type = "text/event-stream"

    def __init__(
        self, frames: AsyncIterator[Item], sub: Subscriber, on_close: Any, retry_ms: int, ending: Any = None
    ) -> None:
        # no Response.__init__: it would declare a Content-Length for the empty body
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.frames = frames
        self.sub = sub
        self.on_close = on_close
        self.retry_ms = retry_ms
        self.ending = ending  # makes a coroutine that returns why the stream must end (token revoked...)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        watchers: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(disconnected()),
            asyncio.ensure_future(self.sub.gone.wait()),
        ]
        ending = asyncio.ensure_future(self.ending()) if self.ending is not None else None
        if ending is not None:
            watchers.append(ending)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if not await self._send(send, f"retry: {self.retry_ms}\n\n".encode(), watchers):
                return
            while (item := await next_or_stop(self.frames, watchers)) is not None:
                if not await self._send(send, sse_frame(item), watchers):
                    return
            if ending is not None and ending.done() and not ending.cancelled():
                last = sse_frame(Item("", ending.result(), {"at": time.time()}))
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(send({"type": "http.response.body", "body": last}), 1.0)
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
async def queue_events(request: Request, principal: Owner) -> Response:
    state = admin_state(request)
    hub = state.hub
    sub, missed, at = hub.subscribe(request.headers.get("last-event-id"))
    try:
        heartbeat = state.admin_settings.admin_heartbeat_s
        return EventStream(
            _feed(request, sub, missed, at, heartbeat),
            sub,
            on_close=lambda: hub.unsubscribe(sub),
            retry_ms=int(heartbeat * 1000),
            ending=lambda: token_ends(state, principal),
        )
    except BaseException:
        hub.unsubscribe(sub)
        raise


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
        principal = await verified(state, token)
        await rate_limited(state, principal)
        authorize(state.admin_settings, principal, write=True)  # live events are the owner's
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
    principal = await _ws_principal(websocket)
    if principal is None:
        return
    state = admin_state(websocket)
    _, wants_protocol = _ws_token(websocket)
    await websocket.accept(subprotocol=WS_PROTOCOL if wants_protocol else None)
    hub = state.hub
    sub, _missed, at = hub.subscribe(None)
    frames = _feed(websocket, sub, None, at, state.admin_settings.admin_heartbeat_s)

    async def client_closed() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()  # clients have nothing to say; read to see them go

    ending = asyncio.ensure_future(token_ends(state, principal))
    watchers: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(client_closed()),
        asyncio.ensure_future(sub.gone.wait()),
        ending,
    ]
    try:
        while (item := await next_or_stop(frames, watchers)) is not None:
            sending = asyncio.ensure_future(websocket.send_text(ws_message(item)))
            done, _ = await asyncio.wait([sending, *watchers], return_when=asyncio.FIRST_COMPLETED)
            if sending not in done:
                sending.cancel()
                break
            sending.result()
        if sub.gone.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code=1013, reason="too slow: reconnect"), 1.0)
        elif ending.done() and not ending.cancelled():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code=1008, reason=f"token {ending.result()}"), 1.0)
    except (WebSocketDisconnect, OSError):
        log.debug("realtime: a WebSocket client went away mid-send")
    finally:
        for w in watchers:
            w.cancel()
        hub.unsubscribe(sub)
        await frames.aclose()  # type: ignore[attr-defined]
