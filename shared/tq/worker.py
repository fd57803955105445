"""The consumer runtime: one ``QueueRunner`` per queue inside a ``Worker`` process.

Per queue: a reader prefetches entries with XREADGROUP (up to two pools' worth), a dispatcher
starts them as tasks while the pause gate is open, the live concurrency limit has room and the
rate limit allows; finished jobs are settled by one Lua call per accumulated batch (ack + record,
ack + delayed, ack + DLQ, atomically). A promoter moves due delayed jobs back, a reclaimer takes
over entries of dead consumers, and live entries are touched so they are never reclaimed while
this process runs them.

The intake is our own XREADGROUP loop rather than a FastStream subscriber: measured here,
FastStream's per-message dispatch tops out near 1-1.5k jobs/s and its batch mode couples the next
fetch to the slowest job of a batch (docs/engine.md, Decisions). FastStream hosts the worker
(``tq.worker_app``): broker connection, lifecycle, signals and the control channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from hiredis import pack_command
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from tq import config, keys, tracing
from tq.cancel import CancelWatch, control_message
from tq.connection import HeldConnection, bulk, is_cluster, packed_after
from tq.envelope import (
    LEGACY_FIELD,
    Envelope,
    entry_envelope,
    entry_fields,
    entry_id_order,
    entry_job_id,
    entry_payload_json,
    envelope_json,
    plain_entry,
)
from tq.errors import JobTimeout, NoHandler, RateLimited
from tq.handlers import HandlerRegistry, JobContext, default_handlers
from tq.loopwatch import LoopWatchdog
from tq.observe import INVALID_ERRORS, Observer
from tq.producer import validation_errors
from tq.queue_config import RuntimeConfig, parse_hash
from tq.ratelimit import RateLimiter, paused_for
from tq.registry import QueueSpec
from tq.retry import is_last_failure, retry_delay_s
from tq.scripts import Scripts
from tq.settings import Settings, get_settings
from tq.supervise import Supervisor

log = logging.getLogger("tq.worker")

_STACK_LIMIT = 8000
_CANCEL_WAIT_S = 5.0  # how long a stop waits for jobs it cancelled past the grace period
# /readyz: a read that has not returned this long past its BLOCK time means intake is stalled
# (Redis busy: a long script, DEBUG SLEEP, a hung connection without a socket timeout).
INTAKE_STALL_S = 3.0
LOOP_BLOCK_S = 1.0  # the loop-lag watchdog reports a loop blocked this long (tq.loopwatch)


def _own_cancellation(exc: BaseException) -> bool:
    """Whether ``exc``, raised out of a handler, is the process's own stop rather than the job's
    failure: an interpreter exit, or a cancellation of the running task itself (shutdown past
    its grace). A ``CancelledError`` the handler raised or let escape from something it awaited,
    or any other ``BaseException``, is the job's failure."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        return True
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0
    return False


