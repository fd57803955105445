"""Every Redis key and channel of the engine. Each queue's keys share the hash tag ``{queue}``, so
every script touches one slot and the layout works on Redis Cluster. A family's or the admin
service's own keys are built in its package (e.g. ``tq_services.analytics.snapshots``)."""

from __future__ import annotations

EVENTS_CHANNEL = "tq:events"
CONTROL_CHANNEL = "tq:control"
STATS_LEADER = "tq:stats:leader"  # STRING (expiring): the token of the stats leader (tq.stats)
GROUP = "tq"  # the consumer group of every queue's stream


def prefix(queue: str) -> str:
    """``tq:{queue}:`` - the scripts build per-job keys from it (same slot)."""
    return f"tq:{{{queue}}}:"


def stream(queue: str) -> str:
    """STREAM: the waiting and active jobs; each entry carries its job's envelope as short fields
    (``i`` id, ``n`` name, ``p`` payload, ``t`` enqueued, and ``k``/``tr``/``nb``/``rp``/``m``/``a``/
    ``sx`` when set: docs/wire-format.md); an entry of the legacy layout has ``j``, the whole JSON."""
    return prefix(queue) + "stream"


def delayed(queue: str) -> str:
    """ZSET job id -> due time (ms): delayed jobs and retries in backoff."""
    return prefix(queue) + "delayed"


def dlq(queue: str) -> str:
    """STREAM: the dead-lettered jobs, one entry each (``tq.dlq``)."""
    return prefix(queue) + "dlq"


def job(queue: str, job_id: str) -> str:
    """HASH: the job record."""
    return prefix(queue) + "job:" + job_id


def idempotency(queue: str, key: str) -> str:
    """STRING: the job id that holds the key, ``done:<id>`` once it completed."""
    return prefix(queue) + "idem:" + key


def completed_index(queue: str) -> str:
    """ZSET job id -> finished time (ms); the oldest beyond retention_completed are dropped with their
    records."""
    return prefix(queue) + "completed"


def dead_index(queue: str) -> str:
    """ZSET job id -> dead-lettered time (ms); the oldest beyond retention_failed are dropped with
    their records."""
    return prefix(queue) + "dead"


def counters(queue: str) -> str:
    """HASH of monotonic totals: enqueued, completed, skipped, retried, dead, requeued, reclaimed,
    replayed, cancelled."""
    return prefix(queue) + "counters"


def started(queue: str) -> str:
    """HASH entry id -> consumer id: jobs whose start was recorded before their handler ran. Only
    written while the queue is under crash watch (``crash_watch``) or for suspects; cleared at settle."""
    return prefix(queue) + "started"


def progress(queue: str) -> str:
    """HASH consumer id -> the newest entry id that consumer took to run (written behind, not per
    job). A consumer takes its entries in stream order, so after it dies its pending entries above
    that id were fetched but never started: a reclaim gives them back free."""
    return prefix(queue) + "progress"


def cancels(queue: str) -> str:
    """HASH job id -> when its cancel was asked (ms): the durable cancel markers of running jobs
    (``tq.cancel``). Every consumer polls it, so a replica that missed the control message still
    cancels; a marker is dropped when its job settles as cancelled or is found finished."""
    return prefix(queue) + "cancels"


def crash_watch(queue: str) -> str:
    """STRING (expiring): when the watch began (ms), set when a consumer died holding jobs; while it
    exists every job start is recorded in ``started``, so the next crash charges an attempt only to
    the jobs that were running."""
    return prefix(queue) + "crashwatch"


def stats(queue: str) -> str:
    """HASH (expiring): the live stats snapshot the stats leader writes (``tq.stats``)."""
    return prefix(queue) + "stats"


def stats_mark(queue: str) -> str:
    """HASH: the 5-minute aggregate's baseline: its bucket, the counters at its start, max depths."""
    return prefix(queue) + "stats:mark"


def config(queue: str) -> str:
    """HASH: what overrides the queue's defaults (``tq.config``), written by the operator, the CLI
    and the admin API."""
    return prefix(queue) + "config"


def consumers(queue: str) -> str:
    """ZSET consumer id -> heartbeat expiry (ms)."""
    return prefix(queue) + "consumers"


def consumer_info(queue: str, consumer_id: str) -> str:
    """STRING (JSON, expiring): what a live consumer reports in its heartbeat."""
    return prefix(queue) + "consumer:" + consumer_id


def audit(queue: str) -> str:
    """STREAM (capped): the queue's job outcomes, written by the settle script in the queue's slot
    and drained into ``audit_log`` by ``tq.audit.AuditWriter``."""
    return prefix(queue) + "audit"


# ---- recurring schedules (tq.schedules) ----------------------------------------------------------
SCHEDULES = "tq:schedules"  # HASH schedule name -> its spec (JSON, ``tq.schedules.ScheduleSpec``)
SCHEDULER_LEADER = "tq:scheduler:leader"  # STRING (expiring): the token of the elected scheduler


def schedule_state(name: str) -> str:
    """HASH: a schedule's observed state (``tq.schedules.STATE_FIELDS``): created, last and next
    tick, last job id, queue and outcome, the fired/skipped/missed totals, and for a managed schedule
    its owner (``JobSchedule <namespace>/<name>``) and that resource's generation. Written by the
    scheduler (the last tick only moves forward), ``tq schedule add`` and ``run-now``, the operator."""
    return f"tq:schedule:{{{name}}}:state"


# ---- the rate limit of a queue across its replicas (tq.ratelimit) --------------------------------
def rate_window(queue: str) -> str:
    """ZSET permit -> start time (ms, Redis clock): the job starts of the sliding window of the
    queue's ``rateLimit`` (expiring: gone one window after the last start)."""
    return prefix(queue) + "rate:window"


def rate_leases(queue: str) -> str:
    """ZSET ``<consumer>:<serial>:<permits>`` -> expiry (ms): permits held by reads in flight,
    counted against the limit until committed or expired (a consumer that died mid-read)."""
    return prefix(queue) + "rate:leases"


def rate_pause(queue: str) -> str:
    """STRING (expiring): the queue's intake is paused on every replica while it exists, set by a
    handler's ``tq.errors.RateLimited`` (its Retry-After)."""
    return prefix(queue) + "rate:pause"
