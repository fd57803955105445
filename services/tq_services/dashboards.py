"""Grafana dashboards generated from the registry: ``make dashboards`` (``python -m tq_services.dashboards``)
writes ``charts/tq/files/dashboards/*.json``; ``--check`` writes nothing and exits 1 when a checked-in
file is stale.

* ``tq-overview``: the fleet at a glance (throughput, failures by outcome, latency percentiles from
  the histograms, depth, DLQ size and growth, consumers per family), then one row per registry family
  with the same panels for that family's queues, then schedules (ticks by outcome), worker faults
  (supervised task restarts, event loop blocks) and the operator (reconciles, errors, p95 run time,
  runs in progress: its own ``tq_operator_*`` metrics, scraped from the operator, not a family);
* ``tq-queue``: a drill-down into one queue, picked with the ``queue`` variable (``label_values``
  over what Prometheus scrapes, so a queue registered at run time shows up too).

Both take their datasource from a ``datasource`` variable and keep stable uids. The queries follow
``docs/services.md``: queue gauges are per queue, not per process (``max by``), job counters and
histograms are per process (``sum``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tq import generated
from tq.registry import PRODUCT_QUEUE_NAMES, QueueSpec, all_queues

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = Path("charts/tq/files/dashboards")
OVERVIEW_UID = "tq-overview"
QUEUE_UID = "tq-queue"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
DLQ_GROWTH_WINDOW = "15m"  # the window TqDlqGrowing compares over
QUANTILES = (0.5, 0.95, 0.99)
SCHEMA_VERSION = 39
WIDTH = 24  # Grafana's grid width
SCHEDULES_ROW = "Schedules"
WORKER_FAULTS_ROW = "Worker faults"
OPERATOR_ROW = "Operator"  # its metrics come from the operator's /metrics, not a family service
RATE_LIMITS_ROW = "Rate limits"


# ---- PromQL -------------------------------------------------------------------------------------
def _sel(matcher: str) -> str:
    return "{" + matcher + "}" if matcher else ""


def counter_rate(name: str, by: str, m: str = "") -> str:
    """A counter's per-second rate over ``RATE``, summed by the labels ``by``."""
    return f"sum by ({by}) (rate({name}{_sel(m)}[{RATE}]))"


def throughput(m: str) -> str:
    return counter_rate("tq_jobs_completed_total", "queue", m)


def enqueue_rate(m: str) -> str:
    return f"max by (queue) (rate(tq_jobs_enqueued_total{_sel(m)}[{RATE}]))"


def failures(m: str) -> str:
    return counter_rate("tq_jobs_failed_total", "queue, outcome", m)


def quantile(q: float, histogram: str, m: str, by: str = "queue") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket{_sel(m)}[{RATE}])))"


def gauge(name: str, m: str, by: str = "queue") -> str:
    return f"max by ({by}) ({name}{_sel(m)})"


def dlq_growth(m: str) -> str:
    return f"max by (queue) (delta(tq_queue_dlq{_sel(m)}[{DLQ_GROWTH_WINDOW}]))"


def consumers_per_family(m: str) -> str:
    return f"sum by (family) (max by (queue, family) (tq_queue_consumers{_sel(m)}))"


def queues_matcher(specs: Iterable[QueueSpec]) -> str:
    """``queue=~"a|b"`` for a family's queues."""
    names = [s.name for s in specs]
    for name in names:  # escaping would need PromQL's own string escapes: refuse instead
        if re.search(r"[.*+?()\[\]{}|^$\\]", name):
            raise ValueError(f"queue name {name!r} holds a regex metacharacter: cannot match it in a panel")
    return 'queue=~"' + "|".join(names) + '"'


# ---- Grafana JSON -------------------------------------------------------------------------------
def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True, "refId": ref}


