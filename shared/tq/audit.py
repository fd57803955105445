"""Durable history: the ``audit_log`` table and the writer that fills it from Redis.

The engine's settle script XADDs one entry per job outcome to its queue's ``tq:{q}:audit``
(``keys.audit``, in the queue's slot, so the script stays single-slot on Redis Cluster). The stream
is never trimmed: it holds exactly the records not yet written, so while the database is away they
wait there (none is lost). Its length is the backlog (``tq_queue_audit_backlog``); at
``Settings.audit_backlog_max`` the queue's consumers take no new jobs until the writer has caught up
(``tq.worker.QueueRunner.check_audit_backlog``): backpressure, never a silent drop.
``AuditWriter`` drains those streams in batches into the database: one multi-row INSERT per batch in
one transaction, and only after the commit XACK + XDEL of the entries. Delivery is at-least-once (a
crash between the commit and the ack, or a writer whose entries another one claimed, delivers a
batch twice); each job outcome row carries a unique ``event_key`` (job, attempt, outcome) and the
insert skips the keys already written (``ON CONFLICT DO NOTHING``), so each outcome is written
exactly once. Admin actions write their rows directly with ``record``.

Stream entry fields (bytes): ``a`` action, ``q`` queue, ``id`` job id, ``n`` job name, ``o`` outcome,
``tr`` trace id (may be empty), ``at`` epoch milliseconds, ``d`` details JSON (may be empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from tq import keys
from tq.connection import text
from tq.db import make_engine
from tq.models import AuditLog
from tq.registry import all_queues
from tq.settings import Settings, get_settings
from tq.supervise import Supervisor

log = logging.getLogger(__name__)

AUDIT_GROUP = "audit"
WORKER_ACTOR = "worker"


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit]


async def record(
    session_or_engine: AsyncSession | AsyncConnection | AsyncEngine,
    *,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    details: dict[str, Any] | None = None,
    trace_id: str | None = None,
) -> int:
    """Write one audit row and return its id.

    With an ``AsyncEngine`` the row is committed in its own transaction. With an ``AsyncSession``
    or ``AsyncConnection`` it joins the caller's transaction (flushed, not committed), so an admin
    action and its audit row commit or roll back together.
    """
    values: dict[str, Any] = {
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "details": dict(details or {}),
        "trace_id": trace_id or None,
        "created_at": datetime.now(UTC),
    }
    if isinstance(session_or_engine, AsyncSession):
        row = AuditLog(**values)
        session_or_engine.add(row)
        await session_or_engine.flush()
        return row.id
    stmt = insert(AuditLog).values(**values).returning(AuditLog.id)
    if isinstance(session_or_engine, AsyncConnection):
        return int((await session_or_engine.execute(stmt)).scalar_one())
    if isinstance(session_or_engine, AsyncEngine):
        async with session_or_engine.begin() as conn:
            return int((await conn.execute(stmt)).scalar_one())
    raise TypeError(
        f"record() needs an AsyncSession, AsyncConnection or AsyncEngine, not {session_or_engine!r}"
    )


def _s(fields: dict[bytes, bytes], name: bytes) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.replace("\x00", "")  # PostgreSQL text and JSONB reject NUL


def _no_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")  # NaN/Infinity: PostgreSQL JSONB refuses them


def event_key(target: str, attempt: Any, outcome: str, entry_id: str = "") -> str:
    """The unique key of a job outcome row: ``queue/job-id#attempt:outcome``. An entry without a
    usable attempt (malformed) is keyed by its stream entry id instead (``queue/job-id@entry-id``),
    which still makes a redelivery of it a no-op. Migration 0010 builds the same key in SQL."""
    if isinstance(attempt, bool) or not isinstance(attempt, int | float) or attempt != attempt:
        return f"{target}@{entry_id}"
    return f"{target}#{int(attempt) if float(attempt).is_integer() else attempt}:{outcome}"


def entry_to_row(fields: dict[bytes, bytes], entry_id: str = "") -> dict[str, Any]:
    """The ``audit_log`` row for one ``tq:{q}:audit`` entry (``entry_id``: its stream id, the key of
    an entry without an attempt). Never raises: a malformed entry still becomes a row (details that
    are not a JSON object are kept under ``details["raw"]``), so one bad entry cannot block the
    stream."""
    name = _s(fields, b"n")
    raw = _s(fields, b"d")
    details: dict[str, Any] = {"job": name}
    if raw:
        try:
            parsed = json.loads(raw, parse_constant=_reject_constant)
        except ValueError:
            details["raw"] = raw
        else:
            if isinstance(parsed, dict):
                details.update(_no_nul(parsed))
                details["job"] = name
            else:
                details["raw"] = _no_nul(parsed)
    try:
        created_at = datetime.fromtimestamp(float(_s(fields, b"at")) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        created_at = datetime.now(UTC)
    trace_id = _s(fields, b"tr")
    target = _clip(f"{_s(fields, b'q')}/{_s(fields, b'id')}", 300)
    outcome = _clip(_s(fields, b"o"), 50)
    return {
        "actor": WORKER_ACTOR,
        "action": _clip(_s(fields, b"a"), 100),
        "target": target,
        "outcome": outcome,
        "details": details,
        "trace_id": _clip(trace_id, 100) or None,
        "created_at": created_at,
        "event_key": event_key(target, details.get("attempt"), outcome, entry_id),
    }


Entry = tuple[bytes, dict[bytes, bytes] | None]


def default_consumer() -> str:
    """A consumer name no other writer has: host, process id and a random part (pids repeat
    across containers and restarts)."""
    return f"writer-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _stream_entries(reply: Any) -> list[Entry]:
    """The entries of a one-stream XREADGROUP reply, whatever shape the client parsed it into
    (RESP2 ``[[stream, entries]]``, RESP3 ``{stream: [entries]}`` or ``{stream: entries}``)."""
    if not reply:
        return []
    value = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    entries = list(value or [])
    if entries and isinstance(entries[0], list):
        entries = list(entries[0] or [])
    return entries


@dataclass
class _Stream:
    """One queue's audit stream and where this writer is in it."""

    key: str
    group_ready: bool = False
    pending_done: bool = False  # own pending entries re-read (id 0) since start / the last failure
    claim_cursor: str = "0-0"
    claim_checked: bool = False


