"""The admin service's own Prometheus counters, served at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)

REFUSED = Counter(
    "tq_admin_refused_total",
    "Calls the admin API refused to a caller with a valid token, by reason "
    "(forbidden, rate_limited, payload_too_large); at most one audit row per token per window",
    ["reason"],
    registry=REGISTRY,
)
AUDIT_FAILURES = Counter(
    "tq_admin_audit_write_failures_total",
    "Audit rows the database refused, by what became of them (spooled to Redis, or lost)",
    ["fate"],
    registry=REGISTRY,
)
SPOOL_FLUSHED = Counter(
    "tq_admin_audit_spool_flushed_total",
    "Spooled audit rows written to the database later",
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "tq_admin_events_rejected_total",
    "Messages on tq:events that are not a valid tq.envelope.Event, not relayed",
    registry=REGISTRY,
)
ENQUEUED = Counter(
    "tq_admin_enqueued_total",
    "Jobs enqueued over HTTP (POST /api/jobs/...), by queue and outcome (created, or duplicate: an "
    "idempotency key that was held)",
    ["queue", "outcome"],
    registry=REGISTRY,
)
