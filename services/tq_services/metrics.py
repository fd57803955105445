"""Prometheus metrics of one family service: a dedicated ``CollectorRegistry`` per app.

* ``JobMetrics`` is the worker's observer (``tq.observe.Observer``): counters and histograms per
  queue and job name, fed once per settled batch. Counts are aggregated per batch (one ``inc`` per
  label set); histograms are ``HistogramSet``s (an append per observation, counted into buckets in
  bulk, no lock). No Redis call.
* ``QueueCollector`` exposes the depth gauges and ``tq_jobs_enqueued_total``. A collector's
  ``collect()`` is synchronous and runs inside the event loop that also runs the jobs, so it must
  not do network I/O: the ``/metrics`` handler first awaits ``refresh()`` (two pipelined round
  trips for all queues of the family, cheap commands only, bounded by a timeout) and ``collect()``
  then reads those values. When Redis does not answer, ``tq_redis_up`` is 0 and the queue gauges
  are absent (never stale values). It also exposes the config generations the alert "consumers
  not applying config" compares: ``tq_queue_config_generation`` (in ``tq:{q}:config``, read in the
  same ``HMGET`` as ``paused``) and ``tq_consumer_config_generation`` (what this process's worker
  applied: its runners' config, no Redis call).

Labels are bounded by the registry: ``queue``, ``job`` (a registry job name, or ``_unknown`` for a
forged entry naming another), ``outcome`` and ``family``; ``task`` and ``reason`` of
``tq_worker_task_restarts_total`` (``JobMetrics.task_restarted``, the supervisor's hook) by
``tq.supervise.TASKS`` and ``REASONS``; ``schedule``, ``queue`` and ``outcome`` of
``tq_schedule_ticks_total`` (``JobMetrics.schedule_ticks``, the scheduler's hook) by the stored
schedules. Every series exists at zero from start-up (for schedules: the families' declared ones).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from redis.exceptions import RedisError
from tq import keys
from tq.connection import text
from tq.loopwatch import NO_JOB
from tq.observe import CANCELLED, COMPLETED, DEAD, RATE_WAIT_REASONS, RETRIED, Settled
from tq.registry import QueueSpec
from tq.schedules import TICK_OUTCOMES
from tq.settings import get_settings
from tq.supervise import REASONS, TASKS

from tq_services import default_schedules

if TYPE_CHECKING:
    from tq.worker import Worker

UNKNOWN_JOB = "_unknown"
OUTCOMES = ("retried", "dead_lettered", "invalid")
# From a millisecond to ten minutes: no-op jobs settle in ~1 ms, LLM jobs run for minutes.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
)  # fmt: skip
WAIT_BUCKETS = DURATION_BUCKETS


# observations a series holds before it counts them into its buckets (HistogramSet), at most
PENDING_MAX = 1024


class _Hist:
    """One histogram series: per-bucket counts (not cumulative; the last is +Inf), the sum, and the
    observations not yet counted (``pending``), appended one by one and counted together by
    ``count_pending``: a sort and one bisect per bucket bound cost a fraction of a bisect per
    observation, which was a fifth of the observer's instructions per job (callgrind)."""

    __slots__ = ("bounds", "counts", "pending", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.pending: list[float] = []

    def count_pending(self) -> None:
        values, self.pending = self.pending, []
        if not values:
            return
        values.sort()
        counts, below = self.counts, 0
        for i, bound in enumerate(self.bounds):  # a bucket holds the values <= its bound (le)
            upto = bisect_right(values, bound, below)
            counts[i] += upto - below
            below = upto
        counts[-1] += len(values) - below
        self.total += sum(values)


class HistogramSet(Collector):
    """A labelled histogram for the hot path: an observation is an append to a list of plain
    floats, counted into the buckets in bulk (``_Hist``) at PENDING_MAX of them and at each
    ``collect()``; ``prometheus_client.Histogram.observe`` takes a lock per call and costs several
    times more. Safe because observations and ``collect()`` both run in the service's event loop
    thread; exposed as an ordinary Prometheus histogram."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        self.children: dict[tuple[str, ...], _Hist] = {}

    def labels(self, *values: str) -> _Hist:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _Hist(self.bounds)
        return child

    def collect(self) -> Iterable[Any]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            child.count_pending()
            cumulative, acc = [], 0
            for le, n in zip(self._les, child.counts, strict=True):
                acc += n
                cumulative.append((le, acc))
            fam.add_metric(list(values), cumulative, child.total)
        yield fam

    def describe(self) -> Iterable[Any]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]


class _JobSeries:
    __slots__ = ("cancelled", "completed", "completed_in_batch", "duration", "failed", "wait")

    def __init__(
        self, completed: Any, failed: dict[str, Any], duration: _Hist, wait: _Hist, cancelled: Any
    ) -> None:
        self.completed = completed
        self.completed_in_batch = 0  # added to ``completed`` once per batch (JobMetrics.observe)
        self.failed = failed
        self.duration = duration
        self.wait = wait
        self.cancelled = cancelled


class JobMetrics:
    """Counters and histograms fed by the worker (``Worker(observer=JobMetrics(...))``).

    Per settled job (``tq.observe.Settled``): completed -> ``tq_jobs_completed_total``; a failed
    attempt scheduled again -> ``tq_jobs_failed_total{outcome="retried"}``; a dead-letter ->
    ``outcome="invalid"`` for bad input (``tq.observe.INVALID_ERRORS``), else
    ``outcome="dead_lettered"``; cancelled on this worker -> ``tq_jobs_cancelled_total``; taken
    over from a dead consumer -> ``tq_jobs_reclaimed_total``
    as well (and its retried/dead_lettered count). ``tq_job_duration_seconds`` observes every
    completed/failed attempt this process ran or rejected (not reclaimed ones: they did not run
    here), so its count equals completed + failed of those; ``tq_job_wait_seconds`` observes
    first attempts only (from when the job became due to its start: a retry's backoff is policy,
    not queueing), so its count is the number of jobs started. Idempotent skips and released
    entries are not counted.
    """

    def __init__(self, registry: CollectorRegistry, specs: Sequence[QueueSpec]) -> None:
        self.completed = Counter("tq_jobs_completed", "Jobs completed", ["queue", "job"], registry=registry)
        self.failed = Counter(
            "tq_jobs_failed",
            "Failed attempts by outcome: retried, dead_lettered, invalid (bad input, never run)",
            ["queue", "job", "outcome"],
            registry=registry,
        )
        self.cancelled = Counter(
            "tq_jobs_cancelled",
            "Jobs cancelled on a worker (running, or fetched and not yet started; tq.cancel)",
            ["queue", "job"],
            registry=registry,
        )
        self.reclaimed = Counter(
            "tq_jobs_reclaimed",
            "Jobs taken over from a consumer that stopped responding",
            ["queue"],
            registry=registry,
        )
        self.duration = HistogramSet(
            "tq_job_duration_seconds", "Handler run time of an attempt", ["queue", "job"], DURATION_BUCKETS
        )
        self.wait = HistogramSet(
            "tq_job_wait_seconds",
            "From when a job became due (enqueued, or its delay ended) to its first start",
            ["queue", "job"],
            WAIT_BUCKETS,
        )
        self.task_restarts = Counter(
            "tq_worker_task_restarts",
            "Failures of a worker's long-lived task (each then retried with backoff), by task and reason",
            ["task", "reason"],
            registry=registry,
        )
        self._restarts = {(t, r): self.task_restarts.labels(t, r) for t in TASKS for r in REASONS}
        self.loop_blocks = Counter(
            "tq_worker_loop_blocked",
            "Times a job (or other code) blocked the event loop past the watchdog's threshold",
            ["queue", "job"],
            registry=registry,
        )
        self._blocks = {(NO_JOB, NO_JOB): self.loop_blocks.labels(NO_JOB, NO_JOB)}
        for spec in specs:
            for job in (*spec.jobs, UNKNOWN_JOB):
                self._blocks[(spec.name, job)] = self.loop_blocks.labels(spec.name, job)
        self.rate_waits = Counter(
            "tq_rate_limit_waits",
            "Times a consumer's intake began to wait at the queue's rate limit: reason limit (no permit "
            "left in the window, across replicas) or paused (a handler's RateLimited paused the queue)",
            ["queue", "reason"],
            registry=registry,
        )
        self.rate_wait_seconds = Counter(
            "tq_rate_limit_wait_seconds",
            "Seconds a consumer's intake waited at the queue's rate limit, by reason (limit, paused)",
            ["queue", "reason"],
            registry=registry,
        )
        self.rate_limited_jobs = Counter(
            "tq_jobs_rate_limited",
            "Jobs whose handler raised RateLimited: put back uncharged, the queue paused",
            ["queue", "job"],
            registry=registry,
        )
        self._rate: dict[tuple[str, str], tuple[Any, Any]] = {}
        for spec in specs:
            for reason in RATE_WAIT_REASONS:
                self._rate[(spec.name, reason)] = (
                    self.rate_waits.labels(spec.name, reason),
                    self.rate_wait_seconds.labels(spec.name, reason),
                )
            for job in spec.jobs:  # exported at 0 from the start, like the other per-job series
                self.rate_limited_jobs.labels(spec.name, job)
        self.schedule_tick_counts = Counter(
            "tq_schedule_ticks",
            "Ticks of recurring schedules by outcome: fired, skipped (Forbid, or not enqueueable), "
            "missed (past the starting deadline, or passed in an outage); counted by the elected scheduler",
            ["schedule", "queue", "outcome"],
            registry=registry,
        )
        for sched in default_schedules():  # the families' declared schedules exist at zero
            for outcome in TICK_OUTCOMES:
                self.schedule_tick_counts.labels(sched.name, sched.queue, outcome)
        registry.register(self.duration)
        registry.register(self.wait)
        self._series: dict[str, dict[str, _JobSeries]] = {}
        self._reclaimed: dict[str, Any] = {}
        for spec in specs:
            per_job = {}
            for job in (*spec.jobs, UNKNOWN_JOB):
                per_job[job] = _JobSeries(
                    self.completed.labels(spec.name, job),
                    {o: self.failed.labels(spec.name, job, o) for o in OUTCOMES},
                    self.duration.labels(spec.name, job),
                    self.wait.labels(spec.name, job),
                    self.cancelled.labels(spec.name, job),
                )
            self._series[spec.name] = per_job
            self._reclaimed[spec.name] = self.reclaimed.labels(spec.name)

    def task_restarted(self, task: str, reason: str) -> None:
        """The supervisor's hook (``tq.observe.TaskObserver``): labels are bounded by tq.supervise."""
        child = self._restarts.get((task, reason))
        if child is not None:
            child.inc()

    def schedule_ticks(self, schedule: str, queue: str, outcome: str, count: int) -> None:
        """The scheduler's hook (``tq.schedules.ScheduleObserver``): labels bounded by the stored
        schedules."""
        self.schedule_tick_counts.labels(schedule, queue, outcome).inc(count)

    def rate_waited(self, queue: str, reason: str, seconds: float, new: bool) -> None:
        """The intake's hook (``tq.observe.RateObserver``): one wait at the rate limit."""
        pair = self._rate.get((queue, reason))
        if pair is not None:
            if new:
                pair[0].inc()
            pair[1].inc(seconds)

    def job_rate_limited(self, queue: str, job: str) -> None:
        """The worker's hook (``tq.observe.RateObserver``): a handler raised RateLimited."""
        if job in self._series.get(queue, {}):
            self.rate_limited_jobs.labels(queue, job).inc()

    def loop_blocked(self, queue: str, job: str) -> None:
        """The loop watchdog's hook (``tq.observe.LoopObserver``; its thread: ``inc`` is locked)."""
        child = self._blocks.get((queue, job)) or self._blocks.get((queue, UNKNOWN_JOB))
        if child is not None:
            child.inc()

    def observe(self, queue: str, ops: Sequence[Settled]) -> None:
        """Per job: a tally on its series and its times appended (``HistogramSet``); per batch: one
        ``inc`` per counter that moved, the lock-taking part of prometheus_client."""
        per_job = self._series.get(queue)
        if per_job is None:
            return
        unknown = per_job[UNKNOWN_JOB]
        failed: dict[tuple[_JobSeries, str], int] = {}
        reclaimed = 0
        for op in ops:
            series = per_job.get(op.name, unknown)
            kind = op.kind
            if kind == COMPLETED:
                series.completed_in_batch += 1
            elif kind in (RETRIED, DEAD):
                outcome = "retried" if kind == RETRIED else "invalid" if op.invalid else "dead_lettered"
                failed[series, outcome] = failed.get((series, outcome), 0) + 1
            elif kind == CANCELLED:  # counted only: not an attempt's outcome (no duration observed)
                series.cancelled.inc()
                continue
            else:  # skipped or released: no attempt was made
                continue
            if op.reclaimed:
                reclaimed += 1
                continue
            series.duration.pending.append(op.duration_ms / 1000)
            if op.attempt == 1 and op.ready_at:
                series.wait.pending.append(max(0.0, op.started - op.ready_at))
        for series in per_job.values():
            if series.completed_in_batch:
                series.completed.inc(series.completed_in_batch)
                series.completed_in_batch = 0
            for h in (series.duration, series.wait):
                if len(h.pending) >= PENDING_MAX:
                    h.count_pending()
        for (series, outcome), n in failed.items():
            series.failed[outcome].inc(n)
        if reclaimed:
            self._reclaimed[queue].inc(reclaimed)


_GAUGES = (
    ("tq_queue_waiting", "Jobs in the stream not yet delivered to a consumer"),
    ("tq_queue_active", "Jobs delivered to a consumer and not yet settled"),
    ("tq_queue_delayed", "Jobs waiting for their due time (delayed enqueues and retries in backoff)"),
    ("tq_queue_dlq", "Entries in the dead-letter queue"),
    ("tq_queue_dlq_max", "The dead-letter queue's cap: at it each new dead job trims the oldest entry"),
    ("tq_queue_audit_backlog", "Audit records in Redis not yet written to the database"),
    (
        "tq_queue_audit_backlog_max",
        "The audit backlog's bound: at it the queue's consumers take no new jobs until it drains",
    ),
    ("tq_queue_paused", "1 while the queue is paused"),
    ("tq_queue_consumers", "Live consumers (unexpired heartbeats)"),
    ("tq_queue_oldest_waiting_seconds", "Age of the oldest job not yet delivered (0 when none)"),
    (
        "tq_queue_config_generation",
        "Generation of the queue's runtime config in Redis (0: registry defaults)",
    ),
)
CONSUMER_GENERATION = (
    "tq_consumer_config_generation",
    "Generation of the runtime config this process's consumer applied (0: registry defaults)",
)


def _entry_ms(entry_id: Any) -> int:
    return int(text(entry_id).partition("-")[0] or 0)


class QueueCollector(Collector):
    """Depth gauges read from Redis just before each scrape (``await refresh()``, then ``collect()``).

    Values are shared by every replica of a family (they describe the queue, not the process):
    aggregate with ``max by (queue)``, not ``sum``. ``tq_jobs_enqueued_total{queue}`` is the
    queue's ``enqueued`` counter in Redis (per queue only: producers do not count per job name).

    ``tq_consumer_config_generation`` is the exception: it describes this process (the generation
    its ``worker``'s runner of each queue applied; 0 until a worker is attached), needs no Redis
    and so is exposed even when Redis does not answer.
    """

    def __init__(
        self, client: Any, specs: Sequence[QueueSpec], timeout_s: float = 2.0, worker: Worker | None = None
    ) -> None:
        self.client = client
        self.worker = worker
        self.specs = tuple(specs)
        self.timeout_s = timeout_s
        self._values: dict[str, dict[str, float]] | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> bool:
        """Read every queue's depth; False (and no gauges) when Redis does not answer in time."""
        async with self._lock:  # concurrent scrapes take turns
            if self.client is None:  # not connected yet
                self._values = None
                return False
            try:
                self._values = await asyncio.wait_for(self._read(), self.timeout_s)
            except (RedisError, OSError, TimeoutError):
                self._values = None
        return self._values is not None

    async def _read(self) -> dict[str, dict[str, float]]:
        now_ms = int(time.time() * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            for spec in self.specs:
                q = spec.name
                pipe.xlen(keys.stream(q))
                pipe.xinfo_groups(keys.stream(q))
                pipe.zcard(keys.delayed(q))
                pipe.xlen(keys.dlq(q))
                pipe.hmget(keys.config(q), "paused", "generation", "dlq_max_len")
                pipe.zcount(keys.consumers(q), now_ms, "+inf")
                pipe.hmget(keys.counters(q), "enqueued", "dlq_trimmed")
                pipe.xlen(keys.audit(q))
            replies = await pipe.execute(raise_on_error=False)
        out: dict[str, dict[str, float]] = {}
        last_delivered: dict[str, str] = {}
        settings = get_settings()
        for i, spec in enumerate(self.specs):
            length, groups, delayed, dlq, cfg, consumers, counters, audit = replies[i * 8 : i * 8 + 8]
            for r in (length, delayed, dlq, cfg, consumers, audit):
                if isinstance(r, Exception):
                    raise r
            enqueued, dlq_trimmed = counters if not isinstance(counters, Exception) else (0, 0)
            active = 0
            if not isinstance(groups, Exception):  # no stream yet: nothing delivered
                for g in groups:
                    if text(g.get("name")) == keys.GROUP:
                        active = int(g.get("pending") or 0)
                        last_delivered[spec.name] = text(g.get("last-delivered-id")) or "0-0"
            paused, generation, dlq_max_len = cfg
            out[spec.name] = {
                "tq_queue_waiting": max(0, int(length) - active),
                "tq_queue_active": active,
                "tq_queue_delayed": int(delayed),
                "tq_queue_dlq": int(dlq),
                # the live config's cap, else the registry's (with TQ_QUEUES)
                "tq_queue_dlq_max": int(text(dlq_max_len) or spec.effective_defaults(settings).dlq_max_len),
                "tq_queue_audit_backlog": int(audit),
                "tq_queue_audit_backlog_max": settings.audit_backlog_max,
                "tq_queue_paused": 1 if text(paused) in ("1", "true") else 0,
                "tq_queue_consumers": int(consumers),
                "tq_queue_oldest_waiting_seconds": 0.0,
                "tq_queue_config_generation": int(text(generation) or 0),
                "enqueued": int(enqueued or 0),
                "dlq_trimmed": int(dlq_trimmed or 0),
            }
        waiting = [s.name for s in self.specs if out[s.name]["tq_queue_waiting"] > 0]
        if waiting:  # the first entry after the group's last delivered one is the oldest waiting
            async with self.client.pipeline(transaction=False) as pipe:
                for q in waiting:
                    pipe.xrange(keys.stream(q), "(" + last_delivered.get(q, "0-0"), "+", count=1)
                firsts = await pipe.execute(raise_on_error=False)
            for q, first in zip(waiting, firsts, strict=True):
                if first and not isinstance(first, Exception):
                    age = max(0.0, (now_ms - _entry_ms(first[0][0])) / 1000)
                    out[q]["tq_queue_oldest_waiting_seconds"] = age
        return out

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily("tq_redis_up", "1 when the last scrape read the queues from Redis")
        up.add_metric([], 0 if self._values is None else 1)
        yield up
        applied = GaugeMetricFamily(*CONSUMER_GENERATION, labels=["queue", "family"])
        runners = self.worker.runners if self.worker is not None else {}
        for spec in self.specs:
            runner = runners.get(spec.name)
            applied.add_metric([spec.name, spec.family], runner.cfg.generation if runner is not None else 0)
        yield applied
        values = self._values
        if values is None:
            return
        enqueued = CounterMetricFamily("tq_jobs_enqueued", "Jobs enqueued (all producers)", labels=["queue"])
        for spec in self.specs:
            enqueued.add_metric([spec.name], values[spec.name]["enqueued"])
        yield enqueued
        trimmed = CounterMetricFamily(
            "tq_dlq_trimmed",
            "Dead-letter entries trimmed at the queue's DLQ cap (oldest first)",
            labels=["queue", "family"],
        )
        for spec in self.specs:
            trimmed.add_metric([spec.name, spec.family], values[spec.name]["dlq_trimmed"])
        yield trimmed
        for name, doc in _GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["queue", "family"])
            for spec in self.specs:
                g.add_metric([spec.name, spec.family], values[spec.name][name])
            yield g

    def describe(self) -> Iterable[Any]:
        return []  # values are read at scrape time: nothing to describe at registration


def make_registry(
    specs: Sequence[QueueSpec], client: Any
) -> tuple[CollectorRegistry, JobMetrics, QueueCollector]:
    """A fresh registry with the job metrics, the queue collector and the process collector.

    Also turns off prometheus-client's ``*_created`` series (process-wide): they double the
    exposition and nothing here reads them."""
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=False)
    jobs = JobMetrics(registry, specs)
    queues = QueueCollector(client, specs)
    registry.register(queues)
    ProcessCollector(registry=registry)
    return registry, jobs, queues
