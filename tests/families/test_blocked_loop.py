"""A handler that blocks the event loop, in a real ``tq serve`` process
(``tests/support/blocking_service.py``): the probes get no answer while it blocks, the loop
watchdog names and counts it, and all is well again once it returns.

The probes are served from the worker's event loop on purpose (issue 15): a handler that blocks it
cannot be cancelled, so the kubelet's probe timeouts are what end it: readiness fails after
``probes.readiness.failureThreshold`` unanswered probes in a row, liveness after
``probes.liveness.failureThreshold``, which restarts the container (the chart's threshold:
docs/engine.md, Faults). Were the probes answered from another thread, or the handler's work run
in one, the GETs made during the block would get 200 and this test would fail."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support import blocking_service, fast_settings, helper_command, wait_until
from support.redis_server import free_port
from support.services import http_get, http_status, sample, scrape, service_env, stop_process, wait_ready
from tq import keys
from tq.producer import SyncProducer
from tq.registry import unregister_queue
from tq_services.schema import migrate

QUEUE, JOB = blocking_service.QUEUE, blocking_service.JOB
BLOCK_S = 4.0  # how long the handler holds the loop (the watchdog reports blocks past 1 s)
PROBE_TIMEOUT_S = 0.5  # the client's bound on one probe (the kubelet's timeoutSeconds, shortened)
METRIC = "tq_worker_loop_blocked_total"


def unanswered(port: int, path: str) -> bool:
    """True when GET ``path`` got no response within PROBE_TIMEOUT_S (the connection accepted, no
    answer: a probe timeout); False when it answered. Refused connections and other errors raise."""
    try:
        http_get(port, path, timeout=PROBE_TIMEOUT_S)
    except TimeoutError:
        return True
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return True
        raise
    return False


@pytest.fixture
def block_queue() -> Iterator[str]:
    blocking_service.register()  # this process enqueues to the test queue
    yield QUEUE
    unregister_queue(QUEUE)


@pytest.mark.serial
def test_probes_go_unanswered_while_a_handler_blocks_the_loop(
    redis_url: str, block_queue: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'tq.db'}"
    migrate(database_url)  # `tq serve` starts its worker only on a current schema
    log_path = tmp_path / "serve.log"
    port = free_port()
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            helper_command("blocking_service", str(port)),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
            env=service_env(redis_url, TQ_DATABASE_URL=database_url),
        )

    def log() -> str:
        return log_path.read_text()

    try:
        wait_ready(proc, port)
        assert http_status(port, "/healthz") == 200
        _, samples = scrape(port)
        assert sample(samples, METRIC, queue=QUEUE, job=JOB) == 0

        job_id = SyncProducer(client, fast_settings(redis_url)).enqueue(QUEUE, JOB, {"seconds": BLOCK_S})
        wait_until(lambda: client.hget(keys.job(QUEUE, job_id), "pm") == b"started", 10, "job started")
        started = time.monotonic()  # the handler's time.sleep begins right after that write
        time.sleep(0.3)

        # while it blocks: every probe is accepted by the kernel and never answered
        probes: list[str] = []
        while time.monotonic() + PROBE_TIMEOUT_S < started + BLOCK_S - 0.5:
            path = ("/readyz", "/healthz")[len(probes) % 2]
            assert unanswered(port, path), f"{path} answered while a handler blocked the loop"
            probes.append(path)
        assert {"/readyz", "/healthz"} <= set(probes), probes
        assert proc.poll() is None

        # the block over: both answer 200 again, the job completed, the block is counted and logged
        wait_until(lambda: http_status(port, "/readyz") == 200, 10, "/readyz 200 after the block")
        assert http_status(port, "/healthz") == 200
        assert time.monotonic() >= started + BLOCK_S - 0.5
        wait_until(lambda: client.hget(keys.counters(QUEUE), "completed") == b"1", 5, "job completed")
        _, samples = scrape(port)
        assert sample(samples, METRIC, queue=QUEUE, job=JOB) == 1

        wait_until(lambda: "event loop ran again" in log(), 5, "the watchdog's end-of-block line")
        [blocked] = [line for line in log().splitlines() if "event loop blocked for" in line]
        assert "WARNING tq.loopwatch:" in blocked
        assert f"by job {job_id} ({QUEUE} {JOB}) in handler block_the_loop" in blocked
        assert "asyncio.to_thread" in blocked
        ran_again = re.search(r"event loop ran again after ([\d.]+)s", log())
        assert ran_again is not None and float(ran_again.group(1)) >= BLOCK_S - 0.5

        assert stop_process(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        client.close()
    assert "Traceback" not in log(), log()
