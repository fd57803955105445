"""The process's one subscription to ``tq:events`` and its fan-out to the live clients.

``Hub.run`` listens (a lost subscription is retried with backoff, and clients get a ``resync`` event
once it is back); ``dispatch`` validates each message against the one schema of ``tq:events``
(``tq.envelope.Event``, and the fixed ``data`` of ``EVENT_DATA_MODELS``; anything else is counted in
``tq_admin_events_rejected_total`` and not relayed), gives each event an id ``<boot>-<seq>``, keeps
the last ``buffer_size`` for clients that resume, and puts it on every client's bounded queue; a
client whose queue is full is dropped (``drop``). The HTTP and WebSocket endpoints that serve the
clients are in ``realtime``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError
from tq import keys
from tq.envelope import EVENT_DATA_MODELS, Event

from tq_services.admin import metrics

log = logging.getLogger(__name__)

RESYNC = "resync"  # the hub lost tq:events for a while: what a client holds may be stale
_LAST_EVENT_ID = re.compile(r"[0-9a-f]{1,16}-[0-9]{1,18}", re.ASCII)
_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}", re.ASCII)  # an event's name: never CR, LF or ':'


@dataclass(frozen=True)
class Item:
    """One event as clients get it: its id, its name and its data (a JSON object). Its JSON is
    serialized once, however many clients get it (``realtime`` frames it)."""

    id: str
    event: str
    data: dict[str, Any]

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.event) or (self.id and not _LAST_EVENT_ID.fullmatch(self.id)):
            raise ValueError(f"not a live event's id or name: {self.id!r} {self.event!r}")

    @cached_property
    def json(self) -> str:
        return json.dumps(self.data, separators=(",", ":"))


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
                    self.fan_out(RESYNC, {"type": RESYNC, "queue": "", "at": time.time()})
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
        """Relay one message of ``tq:events`` if it is a valid ``Event``."""
        try:
            event = Event.model_validate_json(raw)
            model = EVENT_DATA_MODELS.get(event.type)
            if model is not None:
                model.model_validate(event.data)
        except (ValidationError, ValueError, RecursionError) as exc:  # not tq's Event schema
            metrics.EVENTS_REJECTED.inc()
            log.warning("realtime: not relaying a message on tq:events that is not an Event: %.300s", exc)
            return
        self.received += 1
        self.fan_out(event.type.value, event.model_dump(mode="json"))

    def fan_out(self, name: str, data: dict[str, Any]) -> None:
        self.seq += 1
        item = Item(f"{self.boot}-{self.seq}", name, data)
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
        missed = self._missed(last_event_id)  # first: nothing registered if it failed
        sub = Subscriber(self.client_queue)
        self.subscribers.add(sub)
        return sub, missed, self.last_id()

    def _missed(self, last_event_id: str | None) -> list[Item] | None:
        """What a client missed since ``last_event_id``; None (send the state) when the id is not
        one of this process's (another boot, or not an id at all: too long, not ASCII digits)."""
        if not last_event_id or not _LAST_EVENT_ID.fullmatch(last_event_id):
            return None
        boot, _, seq_text = last_event_id.partition("-")
        seq = int(seq_text)
        if boot != self.boot or seq > self.seq:
            return None
        oldest = self.buffer[0][0] if self.buffer else self.seq + 1
        if seq + 1 < oldest:  # some of what it missed has left the buffer
            return None
        return [item for s, item in self.buffer if s > seq]

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
