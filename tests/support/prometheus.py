"""A real Prometheus for tests: the ``prometheus`` binary (Debian package ``prometheus``) on a free
port, scraping the given targets every second, its TSDB in a temporary directory; queried through
its HTTP API (``/api/v1/query``, ``/api/v1/targets``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.redis_server import free_port

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not on PATH (Debian package prometheus)"
)


async def service_metric_names(client: Any) -> set[str]:
    """The sample names a family service's ``/metrics`` exposes for every registered queue: a real
    exposition of ``tq_services.metrics``, its queue gauges read once from Redis."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from tq.registry import families
    from tq_services.metrics import make_registry

    specs = [spec for family in families().values() for spec in family]
    registry, _, collector = make_registry(specs, client)
    assert await collector.refresh()  # the queue gauges exist only after a successful read
    return {
        sample.name
        for fam in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in fam.samples
    }


def operator_metric_names() -> set[str]:
    """The sample names the operator's ``/metrics`` exposes (``tq_operator.metrics``; its labelled
    series appear with the first run, so from the metric definitions, not an exposition)."""
    from prometheus_client.metrics import MetricWrapperBase
    from tq_operator import metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        fam.name + suffix
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for fam in metric.describe()
        for suffix in suffixes[fam.type]
    }


class PromError(AssertionError):
    """A query Prometheus refused (bad PromQL) or could not run."""


class Prometheus:
    def __init__(self, port: int, proc: subprocess.Popen[str]) -> None:
        self.port = port
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> dict[str, Any]:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400/422: a refused query; the body says why
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PromError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return dict(body["data"])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the vector's samples (``metric`` labels, ``value`` [ts, "v"])."""
        data = self.get("/api/v1/query", query=expr)
        result = data["result"]
        if data["resultType"] != "vector":  # a scalar or string: one unlabelled sample
            return [{"metric": {}, "value": result}]
        return list(result)

    def values(self, expr: str, label: str) -> dict[str, float]:
        """``label`` value -> sample value of an instant query."""
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}

    def targets(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/targets", state="active")["activeTargets"])

    def scraped_since(self, at: float) -> bool:
        """Whether every target was scraped successfully after ``at`` (epoch seconds)."""
        targets = self.targets()
        return bool(targets) and all(
            t["health"] == "up" and _epoch(t["lastScrape"]) > at + t["lastScrapeDuration"] for t in targets
        )

    def wait(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"prometheus exited {self.proc.returncode}: {err}")
            if time.monotonic() > deadline:
                try:
                    health: Any = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.targets()]
                except (OSError, PromError) as exc:
                    health = exc
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; targets: {health}")
            time.sleep(0.2)


def _epoch(rfc3339: str) -> float:
    # Prometheus gives nanoseconds ("2026-01-01T00:00:00.123456789Z"); Python parses microseconds
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


@contextmanager
def prometheus(targets: Sequence[str], scrape_interval: str = "1s") -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (``host:port`` serving ``/metrics``); yields once it is ready
    and every target was scraped up at least once; stopped (SIGTERM) and its data removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="tq-prom-"))
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        # honor_labels: the tq metrics carry a ``job`` label (the tq job name), which Prometheus would
        # otherwise rename to ``exported_job`` in favour of the scrape job's (docs/services.md)
        "scrape_configs": [
            {"job_name": "tq", "honor_labels": True, "static_configs": [{"targets": list(targets)}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    prom = Prometheus(port, proc)
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(prom.base + "/-/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        prom.wait(ready, 20, "prometheus /-/ready")
        prom.wait(lambda: prom.scraped_since(0), 20, "a first successful scrape of every target")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
