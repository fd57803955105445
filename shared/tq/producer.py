"""Enqueue jobs: validated against the job's model before anything is written.

``Producer`` is asyncio; ``SyncProducer`` serves synchronous applications with the same checks and
the same one-round-trip Lua script. Module-level ``enqueue``/``enqueue_many`` use a default async
producer built from settings.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import hiredis
from pydantic import BaseModel, ValidationError
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tq import keys, tracing
from tq.connection import async_client, bulk, call_script, is_cluster, sync_client, timeouts_in_kernel
from tq.envelope import new_job_id
from tq.errors import InvalidPayload, PayloadTooLarge
from tq.registry import QueueSpec, get_queue
from tq.scripts import Scripts
from tq.settings import Settings, get_settings

Delay = float | int | timedelta | None
# concurrent single enqueues: jobs per shared script call, at most. 100 callers ran 1.27x as fast
# with 50 as with 25 (median of four interleaved rounds: half the calls, each as cheap), and slower
# with 100 (one call takes every caller: none prepares the next while Redis runs it)
SHARED_BATCH = 50
SHARED_IN_FLIGHT = 4  # ... and such calls in flight (see Producer._flush_loop)
CHUNKS_IN_FLIGHT = 4  # bulk chunks sent ahead of their replies: overlaps encoding and round trips,
# and holds at most this many pooled connections however large the batch


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job of a bulk enqueue."""

    name: str
    data: Mapping[str, Any] | BaseModel
    idempotency_key: str | None = None
    delay: Delay = None
    trace_id: str | None = None


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x (one per job)
class _Prepared:
    name: str
    payload: str  # JSON
    delay: float
    idempotency_key: str | None
    trace_id: str | None


_Queued = tuple[QueueSpec, "_Prepared", "asyncio.Future[str]"]  # the future: the script's answer


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    id: str
    duplicate: bool  # True: the idempotency key was held; ``id`` is the first job's

    @staticmethod
    def of(answer: str) -> EnqueueResult:
        """The enqueue script's answer for one job: its id, or ``dup:<id>``."""
        return EnqueueResult(_id_of(answer), answer.startswith("dup:"))


def _id_of(answer: str) -> str:
    """The job id in the enqueue script's answer (``dup:<id>``: the job holding the key)."""
    return answer[4:] if answer.startswith("dup:") else answer


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]) or "(payload)", e["msg"]) for e in exc.errors()]


def payload_json(spec: QueueSpec, job: str, data: Mapping[str, Any] | BaseModel) -> str:
    """The validated payload as compact JSON, or ``InvalidPayload`` naming each field and reason."""
    model = spec.payload_model(job)
    if type(data) is not dict:  # the common case skips the isinstance checks (ABC ones are slow)
        if isinstance(data, model):
            return data.model_dump_json()
        if isinstance(data, BaseModel):
            raise InvalidPayload(
                spec.name, job, [("(payload)", f"expected {model.__name__}, got {type(data).__name__}")]
            )
        if not isinstance(data, Mapping):
            raise InvalidPayload(
                spec.name, job, [("(payload)", f"expected an object, got {type(data).__name__}")]
            )
    try:
        # model_validate + model_dump_json without their keyword handling: half the cost per job
        valid = model.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        raise InvalidPayload(spec.name, job, validation_errors(exc)) from None
    return model.__pydantic_serializer__.to_json(valid).decode()


def _delay_s(delay: Delay) -> float:
    if not delay:
        return 0.0
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise ValueError("delay must not be negative")
    return seconds


