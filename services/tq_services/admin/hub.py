"""The process's one subscription to ``tq:events`` and its fan-out to the live clients.

``Hub.run`` listens (a lost subscription is retried with backoff, and clients get a ``resync``
event once it is back); ``dispatch`` gives each event an id ``<boot>-<seq>``, keeps the last
``buffer_size`` for clients that resume, and puts it on every client's bounded queue; a client whose
queue is full is dropped (``drop``). The HTTP and WebSocket endpoints that serve the clients are in
``realtime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from tq import keys

log = logging.getLogger(__name__)

RESYNC = "resync"  # the hub lost tq:events for a while: what a client holds may be stale


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
