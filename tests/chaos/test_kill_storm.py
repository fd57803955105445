"""Workers killed and restarted again and again during a 50 000-job run lose nothing.

Three worker processes share the queue; a kill loop SIGKILLs one at random every few hundred
milliseconds and starts a replacement under a new consumer id, ten times. Half the jobs carry an
idempotency key, and the producer enqueues each of those twice more during the storm (a client
retrying). At the end every job is completed or dead-lettered, nothing is waiting, in flight or
delayed; a handler ran twice only for entries a killed consumer held at its kill; an idempotent
job completed once and its repeated enqueues added no job.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading

import redis
from support import fast_settings, wait_until
from support.chaos import Q, counter, drained, held_by, runs, settled, spawn, stop_all
from tq import keys
from tq.producer import JobRequest, SyncProducer

N = 50_000
KILLS = 10
WORKERS = 3


def test_repeated_sigkill_during_a_50k_run_loses_nothing(redis_url: str, chaos_queue: object) -> None:
    rng = random.Random(20261130)
    client = redis.Redis.from_url(redis_url)
    procs: list[subprocess.Popen[str]] = []
    try:
        producer = SyncProducer(client, fast_settings(redis_url))
        reqs = [JobRequest("work", {"n": n}, idempotency_key=f"k{n}" if n % 2 else None) for n in range(N)]
        ids = [r.id for r in producer.enqueue_many(Q, reqs)]
        by_key = {f"k{n}": ids[n] for n in range(1, N, 2)}

        live = {f"w{i}": spawn(redis_url, f"w{i}") for i in range(WORKERS)}
        procs.extend(live.values())

        # a client retrying its idempotent enqueues while the workers are being killed
        repeats: list[tuple[str, str]] = []

        def retry_client() -> None:
            c = redis.Redis.from_url(redis_url)
            p = SyncProducer(c, fast_settings(redis_url))
            try:
                for _ in range(2):
                    for key in list(by_key)[::50]:
                        repeats.append((key, p.enqueue(Q, "work", {"n": int(key[1:])}, idempotency_key=key)))
            finally:
                c.close()

        retrier = threading.Thread(target=retry_client)
        retrier.start()

        held_at_kills = 0
        for k in range(KILLS):
            target = (k + 1) * N // (KILLS + 2)
            wait_until(lambda target=target: settled(client) >= target, 120, f"progress before kill {k}")
            victim = rng.choice(sorted(live))
            proc = live.pop(victim)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            held_at_kills += held_by(client, victim)
            name = f"w{WORKERS + k}"
            live[name] = spawn(redis_url, name)
            procs.append(live[name])
        retrier.join(60)
        assert not retrier.is_alive()

        wait_until(lambda: settled(client) >= N and drained(client), 180, "the survivors to finish")

        # every job reached a final state exactly once, nothing is left anywhere
        assert counter(client, "completed") + counter(client, "dead") == N
        assert counter(client, "skipped") == 0
        assert counter(client, "enqueued") == N, "a repeated idempotent enqueue added a job"
        assert all(job_id == by_key[key] for key, job_id in repeats), "a repeat got a new job id"
        assert drained(client)
        dead = client.xlen(keys.dlq(Q))
        assert dead == counter(client, "dead")
        for entry_id, fields in client.xrange(keys.dlq(Q)):  # only stalled jobs may die here
            assert fields[b"et"] == b"StalledJob", (entry_id, fields)

        ran = runs(client)
        completed_numbers = set(ran)
        assert len(completed_numbers) >= N - dead, "a completed job left no effect"
        extra_runs = sum(r - 1 for r in ran.values() if r > 1)
        assert extra_runs <= held_at_kills, (extra_runs, held_at_kills)
        assert held_at_kills > 0, "the kills must land with jobs in flight"
        for key in by_key:  # an idempotent job completed once, by the job its key names
            holder = client.get(keys.idempotency(Q, key))
            assert holder is not None
            assert holder in (f"done:{by_key[key]}".encode(), by_key[key].encode()), (key, holder)
        print(
            f"\nchaos kill storm: jobs={N} kills={KILLS} completed={counter(client, 'completed')} "
            f"dead={dead} lost=0 duplicate_runs={extra_runs} held_at_kills={held_at_kills} "
            f"reclaimed={counter(client, 'reclaimed')}"
        )
    finally:
        stop_all(procs)
        client.close()
