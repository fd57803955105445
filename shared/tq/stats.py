"""Live stats and 5-minute aggregates, written by one elected process.

Every worker process (``WorkerApp``, and so every family service) runs a ``StatsLeader`` duty, but
only the holder of the Redis lock ``tq:stats:leader`` does the work: ``SET NX PX`` with a random
token, renewed on each tick by a compare-and-PEXPIRE script, released (compare-and-DEL) on stop. The
lock lives ``3 * TQ_STATS_INTERVAL_S``: when the leader dies without releasing it, another process
takes over within three intervals; when it stops cleanly, at the next tick of any other process.

Each tick (every ``TQ_STATS_INTERVAL_S``, default 10 s) the leader, for every registry queue:

* writes ``tq:{q}:stats`` (HSET, PEXPIRE three intervals) - see ``FIELDS``:

  - ``waiting``, ``active``, ``delayed``, ``dlq``, ``consumers``, ``paused``: the depths, read with
    the same cheap commands as ``tq queues``;
  - ``enqueued``, ``completed``, ``retried``, ``dead``: the queue's monotonic totals
    (``tq:{q}:counters``); ``failed = retried + dead`` (failed attempts: those scheduled again
    plus those dead-lettered);
  - ``rate``: completed jobs per second over the last interval, from the ``completed`` delta since
    the previous snapshot (the leader's own, else the one in the hash when it just took over); 0
    on the first snapshot;
  - ``avgDurationMs``, ``p95DurationMs``: over the newest <= 500 completed job records (the ``d``
    field of the ids at the top of ``tq:{q}:completed``; nearest-rank p95); empty when there are
    none (``read_stats`` gives None);
  - ``lastUpdatedAt``: epoch seconds of the snapshot;

* publishes a ``queue.stats`` event on ``tq:events`` whose ``data`` is the snapshot, and a
  ``dlq.stats`` event (``tq.envelope.DlqStatsData``): ``size``; ``added_last_interval``, the
  ``dead`` counter's delta since the previous snapshot (0 on the first); ``oldest_failed_at``, when
  the oldest entry failed (None for an empty DLQ); ``by_error_type``, counted over the newest
  <= ``DLQ_SAMPLE`` entries (a bounded read, not the whole DLQ).

One pipelined round trip reads every queue's depths and counters; one script call per queue that
has completed jobs reads its newest run times (``durations.lua``: a command per record cost the
leader 10-13 ms of CPU per tick); one more pipeline reads the DLQ samples, one writes.

**Aggregates** (when the leader has a database): at the first tick after a 5-minute boundary the
leader writes one ``QueueMetricAggregate`` row per queue for the bucket that just ended, and, in the
same transaction, an ``AuditLog`` row ``action="queue.metrics"``, actor ``stats``, target the queue,
details ``{"stats": <the live snapshot>, "aggregate": <the row>, "aggregateAt": <bucket start,
ISO 8601>}``. The baseline lives in Redis (``tq:{q}:stats:mark``: the bucket, the counters at its
start, the highest waiting/dlq the snapshots saw in it), so it survives a change of leader:

* counts are counter deltas over the bucket; durations are those of the completed records whose
  finish time falls in the bucket (newest <= 500);
* the row is inserted if absent (``ON CONFLICT (queue, bucket_start) DO NOTHING`` on SQLite and
  PostgreSQL); when it already existed (a leader that died between the commit and moving the
  baseline on) nothing is written, the AuditLog row included;
* after a gap longer than one bucket (no leader at all) the missed buckets are not written or
  back-filled: the baseline restarts at the current bucket, which is written when it ends. The
  first bucket a queue is seen in is partial (it counts from that moment);
* a failed database write leaves the baseline where it was and is retried at the next tick.

``clock`` (epoch seconds) is injectable, so tests cross 5-minute boundaries without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from tq import keys
from tq.connection import text
from tq.election import LeaderLock, run_periodic
from tq.envelope import DlqStatsData, Event, EventType
from tq.registry import QueueSpec, all_queues
from tq.scripts import Scripts
from tq.settings import Settings, get_settings
from tq.supervise import Supervisor

log = logging.getLogger(__name__)

Clock = Callable[[], float]

AGGREGATE_S = 300  # the aggregate bucket: 5 minutes
MAX_DURATION_SAMPLES = 500
DLQ_SAMPLE = 100  # newest DLQ entries whose error types dlq.stats counts (entries hold stacks)
STATS_ACTOR = "stats"
METRICS_ACTION = "queue.metrics"

INT_FIELDS = (
    "waiting",
    "active",
    "delayed",
    "dlq",
    "consumers",
    "enqueued",
    "completed",
    "retried",
    "dead",
    "failed",
    "samples",
)
FLOAT_FIELDS = ("rate", "avgDurationMs", "p95DurationMs", "lastUpdatedAt")
FIELDS = (*INT_FIELDS, "paused", *FLOAT_FIELDS)
COUNTERS = ("enqueued", "completed", "retried", "dead")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def _avg(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _int(value: Any) -> int:
    try:
        return int(text(value) or 0)
    except (TypeError, ValueError):
        return 0


def _durations(found: Sequence[bytes]) -> list[float]:
    """The run times ``durations.lua`` found (a record's unreadable ``d`` is left out)."""
    out = []
    for d in found:
        with contextlib.suppress(ValueError):
            out.append(float(d))
    return out


def _dlq_stats(size: int, added: int, oldest: Any, newest: Any) -> DlqStatsData:
    """``dlq.stats`` data from the DLQ's length, the dead counter's delta, its first entry
    (XRANGE COUNT 1) and its newest entries (XREVRANGE COUNT DLQ_SAMPLE; None or an error: none)."""
    oldest_at = None
    if oldest and not isinstance(oldest, Exception):
        entry_id, fields = oldest[0]
        failed_ms = _int(fields.get(b"f")) or _int(text(entry_id).partition("-")[0])
        oldest_at = failed_ms / 1000
    by_error_type: dict[str, int] = {}
    if newest and not isinstance(newest, Exception):
        for _, fields in newest:
            error_type = text(fields.get(b"et")) or "unknown"
            by_error_type[error_type] = by_error_type.get(error_type, 0) + 1
    return DlqStatsData(
        size=size, added_last_interval=added, oldest_failed_at=oldest_at, by_error_type=by_error_type
    )


def _to_hash(stats: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name in FIELDS:
        value = stats.get(name)
        if value is None:
            out[name] = ""
        elif isinstance(value, bool):
            out[name] = "1" if value else "0"
        else:
            out[name] = repr(value) if isinstance(value, float) else str(value)
    return out


def parse_stats(raw: dict[Any, Any]) -> dict[str, Any] | None:
    """A stats hash as typed values (None for an empty duration field); None for no hash."""
    if not raw:
        return None
    h = {text(k): text(v) for k, v in raw.items()}
    out: dict[str, Any] = {}
    for name in INT_FIELDS:
        out[name] = _int(h.get(name))
    out["paused"] = h.get("paused") in ("1", "true")
    for name in FLOAT_FIELDS:
        v = h.get(name)
        out[name] = float(v) if v else None
    out["rate"] = out["rate"] or 0.0
    return out


async def read_stats(client: Any, queue: str) -> dict[str, Any] | None:
    """The latest snapshot of ``queue`` (see ``FIELDS``), None when there is none (no leader has
    written one within three intervals)."""
    return parse_stats(await client.hgetall(keys.stats(queue)))


def bucket_of(at: float) -> int:
    """The start (epoch seconds) of the 5-minute bucket holding ``at``."""
    return int(at // AGGREGATE_S) * AGGREGATE_S


class StatsLeader:
    """The stats duty of one process: ``await leader.tick()`` once, ``run_forever(stop)`` for the
    life of the process. ``database`` (URL or engine; None: no aggregates) must be migrated."""

    def __init__(
        self,
        client: Any,
        queues: Sequence[QueueSpec] | None = None,
        settings: Settings | None = None,
        database: str | URL | AsyncEngine | None = None,
        *,
        clock: Clock = time.time,
        interval_s: float | None = None,
        lock_ttl_s: float | None = None,
        token: str | None = None,
    ) -> None:
        self.client = client
        self.scripts = Scripts(client)
        self.settings = settings or get_settings()
        self.specs = list(queues) if queues is not None else all_queues()
        self.clock = clock
        self.interval_s = interval_s if interval_s is not None else self.settings.stats_interval_s
        self.lock = LeaderLock(
            client,
            keys.STATS_LEADER,
            lock_ttl_s if lock_ttl_s is not None else 3 * self.interval_s,
            "stats leader",
            token,
        )
        self.engine: AsyncEngine | None
        self._own_engine = False
        if database is None or isinstance(database, AsyncEngine):
            self.engine = database
        else:
            from tq.db import make_engine

            self.engine = make_engine(database)
            self._own_engine = True
        self._prev: dict[str, tuple[float, int]] = {}  # queue -> (at, completed) of the last snapshot
        self._prev_dead: dict[str, int] = {}  # queue -> its dead counter at the last snapshot
        self.last_dlq: dict[str, DlqStatsData] = {}  # what the last collect() read of each DLQ
        self.ticks_written = 0
        self.rows_written = 0

    # ---- the lock (tq.election) ------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.lock.is_leader

    async def acquire(self) -> bool:
        """Take the lock, or renew it; a process that is not the leader forgets its last snapshot."""
        ok = await self.lock.acquire()
        if not ok:
            self._prev.clear()
            self._prev_dead.clear()
        return ok

    async def release(self) -> None:
        await self.lock.release()

    # ---- one tick ----------------------------------------------------------------------------
    async def tick(self) -> bool:
        """One interval: when leader, write and publish every queue's stats (and close a finished
        aggregate bucket). Returns whether this process was the leader."""
        if not await self.acquire():
            return False
        now = self.clock()
        snapshots = await self.collect(now)
        await self.publish(snapshots)
        self.ticks_written += 1
        if self.engine is not None:
            try:
                await self.aggregate(now, snapshots)
            except (RedisError, OSError):
                raise
            except Exception:
                log.exception("stats aggregates: database write failed; retried at the next tick")
        return True

    async def collect(self, now: float) -> dict[str, dict[str, Any]]:
        """Every queue's snapshot at ``now`` (two pipelined round trips for all queues)."""
        wall_ms = int(time.time() * 1000)  # heartbeat expiries are wall-clock
        per_queue = 10
        async with self.client.pipeline(transaction=False) as pipe:
            for spec in self.specs:
                q = spec.name
                pipe.xlen(keys.stream(q))
                pipe.xpending(keys.stream(q), keys.GROUP)
                pipe.zcard(keys.delayed(q))
                pipe.xlen(keys.dlq(q))
                pipe.hgetall(keys.counters(q))
                pipe.zcount(keys.consumers(q), wall_ms, "+inf")
                pipe.hget(keys.config(q), "paused")
                pipe.exists(keys.completed_index(q))
                pipe.hmget(keys.stats(q), "completed", "lastUpdatedAt", "dead")
                pipe.xrange(keys.dlq(q), count=1)  # the oldest dead letter
            replies = await pipe.execute(raise_on_error=False)
        rows = [replies[i : i + per_queue] for i in range(0, len(replies), per_queue)]
        for row in rows:  # a failure of anything but XPENDING (no group yet) is a Redis failure
            for i, reply in enumerate(row):
                if isinstance(reply, Exception) and i != 1:
                    raise reply
        ran = {  # a script call per queue that has completed jobs (a cluster pipeline takes no script)
            spec.name: await self.durations(spec.name, "+inf", "-inf")
            for spec, row in zip(self.specs, rows, strict=True)
            if row[7]
        }
        with_dlq = [spec.name for spec, row in zip(self.specs, rows, strict=True) if int(row[3])]
        dlq_newest = {}
        if with_dlq:
            async with self.client.pipeline(transaction=False) as pipe:
                for q in with_dlq:
                    pipe.xrevrange(keys.dlq(q), count=DLQ_SAMPLE)
                dlq_newest = dict(zip(with_dlq, await pipe.execute(raise_on_error=False), strict=True))
        out: dict[str, dict[str, Any]] = {}
        for spec, row in zip(self.specs, rows, strict=True):
            q = spec.name
            length, pending, delayed, dlq, totals, consumers, paused, _has_completed, prev, oldest = row
            active = 0 if isinstance(pending, Exception) else int(pending.get("pending") or 0)
            durations = ran.get(q, [])
            t = {text(k): _int(v) for k, v in totals.items()}
            completed = t.get("completed", 0)
            previous = self._prev.get(q)
            if previous is None and prev and prev[0] is not None and prev[1] is not None:
                previous = (float(text(prev[1])), _int(prev[0]))
            rate = 0.0
            if previous is not None and now > previous[0]:
                rate = round(max(0, completed - previous[1]) / (now - previous[0]), 4)
            self._prev[q] = (now, completed)
            dead = t.get("dead", 0)
            dead_before = self._prev_dead.get(q)
            if dead_before is None and prev and len(prev) > 2 and prev[2] is not None:
                dead_before = _int(prev[2])
            self._prev_dead[q] = dead
            added = max(0, dead - dead_before) if dead_before is not None else 0
            self.last_dlq[q] = _dlq_stats(int(dlq), added, oldest, dlq_newest.get(q))
            out[q] = {
                "waiting": max(0, int(length) - active),
                "active": active,
                "delayed": int(delayed),
                "dlq": int(dlq),
                "consumers": int(consumers),
                "paused": text(paused) in ("1", "true"),
                "enqueued": t.get("enqueued", 0),
                "completed": completed,
                "retried": t.get("retried", 0),
                "dead": t.get("dead", 0),
                "failed": t.get("retried", 0) + t.get("dead", 0),
                "rate": rate,
                "avgDurationMs": _avg(durations),
                "p95DurationMs": percentile(durations, 95),
                "samples": len(durations),
                "lastUpdatedAt": now,
            }
        return out

    async def publish(self, snapshots: dict[str, dict[str, Any]]) -> None:
        ttl_ms = int(3 * self.interval_s * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            for q, stats in snapshots.items():
                pipe.hset(keys.stats(q), mapping=_to_hash(stats))
                pipe.pexpire(keys.stats(q), ttl_ms)
            await pipe.execute()
        # the events after the writes, one PUBLISH each: a cluster pipeline refuses PUBLISH
        for q, stats in snapshots.items():
            event = Event(type=EventType.QUEUE_STATS, queue=q, at=stats["lastUpdatedAt"], data=stats)
            await self.client.publish(keys.EVENTS_CHANNEL, event.model_dump_json())
            dlq = self.last_dlq.get(q)
            if dlq is not None:
                event = Event(
                    type=EventType.DLQ_STATS, queue=q, at=stats["lastUpdatedAt"], data=dlq.model_dump()
                )
                await self.client.publish(keys.EVENTS_CHANNEL, event.model_dump_json())

    # ---- 5-minute aggregates -----------------------------------------------------------------
    async def aggregate(self, now: float, snapshots: dict[str, dict[str, Any]]) -> int:
        """Close the finished bucket of every queue whose baseline is in the previous bucket, and
        move the baselines on. Returns the number of rows written."""
        bucket = bucket_of(now)
        async with self.client.pipeline(transaction=False) as pipe:
            for q in snapshots:
                pipe.hgetall(keys.stats_mark(q))
            marks = [{text(k): text(v) for k, v in m.items()} for m in await pipe.execute()]
        written = 0
        updates: dict[str, dict[str, str]] = {}
        for (q, stats), mark in zip(snapshots.items(), marks, strict=True):
            fresh = {
                "bucket": str(bucket),
                **{name: str(stats[name]) for name in COUNTERS},
                "maxWaiting": str(stats["waiting"]),
                "maxDlq": str(stats["dlq"]),
            }
            marked = _int(mark.get("bucket")) if mark else None
            if marked is None or marked < bucket - AGGREGATE_S:  # none yet, or a gap: restart here
                updates[q] = fresh
            elif marked == bucket:
                updates[q] = {
                    "maxWaiting": str(max(_int(mark.get("maxWaiting")), stats["waiting"])),
                    "maxDlq": str(max(_int(mark.get("maxDlq")), stats["dlq"])),
                }
            elif marked == bucket - AGGREGATE_S:
                if await self.write_bucket(q, marked, mark, stats):
                    written += 1
                updates[q] = fresh
            # marked > bucket: another leader's clock is ahead; leave its baseline alone
        if updates:
            async with self.client.pipeline(transaction=False) as pipe:
                for q, mapping in updates.items():
                    pipe.hset(keys.stats_mark(q), mapping=mapping)
                await pipe.execute()
        return written

    async def durations(self, queue: str, newest: int | str, oldest: int | str) -> list[float]:
        """Run times (ms) of the newest <= 500 jobs of ``queue`` that completed between ``oldest``
        and ``newest`` (finish times in ms, or ``-inf`` / ``+inf``), in one round trip."""
        args = [keys.prefix(queue), newest, oldest, MAX_DURATION_SAMPLES]
        return _durations(await self.scripts.durations(keys=[keys.completed_index(queue)], args=args))

    async def bucket_durations(self, queue: str, start: int) -> list[float]:
        """Run times (ms) of the newest <= 500 jobs of ``queue`` that completed in the bucket."""
        return await self.durations(queue, (start + AGGREGATE_S) * 1000 - 1, start * 1000)

    async def write_bucket(self, queue: str, start: int, mark: dict[str, str], stats: dict[str, Any]) -> bool:
        """Insert the bucket's row and its AuditLog row unless the row exists; True when written."""
        assert self.engine is not None
        from sqlalchemy.dialects import postgresql, sqlite

        from tq.audit import record
        from tq.models import QueueMetricAggregate

        durations = await self.bucket_durations(queue, start)
        delta = {name: max(0, stats[name] - _int(mark.get(name))) for name in COUNTERS}
        bucket_start = datetime.fromtimestamp(start, UTC)
        row: dict[str, Any] = {
            "queue": queue,
            "bucket_start": bucket_start,
            **delta,
            "failed": delta["retried"] + delta["dead"],
            "avg_duration_ms": _avg(durations),
            "p95_duration_ms": percentile(durations, 95),
            "max_waiting": _int(mark.get("maxWaiting")),
            "max_dlq": _int(mark.get("maxDlq")),
            "created_at": datetime.now(UTC),
        }
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        stmt = (
            insert(QueueMetricAggregate)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["queue", "bucket_start"])
            .returning(QueueMetricAggregate.id)
        )
        aggregate_at = bucket_start.isoformat()
        async with self.engine.begin() as conn:
            new_id = (await conn.execute(stmt)).scalar_one_or_none()
            if new_id is None:
                log.info("stats aggregate %s @ %s already written: skipped", queue, aggregate_at)
                return False
            summary = {k: v for k, v in row.items() if k not in ("bucket_start", "created_at", "queue")}
            await record(
                conn,
                actor=STATS_ACTOR,
                action=METRICS_ACTION,
                target=queue,
                outcome="ok",
                details={"stats": stats, "aggregate": summary, "aggregateAt": aggregate_at},
            )
        self.rows_written += 1
        return True

    # ---- running -----------------------------------------------------------------------------
    async def run_forever(self, stop: asyncio.Event, supervisor: Supervisor | None = None) -> None:
        """Tick every interval until ``stop`` is set; then release the lock (and dispose an engine
        built from a URL). Supervised like every elected duty (``tq.election.run_periodic``)."""
        try:
            await run_periodic("stats", self.tick, self.interval_s, stop, self.release, supervisor)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._own_engine and self.engine is not None:
            await self.engine.dispose()
