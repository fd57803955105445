"""A consumer killed with SIGKILL in the middle of a batch loses no job once another takes over."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest
import redis
from support import crash_worker, fast_settings, helper_command, helper_env
from tq import keys
from tq.producer import JobRequest, SyncProducer
from tq.registry import unregister_queue

N = 10_000
Q = crash_worker.QUEUE


def _spawn(url: str, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        helper_command("crash_worker", url, name),
        stdout=subprocess.PIPE,
        text=True,
        env=helper_env(),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.serial
def test_sigkill_mid_batch_loses_nothing(redis_url: str) -> None:
    crash_worker.register()
    client = redis.Redis.from_url(redis_url)
    try:
        producer = SyncProducer(client, fast_settings(redis_url))
        # half the jobs carry an idempotency key: those must complete exactly once
        reqs = [JobRequest("work", {"n": n}, idempotency_key=f"k{n}" if n % 2 else None) for n in range(N)]
        ids = [r.id for r in producer.enqueue_many(Q, reqs)]
        first = _spawn(redis_url, "first")
        completed = lambda: int(client.hget(keys.counters(Q), "completed") or 0)  # noqa: E731
        _wait(lambda: completed() >= N // 5, 60, "the first consumer to get going")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        pending = client.xpending(keys.stream(Q), keys.GROUP)["pending"]
        assert pending > 0, "the kill must land with entries in flight"
        done_at_kill = completed()
        assert done_at_kill < N
        second = _spawn(redis_url, "second")
        try:
            _wait(
                lambda: completed() + int(client.hget(keys.counters(Q), "skipped") or 0) >= N,
                120,
                "the second consumer to finish",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(10)
        runs = {int(k): int(v) for k, v in client.hgetall(crash_worker.RUNS_KEY).items()}
        assert set(runs) == set(range(N)), "every job ran"
        states = [client.hget(keys.job(Q, i), "s") for i in ids]
        missing = [i for i, s in zip(ids, states, strict=True) if s != b"completed"]
        # records beyond the retention count are trimmed, so check the completed index and counters too
        assert all(s in (b"completed", None) for s in states), missing[:5]
        assert int(client.hget(keys.counters(Q), "completed")) == N, "each job completed exactly once"
        assert client.xlen(keys.dlq(Q)) == 0
        assert (
            client.xlen(keys.stream(Q)) == 0 and client.xpending(keys.stream(Q), keys.GROUP)["pending"] == 0
        )
        twice = [n for n, r in runs.items() if r > 1]
        assert len(twice) <= pending, "only jobs held by the killed consumer may run twice"
        # an attempt is charged to the entries it had taken to run (at most its 50 slots and the
        # outcomes not yet settled); the prefetched rest went back free (tq:{q}:progress)
        reclaimed = int(client.hget(keys.counters(Q), "reclaimed") or 0)
        requeued = int(client.hget(keys.counters(Q), "requeued") or 0)
        assert reclaimed + requeued == pending
        assert 0 < reclaimed < pending and requeued > 0
        # a job that ran twice had started: charged, but for the taken since the last progress write
        assert len(twice) <= reclaimed + 5, (len(twice), reclaimed)
        print(f"\ncrash: held={pending} charged={reclaimed} free={requeued} ran_twice={len(twice)}")
        for n in range(1, N, 2):  # idempotent jobs: their key records one completion
            assert client.get(keys.idempotency(Q, f"k{n}")).startswith(b"done:")
    finally:
        client.close()
        unregister_queue(Q)
