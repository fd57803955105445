"""The operator as the chart runs it (``tq operator``, a process of its own against the emulated
API server): kopf's liveness endpoint answers (the chart's liveness and readiness probes), its
``tq_operator_*`` metrics count the reconciles, and its Events name the operator as their source."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import wait_for
from support.operator import NS, Cluster, condition, create, process, qc, ready, wait_obj
from support.redis_server import free_port
from tq_operator.main import EVENT_SOURCE, operator_options
from tq_operator.settings import OperatorSettings

pytestmark = pytest.mark.timeout(60)
POD = "tq-operator-5d9c7b-x2x7k"


@contextmanager
def operator_process(redis_url: str, health: int, metrics: int, log: Path) -> Iterator[None]:
    with process(
        [sys.executable, "-m", "tq_cli", "operator"],
        log,
        TQ_REDIS_URL=redis_url,
        TQ_OPERATOR_NAMESPACES=NS,
        TQ_OPERATOR_HEALTH_PORT=str(health),
        TQ_OPERATOR_METRICS_PORT=str(metrics),
        POD_NAME=POD,
    ) as proc:
        yield
    assert proc.returncode == 0, log.read_text()[-3000:]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_operator_options_carry_the_liveness_endpoint() -> None:
    options = operator_options(OperatorSettings(operator_namespaces="tq", operator_health_port=8081))
    assert options == {"namespaces": ["tq"], "liveness_endpoint": "http://0.0.0.0:8081/healthz"}
    assert operator_options(OperatorSettings(operator_namespaces="")) == {"clusterwide": True}


async def test_health_endpoint_metrics_and_event_source(
    cluster: Cluster, api: aiohttp.ClientSession, redis_url: str, tmp_path: Path
) -> None:
    health, metrics = free_port(), free_port()
    with operator_process(redis_url, health, metrics, tmp_path / "operator.log"):
        seen: dict[str, Any] = {}

        def healthy() -> bool:
            seen["health"] = http_get(f"http://127.0.0.1:{health}/healthz")
            return bool(seen["health"][0] == 200)

        await wait_for(healthy, timeout=20, interval=0.1, what="the operator's /healthz answers 200")
        assert json.loads(seen["health"][1]) == {"queueconfigs": 0}

        await create(api, qc("email", concurrency=3, paused=True))
        await create(api, qc("bad", queue="otp:send", concurrency=5000))
        await wait_obj(api, "email", ready, "Ready=True")
        await wait_obj(api, "bad", lambda o: condition(o, "Ready").get("reason") == "InvalidSpec", "invalid")

        def counted() -> bool:
            seen["metrics"] = samples(http_get(f"http://127.0.0.1:{metrics}/metrics")[1])
            return (
                seen["metrics"].get(
                    ("tq_operator_reconciles_total", (("handler", "reconcile"), ("result", "ok"))), 0
                )
                >= 1
                and seen["metrics"].get(
                    ("tq_operator_reconciles_total", (("handler", "reconcile"), ("result", "invalid"))), 0
                )
                >= 1
            )

        await wait_for(counted, timeout=10, interval=0.1, what="the reconciles counted")
        values = seen["metrics"]
        assert values[("tq_operator_reconcile_duration_seconds_count", (("handler", "reconcile"),))] >= 2
        assert ("tq_operator_reconciles_in_progress", ()) in values

        async with api.get(f"/api/v1/namespaces/{NS}/events") as r:
            items = (await r.json())["items"]
        paused = [e for e in items if e.get("reason") == "Paused"]
        invalid = [e for e in items if e.get("reason") == "InvalidSpec"]
        assert paused and invalid
        for event in (paused[0], invalid[0]):
            assert event["source"]["component"] == EVENT_SOURCE == "tq-operator"
            assert event["reportingComponent"] == EVENT_SOURCE
            assert event["reportingInstance"] == POD
            assert event["metadata"]["name"].startswith("tq-operator-")