class Layout:
    """Panels placed left to right, wrapping at the grid width; ids in order of creation."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        if self.x:
            self.y += self.row_h
        self.panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": self.y},
                "id": self._next_id(),
                "panels": [],
                "title": title,
                "type": "row",
            }
        )
        self.x, self.y, self.row_h = 0, self.y + 1, 0

    def timeseries(
        self,
        title: str,
        targets: Sequence[tuple[str, str]],
        unit: str,
        description: str,
        w: int = 8,
        h: int = 8,
    ) -> None:
        if self.x + w > WIDTH:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        self.panels.append(
            {
                "datasource": DATASOURCE,
                "description": description,
                "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
                "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
                "id": self._next_id(),
                "options": {
                    "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
                "targets": [target(expr, legend, refs[i]) for i, (expr, legend) in enumerate(targets)],
                "title": title,
                "type": "timeseries",
            }
        )
        self.x += w
        self.row_h = max(self.row_h, h)


def datasource_variable() -> dict[str, Any]:
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Prometheus",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def dashboard(
    uid: str, title: str, description: str, panels: list[Any], variables: list[Any]
) -> dict[str, Any]:
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "graphTooltip": 1,
        "links": [
            {"asDropdown": False, "icon": "dashboard", "tags": ["tq"], "title": "tq", "type": "dashboards"}
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["tq"],
        "templating": {"list": variables},
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "utc",
        "title": title,
        "uid": uid,
        "version": 1,
    }


# ---- the dashboards -----------------------------------------------------------------------------
def _queue_panels(lay: Layout, m: str) -> None:
    """Throughput, failures, latency, depth and DLQ of the queues ``m`` selects (one series per queue)."""
    lay.timeseries(
        "Throughput",
        [(throughput(m), "{{queue}} completed"), (enqueue_rate(m), "{{queue}} enqueued")],
        "ops",
        "Jobs completed and enqueued per second",
    )
    lay.timeseries(
        "Failures by outcome",
        [(failures(m), "{{queue}} {{outcome}}")],
        "ops",
        "Failed attempts per second: retried, dead_lettered, invalid (bad input, never run)",
    )
    lay.timeseries(
        "Run time p95",
        [(quantile(0.95, "tq_job_duration_seconds", m), "{{queue}}")],
        "s",
        "95th percentile of the handler run time of an attempt (tq_job_duration_seconds)",
    )
    lay.timeseries(
        "Waiting",
        [(gauge("tq_queue_waiting", m), "{{queue}}")],
        "short",
        "Jobs in the stream not yet delivered to a consumer",
    )
    lay.timeseries(
        "Dead-letter queue",
        [
            (gauge("tq_queue_dlq", m), "{{queue}} size"),
            (dlq_growth(m), f"{{{{queue}}}} growth ({DLQ_GROWTH_WINDOW})"),
        ],
        "short",
        f"Entries in the DLQ, and how much it grew over {DLQ_GROWTH_WINDOW}",
    )
    lay.timeseries(
        "Consumers",
        [(gauge("tq_queue_consumers", m), "{{queue}}")],
        "short",
        "Live consumers (unexpired heartbeats)",
    )


def _fault_panels(lay: Layout) -> None:
    """After the family rows (the ids of the panels above stay put): schedules, worker faults, operator."""
    lay.row(SCHEDULES_ROW)
    lay.timeseries(
        "Schedule ticks by outcome",
        [(counter_rate("tq_schedule_ticks_total", "schedule, outcome"), "{{schedule}} {{outcome}}")],
        "ops",
        "Ticks of recurring schedules per second: fired, skipped (Forbid, or not enqueueable), missed "
        "(TqScheduleMissed fires on any miss in 15 minutes)",
        w=WIDTH,
    )
    lay.row(WORKER_FAULTS_ROW)
    lay.timeseries(
        "Task restarts by task and reason",
        [(counter_rate("tq_worker_task_restarts_total", "task, reason"), "{{task}} {{reason}}")],
        "ops",
        "Failures of a worker's supervised task (each retried with backoff) per second; "
        "TqWorkerTaskRestarting fires when a task keeps restarting for 10 minutes",
        w=12,
    )
    lay.timeseries(
        "Event loop blocks by queue and job",
        [(counter_rate("tq_worker_loop_blocked_total", "queue, job"), "{{queue}} {{job}}")],
        "ops",
        "Times a job (_none: other code) blocked the event loop past the watchdog's threshold, per "
        "second; TqEventLoopBlocked fires on any in 5 minutes",
        w=12,
    )
    lay.row(OPERATOR_ROW)
    lay.timeseries(
        "Reconciles by result",
        [(counter_rate("tq_operator_reconciles_total", "handler, result"), "{{handler}} {{result}}")],
        "ops",
        "QueueConfig handler runs per second: ok, invalid, conflict, error (retried later)",
        w=6,
    )
    lay.timeseries(
        "Reconcile errors by cause",
        [(counter_rate("tq_operator_reconcile_errors_total", "handler, error"), "{{handler}} {{error}}")],
        "ops",
        "Failed handler runs per second by exception; TqOperatorReconcileErrors fires when they keep "
        "happening",
        w=6,
    )
    lay.timeseries(
        "Reconcile run time p95",
        [(quantile(0.95, "tq_operator_reconcile_duration_seconds", "", by="handler"), "{{handler}}")],
        "s",
        "95th percentile of a QueueConfig handler run (tq_operator_reconcile_duration_seconds)",
        w=6,
    )
    lay.timeseries(
        "Reconciles in progress",
        [("sum(tq_operator_reconciles_in_progress)", "in progress")],
        "short",
        "QueueConfig handler runs under way (work pending in the operator)",
        w=6,
    )
    lay.row(RATE_LIMITS_ROW)
    lay.timeseries(
        "Intake waiting at the rate limit",
        [(counter_rate("tq_rate_limit_wait_seconds_total", "queue, reason"), "{{queue}} {{reason}}")],
        "percentunit",
        "Share of the time consumers' intake waited at a queue's rate limit: limit (no permit left in "
        "the window, across replicas) or paused (a handler raised RateLimited)",
        w=12,
    )
    lay.timeseries(
        "Jobs rate-limited by the provider",
        [(counter_rate("tq_jobs_rate_limited_total", "queue, job"), "{{queue}} {{job}}")],
        "ops",
        "Jobs per second whose handler raised RateLimited (put back uncharged, the queue paused)",
        w=12,
    )


def overview(specs: Sequence[QueueSpec]) -> dict[str, Any]:
    lay = Layout()
    lay.row("All queues")
    lay.timeseries(
        "Throughput",
        [(throughput(""), "{{queue}} completed"), (enqueue_rate(""), "{{queue}} enqueued")],
        "ops",
        "Jobs completed and enqueued per second, per queue",
        w=12,
    )
    lay.timeseries(
        "Failures by outcome",
        [(failures(""), "{{queue}} {{outcome}}")],
        "ops",
        "Failed attempts per second: retried, dead_lettered, invalid (bad input, never run)",
        w=12,
    )
    lay.timeseries(
        "Run time percentiles (all queues)",
        [
            (quantile(q, "tq_job_duration_seconds", "", by="queue"), f"{{{{queue}}}} p{int(q * 100)}")
            for q in QUANTILES
        ],
        "s",
        "Handler run time of an attempt, from the tq_job_duration_seconds histogram",
        w=12,
    )
    lay.timeseries(
        "Wait percentiles (all queues)",
        [
            (quantile(q, "tq_job_wait_seconds", "", by="queue"), f"{{{{queue}}}} p{int(q * 100)}")
            for q in QUANTILES
        ],
        "s",
        "From when a job became due to its first start, from the tq_job_wait_seconds histogram",
        w=12,
    )
    lay.timeseries(
        "Depth",
        [
            (gauge("tq_queue_waiting", ""), "{{queue}} waiting"),
            (gauge("tq_queue_active", ""), "{{queue}} active"),
            (gauge("tq_queue_delayed", ""), "{{queue}} delayed"),
        ],
        "short",
        "Jobs waiting, in flight and delayed (retry backoff or a later due time)",
    )
    lay.timeseries(
        f"DLQ growth ({DLQ_GROWTH_WINDOW})",
        [(dlq_growth(""), "{{queue}}"), (gauge("tq_queue_dlq", ""), "{{queue}} size")],
        "short",
        f"How much each dead-letter queue grew over {DLQ_GROWTH_WINDOW} (TqDlqGrowing fires above 10)",
    )
    lay.timeseries(
        "Consumers per family",
        [(consumers_per_family(""), "{{family}}")],
        "short",
        "Live consumers of each family's queues",
    )
    by_family: dict[str, list[QueueSpec]] = {}
    for spec in specs:
        by_family.setdefault(spec.family, []).append(spec)
    for family, queues in by_family.items():
        lay.row(f"Family {family}: " + ", ".join(q.name for q in queues))
        _queue_panels(lay, queues_matcher(queues))
    _fault_panels(lay)
    return dashboard(
        OVERVIEW_UID,
        "tq / overview",
        "Every tq queue: throughput, failures, latency, depth, dead letters, consumers; a row per family; "
        "schedules, worker faults and the operator",
        lay.panels,
        [datasource_variable()],
    )


def queue_drilldown() -> dict[str, Any]:
    m = 'queue="$queue"'
    lay = Layout()
    lay.row("Queue $queue")
    lay.timeseries(
        "Throughput",
        [
            (throughput(m), "completed"),
            (enqueue_rate(m), "enqueued"),
            (counter_rate("tq_jobs_cancelled_total", "queue", m), "cancelled"),
        ],
        "ops",
        "Jobs completed, enqueued and cancelled (tq job cancel, on a worker) per second",
        w=12,
    )
    lay.timeseries(
        "Failures by outcome",
        [(counter_rate("tq_jobs_failed_total", "job, outcome", m), "{{job}} {{outcome}}")],
        "ops",
        "Failed attempts per second by job: retried, dead_lettered, invalid (bad input, never run)",
        w=12,
    )
    lay.timeseries(
        "Run time percentiles",
        [
            (quantile(q, "tq_job_duration_seconds", m, by="job"), f"{{{{job}}}} p{int(q * 100)}")
            for q in QUANTILES
        ],
        "s",
        "Handler run time of an attempt, by job",
        w=12,
    )
    lay.timeseries(
        "Wait percentiles",
        [
            (quantile(q, "tq_job_wait_seconds", m, by="job"), f"{{{{job}}}} p{int(q * 100)}")
            for q in QUANTILES
        ],
        "s",
        "From when a job became due to its first start, by job",
        w=12,
    )
    lay.timeseries(
        "Depth",
        [
            (gauge("tq_queue_waiting", m), "waiting"),
            (gauge("tq_queue_active", m), "active"),
            (gauge("tq_queue_delayed", m), "delayed"),
        ],
        "short",
        "Jobs waiting, in flight and delayed",
    )
    lay.timeseries(
        "Oldest waiting",
        [(gauge("tq_queue_oldest_waiting_seconds", m), "age")],
        "s",
        "Age of the oldest job not yet delivered (TqOldestWaitingTooOld fires above 10 minutes)",
    )
    lay.timeseries(
        "Dead-letter queue",
        [
            (gauge("tq_queue_dlq", m), "size"),
            (dlq_growth(m), f"growth ({DLQ_GROWTH_WINDOW})"),
            (gauge("tq_queue_dlq_max", m), "cap"),
            (
                f"max by (queue) (increase(tq_dlq_trimmed_total{{{m}}}[{DLQ_GROWTH_WINDOW}]))",
                "trimmed at the cap",
            ),
        ],
        "short",
        f"Entries in the DLQ, its growth over {DLQ_GROWTH_WINDOW}, its cap (TqDlqNearCap fires at 90 %), "
        "and the oldest entries trimmed at the cap",
    )
    lay.timeseries(
        "Consumers and pause",
        [(gauge("tq_queue_consumers", m), "consumers"), (gauge("tq_queue_paused", m), "paused")],
        "short",
        "Live consumers; paused is 1 while the queue is paused",
    )
    lay.timeseries(
        "Config generation",
        [
            (gauge("tq_queue_config_generation", m), "in Redis"),
            (f"min by (queue) (tq_consumer_config_generation{{{m}}})", "applied (slowest replica)"),
        ],
        "short",
        "The queue's runtime config generation and the lowest one a consumer applied",
    )
    lay.timeseries(
        "Reclaimed",
        [(counter_rate("tq_jobs_reclaimed_total", "queue", m), "reclaimed")],
        "ops",
        "Jobs taken over from a consumer that stopped responding, per second",
    )
    lay.timeseries(
        "Audit backlog",
        [
            (gauge("tq_queue_audit_backlog", m), "waiting for the database"),
            (gauge("tq_queue_audit_backlog_max", m), "bound"),
        ],
        "short",
        "Audit records in Redis not yet written to the database; at the bound the queue takes no new "
        "jobs until they are written (TqAuditBacklogHigh at 25 %, TqAuditBacklogFull at the bound)",
    )
    queue_var = {
        "current": {},
        "datasource": DATASOURCE,
        "definition": "label_values(tq_queue_waiting, queue)",
        "hide": 0,
        "includeAll": False,
        "label": "Queue",
        "multi": False,
        "name": "queue",
        "options": [],
        "query": {"query": "label_values(tq_queue_waiting, queue)", "refId": "queue"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }
    return dashboard(
        QUEUE_UID,
        "tq / queue",
        "One tq queue: throughput, failures and latency by job, depth, dead letters, consumers, config",
        lay.panels,
        [datasource_variable(), queue_var],
    )


# ---- files --------------------------------------------------------------------------------------
def product_queues() -> tuple[QueueSpec, ...]:
    """The registry's product queues (a queue registered at run time is not part of the chart)."""
    return tuple(s for s in all_queues() if s.name in PRODUCT_QUEUE_NAMES)


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


def generated_files() -> dict[Path, str]:
    return {
        DASHBOARDS_DIR / f"{OVERVIEW_UID}.json": render(overview(product_queues())),
        DASHBOARDS_DIR / f"{QUEUE_UID}.json": render(queue_drilldown()),
    }


def stale_files(root: Path) -> list[Path]:
    return generated.stale_files(root, generated_files())


def main(argv: list[str] | None = None) -> int:
    return generated.main(
        "python -m tq_services.dashboards",
        __doc__.split("\n")[0],
        REPO_ROOT,
        "dashboards",
        lambda _: generated_files(),
        argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())
