"""Family service processes for the tests: start ``tq serve FAMILY``, wait for it, scrape it, stop it."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from tq_services.schema import migrate

from support import helper_env, wait_until
from support.redis_server import free_port


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def http_status(port: int, path: str) -> int | None:
    try:
        return http_get(port, path, timeout=1.0)[0]
    except OSError:
        return None


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(body: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(port: int) -> tuple[str, Samples]:
    status, body = http_get(port, "/metrics")
    assert status == 200, body
    return body, parse_metrics(body)


def service_env(redis_url: str, **extra: str) -> dict[str, str]:
    return helper_env(TQ_REDIS_URL=redis_url, TQ_AUDIT_ENABLED="false", **extra)


def serve_family(redis_url: str, family: str = "messaging", **env: str) -> tuple[subprocess.Popen[str], int]:
    """``tq serve FAMILY`` on a free port; returns once /readyz says 200."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tq_cli", "serve", family, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=service_env(redis_url, **env),
    )
    wait_ready(proc, port)
    return proc, port


def wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"service exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        return http_status(port, "/readyz") == 200

    wait_until(ready, 30, "/readyz 200")


def stop_process(proc: subprocess.Popen[str], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


def messaging_db(tmp_path: Path) -> str:
    """A migrated database for the messaging handlers (they log every email they fail)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'messaging.db'}"
    migrate(url)
    return url
