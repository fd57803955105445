"""Eight worker processes on one queue: every job runs exactly once, the concurrency limit holds in
each of them, and the work spreads over all of them (issue 10, "Many consumers").

No process is killed here, so no entry may be reclaimed: a job run twice, or a reclaim, would mean
two live consumers handled the same job.
"""

from __future__ import annotations

import signal
import subprocess
import time

import redis
from support import helper_command, helper_env, multi_worker
from tq import keys
from tq.producer import JobRequest, SyncProducer
from tq.registry import unregister_queue

PROCESSES = 8
CONCURRENCY = 4  # per replica
N = 4000
Q = multi_worker.QUEUE


def _start(url: str, consumer_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        helper_command("multi_worker", url, consumer_id, str(CONCURRENCY)),
        stdout=subprocess.PIPE,
        text=True,
        env=helper_env(),
    )


def test_many_consumers_share_one_queue(redis_url: str) -> None:
    multi_worker.register()
    client = redis.Redis.from_url(redis_url)
    names = [f"multi-{i}" for i in range(PROCESSES)]
    procs: list[subprocess.Popen[str]] = []
    try:
        procs = [_start(redis_url, name) for name in names]  # start all, then wait: startup in parallel
        for name, proc in zip(names, procs, strict=True):
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "READY", f"{name} did not start"
        live = {m.decode() for m in client.zrange(keys.consumers(Q), 0, -1)}
        assert live == set(names), "all eight consumers heartbeat on the queue"

        # enqueued once every consumer is reading, so that none of them can take the lot alone
        producer = SyncProducer(client, multi_worker.settings(redis_url, CONCURRENCY))
        producer.enqueue_many(Q, [JobRequest("work", {"n": n}) for n in range(N)])
        completed = lambda: int(client.hget(keys.counters(Q), "completed") or 0)  # noqa: E731
        deadline = time.monotonic() + 90
        while completed() < N:
            assert time.monotonic() < deadline, f"only {completed()} of {N} jobs completed"
            assert all(p.poll() is None for p in procs), "a worker process died"
            time.sleep(0.05)

        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for name, proc in zip(names, procs, strict=True):
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, f"{name} exited {proc.returncode} on SIGTERM"
            assert "STOPPED" in out, name
        assert client.zcard(keys.consumers(Q)) == 0, "each consumer left the heartbeat set"

        counters = {k.decode(): int(v) for k, v in client.hgetall(keys.counters(Q)).items()}
        assert counters.get("completed") == N
        for outcome in ("reclaimed", "retried", "dead", "skipped", "requeued"):
            assert counters.get(outcome, 0) == 0, (outcome, counters)
        assert client.xlen(keys.stream(Q)) == 0
        assert client.xpending(keys.stream(Q), keys.GROUP)["pending"] == 0
        assert client.xlen(keys.dlq(Q)) == 0

        runs = {int(k): int(v) for k, v in client.hgetall(multi_worker.RUNS).items()}
        assert set(runs) == set(range(N)), "every job ran"
        twice = sorted(n for n, r in runs.items() if r != 1)
        assert not twice, f"jobs run more than once: {twice[:10]}"
        owners = {int(k): v.decode() for k, v in client.hgetall(multi_worker.OWNER).items()}
        per_consumer = {name: 0 for name in names}
        for owner in owners.values():
            per_consumer[owner] += 1  # KeyError: a job ran under an unknown consumer id
        assert sum(per_consumer.values()) == N
        assert all(count > 0 for count in per_consumer.values()), per_consumer

        highest = {k.decode(): int(v) for k, v in client.hgetall(multi_worker.MAX).items()}
        assert set(highest) == set(names)
        assert all(h <= CONCURRENCY for h in highest.values()), highest
        assert max(highest.values()) == CONCURRENCY, f"concurrency never built up: {highest}"
        for name in names:  # every job that started also ended
            assert int(client.get(multi_worker.inflight(name)) or 0) == 0, name
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        client.close()
        unregister_queue(Q)
