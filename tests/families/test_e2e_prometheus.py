"""End to end through a real Prometheus: two family service processes (``tests/support/e2e_service.py``, a
test queue each, in two families) on free ports, a real Prometheus scraping both every second,
jobs enqueued that complete, retry, dead-letter or are refused as invalid; the counts read back
through Prometheus's HTTP API are exactly the ones produced."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from support import e2e_service, fast_settings, helper_command, wait_until
from support.prometheus import needs_prometheus, prometheus
from support.redis_server import free_port
from support.services import service_env, stop_process, wait_ready
from tq import keys
from tq.producer import SyncProducer
from tq.registry import unregister_queue
from tq_services import dashboards
from tq_services.metrics import UNKNOWN_JOB

ALPHA, BETA = e2e_service.FAMILIES["e2e-alpha"], e2e_service.FAMILIES["e2e-beta"]
RETRIES = e2e_service.ATTEMPTS - 1  # failed attempts scheduled again before the last one
# per queue: (succeed at once, succeed after one failed attempt, fail every attempt, refused for good)
PLAN = {ALPHA: (5, 2, 1, 1), BETA: (3, 1, 2, 0)}
FORGED_INVALID = {ALPHA: 1, BETA: 0}  # raw entries no producer wrote: never run, dead-lettered


def expected(queue: str) -> dict[str, int]:
    ok, flaky, hopeless, fatal = PLAN[queue]
    return {
        "enqueued": ok + flaky + hopeless + fatal,  # the producer's counter: forged entries bypass it
        "completed": ok + flaky,
        "retried": flaky + hopeless * RETRIES,
        "dead_lettered": hopeless + fatal,
        "invalid": FORGED_INVALID[queue],
        "dlq": hopeless + fatal + FORGED_INVALID[queue],
    }


@pytest.fixture
def services(redis_url: str) -> Iterator[dict[str, int]]:
    """Both family services, ready; family -> port."""
    for family in e2e_service.FAMILIES:  # this process enqueues to the test queues too
        e2e_service.register(family)
    procs: dict[str, tuple[subprocess.Popen[str], int]] = {}
    try:
        for family in e2e_service.FAMILIES:
            port = free_port()
            proc = subprocess.Popen(
                helper_command("e2e_service", family, redis_url, str(port)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=service_env(redis_url),
            )
            procs[family] = (proc, port)
        for proc, port in procs.values():
            wait_ready(proc, port)
        yield {family: port for family, (_, port) in procs.items()}
    finally:
        for proc, _ in procs.values():
            stop_process(proc)
        for queue in e2e_service.FAMILIES.values():
            unregister_queue(queue)


@needs_prometheus
def test_prometheus_reads_back_exactly_the_counts_produced(redis_url: str, services: dict[str, int]) -> None:
    client = redis.Redis.from_url(redis_url)
    producer = SyncProducer(client, fast_settings(redis_url))
    with prometheus([f"127.0.0.1:{port}" for port in services.values()]) as prom:
        for queue, (ok, flaky, hopeless, fatal) in PLAN.items():
            producer.enqueue_many(
                queue,
                [(e2e_service.JOB, {})] * ok
                + [(e2e_service.JOB, {"fail_attempts": 1})] * flaky
                + [(e2e_service.JOB, {"fail_attempts": e2e_service.ATTEMPTS})] * hopeless
                + [(e2e_service.JOB, {"fatal": True})] * fatal,
            )
            for _ in range(FORGED_INVALID[queue]):
                forged = {
                    "id": "forged-1",
                    "queue": queue,
                    "name": "no-such-job",
                    "payload": {},
                    "enqueued_at": time.time(),
                }
                client.xadd(keys.stream(queue), {"j": json.dumps(forged)})

        def settled() -> bool:
            for queue in PLAN:
                want = expected(queue)
                counters = {k.decode(): int(v) for k, v in client.hgetall(keys.counters(queue)).items()}
                if (
                    counters.get("completed", 0) != want["completed"]
                    or client.xlen(keys.dlq(queue)) != want["dlq"]
                ):
                    return False
            return True

        wait_until(settled, 20, "every job settled in Redis")
        # a service counts a settled batch right after its settle script answers: one scrape
        # interval of slack so the scrape read below cannot race the last observation
        done_at = time.time() + 1.0
        prom.wait(lambda: prom.scraped_since(done_at), 10, "a scrape of both services after the jobs settled")

        # each service exposes only its own family's queue: no double counting across targets
        def per_queue(expr: str) -> dict[str, float]:
            return prom.values(expr, "queue")

        queues = 'queue=~"' + "|".join(PLAN) + '"'
        enqueued = per_queue(f"sum by (queue) (tq_jobs_enqueued_total{{{queues}}})")
        completed = per_queue(f"sum by (queue) (tq_jobs_completed_total{{{queues}}})")
        dlq = per_queue(f"max by (queue) (tq_queue_dlq{{{queues}}})")
        failed = {
            (s["metric"]["queue"], s["metric"]["outcome"]): float(s["value"][1])
            for s in prom.query(f"sum by (queue, outcome) (tq_jobs_failed_total{{{queues}}})")
        }
        for queue in PLAN:
            want = expected(queue)
            assert enqueued[queue] == want["enqueued"], queue
            assert completed[queue] == want["completed"], queue
            assert dlq[queue] == want["dlq"], queue
            for outcome in ("retried", "dead_lettered", "invalid"):
                assert failed[(queue, outcome)] == want[outcome], (queue, outcome)
        # the forged entry is counted under the bounded ``_unknown`` job, on its own queue only
        unknown = per_queue(f'sum by (queue) (tq_jobs_failed_total{{{queues},job="{UNKNOWN_JOB}"}})')
        assert unknown == {q: float(n) for q, n in FORGED_INVALID.items()}
        # every series carries the family's service as its instance: two targets, one family each
        instances = {
            s["metric"]["queue"]: s["metric"]["instance"]
            for s in prom.query(f"tq_queue_consumers{{{queues}}}")
        }
        assert instances == {
            e2e_service.FAMILIES[family]: f"127.0.0.1:{port}" for family, port in services.items()
        }
        # and the overview's panels show them: consumers per family, one per test queue
        consumers = prom.values(dashboards.consumers_per_family(""), "family")
        assert consumers == {family: 1.0 for family in e2e_service.FAMILIES}
    client.close()
