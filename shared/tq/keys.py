"""Every Redis key and channel tq uses. Each queue's keys share the hash tag ``{queue}``, so
every script touches one slot and the layout works on Redis Cluster."""

from __future__ import annotations

EVENTS_CHANNEL = "tq:events"
CONTROL_CHANNEL = "tq:control"
STATS_LEADER = "tq:stats:leader"  # STRING: the token of the process writing the stats (tq.stats)
GROUP = "tq"
ANALYTICS_REALTIME = "tq:analytics:realtime"  # STRING (JSON, expiring): snapshot-realtime's payload


def prefix(queue: str) -> str:
    """``tq:{queue}:`` - the scripts build per-job keys from it (same slot)."""
    return f"tq:{{{queue}}}:"


def stream(queue: str) -> str:
    return prefix(queue) + "stream"


def delayed(queue: str) -> str:
    """ZSET job id -> due time (ms): delayed jobs and retries in backoff."""
    return prefix(queue) + "delayed"


def dlq(queue: str) -> str:
    return prefix(queue) + "dlq"


def job(queue: str, job_id: str) -> str:
    """HASH: the job record."""
    return prefix(queue) + "job:" + job_id


def idempotency(queue: str, key: str) -> str:
    """STRING: the job id that holds the key, ``done:<id>`` once it completed."""
    return prefix(queue) + "idem:" + key


def completed_index(queue: str) -> str:
    """ZSET job id -> finished time (ms); trimmed to retention.completed."""
    return prefix(queue) + "completed"


def dead_index(queue: str) -> str:
    """ZSET job id -> dead-lettered time (ms); trimmed to retention.failed."""
    return prefix(queue) + "dead"


def counters(queue: str) -> str:
    """HASH of monotonic totals: enqueued, completed, retried, dead, skipped, reclaimed, requeued."""
    return prefix(queue) + "counters"


def started(queue: str) -> str:
    """HASH entry id -> consumer id: jobs whose start was recorded before their handler ran. Only
    written while the queue is under crash watch (``crash_watch``) or for suspects; cleared at settle."""
    return prefix(queue) + "started"


def crash_watch(queue: str) -> str:
    """STRING (expiring): set when a consumer died holding jobs; while it exists every job start is
    recorded in ``started``, so the next crash charges an attempt only to the jobs that were running."""
    return prefix(queue) + "crashwatch"


def stats(queue: str) -> str:
    """HASH (expiring): the live stats snapshot the stats leader writes (``tq.stats``)."""
    return prefix(queue) + "stats"


def stats_mark(queue: str) -> str:
    """HASH: the 5-minute aggregate's baseline: its bucket, the counters at its start, max depths."""
    return prefix(queue) + "stats:mark"


def config(queue: str) -> str:
    """STRING: the runtime config JSON written by the operator or the CLI."""
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


def analytics_dashboard(dashboard: str) -> str:
    """STRING (JSON, expiring): a dashboard payload precomputed by snapshot-dashboard."""
    return "tq:analytics:dashboard:" + dashboard


def admin_rate_limit(token_id: str) -> str:
    """ZSET (expiring): one admin API token's requests in its sliding window (``tq_services.admin``)."""
    return f"tq:admin:ratelimit:{token_id}"