class _Encoder:
    """Turns requests into the enqueue script's call; shared by both producers. ``command`` gives
    the call as the bytes sent (RESP): its words that never change for a queue are packed once, and
    the rest as text encoded once, as hiredis's ``pack_command`` of the whole call took 30% of a
    single enqueue's instructions (callgrind, docs/bench.md)."""

    def __init__(self, settings: Settings, enqueue_sha: str) -> None:
        self.settings = settings
        self.sha = enqueue_sha
        self._keys: dict[str, list[str]] = {}  # per queue: built once (never mutated by callers)
        # per queue: the spec; the head's fixed arguments (prefix, name, idempotency TTL, events),
        # resolved once, as merging the defaults with TQ_QUEUES costs more than the job's own
        # encoding; and the call's words before and after the time, packed
        self._heads: dict[str, tuple[QueueSpec, tuple[str, str, int, int], str, str, int]] = {}

    def keys(self, queue: str) -> list[str]:
        ks = self._keys.get(queue)
        if ks is None:
            ks = [keys.stream(queue), keys.delayed(queue), keys.counters(queue), keys.config(queue)]
            self._keys[queue] = ks
        return ks

    def _fixed(self, spec: QueueSpec) -> tuple[QueueSpec, tuple[str, str, int, int], str, str, int]:
        cached = self._heads.get(spec.name)
        if cached is None or cached[0] is not spec:  # a queue registered again (tests) is read again
            d = spec.effective_defaults(self.settings)
            fixed = (keys.prefix(spec.name), spec.name, d.idempotency_ttl_s, int(self.settings.events))
            ks = self.keys(spec.name)
            before = ("EVALSHA", self.sha, len(ks), *ks, fixed[0])
            words = len(before) + len(fixed)  # with the time: the call's words before its jobs
            before_now = "".join(bulk(str(w)) for w in before)
            after_now = "".join(bulk(str(w)) for w in fixed[1:])
            cached = self._heads[spec.name] = (spec, fixed, before_now, after_now, words)
        return cached

    def head(self, spec: QueueSpec, now_ms: int) -> list[Any]:
        """The script's arguments before its jobs (docs/wire-format.md)."""
        prefix, name, ttl, events = self._fixed(spec)[1]
        return [prefix, now_ms, name, ttl, events]

    def prepare(
        self,
        spec: QueueSpec,
        name: str,
        data: Mapping[str, Any] | BaseModel,
        idempotency_key: str | None = None,
        delay: Delay = None,
        trace_id: str | None = None,
    ) -> _Prepared:
        """Validate a job and encode its payload: every error surfaces here, before any write."""
        payload = payload_json(spec, name, data)
        if len(payload) > self.settings.max_payload_bytes:
            raise PayloadTooLarge(len(payload), self.settings.max_payload_bytes)
        if idempotency_key is not None or trace_id is not None:
            for label, value in (("idempotency_key", idempotency_key), ("trace_id", trace_id)):
                if value is not None and (not value or len(value) > 256 or not value.isprintable()):
                    raise InvalidPayload(spec.name, name, [(label, "must be 1-256 printable characters")])
        return _Prepared(name, payload, _delay_s(delay), idempotency_key, trace_id)

    @staticmethod
    def _word(job: _Prepared, now: float, trace: str | None) -> str:
        """One job's script argument: id, name, key, trace id, due time and payload joined by the
        unit separator. The id is chosen here, before anything is sent: a resent call finds its
        job. ``trace``: a bulk call's traceparent, in place of each request's own trace id."""
        due = int((now + job.delay) * 1000) if job.delay else 0
        return (
            f"{new_job_id()}\x1f{job.name}\x1f{job.idempotency_key or ''}\x1f{trace or job.trace_id or ''}"
            f"\x1f{due}\x1f{job.payload}"
        )

    def args(self, spec: QueueSpec, jobs: Sequence[_Prepared], trace: str | None = None) -> list[Any]:
        """The script's arguments for ``jobs``, for a client that packs its own commands (a cluster's)."""
        now = time.time()
        return [*self.head(spec, int(now * 1000)), *(self._word(job, now, trace) for job in jobs)]

    def command(self, spec: QueueSpec, jobs: Sequence[_Prepared], trace: str | None = None) -> bytes:
        """The EVALSHA of the enqueue script for ``jobs``, as sent: the same call as ``args``."""
        now = time.time()
        now_ms = str(int(now * 1000))
        _spec, _fixed, before_now, after_now, head_words = self._fixed(spec)
        if len(jobs) == 1:  # a single enqueue: no list to join (7% of its instructions)
            words = bulk(self._word(jobs[0], now, trace))
        else:
            words = "".join(map(bulk, [self._word(job, now, trace) for job in jobs]))
        count = head_words + len(jobs)
        return f"*{count}\r\n{before_now}${len(now_ms)}\r\n{now_ms}\r\n{after_now}{words}".encode()

    def prepare_all(self, queue: str, jobs: Iterable[JobRequest | tuple[str, Any]]) -> list[_Prepared]:
        spec = get_queue(queue)
        return [
            self.prepare(spec, j.name, j.data, j.idempotency_key, j.delay, j.trace_id)
            if isinstance(j, JobRequest)
            else self.prepare(spec, j[0], j[1])
            for j in jobs
        ]

    @staticmethod
    def answers(reply: Sequence[bytes | str]) -> list[str]:
        """The script's answer per job (an id, or ``dup:<id>``), as text."""
        return [raw.decode() if isinstance(raw, bytes) else raw for raw in reply]

    @staticmethod
    def results(reply: Sequence[bytes | str]) -> list[EnqueueResult]:
        return [EnqueueResult.of(a) for a in _Encoder.answers(reply)]


