"""Faults other than a plain kill: graceful restarts, a poison job, slow jobs, Redis going away."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from support import fast_settings, helper_command, helper_env, wait_until
from support.chaos import Q, counter, drained, runs, settled, spawn, stop_all
from support.redis_server import free_port, start_redis_server
from tq import keys
from tq.producer import JobRequest, SyncProducer


def _enqueue(url: str, n: int, **job: object) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        producer = SyncProducer(client, fast_settings(url))
        return [
            r.id for r in producer.enqueue_many(Q, [JobRequest("work", {"n": i, **job}) for i in range(n)])
        ]
    finally:
        client.close()


def test_repeated_sigterm_restarts_finish_in_flight_and_reclaim_nothing(
    redis_url: str, chaos_queue: None
) -> None:
    n, restarts = 20_000, 6
    client = redis.Redis.from_url(redis_url)
    procs: list[subprocess.Popen[str]] = []
    try:
        _enqueue(redis_url, n, jitter_s=0.01)
        live = {f"t{i}": spawn(redis_url, f"t{i}") for i in range(2)}
        procs.extend(live.values())
        for k in range(restarts):
            target = (k + 1) * n // (restarts + 2)
            wait_until(lambda target=target: settled(client) >= target, 120, f"progress before stop {k}")
            name = sorted(live)[k % 2]
            proc = live.pop(name)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, f"{name} did not stop cleanly"
            assert proc.stdout is not None and proc.stdout.readline().strip() == "STOPPED"
            # a graceful stop leaves nothing in its hands for another consumer to reclaim
            consumers = client.xpending(keys.stream(Q), keys.GROUP)["consumers"]
            assert all(c["name"].decode() != name for c in consumers), consumers
            live[f"t{2 + k}"] = spawn(redis_url, f"t{2 + k}")
            procs.append(live[f"t{2 + k}"])
        wait_until(lambda: settled(client) >= n and drained(client), 120, "the last workers to finish")
        assert counter(client, "completed") == n
        assert counter(client, "reclaimed") == 0
        ran = runs(client)
        assert len(ran) == n and set(ran.values()) == {1}, "a job ran twice"
        print(
            f"\nchaos sigterm: jobs={n} graceful_restarts={restarts} completed={n} reclaimed=0 duplicates=0"
        )
    finally:
        stop_all(procs)
        client.close()


def test_a_job_that_kills_its_process_is_dead_lettered_not_crash_looped(
    redis_url: str, chaos_queue: None
) -> None:
    attempts, bystanders = 4, 300
    client = redis.Redis.from_url(redis_url)
    producer = SyncProducer(client, fast_settings(redis_url))
    poison = producer.enqueue(Q, "work", {"n": -1, "crash": True})
    _enqueue(redis_url, bystanders)
    args = ("--attempts", str(attempts), "--visibility", "1.0")
    procs: list[subprocess.Popen[str]] = []
    crashes = 0
    try:
        # a supervisor (Kubernetes, here this loop) restarts the process whenever it dies
        proc = spawn(redis_url, "p0", *args)
        procs.append(proc)
        deadline = time.monotonic() + 90
        while settled(client) < bystanders + 1:
            assert time.monotonic() < deadline, (
                f"the poison job was not dead-lettered in time: crashes={crashes} "
                f"counters={client.hgetall(keys.counters(Q))} record={client.hgetall(keys.job(Q, poison))}"
            )
            if proc.poll() is not None:
                assert proc.returncode == 3  # the poison job's hard exit
                crashes += 1
                assert crashes <= attempts, "the family keeps crashing: the poison job is not contained"
                proc = spawn(redis_url, f"p{crashes}", *args)
                procs.append(proc)
            time.sleep(0.02)
        dead = [f[b"id"].decode() for _, f in client.xrange(keys.dlq(Q))]
        assert dead == [poison], [client.hget(keys.job(Q, i), "h") for i in dead if i != poison]
        assert crashes == attempts
        [(_, record)] = client.xrange(keys.dlq(Q))
        assert record[b"id"].decode() == poison
        assert record[b"et"] == b"StalledJob"
        assert int(record[b"a"]) == attempts
        assert counter(client, "completed") == bystanders  # innocent jobs in flight at a crash re-ran
        assert proc.poll() is None, "after the poison is gone the process stays up"
        print(f"\nchaos poison: crashes={crashes} dead_lettered=1 bystanders_completed={bystanders}")
    finally:
        stop_all(procs)
        client.close()


def test_slow_jobs_of_live_consumers_are_never_reclaimed(redis_url: str, chaos_queue: None) -> None:
    jobs, visibility = 12, 0.6
    client = redis.Redis.from_url(redis_url)
    procs: list[subprocess.Popen[str]] = []
    try:
        _enqueue(redis_url, jobs, sleep_s=visibility * 4, jitter_s=0)
        args = ("--visibility", str(visibility), "--concurrency", "6")
        procs = [spawn(redis_url, "s0", *args), spawn(redis_url, "s1", *args)]
        wait_until(lambda: settled(client) >= jobs, 60, "the slow jobs to finish")
        assert counter(client, "reclaimed") == 0
        assert runs(client) == dict.fromkeys(range(jobs), 1)
    finally:
        stop_all(procs)
        client.close()


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_redis_killed_and_restarted_mid_run(chaos_queue: None, tmp_path: Path) -> None:
    """SIGKILL of a Redis with AOF (fsync always): producers fail fast with a clear error, /readyz
    says not ready, workers reconnect with backoff once it is back and finish every job."""
    n = 20_000
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    server, port, first_dir = start_redis_server(*aof)
    url = f"redis://127.0.0.1:{port}/0"
    dirs = [first_dir]
    procs: list[subprocess.Popen[str]] = []
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        _enqueue(url, n, jitter_s=0.004)
        procs = [spawn(url, "r0"), spawn(url, "r1")]
        svc_port = free_port()
        svc = subprocess.Popen(
            helper_command("app_service", url, str(svc_port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=helper_env(),
        )
        procs.append(svc)  # type: ignore[arg-type]
        wait_until(lambda: _readyz(svc_port)[0] == 200, 30, "the service to be ready")
        wait_until(lambda: settled(client) >= n // 4, 60, "progress before the outage")

        server.kill()
        server.wait(10)
        t0 = time.monotonic()
        producer = SyncProducer(
            redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2), fast_settings(url)
        )
        with pytest.raises(redis.ConnectionError):
            producer.enqueue(Q, "work", {"n": n})
        assert time.monotonic() - t0 < 5, "the producer hung instead of failing"
        wait_until(lambda: _readyz(svc_port)[0] == 503, 15, "/readyz to say not ready")
        assert "redis" in json.loads(_readyz(svc_port)[1])["reason"]
        time.sleep(1.0)  # workers meet the outage

        server, _, extra_dir = start_redis_server(*aof, "--dir", first_dir, port=port)
        dirs.append(extra_dir)
        wait_until(lambda: _readyz(svc_port)[0] == 200, 30, "/readyz ready again")
        wait_until(lambda: settled(client) >= n and drained(client), 120, "the workers to resume and finish")
        assert all(p.poll() is None for p in procs), "a process died in the outage"
        assert counter(client, "completed") == n
        ran = runs(client)
        assert set(ran) == set(range(n)), "a job was lost"
        duplicates = sum(r - 1 for r in ran.values())
        print(f"\nchaos redis restart: jobs={n} completed={n} lost=0 duplicates={duplicates}")
    finally:
        stop_all(procs)
        client.close()
        if server.poll() is None:
            server.kill()
            server.wait(10)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
