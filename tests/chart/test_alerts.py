"""The Prometheus alert rules the chart ships (``charts/tq/files/alerts``): ``promtool check rules``,
``promtool test rules`` (the unit tests of every alert), their shape, and that every metric they
use is one a family service (or the operator) exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.prometheus import operator_metric_names, service_metric_names

ALERTS = Path(__file__).resolve().parents[2] / "charts" / "tq" / "files" / "alerts"
RULES = ALERTS / "tq-alerts.yaml"
RULE_TESTS = ALERTS / "tq-alerts.test.yaml"
EXPECTED = {
    "TqDlqGrowing",
    "TqFailureRatioHigh",
    "TqOldestWaitingTooOld",
    "TqQueuePausedTooLong",
    "TqNoConsumers",
    "TqConfigNotApplied",
    "TqScheduleMissed",
    "TqWorkerTaskRestarting",
    "TqEventLoopBlocked",
    "TqOperatorReconcileErrors",
    "TqDlqNearCap",
    "TqAuditBacklogHigh",
    "TqAuditBacklogFull",
}
# the label an alert's summary and description name, when not the queue (its metric has none)
NAMED = {"TqWorkerTaskRestarting": "task", "TqOperatorReconcileErrors": "handler"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not on PATH (Debian package prometheus)"
)


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _promtool(*args: str) -> None:
    proc = subprocess.run(["promtool", *args], cwd=ALERTS, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"


@needs_promtool
def test_promtool_check_rules() -> None:
    _promtool("check", "rules", RULES.name)


@needs_promtool
def test_promtool_test_rules() -> None:
    _promtool("test", "rules", RULE_TESTS.name)


def test_every_alert_is_complete_and_by_label() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} == EXPECTED
    for rule in rules:
        name = rule["alert"]
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert set(rule["annotations"]) >= {"summary", "description"}, name
        named = "{{ $labels." + NAMED.get(name, "queue") + " }}"
        assert named in rule["annotations"]["summary"], name
        assert named in rule["annotations"]["description"], name
        # no queue list: the registry drives the rules through the queue label
        assert not re.search(r"\bqueue\s*=~?", rule["expr"]), name


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == EXPECTED, f"alerts without a firing case: {EXPECTED - firing}"
    assert quiet == EXPECTED, f"alerts without a not-firing case: {EXPECTED - quiet}"


async def test_rules_use_only_exported_metrics(redis_client: Any) -> None:
    """A renamed or dropped metric breaks this: the rules' names against a real exposition."""
    exported = await service_metric_names(redis_client)
    exported |= operator_metric_names()  # TqOperatorReconcileErrors: the operator's /metrics
    used = {name for rule in _rules() for name in re.findall(r"\b(tq_[a-z0-9_]+)\b", rule["expr"])}
    assert used, "no tq_ metric found in the rules"
    assert used <= exported, f"rules use metrics tq does not export: {sorted(used - exported)}"
    assert "tq_operator_reconcile_errors_total" in used
