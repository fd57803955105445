"""``tq_schedule_ticks_total``: the families' declared schedules exist at zero from start-up, and the
scheduler's hook (``JobMetrics.schedule_ticks``) counts fired, skipped and missed ticks."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from tq.registry import all_queues
from tq_services.metrics import JobMetrics


def _value(registry: CollectorRegistry, **labels: str) -> float | None:
    return registry.get_sample_value("tq_schedule_ticks_total", labels)


def test_declared_schedules_start_at_zero_and_ticks_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = JobMetrics(registry, all_queues())
    for outcome in ("fired", "skipped", "missed"):
        assert (
            _value(registry, schedule="email-process-email-queue", queue="email:send", outcome=outcome) == 0
        )
    metrics.schedule_ticks("analytics-rollup-daily", "analytics:process", "missed", 3)
    metrics.schedule_ticks("mine", "email:send", "fired", 1)
    assert (
        _value(registry, schedule="analytics-rollup-daily", queue="analytics:process", outcome="missed") == 3
    )
    assert _value(registry, schedule="mine", queue="email:send", outcome="fired") == 1
