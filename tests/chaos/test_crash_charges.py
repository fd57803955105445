"""After a crash, an attempt is charged only to the jobs that had started: the entries the dead
consumer had fetched but not started go back to the stream free (``keys.progress``)."""

from __future__ import annotations

import signal
import time

import redis
from support import fast_settings, wait_until
from support.chaos import Q, counter, drained, held_by, settled, spawn, stop_all
from tq import keys
from tq.producer import JobRequest, SyncProducer

N = 40


def test_a_crash_charges_the_started_jobs_only(redis_url: str, chaos_queue: object) -> None:
    client = redis.Redis.from_url(redis_url)
    procs = []
    try:
        producer = SyncProducer(client, fast_settings(redis_url))
        ids = [
            r.id
            for r in producer.enqueue_many(
                Q, [JobRequest("work", {"n": n, "sleep_s": 2.0}) for n in range(N)]
            )
        ]

        # two slots: two jobs run, the prefetch (2 x concurrency + a read) waits unstarted
        victim = spawn(redis_url, "victim", "--concurrency", "2", "--visibility", "1.0")
        procs.append(victim)
        wait_until(lambda: held_by(client, "victim") >= 6, 10, "the victim's prefetch")
        wait_until(lambda: client.hget(keys.progress(Q), "victim") is not None, 10, "its progress mark")
        time.sleep(0.2)  # both slots busy, their mark written behind
        held = held_by(client, "victim")
        assert client.hget(keys.progress(Q), "victim") == ids_entry(client, ids[1])
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

        survivor = spawn(redis_url, "survivor", "--concurrency", "50", "--visibility", "1.0")
        procs.append(survivor)
        wait_until(lambda: settled(client) >= N and drained(client), 60, "every job done")

        assert counter(client, "completed") == N
        assert counter(client, "reclaimed") == 2  # the two that ran
        assert counter(client, "requeued") == held - 2  # the prefetched ones, free
        for n, job_id in enumerate(ids):
            failures = client.hget(keys.job(Q, job_id), "h")
            if n < 2:
                assert failures is not None and b"StalledJob" in failures, n
            else:
                assert failures is None, (n, failures)
        assert client.hget(keys.progress(Q), "victim") is None  # the dead consumer's mark is dropped
        print(f"\nchaos crash charges: held={held} charged=2 given_back_free={held - 2}")
    finally:
        stop_all(procs)
        client.close()


def ids_entry(client: redis.Redis, job_id: str) -> bytes:
    """The stream entry id of a job (its record's ``x``)."""
    entry = client.hget(keys.job(Q, job_id), "x")
    assert entry is not None
    return entry