class AuditWriter:
    """Drains every queue's ``tq:{q}:audit`` into ``audit_log`` through the consumer group ``audit``.

    One stream per queue keeps the settle script in its queue's slot (Redis Cluster); the writer
    reads the streams in turn, one XREADGROUP each (a read over two slots fails on a cluster).
    ``queues`` defaults to every registry queue.

    ``redis`` must return bytes (``decode_responses=False``). ``database`` is a URL (the writer owns
    the engine it builds and disposes it in ``aclose``) or an ``AsyncEngine`` (the caller's).
    ``consumer`` names this writer in the group; default: unique per process
    (``writer-<host>-<pid>-<random>``), so two writers never read each other's pending entries as
    their own. A dead writer's pending entries are claimed by a live one once idle longer than
    ``claim_idle_ms``, and a consumer with nothing pending that has been idle as long is removed
    from the group (a restarted pod leaves its old name behind). A claimed entry that its first
    writer also wrote is not written twice (``event_key``).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        database: str | URL | AsyncEngine | None = None,
        settings: Settings | None = None,
        *,
        queues: Sequence[str] | None = None,
        consumer: str | None = None,
        claim_idle_ms: int = 60_000,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.redis = redis
        self.settings = settings or get_settings()
        if isinstance(database, AsyncEngine):
            self.engine = database
            self._owns_engine = False
        else:
            self.engine = make_engine(database if database is not None else self.settings.database_url)
            self._owns_engine = True
        names = list(queues) if queues is not None else [q.name for q in all_queues()]
        self.streams = [_Stream(keys.audit(q)) for q in names]
        self.group = AUDIT_GROUP
        self.consumer = consumer or default_consumer()
        self.claim_idle_ms = claim_idle_ms
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.rows_written = 0
        self.duplicates_skipped = 0  # redelivered entries whose row was already written
        self._next = 0  # the stream the next pass starts with (round robin: no queue starves)

    async def __aenter__(self) -> AuditWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()

    async def ensure_group(self, stream: _Stream | None = None) -> None:
        """Create the group on ``stream`` (default: on every stream) unless it exists."""
        for s in [stream] if stream is not None else self.streams:
            try:
                await self.redis.xgroup_create(s.key, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            s.group_ready = True

    async def _read(self, stream: _Stream) -> list[Entry]:
        """The next batch: own pending entries first, then idle ones of dead consumers, then new."""
        count = self.settings.audit_batch
        if not stream.pending_done:
            reply = await self.redis.xreadgroup(self.group, self.consumer, {stream.key: "0"}, count=count)
            entries = _stream_entries(reply)
            if entries:
                return entries
            stream.pending_done = True
        if not stream.claim_checked:
            entries = await self._claim_idle(stream, count)
            if entries:
                return entries
        reply = await self.redis.xreadgroup(self.group, self.consumer, {stream.key: ">"}, count=count)
        entries = _stream_entries(reply)
        if not entries:
            stream.claim_checked = False  # idle: look for a dead writer's entries next time
        return entries

    async def _claim_idle(self, stream: _Stream, count: int) -> list[Entry]:
        reply = await self.redis.xautoclaim(
            stream.key,
            self.group,
            self.consumer,
            self.claim_idle_ms,
            start_id=stream.claim_cursor,
            count=count,
        )
        cursor, entries = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:  # pending ids whose entries were deleted (XDEL by hand): nothing to write
            await self.redis.xack(stream.key, self.group, *deleted)
        cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if cursor in ("0-0", "0"):
            stream.claim_cursor = "0-0"
            stream.claim_checked = True
            await self._remove_idle_consumers(stream)
        else:
            stream.claim_cursor = cursor
        return list(entries)

    async def _write(self, rows: list[dict[str, Any]]) -> int:
        """Insert ``rows`` in one transaction, skipping keys already written; the rows inserted."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(AuditLog)
            .on_conflict_do_nothing(index_elements=[AuditLog.event_key])
            .returning(AuditLog.id)
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(stmt, rows)
            return len(result.all())

    async def _remove_idle_consumers(self, stream: _Stream) -> None:
        """Drop consumers (other writers) with nothing pending, idle longer than ``claim_idle_ms``:
        names are unique per process, so every restart would leave one behind."""
        for info in await self.redis.xinfo_consumers(stream.key, self.group):
            name = info.get("name")
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name != self.consumer and not info.get("pending") and info.get("idle", 0) > self.claim_idle_ms:
                await self.redis.xgroup_delconsumer(stream.key, self.group, name)

    async def _drain_stream(self, stream: _Stream) -> int:
        """One batch of one stream: read, write, ack and delete; the rows written."""
        if not stream.group_ready:
            await self.ensure_group(stream)
        while True:
            try:
                entries = await self._read(stream)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream or group was deleted under us
                    stream.group_ready = False
                    stream.pending_done = False
                    return 0
                raise
            if not entries:
                return 0
            ids = [entry_id for entry_id, _ in entries if entry_id is not None]
            # An entry deleted from the stream while pending comes back without fields: ack it, write nothing.
            rows = [entry_to_row(fields, text(entry_id)) for entry_id, fields in entries if fields]
            if rows:
                try:
                    written = await self._write(rows)
                except BaseException:
                    stream.pending_done = False  # re-read the unwritten batch (still pending) next time
                    raise
            if ids:  # only now that the rows are committed; one key, so one slot on a cluster
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.xack(stream.key, self.group, *ids)
                    pipe.xdel(stream.key, *ids)
                    await pipe.execute()
            if rows:
                self.rows_written += written
                self.duplicates_skipped += len(rows) - written
                return len(rows)
            # a batch of tombstones only: read on at once, 0 would look like "drained"

    async def _pass(self) -> int:
        for _ in range(len(self.streams)):
            stream = self.streams[self._next]
            self._next = (self._next + 1) % len(self.streams)
            n = await self._drain_stream(stream)
            if n:
                return n
        return 0

    async def drain_once(self, block_ms: int | None = None) -> int:
        """Write one batch of the first stream (in turn) that has entries; return the rows written
        (0: every stream is drained).

        ``block_ms`` bounds the wait for new entries when all are drained (default: none, return at
        once; the streams are polled, not blocked on). A database error propagates and leaves the
        batch pending; the next call re-reads it.
        """
        n = await self._pass()
        if n or not block_ms:
            return n
        await asyncio.sleep(block_ms / 1000)
        return await self._pass()

    async def run_forever(self, stop: asyncio.Event, supervisor: Supervisor | None = None) -> None:
        """Drain until ``stop`` is set. Supervised (``tq.supervise``; the worker's supervisor when
        given): a failure is logged once per outage, counted, and retried with backoff (1s doubling
        to 30s); unwritten entries stay pending and are written on a later attempt. An engine the
        writer built from a URL is disposed on the way out."""
        sup = supervisor or Supervisor()

        async def wait(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=seconds)

        async def drain() -> None:
            while not stop.is_set():
                n = await self.drain_once()
                sup.recovered("audit")
                if not n:  # all drained: wait for the next flush
                    await wait(self.settings.audit_flush_s)

        log.info("audit writer %s draining %d audit streams", self.consumer, len(self.streams))
        try:
            await sup.run(
                "audit",
                "audit",
                drain,
                stop.is_set,
                sleep=wait,
                backoff_initial_s=self.backoff_initial_s,
                backoff_max_s=self.backoff_max_s,
            )
        finally:
            await self.aclose()
            log.info("audit writer %s stopped (%d rows written)", self.consumer, self.rows_written)