def new_consumer_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def ensure_group(client: Any, queue: str) -> None:
    """Create the consumer group at id 0 (not ``$``: entries added before the group exist count)."""
    try:
        await client.xgroup_create(keys.stream(queue), keys.GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _attempt(fields: dict[bytes, bytes], env: Envelope) -> int:
    try:
        return max(1, int(fields.get(b"a", env.attempt)))
    except ValueError:
        return env.attempt


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _entry_ms(eid: bytes) -> int:
    """The time (ms) a stream entry was added, from its id."""
    return int(eid.split(b"-", 1)[0])


def _failure(error_type: str, message: str, stack: str = "", *, suspect: bool = False) -> str:
    failure: dict[str, Any] = {"type": error_type, "message": message[:2000], "stack": stack[-_STACK_LIMIT:]}
    if suspect:
        failure["suspect"] = True
    return json.dumps(failure)


class IsolationGate:
    """Lets a suspect job (one that was running when a consumer died) run alone in this process.

    Ordinary jobs ``enter()`` at once (a counter) unless a suspect runs or waits; a suspect
    ``enter_alone()`` waits until no job runs, and holds ordinary ones back until it ends.
    """

    def __init__(self) -> None:
        self.running = 0
        self.alone = False
        self.waiting_alone = 0
        self._changed = asyncio.Event()

    def _signal(self) -> None:
        self._changed.set()  # wakes everyone waiting on this event; later waiters get a fresh one
        self._changed = asyncio.Event()

    async def enter(self) -> None:
        while self.alone or self.waiting_alone:
            await self._changed.wait()
        self.running += 1

    async def enter_alone(self) -> None:
        self.waiting_alone += 1
        try:
            while self.alone or self.running:
                await self._changed.wait()
        finally:
            self.waiting_alone -= 1
        self.alone = True

    def leave(self, alone: bool = False) -> None:
        if alone:
            self.alone = False
            self._signal()
        else:
            self.running -= 1
            if self.waiting_alone and not self.running:
                self._signal()


# What an op carries of its job, in this order: id, name, attempt, idempotency key, trace id,
# enqueued (ms; "" when unknown), the payload's JSON as the entry held it ("": none) and when the
# job was due (epoch s; 0: unknown). Id, name, key and trace never hold the separator (_clean).
_Facts = tuple[str, str, int, str, str, "int | str", str, float]


class _Op:
    """One settle operation: ``packed`` is its argument of the settle script (fields joined by \\x1f).

    The other attributes are what an observer reads (``tq.observe.Settled``).
    """

    __slots__ = (
        "attempt",
        "duration_ms",
        "eid",
        "invalid",
        "job_id",
        "kind",
        "name",
        "packed",
        "ready_at",
        "reclaimed",
        "started",
    )

    def __init__(
        self,
        kind: str,
        eid: bytes,
        facts: _Facts,
        started: float,
        duration_ms: float = 0.0,
        a: str = "",
        b: str = "",
        invalid: bool = False,
        reclaimed: bool = False,
    ) -> None:
        job_id, name, attempt, idem, trace, enqueued_ms, payload, ready_at = facts
        self.eid = eid
        self.job_id = job_id
        self.kind = kind
        self.name = name
        self.attempt = attempt
        self.started = started
        self.duration_ms = duration_ms
        self.ready_at = ready_at
        self.invalid = invalid
        self.reclaimed = reclaimed
        # one f-string (half the cost of a join of str() calls); ``a`` is JSON, a number or clean
        # text and b is JSON (a raw \x1f is escaped); the payload last: the script takes the rest
        # of the argument as it is
        self.packed = (
            f"{kind}\x1f{eid.decode()}\x1f{job_id}\x1f{name}\x1f{attempt}\x1f{int(started * 1000)}"
            f"\x1f{duration_ms:.3f}\x1f{idem}\x1f{trace}\x1f{a}\x1f{b}\x1f{enqueued_ms}\x1f{payload}"
        )


def _clean(value: str) -> str:
    """Fields are joined by the unit separator; user strings must not carry one."""
    return value.replace(_SEP, " ")


_SEP = "\x1f"


def _facts(job_id: str, name: str, attempt: int, idem: str = "", trace: str = "", enqueued_ms: int | str = "",
           payload: str = "", ready_at: float = 0.0) -> _Facts:  # fmt: skip
    """Facts of a job not known well-formed (an envelope's, a forged entry's), cleaned."""
    if _SEP in job_id or _SEP in name or _SEP in idem or _SEP in trace:  # forged
        job_id, name, idem, trace = map(_clean, (job_id, name, idem, trace))
    return job_id, name, attempt, idem, trace, enqueued_ms, payload, ready_at


def _job_facts(env: Envelope, attempt: int, payload: str) -> _Facts:
    """What an op carries of a job's envelope (``payload``: its JSON as the entry held it)."""
    return _facts(
        env.id, env.name, attempt, env.idempotency_key or "", env.trace_id or "",
        int(env.enqueued_at * 1000), payload, env.not_before or env.enqueued_at,
    )  # fmt: skip


def _job_op(
    kind: str,
    eid: bytes,
    env: Envelope,
    payload: str,
    attempt: int,
    started: float,
    a: str = "",
    b: str = "",
    *,
    reclaimed: bool = False,
) -> _Op:
    """An op on a job that was read and not run (a reclaim): it carries the envelope's fields
    for the job record, which keeps them once the entry is deleted."""
    if kind == "d":  # the DLQ entry keeps the whole envelope
        a = envelope_json(env)
    return _Op(kind, eid, _job_facts(env, attempt, payload), started, 0.0, a, b, reclaimed=reclaimed)


def _ran(
    kind: str, eid: bytes, facts: _Facts, started: float, a: str = "", b: str = "", invalid: bool = False
) -> _Op:
    """The outcome of a job this worker took to run (``started``: when), its run time until now."""
    return _Op(kind, eid, facts, started, (time.time() - started) * 1000, a, b, invalid)


def _dead(eid: bytes, facts: _Facts, started: float, env: Envelope, error_type: str, message: str,
          stack: str = "") -> _Op:  # fmt: skip
    """A job dead-lettered by this worker: its DLQ entry keeps the whole envelope."""
    failure = _failure(error_type, message, stack)
    return _ran("d", eid, facts, started, envelope_json(env), failure, error_type in INVALID_ERRORS)


_ENVELOPE_ROOM = 4096  # the envelope's own fields around the payload, generously


def _raw(fields: dict[bytes, bytes]) -> bytes:
    """An unreadable entry's content, kept for inspection: the legacy envelope, or its payload."""
    kept = fields.get(LEGACY_FIELD) or fields.get(b"p")
    return kept or b" ".join(k + b"=" + v[:200] for k, v in fields.items())


def _unreadable(eid: bytes, raw: bytes, started: float, reason: str) -> _Op:
    """A forged or corrupt entry: dead-lettered under its entry id, raw content kept for inspection."""
    facts = _facts("entry-" + eid.decode(), "(unknown)", 1)
    kept = _clean(raw[:_STACK_LIMIT].decode(errors="replace"))
    return _Op("d", eid, facts, started, 0.0, kept, _failure("InvalidEnvelope", reason), invalid=True)


def settle_keys(queue: str) -> list[str]:
    """The KEYS of the settle script (``scripts/settle.lua``) for ``queue``."""
    return [
        keys.stream(queue),
        keys.delayed(queue),
        keys.dlq(queue),
        keys.completed_index(queue),
        keys.dead_index(queue),
        keys.counters(queue),
        keys.audit(queue),
        keys.started(queue),
        keys.cancels(queue),
        keys.progress(queue),
    ]


class QueueRunner:
    def __init__(self, worker: Worker, spec: QueueSpec) -> None:
        self.w = worker
        self.spec = spec
        self.queue = spec.name
        self.stream = keys.stream(spec.name)
        self.cfg: RuntimeConfig = config.defaults(spec.name, worker.settings)
        self.job_timeouts: dict[str, float] = {}  # job name -> time limit (s), see _set_timeouts
        self._set_timeouts(queue_override=False)
        self.local: deque[tuple[bytes, dict[bytes, bytes]]] = deque()  # fetched, not started
        self.held: set[bytes] = set()  # fetched and not yet settled
        self.running = 0
        self.ops: list[_Op] = []
        self.slots: dict[int, asyncio.Task[None]] = {}  # one long-lived task per concurrency slot
        self._idle_slots: deque[asyncio.Future[None]] = deque()  # slots waiting for an entry
        self._slot_coming: asyncio.Future[None] | None = None  # a slot woken and not yet resumed
        self._wake_reader = asyncio.Event()
        self._wake_settle = asyncio.Event()
        # the queue's rate limit across replicas (checked at intake) and its RateLimited pause:
        # monotonic time until which this process's intake holds (0: none; read with the config)
        self.limiter = RateLimiter(worker.client, spec.name, worker.consumer_id, worker.settings.block_ms)
        self.rate_paused_until = 0.0
        self._flushing = asyncio.Lock()  # one settle call at a time: settle_now waits for the one in flight
        self._settle_keys = settle_keys(self.queue)
        # the words of the commands the reader, settler and writer send that never change, packed
        # once (connection.bulk): the settle call's up to its time, the mark's HSET up to the mark,
        # the read per count
        settle_head = ("EVALSHA", worker.scripts.settle.sha, len(self._settle_keys), *self._settle_keys,
                       keys.prefix(self.queue), keys.GROUP)  # fmt: skip
        self._settle_head = ("".join(bulk(str(w)) for w in settle_head), len(settle_head))
        self._progress_key = keys.progress(self.queue)
        mark_head = ("HSET", self._progress_key, worker.consumer_id)
        self._mark_head = ("".join(map(bulk, mark_head)), len(mark_head))
        self._reads: dict[int, bytes] = {}
        self.watch_until = 0.0  # epoch s: record job starts until then (tq.keys.crash_watch)
        self.audit_full = False  # the audit backlog is at its bound: intake waits (check_audit_backlog)
        self.taken = b""  # the newest entry taken to run (keys.progress, _after_pass)
        self.marked = b""  # the newest mark Redis has (the writer's, a read's or a settle's)
        self.mark_in_hset = b""  # the mark a plain HSET in flight carries (the writer's or a read's)
        self.mark_in_settle = b""  # the mark the settle call in flight carries
        self._progress_writer: asyncio.Task[None] | None = None
        self._after_pass_due = False  # an _after_pass call is scheduled
        # the connections the reader, the settler and the progress writer keep for their commands
        # (none on a cluster: its client routes by slot)
        held = not is_cluster(worker.client)
        self.read_conn = HeldConnection(worker.client) if held else None
        self.settle_conn = HeldConnection(worker.client) if held else None
        self.mark_conn = HeldConnection(worker.client) if held else None
        self.reader: asyncio.Task[None] | None = None
        self.settler: asyncio.Task[None] | None = None
        self.read_unit = f"reader:{self.queue}"  # supervised units (tq.supervise)
        self.settle_unit = f"settler:{self.queue}"
        self.reading_since = 0.0  # monotonic start of the read in flight (0: none): stall check
        self.settling_since = 0.0  # monotonic start of the settle in flight (0: none): stall check
        # the last read found fewer entries than it asked for: the stream is drained, the next read
        # waits for new ones, and a settle may ride on it (_read); behind a backlog the settler
        # sends its own, so that a read never waits in Redis behind a settle
        self.caught_up = True

    # ---- config ------------------------------------------------------------------------------
    def _set_timeouts(self, queue_override: bool) -> None:
        """Each job name's time limit: a per-queue ``timeout_s`` given by ``TQ_QUEUES`` or the live
        config applies to every job; else the registry's per-job value, else its queue value."""
        tq_queues = self.w.settings.queues.get(self.queue)
        if queue_override or getattr(tq_queues, "timeout_s", None) is not None:
            self.job_timeouts = dict.fromkeys(self.spec.jobs, self.cfg.timeout_s)
        else:
            self.job_timeouts = {
                job: self.spec.job_timeouts.get(job, self.cfg.timeout_s) for job in self.spec.jobs
            }

    async def refresh_config(self) -> None:
        override = parse_hash(await self.w.client.hgetall(keys.config(self.queue)))
        cfg = config.resolve(self.queue, override, self.w.settings)
        watch_ms = await self.w.client.pttl(keys.crash_watch(self.queue))
        self.watch_until = time.time() + watch_ms / 1000 if watch_ms > 0 else 0.0
        await self.pause_intake(await paused_for(self.w.client, self.queue))
        queue_timeout = getattr(override, "timeout_s", None) is not None  # even when equal to the default
        if cfg != self.cfg:
            pausing = cfg.paused and not self.cfg.paused
            if cfg.paused != self.cfg.paused:
                log.info("%s %s", self.queue, "paused" if cfg.paused else "resumed")
            self.cfg = cfg
            if self.slots:
                self.resize_pool()
            self.wake_slots()
            self._wake_reader.set()
            if pausing:  # a paused consumer holds only its in-flight jobs
                await self.release_unstarted()
        self._set_timeouts(queue_override=queue_timeout)
        await self.check_audit_backlog()

    async def check_audit_backlog(self) -> None:
        """Backpressure instead of lost history: while the queue's unwritten audit records
        (``tq:{q}:audit``; the writer deletes what it wrote) are at ``audit_backlog_max``, this
        consumer takes no new jobs; it resumes below 90 % of it. Jobs in flight still settle."""
        s = self.w.settings
        if not s.audit_enabled:
            return
        backlog = int(await self.w.client.xlen(keys.audit(self.queue)))
        full = backlog >= (s.audit_backlog_max * 0.9 if self.audit_full else s.audit_backlog_max)
        if full != self.audit_full:
            if full:
                log.warning(
                    "%s: %d audit records wait for the database (bound %d): intake waits",
                    self.queue,
                    backlog,
                    s.audit_backlog_max,
                )
            else:
                log.warning("%s: the audit backlog is down to %d: intake resumes", self.queue, backlog)
            self.audit_full = full
            self._wake_reader.set()

    def read_count(self) -> int:
        """Entries per read: one pool's worth (measured: smaller reads pipeline better than 100+)."""
        return min(self.w.settings.read_batch, self.cfg.concurrency)

    def prefetch_limit(self) -> int:
        """Entries held at most: the running ones, as many again waiting to start, and one read
        in flight, so reading the next batch overlaps running and settling this one."""
        return 2 * self.cfg.concurrency + self.read_count()

    def max_attempts(self, env: Envelope) -> int:
        return env.max_attempts or self.cfg.retry.attempts

    # ---- intake ------------------------------------------------------------------------------
    async def read_loop(self) -> None:
        """The intake. Supervised (``Worker.supervisor``): an error reply or connection fault
        propagates, is logged and counted there, and the loop runs again after a backoff.

        A queue with a rate limit asks the shared limiter (``tq.ratelimit``) for permits before
        each read and reads no more entries than it got and than it can start now, so limited jobs
        wait in the stream; an unlimited queue reads as before, with no extra round trip."""
        sup, unit = self.w.supervisor, self.read_unit
        waited = ""  # why the last round waited at the rate limit ("": it read): one count per wait
        while not self.w.stopping:
            if self.cfg.paused or self.audit_full:
                await self._wait(self._wake_reader, self.w.settings.config_poll_s)
                continue
            if self.rate_paused_until:  # a RateLimited pause (tq.ratelimit), known locally
                left = self.rate_paused_until - time.monotonic()
                if left > 0:
                    waited = await self._rate_wait("paused", left, waited)
                    continue
                self.rate_paused_until = 0.0
            limit = self.cfg.rate_limit
            room = self.prefetch_limit() - len(self.held)
            if limit is not None:  # only what starts at once: a permit is a start
                room = min(room, self.cfg.concurrency - len(self.held))
            if room <= 0:
                await self._wait(self._wake_reader, 1.0)
                continue
            count = min(self.read_count(), room)
            grant = None
            if limit is not None:
                grant = await self.limiter.take(count, limit)
                if not grant.permits:
                    reason = "paused" if grant.paused else "limit"
                    waited = await self._rate_wait(reason, grant.wait_s, waited)
                    continue
                count = grant.permits
            waited = ""
            self.reading_since = time.monotonic()
            try:
                entries = await self._read(count)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await ensure_group(self.w.client, self.queue)  # stream or group deleted under us
                entries = []
            finally:
                self.reading_since = 0.0
            sup.recovered(unit)
            for eid, fields in entries:
                self.held.add(eid)
                self.local.append((eid, fields))
            got = len(entries)
            self.caught_up = got < count
            if grant is not None and limit is not None:  # the permits not used go back
                await self.limiter.commit(grant, got, limit)
            if not got:
                continue
            if self.cfg.paused or self.rate_paused_until:  # paused while the read blocked: give back
                await self.release_unstarted()
            self.wake_next()
            if self.caught_up:  # the next read waits for new entries: first one pass of the loop,
                # for the slots to take what came and end what ends at once, so that the read
                # carries their mark and outcomes (_read). Behind a backlog it goes at once, to
                # come back while these run
                await asyncio.sleep(0)

    async def _read(self, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` new entries of the stream (none when the block time passes). What is due
        to be written goes ahead of the read, in the same write (one system call, one wake-up of
        Redis): the outcomes of jobs that ended, as the settle call the settler would send now
        (carrying the progress mark) when the stream is drained (``caught_up``), else the mark when
        Redis lacks it (``_after_pass``)."""
        block = self.w.settings.block_ms
        if self.read_conn is None:
            reply = await self.w.client.xreadgroup(
                keys.GROUP, self.w.consumer_id, {self.stream: ">"}, count=count, block=block
            )
            return [entry for _stream, entries in reply or () for entry in entries]
        read = self._reads.get(count)
        if read is None:
            read_words: tuple[Any, ...] = (
                b"XREADGROUP", b"GROUP", keys.GROUP, self.w.consumer_id,
                b"COUNT", count, b"BLOCK", block, b"STREAMS", self.stream, b">",
            )  # fmt: skip
            read = self._reads[count] = pack_command(read_words)
        ahead = b""
        if self.caught_up and self.ops and not self._flushing.locked():
            await self._flushing.acquire()  # at once, being free: the settler waits for this one
            if self.ops:
                ops, self.ops = self.ops, []
                words, mark = self._settle_words(ops)
                ahead = packed_after(*self._settle_head, words)
                on_reply = functools.partial(self._settle_ride_reply, ops, mark)
                self.settling_since = time.monotonic()
            else:
                self._flushing.release()
        if not ahead and (mark := self._mark_to_send(plain=True)):
            self.mark_in_hset = mark
            ahead = packed_after(*self._mark_head, [mark.decode()])
            on_reply = functools.partial(self._read_mark_reply, mark)
        if not ahead:
            reply = await self.read_conn.send(read)
        else:  # a read that fails before the first reply gives it None: it may not have landed
            reply = await self.read_conn.send_behind(ahead, on_reply, read)
        if not reply:
            return []
        # RESP3 answers a map of stream -> entries, RESP2 a list of [stream, entries]
        streams = reply.values() if isinstance(reply, dict) else (entries for _stream, entries in reply)
        return [(eid, entry_fields(flat)) for entries in streams for eid, flat in entries]

    async def _rate_wait(self, reason: str, seconds: float, waited: str) -> str:
        """Wait at the rate limit (``reason``: ``limit``, no permit; ``paused``, a RateLimited
        pause) for ``seconds`` or until woken (a config change, a settle, a stop); reported to the
        observer as a new wait unless the previous round waited for the same reason."""
        began = time.monotonic()
        await self._wait(self._wake_reader, seconds)
        hook = self.w.rate_waited_hook
        if hook is not None:
            try:
                hook(self.queue, reason, time.monotonic() - began, reason != waited)
            except Exception:  # metrics must never stop the intake
                log.exception("%s: observer failed", self.queue)
        return reason

    async def pause_intake(self, seconds: float) -> None:
        """Hold this process's intake of the queue for ``seconds`` (a RateLimited pause across
        replicas, ``tq.ratelimit``), giving back what it fetched and has not started."""
        if seconds <= 0:
            return
        until = time.monotonic() + seconds
        if until <= self.rate_paused_until:
            return
        if not self.rate_paused_until:
            log.info("%s intake paused for %.3gs (rate limited)", self.queue, seconds)
        self.rate_paused_until = until
        self._wake_reader.set()
        await self.release_unstarted()

    async def _sit_out_pause(self) -> None:
        """Hold a RateLimited job's entry (pending, touched: never reclaimed) until the queue's
        pause ends, so that no replica takes it again before then; a stop ends the wait."""
        while not self.w.stopping:
            left = self.rate_paused_until - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.25))

    async def rate_limited(self, exc: RateLimited, job: str) -> None:
        """A handler raised ``RateLimited``: pause the queue's intake on every replica for its
        ``retry_after`` (capped at the backoff ``max_s``), this one at once."""
        seconds = min(max(0.0, exc.retry_after), self.cfg.retry.max_s)
        try:
            seconds = await self.limiter.pause(seconds)
        except (RedisError, OSError) as err:  # this replica still pauses; the others go on
            log.warning("%s: could not pause the queue across replicas: %s", self.queue, err)
        hook = self.w.job_rate_limited_hook
        if hook is not None:
            try:
                hook(self.queue, job)
            except Exception:
                log.exception("%s: observer failed", self.queue)
        await self.pause_intake(seconds)

    # ---- execution pool ----------------------------------------------------------------------
    # A slot task takes the next fetched entry as soon as its job ends, without a task per job
    # or a scheduler hop in between; the number of slots is the live concurrency.
    def resize_pool(self) -> None:
        """Start slots up to the live concurrency; surplus slots retire after their current job."""
        for index in range(self.cfg.concurrency):
            task = self.slots.get(index)
            if task is None or task.done():
                body = functools.partial(self.slot_loop, index)
                self.slots[index] = asyncio.create_task(
                    self.w.supervisor.run(
                        f"slot:{self.queue}", "slot", body, self.w.is_stopping, mark_down=False
                    ),
                    name=f"tq-slot-{self.queue}",
                )

    async def slot_loop(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        # this slot's task, looked up once: a cancel finds a job's handler by it (each lookup is
        # a getpid system call in asyncio, costly where system calls are)
        task = asyncio.current_task()
        while index < self.cfg.concurrency:
            if self.local and not self.cfg.paused and not self.w.stopping:
                eid, fields = self.local.popleft()
                if self.local:  # for the next entry, in case this job suspends (wake_next)
                    self.wake_next()
                self.taken = eid  # the progress mark (keys.progress), sent behind: _after_pass
                self._check_after_pass(loop)
                await self.run_entry(eid, fields, task)
                self._check_after_pass(loop)  # its outcome: the settler, unless the next read takes it
                continue
            if self.w.stopping:
                return
            woken = loop.create_future()
            self._idle_slots.append(woken)
            try:
                await woken
            finally:  # resumed, or cancelled while woken: no longer on its way
                if self._slot_coming is woken:
                    self._slot_coming = None
        if self.local:  # retired with an entry it was woken for: another slot takes it
            self.wake_next()

    def wake_next(self) -> None:
        """Wake one idle slot for the fetched entries, unless one is already on its way. Slots
        wake one by one, each as the one before takes an entry: a job that ends without
        suspending lets its slot take the next at once, so a batch of quick jobs runs in one slot
        and costs no wake-up of each of the others (measured: one idle slot woken in vain per
        job); jobs that suspend start one pass of the event loop apart."""
        if self._slot_coming is None:
            self._slot_coming = self.wake_slots(1)

    def wake_slots(self, n: int | None = None) -> asyncio.Future[None] | None:
        """Wake ``n`` idle slots, or every one (a stop, a config change: paused, resumed,
        resized); returns the last one woken (None: none was idle)."""
        idle, woken = self._idle_slots, None
        while idle and (n is None or n > 0):
            woken = idle.popleft()
            if not woken.done():  # a slot cancelled while idle left its future behind
                woken.set_result(None)
                if n is not None:
                    n -= 1
            else:
                woken = None
        return woken

    def _check_after_pass(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ask what a job taken or ended leaves to be written (``_after_pass``): when the stream is
        drained, one pass of the event loop later (once per pass), after the reader's next read
        went out with what it carries; behind a backlog no read carries anything: at once, so that
        no mark of a started job lags by a pass (a crash would give that job back free)."""
        if not self.caught_up:
            self._after_pass()
        elif not self._after_pass_due:
            self._after_pass_due = True
            loop.call_soon(self._after_pass)

    def _after_pass(self) -> None:
        """What the reader's next read did not carry (it goes out in the pass after a short read,
        ``_read``), or what jobs taken or ended behind a backlog leave: the outcomes wake the
        settler, and the progress mark, the newest entry taken to run, starts the writer unless a
        settle about to go carries it. Entries are taken in stream order, so a reclaim after a
        crash charges only the entries at or below the mark and gives the rest back free. The
        mark rides along with what is sent anyway: the next read (an HSET ahead of it in the same
        write) or a settle (``_flush``); the writer sends it on its own when neither does (a job
        taken while a read blocks, or while a settle is in flight): no mark waits behind a settle
        in flight, and entries that came with a read and ended at once cost no round trip of
        their own. Asked once a pass when the stream is drained, not as each job is taken or
        ends: no writer task and no settler step per batch for what the read carried."""
        self._after_pass_due = False
        if self.ops:
            self._wake_settle.set()
        if (not self.ops or self._flushing.locked()) and self._mark_to_send(plain=True):
            self._start_writer()

    def _start_writer(self) -> None:
        """Start the writer unless it runs: it sends the mark only if nothing else carries it."""
        if self._progress_writer is None or self._progress_writer.done():
            self._progress_writer = asyncio.create_task(self._write_progress())

    def _mark_to_send(self, plain: bool) -> bytes:
        """The mark a read (``plain``: an HSET) or a settle carries: the newest entry taken, unless
        Redis has it or it is on its way (b"": none). One plain HSET in flight at a time (a read's
        or the writer's): two on two connections could land out of order and move the mark back;
        the settle script keeps the newer of its mark and the stored one."""
        taken = self.taken
        if taken == self.marked or taken == self.mark_in_settle or taken == self.mark_in_hset:
            return b""
        return b"" if plain and self.mark_in_hset else taken

    def _read_mark_reply(self, mark: bytes, reply: Any) -> None:
        """The reply to the HSET of ``mark`` sent ahead of a read (None: the read failed first): the
        writer sends what Redis may lack."""
        self.mark_in_hset = b""
        if reply is not None and not isinstance(reply, ResponseError):
            self._marked(mark)
        if self.taken != self.marked:
            self._start_writer()

    async def _write_progress(self) -> None:
        while not self.ops or self._flushing.locked():  # else the settle about to go carries it
            mark = self._mark_to_send(plain=True)
            if not mark:
                return
            self.mark_in_hset = mark
            try:
                if self.mark_conn is None:
                    await self.w.client.hset(self._progress_key, self.w.consumer_id, mark)
                else:
                    await self.mark_conn.send(packed_after(*self._mark_head, [mark.decode()]))
            except (RedisError, OSError):  # a lagging mark only gives a started entry back free
                return
            finally:
                self.mark_in_hset = b""
            self._marked(mark)

    def _marked(self, mark: bytes) -> None:
        if not self.marked or entry_id_order(mark) > entry_id_order(self.marked):
            self.marked = mark

    def busy_slots(self) -> list[asyncio.Task[None]]:
        return [t for t in self.slots.values() if not t.done()]

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # no task per wait, as wait_for makes on 3.11
                await event.wait()
        event.clear()

    # ---- execution ---------------------------------------------------------------------------
    async def run_entry(self, eid: bytes, fields: dict[bytes, bytes], task: asyncio.Task[Any] | None) -> None:
        started = time.time()
        self.running += 1
        try:
            op = await self._execute(eid, fields, started, task)
        except Exception:
            # Not the handler's failure (those become ops) but ours, e.g. Redis gone mid-check: let go
            # of the entry unsettled, so it is reclaimed after the visibility timeout.
            log.exception("%s: entry %s could not be processed; left for reclaim", self.queue, eid)
            self.held.discard(eid)
            return
        except BaseException:  # the process stops (see _own_cancellation): no longer ours to touch
            self.held.discard(eid)
            raise
        finally:
            self.running -= 1
        if op.kind == "q":  # RateLimited: back to the stream when the pause ends, not while it lasts
            await self._sit_out_pause()
        self.ops.append(op)

    async def _execute(
        self, eid: bytes, fields: dict[bytes, bytes], started: float, task: asyncio.Task[Any] | None
    ) -> _Op:
        plain = plain_entry(fields)  # a fresh job: its id, name and time bounded, only its payload not
        size = len(fields[b"p"]) if plain else sum(map(len, fields.values()))  # no generator frame
        limit = self.w.settings.max_payload_bytes
        if size > limit + _ENVELOPE_ROOM:  # forged: the producer refuses such payloads
            what = "payload" if plain else "entry"
            reason = f"{what} of {size} bytes; payloads are limited to {limit}"
            return _unreadable(eid, _raw(fields), started, reason)
        env: Envelope | None = None
        payload: Any = None
        if plain:  # the hot path: no envelope is built to check its payload
            name = fields[b"n"].decode()
            model = self.spec.jobs.get(name)
            if model is not None:  # checked from its JSON (wire JSON: JSON mode, on either path);
                # a payload it refuses is reported below, from the envelope
                try:  # noqa: SIM105 (contextlib.suppress would make a context manager per job)
                    payload = model.__pydantic_validator__.validate_json(fields[b"p"])
                except ValidationError:
                    pass
        if payload is None:
            try:
                env = entry_envelope(fields, self.queue, _entry_ms(eid))
            except ValidationError as exc:
                reason = "; ".join(f"{f}: {r}" for f, r in validation_errors(exc))
                return _unreadable(eid, _raw(fields), started, reason)
            except ValueError as exc:  # not JSON, a field missing
                return _unreadable(eid, _raw(fields), started, str(exc))
            attempt, max_attempts = _attempt(fields, env), self.max_attempts(env)
            facts = _job_facts(env, attempt, entry_payload_json(fields, env))
            job_id, name, _, idem, trace, _, payload_json, _ = facts
        else:  # what plain_entry checked: a first attempt, nothing optional, the queue's own, its id
            # and name free of the separator (no _clean): no closures per job, one tuple of facts
            job_id, idem, trace, attempt = fields[b"i"].decode(), "", "", 1
            max_attempts = self.cfg.retry.attempts
            enqueued_ms = int(fields[b"t"])
            payload_json = fields[b"p"].decode()
            facts = (job_id, name, 1, "", "", enqueued_ms, payload_json, enqueued_ms / 1000)
        if env is not None:  # the slow path's checks (an entry that is not plain, or refused above)
            if env.queue != self.queue:
                msg = f"envelope names queue {env.queue!r}, read from {self.queue!r}"
                return _dead(eid, facts, started, env, "WrongQueue", msg)
            model = self.spec.jobs.get(name)
            if model is None:
                known = ", ".join(self.spec.jobs)
                msg = f"unknown job {name!r} on {self.queue}; known: {known}"
                return _dead(eid, facts, started, env, "UnknownJob", msg)
            try:
                payload = model.__pydantic_validator__.validate_json(payload_json)  # as the hot path
            except ValidationError as exc:
                msg = "; ".join(f"{f}: {r}" for f, r in validation_errors(exc))
                return _dead(eid, facts, started, env, "InvalidPayload", msg)
        handler = self.w.handlers.get(self.queue, name)
        if handler is None:
            env = env or entry_envelope(fields, self.queue, 0)
            msg = f"no handler registered for {self.queue} {name}"
            return _dead(eid, facts, started, env, NoHandler.__name__, msg)
        if idem:
            holder = await self.w.client.get(keys.idempotency(self.queue, idem))
            if holder is not None and holder.startswith(b"done:") and holder[5:].decode() != job_id:
                by = _clean(holder[5:].decode())
                done = f"idempotency key {idem!r} already completed by job {by}"
                return _ran("s", eid, facts, started, done)
        # its envelope: the one read, or built when first asked for (a dead letter, tracing,
        # ctx.envelope) from the entry
        ctx = JobContext(
            env or functools.partial(entry_envelope, fields, self.queue, 0),
            job_id, self.queue, name, trace or None, attempt, max_attempts,
            self.w.consumer_id, self.w.client, self.w.scripts, self.w.settings.events,
        )  # fmt: skip
        suspect = b"sx" in fields
        gate = self.w.gate
        if suspect:
            await gate.enter_alone()
        elif gate.alone or gate.waiting_alone:
            await gate.enter()
        else:  # the usual case, without a coroutine per job
            gate.running += 1
        try:
            if suspect:  # alone in Redis too: jobs that ended before it are settled first, so that if
                # it kills the process only the suspect is found started and unsettled
                for runner in self.w.runners.values():
                    await runner.settle_now()
            if suspect or self.watch_until > started:  # recorded before it runs: see reclaim_once
                await self.w.client.hset(keys.started(self.queue), eid, self.w.consumer_id)
            time_limit = self.job_timeouts.get(name, 0.0)
            deadline: asyncio.Timeout | None = None
            cancels = self.w.cancels  # no await from this check to the handler: a cancel finds its task
            if not cancels.begin(self.queue, job_id, ctx, task):  # cancelled since the fetch: never runs
                return _ran("x", eid, facts, started)
            try:
                try:
                    with tracing.job_span(self.queue, ctx.load_envelope, attempt, max_attempts):  # no-op: off
                        if time_limit:
                            async with asyncio.timeout(time_limit) as deadline:
                                result = await handler(ctx, payload)
                        else:
                            result = await handler(ctx, payload)
                finally:
                    cancelled = cancels.ended(self.queue, job_id)
            except BaseException as exc:  # costs nothing on success; any failure is the job's
                if cancelled:  # tq.cancel: ends 'cancelled', not retried, not dead-lettered
                    return _ran("x", eid, facts, started)
                if not isinstance(exc, Exception) and _own_cancellation(exc):
                    raise
                stack = traceback.format_exc()
                if deadline is not None and deadline.expired():  # cancelled at its time limit
                    exc = JobTimeout(f"{name} ran past its time limit of {time_limit:g}s and was cancelled")
                error_type = type(exc).__name__
                message = str(exc) or (
                    "" if isinstance(exc, Exception) else f"{error_type} raised out of the handler"
                )
                if isinstance(exc, RateLimited):  # not the job's failure: back to the stream, uncharged
                    await self.rate_limited(exc, name)
                    return _ran("q", eid, facts, started)
                if is_last_failure(exc, attempt, max_attempts):
                    return _dead(eid, facts, started, ctx.envelope, error_type, message, stack)
                due = time.time() + retry_delay_s(self.cfg.retry, attempt, exc)
                failure = _failure(error_type, message, stack)
                return _ran("r", eid, facts, started, str(int(due * 1000)), failure)
        finally:
            gate.leave(alone=suspect)
            if ctx.reporter is not None:  # its last report lands before the outcome
                await ctx.reporter.close()
        kept = "" if result is None else json.dumps(result, default=str)[:2000]
        return _ran("c", eid, facts, started, kept)

    # ---- settling ----------------------------------------------------------------------------
    async def settle_loop(self) -> None:
        while True:
            if not self.ops:
                # a settle riding on a read holds the lock: its ops may come back (_settle_ride_reply)
                if self.w.stopping and not self.busy_slots() and not self._flushing.locked():
                    return
                await self._wait(self._wake_settle, 0.5)
                continue
            ops, self.ops = self.ops, []
            await self.flush(ops)

    async def settle_now(self) -> None:
        """Settle every job that has finished, including a settle already in flight (the settler's
        or one riding on a read), before returning."""
        while True:
            ops, self.ops = self.ops, []
            if ops:
                await self.flush(ops)
                continue
            async with self._flushing:
                pass
            if not self.ops:  # none handed back by a ride that failed meanwhile
                return

    async def flush(self, ops: list[_Op]) -> None:
        """Settle ``ops`` in one script call; on a Redis error keep them and retry: never drop one."""
        async with self._flushing:
            await self._flush(ops)

    def _settle_words(self, ops: list[_Op]) -> tuple[list[str], bytes]:
        """The settle script's arguments for ``ops`` after its first two (prefix and group: packed
        in ``_settle_head``), as text, and the progress mark they carry (b"": none)."""
        s, cfg = self.w.settings, self.cfg
        mark = self.mark_in_settle = self._mark_to_send(plain=False)  # the progress mark rides along
        words = [
            str(int(time.time() * 1000)),
            self.queue,
            str(cfg.retention_completed),
            str(cfg.retention_failed),
            "1" if s.audit_enabled else "0",
            "1" if s.events else "0",
            self.w.consumer_id,
            str(cfg.dlq_max_len),
            mark.decode(),
        ]
        words += [op.packed for op in ops]
        return words, mark

    async def _flush(self, ops: list[_Op]) -> None:
        words, mark = self._settle_words(ops)
        self.settling_since = time.monotonic()
        try:
            while True:  # outcomes stay in memory until Redis takes them (supervised: logged, counted)
                try:
                    await self._settle_call(words)
                    break
                except (RedisError, OSError) as exc:
                    await asyncio.sleep(self.w.supervisor.failed(self.settle_unit, "settler", exc))
        finally:
            self.settling_since = 0.0
            self.mark_in_settle = b""
        self._settled(ops, mark)

    def _settle_ride_reply(self, ops: list[_Op], mark: bytes, reply: Any) -> None:
        """The reply to a settle call sent ahead of a read (None: the read failed first). Not
        settled, or not known to be: the ops go back to the settler, which sends them again (a
        settle that ran is a no-op the second time: its entries are no longer pending)."""
        self.settling_since = 0.0
        self.mark_in_settle = b""
        try:
            if reply is None or isinstance(reply, ResponseError):  # NOSCRIPT: the settler loads it
                self.ops[:0] = ops
                self._wake_settle.set()
            else:
                self._settled(ops, mark)
        finally:
            self._flushing.release()

    def _settled(self, ops: list[_Op], mark: bytes) -> None:
        """What follows a settle call that Redis took: the mark known, the entries let go, the
        observers told."""
        self.w.supervisor.recovered(self.settle_unit)  # per batch: ends an outage of the settler
        if mark:
            self._marked(mark)
        for op in ops:
            self.held.discard(op.eid)
        if self.w.observer is not None:
            try:
                self.w.observer.observe(self.queue, ops)
            except Exception:  # metrics must never stop the settling of jobs
                log.exception("%s: observer failed", self.queue)
        if self.w.on_settled is not None:
            try:
                self.w.on_settled(self.queue, [op.job_id for op in ops])
            except Exception:  # nor a settled hook (it may run between a read's two replies)
                log.exception("%s: on_settled hook failed", self.queue)
        self._wake_reader.set()

    async def _settle_call(self, words: list[str]) -> None:
        script = self.w.scripts.settle
        if self.settle_conn is None:
            await script(keys=self._settle_keys, args=[keys.prefix(self.queue), keys.GROUP, *words])
        else:
            await self.settle_conn.call_script(script, packed_after(*self._settle_head, words))

    async def release_connections(self) -> None:
        """At stop, once the tasks that used them have ended."""
        for held in (self.read_conn, self.settle_conn, self.mark_conn):
            if held is not None:
                await held.release()

    # ---- background duties -------------------------------------------------------------------
    async def promote_once(self) -> int:
        n = await self.w.scripts.promote(
            keys=[keys.delayed(self.queue), self.stream],
            args=[keys.prefix(self.queue), int(time.time() * 1000), self.w.settings.promote_batch],
        )
        return int(n)

    async def reclaim_once(self) -> int:
        """Take over entries idle past the visibility timeout (their consumer died or hung).

        Each counts as a failed attempt (``StalledJob``), so a job that keeps killing its consumer
        is dead-lettered after the attempt limit. Under crash watch (a consumer of this queue died
        recently, ``keys.crash_watch``, whose value is when the watch began) job starts are
        recorded, so an entry added to the stream after the watch began that has no start mark was
        fetched but never started: it goes back to the stream free. Older entries were delivered
        before their consumer recorded starts and are charged. A charged entry that
        had started is a suspect: the next consumer runs it alone, so a poison job stops taking
        innocent jobs down with it. Returns the number of entries charged.
        """
        min_idle = int(self.cfg.visibility_timeout_s * 1000)
        reclaimed = 0
        start = "0-0"
        watch_since: int | None = None  # ms; 0: no watch before this round
        for _ in range(100):  # bounded per round
            # whose entries these are, and how far each owner got (keys.progress), before claiming
            owners = await self._idle_owners(start, min_idle)
            if not owners:  # nothing idle from here on: no XAUTOCLAIM (the usual round)
                break
            progress = await self._progress_of(set(owners.values()))
            reply = await self.w.client.xautoclaim(
                self.stream, keys.GROUP, self.w.consumer_id, min_idle, start_id=start, count=100
            )
            start = reply[0]
            # An entry this process holds itself only looked idle (its touch was late, the loop
            # busy): XAUTOCLAIM has just reset its idle time, and it stays ours, uncharged.
            claimed = [
                (eid, fields) for eid, fields in reply[1] if fields is not None and eid not in self.held
            ]
            marks: list[Any] = []
            if claimed:
                if watch_since is None:
                    watch_since = await self._watch()
                marks = await self.w.client.hmget(keys.started(self.queue), [eid for eid, _ in claimed])
            ops = []
            now = time.time()
            for (eid, fields), mark in zip(claimed, marks, strict=True):
                try:
                    env = entry_envelope(fields, self.queue, _entry_ms(eid))
                except ValueError:
                    op = _unreadable(eid, _raw(fields), now, "unreadable entry reclaimed")
                    op.reclaimed = True
                    ops.append(op)
                    continue
                taken = progress.get(owners.get(eid, b""))
                if mark is None and (
                    # fetched, never started
                    (taken is not None and entry_id_order(eid) > entry_id_order(taken))
                    or (watch_since and _entry_ms(eid) > watch_since)  # likewise: no start mark
                ):
                    ops.append(_Op("q", eid, _facts(env.id, env.name, 0), now))
                    continue
                attempt = _attempt(fields, env)
                failure = _failure(
                    "StalledJob",
                    f"consumer stopped responding for "
                    f"{self.cfg.visibility_timeout_s:g}s while holding attempt {attempt}",
                    suspect=mark is not None,
                )
                payload_json = entry_payload_json(fields, env)
                if attempt >= self.max_attempts(env):
                    ops.append(_job_op("d", eid, env, payload_json, attempt, now, b=failure, reclaimed=True))
                else:  # run again now: a crash is not a reason to wait out a backoff
                    due = str(int(now * 1000))
                    ops.append(
                        _job_op("r", eid, env, payload_json, attempt, now, a=due, b=failure, reclaimed=True)
                    )
            if ops:
                await self.flush(ops)
                charged = sum(op.reclaimed for op in ops)
                if charged:
                    await self.w.client.hincrby(keys.counters(self.queue), "reclaimed", charged)
                reclaimed += charged
            if start in (b"0-0", "0-0"):
                break
        await self._forget_progress()
        return reclaimed

    async def _idle_owners(self, start: Any, min_idle: int) -> dict[bytes, bytes]:
        """Entry id -> consumer, for the entries the next XAUTOCLAIM round may take."""
        pending = await self.w.client.xpending_range(
            self.stream, keys.GROUP, min=start, max="+", count=100, idle=min_idle
        )
        return {p["message_id"]: _b(p["consumer"]) for p in pending}

    async def _progress_of(self, owners: set[bytes]) -> dict[bytes, bytes]:
        if not owners:
            return {}
        names = sorted(owners)
        marks = await self.w.client.hmget(keys.progress(self.queue), names)
        return {name: mark for name, mark in zip(names, marks, strict=True) if mark}

    async def _forget_progress(self) -> None:
        """Drop the progress marks of other consumers that hold nothing (gone, or idle): a mark
        only matters for pending entries, and a consumer writes its mark again at its next take.
        Dropping one is always safe: without a mark every entry of its owner is charged."""
        names = [
            n
            for n in await self.w.client.hkeys(keys.progress(self.queue))
            if n != self.w.consumer_id.encode()
        ]
        if not names:
            return
        info = await self.w.client.xpending(self.stream, keys.GROUP)
        holding = {_b(c["name"]) for c in info.get("consumers") or [] if int(c["pending"])}
        idle = [n for n in names if n not in holding]
        if idle:
            await self.w.client.hdel(keys.progress(self.queue), *idle)

    async def _watch(self) -> int:
        """Begin or renew the crash watch; when it began (ms), 0 when this call began it. A new
        watch is signalled so every consumer of the queue records starts from now on."""
        key, ttl_ms = keys.crash_watch(self.queue), int(self.w.settings.crash_watch_s * 1000)
        now_ms = int(time.time() * 1000)
        began = await self.w.client.set(key, now_ms, px=ttl_ms, nx=True)
        self.watch_until = time.time() + self.w.settings.crash_watch_s
        if began:
            await self.w.client.publish(keys.CONTROL_CHANNEL, json.dumps({"queue": self.queue}))
            return 0
        since = await self.w.client.get(key)
        await self.w.client.pexpire(key, ttl_ms)
        return int(since) if since and since.isdigit() else 0

    async def touch_once(self) -> None:
        """Reset the idle time of entries this process holds, so no one reclaims live work."""
        if not self.held:
            return
        pending = await self.w.client.xpending_range(
            self.stream,
            keys.GROUP,
            min="-",
            max="+",
            count=len(self.held) + 100,
            consumername=self.w.consumer_id,
        )
        ours = [p["message_id"] for p in pending if p["message_id"] in self.held]
        if ours:
            await self.w.client.xclaim(self.stream, keys.GROUP, self.w.consumer_id, 0, ours, justid=True)

    async def release_unstarted(self) -> None:
        """On shutdown, give fetched-but-unstarted entries back to the stream (no attempt charged)."""
        ops = []
        while self.local:
            eid, fields = self.local.popleft()
            ops.append(_Op("q", eid, _facts(entry_job_id(fields) or "", "", 0), 0.0))
        if ops:
            await self.flush(ops)

    def start(self) -> None:
        sup = self.w.supervisor
        self.reader = asyncio.create_task(
            sup.run(self.read_unit, "reader", self.read_loop, self.w.is_stopping),
            name=f"tq-read-{self.queue}",
        )
        self.settler = asyncio.create_task(
            sup.run(self.settle_unit, "settler", self.settle_loop), name=f"tq-settle-{self.queue}"
        )
        self.resize_pool()


class Worker:
    """Consumers for a set of queues in this process."""

    def __init__(
        self,
        client: Any,
        queues: Sequence[QueueSpec],
        handlers: HandlerRegistry | None = None,
        settings: Settings | None = None,
        consumer_id: str | None = None,
        family: str = "",
        on_settled: Callable[[str, list[str]], None] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.client = client
        self.on_settled = on_settled  # (queue, job ids) after their outcome is committed: benchmarks, tests
        self.observer = observer  # once per settled batch, after the commit: metrics (tq.observe)
        # its optional hooks (tq.observe.RateObserver), looked up once rather than at each call
        self.rate_waited_hook: Callable[[str, str, float, bool], None] | None = getattr(
            observer, "rate_waited", None
        )
        self.job_rate_limited_hook: Callable[[str, str], None] | None = getattr(
            observer, "job_rate_limited", None
        )
        # every long-lived task runs under it: failures logged, retried with backoff, counted
        self.supervisor = Supervisor(on_restart=getattr(observer, "task_restarted", None))
        self.watchdog: LoopWatchdog | None = None  # started with the worker
        self.settings = settings or get_settings()
        self.handlers = handlers if handlers is not None else default_handlers
        self.consumer_id = consumer_id or new_consumer_id()
        self.family = family
        self.scripts = Scripts(client)
        self.runners = {q.name: QueueRunner(self, q) for q in queues}
        self.stopping = False
        self.cancels = CancelWatch(client)  # cancel requests and the handler tasks they cancel
        self.gate = IsolationGate()  # suspects run alone in this process (see QueueRunner.reclaim_once)
        self.started_at = time.time()
        self._duties: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self.ready = False

    async def start(self, listen_control: bool = True) -> None:
        for r in self.runners.values():
            await ensure_group(self.client, r.queue)
            await r.refresh_config()
        await self.heartbeat_once()
        for r in self.runners.values():
            r.start()
        self._duties = [
            self._duty("promoter", self.settings.promote_interval_s, self._promote),
            self._duty("reclaimer", self.settings.reclaim_interval_s, self._reclaim),
            self._duty("config", self.settings.config_poll_s, self._refresh),
            # retried within its interval: a Redis back after an outage sees this consumer at once
            self._duty("heartbeat", self.settings.heartbeat_ttl_s / 3, self.heartbeat_once, cap=True),
            self._duty("touch", self._touch_interval, self._touch),
            self._duty("cancels", self._touch_interval, self._poll_cancels),  # markers: tq.cancel
        ]
        if listen_control:
            self._duties.append(
                asyncio.create_task(
                    self.supervisor.run("control", "control", self._listen_control, self.is_stopping),
                    name="tq-control",
                )
            )
        self.watchdog = LoopWatchdog(
            asyncio.get_running_loop(),
            QueueRunner._execute.__code__,
            LOOP_BLOCK_S,
            on_blocked=getattr(self.observer, "loop_blocked", None),
        )
        self.watchdog.start()
        self.ready = True
        log.info("worker %s consuming %s", self.consumer_id, ", ".join(self.runners))

    def _touch_interval(self) -> float:
        """A third of the shortest live visibility timeout: two touches can be late before a reclaim."""
        return max(0.02, min(r.cfg.visibility_timeout_s for r in self.runners.values()) / 3)

    async def on_control(self, message: dict[str, Any] | str | bytes) -> None:
        """A control message names the queue whose config changed, or a job to cancel (tq.cancel)."""
        asked = control_message(message)
        if asked is not None:
            self.cancels.request(*asked)
            return
        if isinstance(message, (bytes, str)):
            message = json.loads(message)
        runner = self.runners.get(str(message.get("queue", "")))  # type: ignore[union-attr]
        if runner is not None:
            await runner.refresh_config()

    async def _listen_control(self) -> None:
        """Supervised: a failure (or a bad message) resubscribes after the backoff."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.CONTROL_CHANNEL)
            while not self.stopping:  # polled rather than listen(): redis-py can swallow a cancellation
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                self.supervisor.recovered("control")
                if msg is not None:
                    await self.on_control(msg["data"])
        finally:
            await pubsub.aclose()

    def is_stopping(self) -> bool:
        return self.stopping

    def _duty(
        self, task: str, interval: float | Callable[[], float], fn: Any, cap: bool = False
    ) -> asyncio.Task[None]:
        """A periodic background duty, supervised (``tq.supervise.Supervisor.every``); ``cap``:
        its retries never wait longer than its interval."""
        backoff_max = interval if cap and not callable(interval) else None
        return asyncio.create_task(
            self.supervisor.every(task, task, interval, fn, self.is_stopping, backoff_max), name=f"tq-{task}"
        )

    def intake_problem(self) -> str | None:
        """Why this process's intake is down right now (None: it runs): a queue's reader or
        settler failing (the supervisor's reason), a reader that stopped, or a read that has not
        returned long past its BLOCK time. ``/readyz`` reports it."""
        blocked = self.watchdog.blocked() if self.watchdog is not None else None
        if blocked is not None:
            return blocked
        down = self.supervisor.down
        now = time.monotonic()
        stall = self.settings.block_ms / 1000 + INTAKE_STALL_S
        for r in self.runners.values():
            for unit in (r.read_unit, r.settle_unit):
                if unit in down:
                    return f"intake of {r.queue} down: {down[unit]}"
            if r.reader is not None and r.reader.done() and not self.stopping:
                return f"intake of {r.queue} down: its reader stopped"
            if r.reading_since and now - r.reading_since > stall:
                waited = now - r.reading_since
                return f"intake of {r.queue} stalled: a read has not returned for {waited:.0f}s"
            if r.settling_since and now - r.settling_since > INTAKE_STALL_S:
                waited = now - r.settling_since
                return f"intake of {r.queue} stalled: a settle has not returned for {waited:.0f}s"
        return None

    async def _promote(self) -> None:
        for r in self.runners.values():
            while await r.promote_once() >= self.settings.promote_batch:
                pass

    async def _reclaim(self) -> None:
        for r in self.runners.values():
            await r.reclaim_once()

    async def _refresh(self) -> None:
        for r in self.runners.values():
            await r.refresh_config()

    async def _poll_cancels(self) -> None:
        await self.cancels.poll(self.runners)

    async def _touch(self) -> None:
        for r in self.runners.values():
            await r.touch_once()

    def info(self) -> dict[str, Any]:
        return {
            "id": self.consumer_id,
            "family": self.family,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "queues": list(self.runners),
            "generation": {q: r.cfg.generation for q, r in self.runners.items()},
            "in_flight": {q: r.running for q, r in self.runners.items()},
            "draining": self.stopping,
        }

    async def heartbeat_once(self) -> None:
        ttl = self.settings.heartbeat_ttl_s
        now_ms = int(time.time() * 1000)
        info = json.dumps(self.info())
        async with self.client.pipeline(transaction=False) as pipe:
            for q in self.runners:
                pipe.zadd(keys.consumers(q), {self.consumer_id: now_ms + int(ttl * 1000)})
                pipe.zremrangebyscore(keys.consumers(q), "-inf", now_ms)
                pipe.set(keys.consumer_info(q, self.consumer_id), info, px=int(ttl * 1000))
            await pipe.execute()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop fetching, give back unstarted entries, let in-flight jobs finish within the grace
        period; jobs still running after it stay pending and are reclaimed by live consumers."""
        if self.stopping:
            await self._stopped.wait()
            return
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        self.stopping = True
        self.ready = False
        runners = list(self.runners.values())
        for r in runners:
            r._wake_reader.set()
            r.wake_slots()
        # Readers end after their current XREADGROUP returns (BLOCK bounds it). Cancelling one
        # mid-read would drop a reply the server has already delivered: those entries would sit
        # in this consumer's pending list until another consumer reclaims them with an attempt
        # charged. Only a read that outlives the bound (Redis hung) is cancelled.
        readers = [r.reader for r in runners if r.reader is not None]
        if readers:
            _done, stuck = await asyncio.wait(readers, timeout=self.settings.block_ms / 1000 + 2.0)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        for r in runners:  # bounded: with Redis away they simply stay pending for reclaim
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(r.release_unstarted(), timeout=2)
        in_flight = [t for r in runners for t in r.busy_slots()]
        if in_flight:
            _done, late = await asyncio.wait(in_flight, timeout=grace)
            for t in late:
                t.cancel()
            if late:
                log.warning(
                    "%d jobs still running after %.0fs grace: left pending for reclaim", len(late), grace
                )
                # bounded: a handler that swallows its cancellation must not hang the stop
                _done, deaf = await asyncio.wait(late, timeout=_CANCEL_WAIT_S)
                if deaf:
                    log.error(
                        "%d jobs ignored their cancellation: left running, pending for reclaim", len(deaf)
                    )
        for r in runners:
            r._wake_settle.set()
            if r.settler is not None:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(r.settler, timeout=5)
        for task in self._duties:
            task.cancel()
        if self._duties:  # bounded: a library that swallows a cancellation must not hang the stop
            _done, stuck = await asyncio.wait(self._duties, timeout=3.0)
            if stuck:
                log.warning(
                    "%d background tasks did not stop in time: %s", len(stuck), [t.get_name() for t in stuck]
                )
        writers = [r._progress_writer for r in self.runners.values() if r._progress_writer is not None]
        if writers:  # landed before the mark is dropped below, so none outlives this consumer
            _done, late = await asyncio.wait(writers, timeout=2.0)
            for task in late:  # Redis hung: its connection is let go (and closed, being mid-read)
                task.cancel()
            if late:
                await asyncio.wait(late)
        for r in self.runners.values():
            await r.release_connections()
        with contextlib.suppress(RedisError, OSError):
            async with self.client.pipeline(transaction=False) as pipe:
                for q in self.runners:
                    # what is still ours ran past the grace: charged at reclaim (no mark: all were)
                    pipe.hdel(keys.progress(q), self.consumer_id)
                    pipe.zrem(keys.consumers(q), self.consumer_id)
                    pipe.delete(keys.consumer_info(q, self.consumer_id))
                await pipe.execute()
        if self.watchdog is not None:
            self.watchdog.stop()
        self._stopped.set()
        log.info("worker %s stopped", self.consumer_id)
