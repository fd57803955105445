"""The operator's own Prometheus metrics (prefix ``tq_operator_``), served on
``TQ_OPERATOR_METRICS_PORT`` (the chart scrapes it like the services: ServiceMonitor or
``prometheus.io/scrape``).

- ``tq_operator_reconciles_total{handler,result}``: handler runs by outcome: ``ok``, ``invalid``
  (InvalidSpec), ``conflict`` (another QueueConfig owns the queue), ``error`` (retried later);
- ``tq_operator_reconcile_errors_total{handler,error}``: the runs that failed, by cause;
- ``tq_operator_reconcile_duration_seconds{handler}``: how long a run took;
- ``tq_operator_reconciles_in_progress``: runs under way (work pending in the operator).

``handler`` is ``reconcile`` (create/update/resume), ``refresh`` (the status timer) or ``release``
(delete) for QueueConfigs, ``schedule-reconcile``, ``schedule-refresh`` or ``schedule-release`` for
JobSchedules.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "tq_operator_reconciles",
    "QueueConfig and JobSchedule handler runs by handler and outcome",
    ["handler", "result"],
)
ERRORS = Counter(
    "tq_operator_reconcile_errors",
    "QueueConfig and JobSchedule handler runs that failed, by cause",
    ["handler", "error"],
)
DURATION = Histogram(
    "tq_operator_reconcile_duration_seconds",
    "duration of a QueueConfig or JobSchedule handler run",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
IN_PROGRESS = Gauge(
    "tq_operator_reconciles_in_progress", "QueueConfig and JobSchedule handler runs under way"
)


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return type(cause).__name__


async def measured(handler: str, work: Awaitable[str | None]) -> None:
    """Await ``work`` (its result: the outcome; None: ``ok``) and record it."""
    started = time.perf_counter()
    IN_PROGRESS.inc()
    try:
        result = await work
    except Exception as exc:
        RECONCILES.labels(handler, "error").inc()
        ERRORS.labels(handler, _cause(exc)).inc()
        raise
    else:
        RECONCILES.labels(handler, result or "ok").inc()
    finally:
        IN_PROGRESS.dec()
        DURATION.labels(handler).observe(time.perf_counter() - started)


def serve(port: int, addr: str = "0.0.0.0") -> Any:
    """Serve /metrics on ``port`` in a thread; returns the server (``shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=addr)
    return server