class Producer:
    """Concurrent ``enqueue`` callers share round trips: a caller with no enqueue in flight sends
    its job at once (a lone caller waits for nothing); callers arriving while one is in flight
    queue their (validated) jobs, and as soon as it returns they go together, one script call per
    queue and per SHARED_BATCH jobs, SHARED_IN_FLIGHT such calls at most in flight, each caller
    getting its own id or error. No timer: a batch is whatever queued meanwhile."""

    def __init__(self, client: Any | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.client = client if client is not None else async_client(self.settings)
        self._owns_client = client is None
        self._scripts = Scripts(self.client)
        self._enc = _Encoder(self.settings, self._scripts.enqueue.sha)
        self._in_flight = 0  # single enqueues sent and not yet answered
        # the event loop of the enqueue in flight and of the flusher, while there is one: a caller
        # on it shares their round trip; one on another loop finds what an ended loop left (_submit)
        self._busy_on: asyncio.AbstractEventLoop | None = None
        self._queued: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._cluster = is_cluster(self.client)
        # with a client of its own: connections of its pool held for enqueue calls (as many as
        # were ever in flight at once), and the event loop they belong to; a client given to it
        # (shared with the application, perhaps a bounded pool) lends one per call
        self._held: list[Any] = []
        self._idle: list[Any] = []
        self._held_loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        held, self._held, self._idle = self._held, [], []
        for conn in held:
            await self.client.connection_pool.release(conn)
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def enqueue(
        self,
        queue: str,
        job: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        idempotency_key: str | None = None,
        delay: Delay = None,
        trace_id: str | None = None,
    ) -> str:
        """Enqueue one job in one round trip; returns its id (the first job's id for a held key)."""
        return _id_of(await self._enqueue_one(queue, job, data, idempotency_key, delay, trace_id))

    async def enqueue_detailed(
        self,
        queue: str,
        job: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        idempotency_key: str | None = None,
        delay: Delay = None,
        trace_id: str | None = None,
    ) -> EnqueueResult:
        return EnqueueResult.of(await self._enqueue_one(queue, job, data, idempotency_key, delay, trace_id))

    def _enqueue_one(
        self,
        queue: str,
        job: str,
        data: Mapping[str, Any] | BaseModel,
        idempotency_key: str | None,
        delay: Delay,
        trace_id: str | None,
    ) -> Awaitable[str]:
        """The script's answer for one job (see ``_Encoder.answers``), to await. Not a coroutine
        itself, nor is ``_submit``: a caller sharing a round trip awaits its future directly, and
        is resumed through one frame instead of three (CPU per job with 100 concurrent callers)."""
        spec = get_queue(queue)
        span = tracing.publish(queue, job, 1, trace_id)
        if span is None:  # tracing off: the plain path
            return self._submit(spec, self._enc.prepare(spec, job, data, idempotency_key, delay, trace_id))
        return self._enqueue_traced(span, spec, job, data, idempotency_key, delay)

    async def _enqueue_traced(
        self,
        span: tracing.Publish,
        spec: QueueSpec,
        job: str,
        data: Mapping[str, Any] | BaseModel,
        idempotency_key: str | None,
        delay: Delay,
    ) -> str:
        with span:
            prepared = self._enc.prepare(spec, job, data, idempotency_key, delay, span.traceparent)
            answer = await self._submit(spec, prepared)
            span.sent(_id_of(answer))
            return answer

    def _submit(self, spec: QueueSpec, prepared: _Prepared) -> Awaitable[str]:
        loop = asyncio.get_running_loop()  # once: each lookup is a getpid system call in asyncio
        if self._busy_on is loop:  # share the next round trip
            future: asyncio.Future[str] = loop.create_future()
            self._queued.append((spec, prepared, future))
            return future
        return self._send_alone(spec, prepared, loop)

    async def _send_alone(self, spec: QueueSpec, prepared: _Prepared, loop: asyncio.AbstractEventLoop) -> str:
        if self._busy_on is not None:  # left by an event loop that ended with enqueues in flight
            self._in_flight, self._flusher, self._queued = 0, None, []
        self._busy_on = loop
        self._in_flight += 1
        shared: asyncio.Future[str] | None = None
        try:
            # one pass of the loop (not a timer): callers that came in the same pass (a burst of
            # requests read in one wake-up) queued behind this one, and all go together with the
            # flusher, not from this caller's task: its cancellation fails no one else's call
            await asyncio.sleep(0)
            if self._queued:
                shared = loop.create_future()
                self._queued.insert(0, (spec, prepared, shared))
            else:
                reply = await self._call(spec, (prepared,), None, loop)
        finally:
            if self._busy_on is loop:  # not dropped meanwhile: an ended loop's coroutines, closed
                self._in_flight -= 1  # late by the garbage collector, change nothing
                self._flush_queued(loop)
        if shared is not None:
            return await shared
        return self._enc.answers(reply)[0]

    def _flush_queued(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queued and self._flusher is None:
            self._flusher = loop.create_task(self._flush_loop(loop))
        elif not self._in_flight and self._flusher is None:
            self._busy_on = None

    async def _flush_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send what queued, as soon as it queued, with at most SHARED_IN_FLIGHT calls in flight of at
        most SHARED_BATCH jobs: while Redis runs one batch, the callers answered by the previous one
        prepare the next (their validation and encoding overlap the round trip)."""
        sending: set[asyncio.Task[None]] = set()
        try:
            while self._queued or sending:
                if self._queued and len(sending) < SHARED_IN_FLIGHT:
                    batch = self._queued[:SHARED_BATCH]
                    del self._queued[:SHARED_BATCH]
                    by_queue: dict[str, list[_Queued]] = {}
                    for item in batch:
                        by_queue.setdefault(item[0].name, []).append(item)
                    sending.update(
                        loop.create_task(self._send_queued(items, loop)) for items in by_queue.values()
                    )
                else:
                    done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # a failure reached its callers; here it only ends the loop
                # one pass of the loop (not a timer): callers just answered queue their next jobs
                await asyncio.sleep(0)
        finally:
            if self._busy_on is loop:  # not dropped meanwhile (see _submit)
                self._flusher = None
                self._flush_queued(loop)  # a failure above: what queued meanwhile still goes

    async def _send_queued(self, items: list[_Queued], loop: asyncio.AbstractEventLoop) -> None:
        jobs = [prepared for _spec, prepared, _future in items]
        try:
            answers = self._enc.answers(await self._call(items[0][0], jobs, None, loop))
        except BaseException as exc:  # every caller of the batch gets the error (a cancellation too)
            for _s, _p, future in items:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else RedisConnectionError(str(exc))
                    )
            if not isinstance(exc, Exception):
                raise
            return
        for (_s, _p, future), answer in zip(items, answers, strict=True):
            if not future.done():  # a caller that gave up (cancelled) has no one to tell
                future.set_result(answer)

    async def _call(
        self, spec: QueueSpec, jobs: Sequence[_Prepared], trace: str | None, loop: asyncio.AbstractEventLoop
    ) -> Any:
        """One enqueue script call, sent again once when the connection fails: the reply may be lost
        after the script ran, and the same ids find the jobs that call created (no duplicate).
        Sent on a held connection, packed by the encoder: redis-py's per-command pool checkout,
        retry and wrappers cost as much as Redis's own work for a shared batch of jobs."""
        script = self._scripts.enqueue
        if self._cluster:  # no one pool to hold a connection of: the client routes by slot
            keys_, args = self._enc.keys(spec.name), self._enc.args(spec, jobs, trace)
            try:
                return await script(keys=keys_, args=args)
            except (RedisConnectionError, RedisTimeoutError):
                return await script(keys=keys_, args=args)
        packed = self._enc.command(spec, jobs, trace)
        conn = await self._connection(loop)
        try:
            try:
                return await call_script(conn, script, packed)
            except (RedisConnectionError, RedisTimeoutError):
                await conn.disconnect()  # reconnected by call_script
                return await call_script(conn, script, packed)
        finally:  # a cancelled read has disconnected it (redis-py): reconnected when next used
            if self._owns_client:
                if self._held_loop is loop:  # not a connection of a loop that has closed
                    self._idle.append(conn)
            else:
                await self.client.connection_pool.release(conn)

    async def _connection(self, loop: asyncio.AbstractEventLoop) -> Any:
        if not self._owns_client:
            return await self.client.connection_pool.get_connection()
        if self._held_loop is not loop:  # connections of an event loop that has ended are not reused
            self._held, self._idle, self._held_loop = [], [], loop
        if self._idle:
            return self._idle.pop()
        conn = await self.client.connection_pool.get_connection()
        self._held.append(conn)
        return conn

    async def enqueue_many(
        self,
        queue: str,
        jobs: Iterable[JobRequest | tuple[str, Mapping[str, Any] | BaseModel]],
        *,
        chunk: int = 1000,
    ) -> list[EnqueueResult]:
        """Bulk enqueue: every job is validated first (nothing is written if one is invalid), then
        one script call per ``chunk`` jobs, each sent while the next chunk is encoded."""
        prepared = self._enc.prepare_all(queue, jobs)
        span = tracing.publish(queue, None, len(prepared), None)
        if span is None:
            return await self._enqueue_prepared(queue, prepared, chunk, None)
        with span:
            return await self._enqueue_prepared(queue, prepared, chunk, span.traceparent)

    async def _enqueue_prepared(
        self, queue: str, prepared: list[_Prepared], chunk: int, trace: str | None
    ) -> list[EnqueueResult]:
        spec = get_queue(queue)
        loop = asyncio.get_running_loop()
        sent: deque[asyncio.Future[Any]] = deque()  # at most CHUNKS_IN_FLIGHT, each on a pooled connection
        replies = []
        try:
            for start in range(0, len(prepared), chunk):
                if len(sent) >= CHUNKS_IN_FLIGHT:
                    replies.append(await sent.popleft())
                sent.append(loop.create_task(self._call(spec, prepared[start : start + chunk], trace, loop)))
                await asyncio.sleep(0)  # let this chunk go out while the next one is encoded
            while sent:
                replies.append(await sent.popleft())
        finally:  # a failed chunk: the ones already sent still finish (their replies are not lost)
            await asyncio.gather(*sent, return_exceptions=True)
        return [r for reply in replies for r in self._enc.results(reply)]


class SyncProducer:
    """For synchronous applications, and the fastest single enqueue: each thread keeps one
    connection of the client's pool and talks EVALSHA on it directly, one round trip per job,
    without the per-command pool checkout and wrappers (they cost as much as the round trip)."""

    def __init__(self, client: Any | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.client = client if client is not None else sync_client(self.settings)
        self._owns_client = client is None
        self._scripts = Scripts(self.client)
        self._enc = _Encoder(self.settings, self._scripts.enqueue.sha)
        self._local = threading.local()
        self._held: list[Any] = []
        self._lock = threading.Lock()
        self._cluster = is_cluster(self.client)

    def close(self) -> None:
        with self._lock:
            for conn in self._held:
                conn.disconnect()  # its socket's timeouts were moved (timeouts_in_kernel): a fresh one
                self.client.connection_pool.release(conn)
            self._held.clear()
        self._local = threading.local()
        if self._owns_client:
            self.client.close()

    def _connection(self) -> Any:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = self.client.connection_pool.get_connection()
            with self._lock:
                self._held.append(conn)
        elif not conn.is_connected:  # through connect(): a Sentinel's asks for the master's address
            conn.connect()
        if conn._sock is not getattr(local, "sock", None):  # a new socket (first use, reconnected)
            timeouts_in_kernel(conn)
            local.sock = conn._sock
            # redis-py's error classes; the answers (job ids) as text, decoded by hiredis
            local.reader = hiredis.Reader(replyError=BaseParser.parse_error, encoding="utf-8")
        return conn

    def _round_trip(self, conn: Any, packed: bytes) -> Any:
        """``packed`` sent on ``conn``'s socket and its reply read there, parsed by hiredis. redis-py's
        layers per call (the health-check stamp, an error text made per read, the parser's
        indirection) cost 5-10% of a single enqueue (interleaved rounds). A fault, the kernel's
        timeout among them (``timeouts_in_kernel``), drops the connection and raises ConnectionError,
        as redis-py does; so does an interruption mid-reply, which would leave it out of step."""
        sock, reader = conn._sock, self._local.reader
        try:
            sock.sendall(packed)
            reply = reader.gets()
            while reply is False:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("connection closed by the server")
                reader.feed(chunk)
                reply = reader.gets()
        except OSError as exc:
            conn.disconnect()
            raise RedisConnectionError(f"enqueue call failed: {exc}") from exc
        except BaseException:
            conn.disconnect()
            raise
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _enqueue_call(self, packed: bytes) -> Any:
        script = self._scripts.enqueue
        resent = loaded = load = False  # each recovery once (the async Producer._call's rule)
        while True:
            conn = self._connection()
            try:
                if load:
                    conn.send_command("SCRIPT", "LOAD", script.script)
                    conn.read_response()
                    load = False
                return self._round_trip(conn, packed)
            except NoScriptError:
                if loaded:
                    raise
                loaded = load = True
            except (RedisConnectionError, RedisTimeoutError):
                conn.disconnect()  # reconnected by _connection
                if resent:
                    raise
                resent = True

    def enqueue(
        self,
        queue: str,
        job: str,
        data: Mapping[str, Any] | BaseModel,
        *,
        idempotency_key: str | None = None,
        delay: Delay = None,
        trace_id: str | None = None,
    ) -> str:
        spec = get_queue(queue)
        span = tracing.publish(queue, job, 1, trace_id)
        if span is None:  # tracing off: the plain path
            return self._send_one(spec, self._enc.prepare(spec, job, data, idempotency_key, delay, trace_id))
        with span:
            job_id = self._send_one(
                spec, self._enc.prepare(spec, job, data, idempotency_key, delay, span.traceparent)
            )
            span.sent(job_id)
            return job_id

    def _send_one(self, spec: QueueSpec, prepared: _Prepared) -> str:
        if self._cluster:  # no one pool to hold a connection of: the client routes by slot
            reply = self._scripts.enqueue(
                keys=self._enc.keys(spec.name), args=self._enc.args(spec, (prepared,))
            )
            return _id_of(self._enc.answers(reply)[0])
        answer: str = self._enqueue_call(self._enc.command(spec, (prepared,)))[0]
        return _id_of(answer)

    def enqueue_many(
        self,
        queue: str,
        jobs: Iterable[JobRequest | tuple[str, Mapping[str, Any] | BaseModel]],
        *,
        chunk: int = 1000,
    ) -> list[EnqueueResult]:
        """Bulk enqueue, validated first; the chunks' script calls go in one pipeline."""
        prepared = self._enc.prepare_all(queue, jobs)
        span = tracing.publish(queue, None, len(prepared), None)
        if span is None:
            return self._enqueue_prepared(queue, prepared, chunk, None)
        with span:
            return self._enqueue_prepared(queue, prepared, chunk, span.traceparent)

    def _enqueue_prepared(
        self, queue: str, prepared: list[_Prepared], chunk: int, trace: str | None
    ) -> list[EnqueueResult]:
        spec = get_queue(queue)
        batches = [
            self._enc.args(spec, prepared[i : i + chunk], trace) for i in range(0, len(prepared), chunk)
        ]
        ks = self._enc.keys(queue)
        for attempt in (1, 2):  # sent again once on a connection failure: the ids make it idempotent
            try:
                replies = self._send_batches(ks, batches)
                break
            except (RedisConnectionError, RedisTimeoutError):
                if attempt == 2:
                    raise
        return [r for reply in replies for r in self._enc.results(reply)]

    def _send_batches(self, ks: list[str], batches: list[list[Any]]) -> list[Any]:
        if self._cluster:  # a cluster pipeline refuses scripts: one call per chunk
            return [self._scripts.enqueue(keys=ks, args=a) for a in batches]
        with self.client.pipeline(transaction=False) as pipe:
            for a in batches:
                self._scripts.enqueue(keys=ks, args=a, client=pipe)
            return list(pipe.execute())


# ---- module-level API with a default producer -------------------------------------------------

_default: Producer | None = None


def default_producer() -> Producer:
    global _default
    if _default is None:
        _default = Producer()
    return _default


async def enqueue(
    queue: str,
    job: str,
    data: Mapping[str, Any] | BaseModel,
    *,
    idempotency_key: str | None = None,
    delay: Delay = None,
    trace_id: str | None = None,
) -> str:
    return await default_producer().enqueue(
        queue, job, data, idempotency_key=idempotency_key, delay=delay, trace_id=trace_id
    )


async def enqueue_many(
    queue: str, jobs: Iterable[JobRequest | tuple[str, Mapping[str, Any] | BaseModel]], *, chunk: int = 1000
) -> list[EnqueueResult]:
    return await default_producer().enqueue_many(queue, jobs, chunk=chunk)


# One typed helper per product queue. The queue name is the only thing each states; job names and
# models come from the registry (a test checks these cover exactly the registry's queues).
async def _on(queue: str, job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await enqueue(queue, job, data, **opts)


async def enqueue_ai_content(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("ai:content", job, data, **opts)


async def enqueue_ai_seo(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("ai:seo", job, data, **opts)


async def enqueue_ai_review(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("ai:review", job, data, **opts)


async def enqueue_workflows_run(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("workflows:run", job, data, **opts)


async def enqueue_plugins_execute(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("plugins:execute", job, data, **opts)


async def enqueue_analytics_process(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("analytics:process", job, data, **opts)


async def enqueue_analytics_snapshot(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("analytics:snapshot", job, data, **opts)


async def enqueue_email_send(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("email:send", job, data, **opts)


async def enqueue_otp_send(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("otp:send", job, data, **opts)


async def enqueue_webhooks_deliver(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("webhooks:deliver", job, data, **opts)


async def enqueue_media_optimize(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("media:optimize", job, data, **opts)


async def enqueue_search_index(job: str, data: Mapping[str, Any] | BaseModel, **opts: Any) -> str:
    return await _on("search:index", job, data, **opts)
