"""Redis faults while jobs flow, against real redis-servers: the master turned replica and back
(REPLICAOF), a Redis busy past the read's block time (DEBUG SLEEP), the worker's connections
killed (CLIENT KILL), Redis restarted with and without AOF. Each ends with every job completed,
the worker's intake running again (``intake_problem`` None, new jobs run) and its heartbeat live;
during the fault the family service's readiness says not ready with the reason, and the failures
are counted in ``tq_worker_task_restarts_total``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from support import app_service, chaos_worker, fast_settings, helper_command, helper_env, wait_for, wait_until
from support.redis_server import free_port, start_redis_server
from support.services import http_get, http_status, sample, scrape, stop_process
from tq import keys
from tq.handlers import HandlerRegistry, JobContext
from tq.producer import JobRequest, Producer, SyncProducer
from tq.registry import get_queue, unregister_queue
from tq.worker import Worker
from tq_services.family_service import FamilyService

Q = chaos_worker.QUEUE
RUNS = chaos_worker.RUNS_KEY


@dataclass
class Rig:
    url: str
    port: int
    proc: Any
    workdir: str
    client: Any  # the worker's
    admin: Any  # the test's own connection (never killed)
    worker: Worker
    service: FamilyService
    next_n: int = 0
    dirs: list[str] = field(default_factory=list)

    async def enqueue(self, n: int, sleep_s: float = 0.004) -> None:
        producer = Producer(self.admin, fast_settings(self.url))
        first, self.next_n = self.next_n, self.next_n + n
        reqs = [
            JobRequest("work", {"n": i, "sleep_s": sleep_s, "jitter_s": 0.002})
            for i in range(first, self.next_n)
        ]
        for i in range(0, len(reqs), 500):
            await producer.enqueue_many(Q, reqs[i : i + 500])

    async def completed(self) -> int:
        return int(await self.admin.hget(keys.counters(Q), "completed") or 0)

    def restarts(self, task: str, reason: str) -> float:
        value = self.service.registry.get_sample_value(
            "tq_worker_task_restarts_total", {"task": task, "reason": reason}
        )
        return value or 0.0

    async def ready(self) -> tuple[bool, str]:
        return await self.service.readiness()

    async def wait_not_ready(self, *words: str, timeout: float = 15.0) -> str:
        seen: list[str] = []

        async def not_ready() -> bool:
            ok, reason = await self.ready()
            seen.append(reason)
            return not ok and all(w in reason for w in words)

        await wait_for(
            not_ready, timeout=timeout, interval=0.05, what=f"readiness to say {words}: {seen[-3:]}"
        )
        return seen[-1]

    async def finish(self, total_before_more: int, scenario: str = "") -> None:
        """Every job completes, then the intake is back: ready, and new jobs run promptly."""
        await wait_for(lambda: self.completed_is(total_before_more), timeout=60, what="every job completed")
        await wait_for(lambda: self.ready_ok(), timeout=15, what="readiness back to ok")
        await self.enqueue(200, sleep_s=0.0)
        await wait_for(
            lambda: self.completed_is(self.next_n), timeout=15, what="new jobs run after the fault"
        )
        ran = {int(k): int(v) for k, v in (await self.admin.hgetall(RUNS)).items()}
        assert set(ran) == set(range(self.next_n)), "a job was lost"
        duplicates = sum(v - 1 for v in ran.values())
        restarts = sum(self.worker.supervisor.restarts.values())
        reasons = sorted({reason for _, reason in self.worker.supervisor.restarts})
        print(
            f"\nchaos {scenario}: jobs={self.next_n} lost=0 duplicates={duplicates} "
            f"task_restarts={restarts} reasons={','.join(reasons)}"
        )
        assert self.worker.intake_problem() is None
        # every duty back (a periodic one may still be in its last backoff pause, <= 5 s)
        await wait_for(lambda: not self.worker.supervisor.down, timeout=15, what="every task recovered")
        assert await self.admin.xlen(keys.stream(Q)) == 0 and await self.admin.zcard(keys.delayed(Q)) == 0
        assert (await self.admin.xpending(keys.stream(Q), keys.GROUP))["pending"] == 0
        await wait_for(self.heartbeat_live, timeout=3, what="the consumer's heartbeat live")
        assert await self.admin.xlen(keys.dlq(Q)) == 0

    async def heartbeat_live(self) -> bool:
        expires = await self.admin.zscore(keys.consumers(Q), self.worker.consumer_id)
        return expires is not None and expires > time.time() * 1000

    async def completed_is(self, n: int) -> bool:
        return await self.completed() >= n

    async def ready_ok(self) -> bool:
        return (await self.ready())[0]


@asynccontextmanager
async def rig(*redis_args: str, socket_timeout: float | None = None, **settings: Any) -> AsyncIterator[Rig]:
    chaos_worker.register(attempts=20)
    proc, port, workdir = start_redis_server(*redis_args)
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=2)
    admin = aioredis.Redis.from_url(url, socket_timeout=10)
    s = fast_settings(url, queues={Q: {"concurrency": 20, "visibility_timeout_s": 2.0}}, **settings)
    handlers = HandlerRegistry()

    @handlers.register(Q, "work")
    async def work(ctx: JobContext, payload: chaos_worker.ChaosJob) -> None:
        await asyncio.sleep(payload.sleep_s + payload.jitter_s * (payload.n % 7) / 7)
        await ctx.redis.hincrby(RUNS, str(payload.n), 1)

    service = FamilyService(chaos_worker.QUEUE, s, handlers, check_schema=False)
    worker = Worker(client, [get_queue(Q)], handlers, s, observer=service.job_metrics)
    service.worker_app.worker = worker  # the service's probes look at this worker
    r = Rig(url, port, proc, workdir, client, admin, worker, service, dirs=[workdir])
    await worker.start()
    try:
        yield r
    finally:
        await worker.stop(grace_s=2)
        await client.aclose()
        await admin.aclose()
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait(10)
        for d in r.dirs:
            shutil.rmtree(d, ignore_errors=True)
        unregister_queue(Q)


async def _progress(r: Rig, n: int) -> None:
    await wait_for(lambda: r.completed_is(n), timeout=30, what=f"{n} completions before the fault")


async def _replication_caught_up(master: Any, replica: Any) -> bool:
    info = await replica.info("replication")
    offset = (await master.info("replication"))["master_repl_offset"]
    return info.get("master_link_status") == "up" and info.get("slave_repl_offset") == offset


async def test_master_turned_replica_and_back_while_jobs_flow() -> None:
    """What a failover does to connected clients: READONLY for a while (and blocked reads cut off).
    The data stays (the other server holds the same data: it was a replica until the flip)."""
    n = 3000
    async with rig() as r:
        other, other_port, other_dir = start_redis_server()
        r.dirs.append(other_dir)
        b = aioredis.Redis(port=other_port)
        try:
            await r.enqueue(n)
            await _progress(r, n // 5)
            await b.execute_command("REPLICAOF", "127.0.0.1", str(r.port))
            await wait_for(lambda: _replication_caught_up(r.admin, b), what="the other server in sync")
            # the flip, as a failover does it: writes paused while the replica catches up
            await r.admin.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
            await wait_for(lambda: _replication_caught_up(r.admin, b), what="the last writes replicated")
            await b.execute_command("REPLICAOF", "NO", "ONE")
            await r.admin.execute_command("REPLICAOF", "127.0.0.1", str(other_port))
            await r.admin.execute_command("CLIENT", "UNPAUSE")
            reason = await r.wait_not_ready("intake of chaos down", "READONLY")
            assert "read only replica" in reason
            done_in_fault = await r.completed()
            await asyncio.sleep(2.0)
            assert await r.completed() == done_in_fault  # nothing can settle against a replica
            await wait_for(lambda: _replication_caught_up(b, r.admin), what="the flip back in sync")
            await r.admin.execute_command("REPLICAOF", "NO", "ONE")
            await r.finish(n, "REPLICAOF flip")
            assert r.restarts("reader", "READONLY") >= 1
        finally:
            await b.aclose()
            other.kill()
            other.wait(10)


@pytest.mark.parametrize("socket_timeout", [None, 1.0], ids=["no-socket-timeout", "socket-timeout-1s"])
async def test_redis_busy_longer_than_the_block_time(socket_timeout: float | None) -> None:
    """DEBUG SLEEP 4: readiness says not ready (its probe times out) either way; with a socket
    timeout the worker's own calls time out too and are retried with backoff (intake down, reason
    timeout); without one they wait for Redis. Every job completes after it."""
    n = 2000
    async with rig("--enable-debug-command", "yes", socket_timeout=socket_timeout) as r:
        await r.enqueue(n)
        await _progress(r, n // 5)
        sleeper = aioredis.Redis(port=r.port)
        try:
            busy = asyncio.create_task(sleeper.execute_command("DEBUG", "SLEEP", "4"))
            # readiness asks Redis first (bounded by its 1 s timeout): not ready with the reason
            reason = await r.wait_not_ready("redis unreachable", "TimeoutError", timeout=3.5)
            assert reason
            if socket_timeout is not None:  # the worker's own reads and settles time out too
                await wait_for(
                    lambda: "timeout" in (r.worker.intake_problem() or ""),
                    timeout=3.5,
                    what="the intake to report the timeout",
                )
            await busy
        finally:
            await sleeper.aclose()
        await r.finish(n, f"DEBUG SLEEP 4 (socket timeout {socket_timeout})")
        if socket_timeout is not None:  # whichever intake call was in flight: the reader may have
            # been waiting for free slots (its prefetch full) while every settle timed out
            assert r.restarts("reader", "timeout") + r.restarts("settler", "timeout") >= 1


async def test_client_kill_of_the_workers_connections() -> None:
    n = 3000
    async with rig() as r:
        await r.enqueue(n)
        for k in range(5):
            await _progress(r, (k + 1) * n // 7)
            killed = await r.admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            assert killed >= 1
        await r.finish(n, "CLIENT KILL x5")
        assert sum(r.restarts(t, "connection") for t in ("reader", "settler", "heartbeat", "touch")) >= 1


@pytest.mark.parametrize("aof", [True, False], ids=["aof-kill", "rdb-shutdown-save"])
async def test_redis_restarted_with_and_without_aof(aof: bool) -> None:
    """With AOF (fsync always) Redis is SIGKILLed; without, it stops with SHUTDOWN SAVE (an RDB
    snapshot) and loads it on start. Either way the worker reconnects and finishes every job."""
    n = 3000
    persistence = ("--appendonly", "yes", "--appendfsync", "always") if aof else ()
    async with rig(*persistence) as r:
        await r.enqueue(n)
        await _progress(r, n // 4)
        if aof:
            r.proc.kill()
        else:
            stopper = aioredis.Redis(port=r.port)
            with pytest.raises(Exception):  # noqa: B017 - the server goes away mid-command
                await stopper.execute_command("SHUTDOWN", "SAVE")
            await stopper.aclose()
        r.proc.wait(10)
        reason = await r.wait_not_ready("redis unreachable")
        assert reason
        await asyncio.sleep(1.0)  # the worker meets the outage
        r.proc, _, extra = start_redis_server(*persistence, "--dir", r.workdir, port=r.port)
        r.dirs.append(extra)
        with contextlib.suppress(RedisConnectionError):  # the test's own connection was cut too
            await r.admin.ping()
        await r.finish(n, "restart " + ("AOF, SIGKILL" if aof else "RDB, SHUTDOWN SAVE"))
        assert sum(r.restarts(t, "connection") for t in ("reader", "settler", "heartbeat", "promoter")) >= 1


def _in_sync(master: redis.Redis, replica: redis.Redis) -> bool:
    info = replica.info("replication")
    offset = master.info("replication")["master_repl_offset"]
    return info.get("master_link_status") == "up" and info.get("slave_repl_offset") == offset


def test_readyz_over_http_says_readonly_during_the_flip_and_ready_after() -> None:
    """The family service process (``tq serve``'s code path): /readyz 503 with the READONLY reason
    while the master is a replica, 200 after; the restarts are on /metrics; every job completes."""
    n = 1500
    app_service.register()
    server, port, workdir = start_redis_server()
    other, other_port, other_dir = start_redis_server()
    url = f"redis://127.0.0.1:{port}/0"
    a, b = redis.Redis(port=port), redis.Redis(port=other_port)
    svc_port = free_port()
    svc = subprocess.Popen(
        helper_command("app_service", url, str(svc_port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=helper_env(),
    )
    try:
        wait_until(lambda: http_status(svc_port, "/readyz") == 200, 30, "the service ready")
        producer = SyncProducer(a, fast_settings(url))
        producer.enqueue_many(app_service.QUEUE, [("sleep", {"seconds": 0.01})] * n)

        def completed() -> int:
            return int(a.hget(keys.counters(app_service.QUEUE), "completed") or 0)

        wait_until(lambda: completed() >= n // 10, 30, "progress before the flip")
        b.execute_command("REPLICAOF", "127.0.0.1", str(port))
        wait_until(lambda: _in_sync(a, b), 10, "the other server in sync")
        a.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
        wait_until(lambda: _in_sync(a, b), 10, "the last writes replicated")
        b.execute_command("REPLICAOF", "NO", "ONE")
        a.execute_command("REPLICAOF", "127.0.0.1", str(other_port))
        a.execute_command("CLIENT", "UNPAUSE")
        seen: list[str] = []

        def readonly() -> bool:
            status, body = http_get(svc_port, "/readyz")
            seen.append(body)
            return status == 503 and "READONLY" in json.loads(body)["reason"]

        wait_until(readonly, 15, f"/readyz 503 with READONLY: {seen[-2:]}")
        assert "intake of svctest down" in json.loads(seen[-1])["reason"]
        time.sleep(1.5)
        wait_until(lambda: _in_sync(b, a), 10, "the flip back in sync")
        a.execute_command("REPLICAOF", "NO", "ONE")
        wait_until(lambda: http_status(svc_port, "/readyz") == 200, 20, "/readyz 200 again")
        wait_until(lambda: completed() >= n, 60, "every job completed")
        _, samples = scrape(svc_port)
        assert sample(samples, "tq_worker_task_restarts_total", task="reader", reason="READONLY") >= 1
        assert a.xlen(keys.dlq(app_service.QUEUE)) == 0
    finally:
        stop_process(svc)  # type: ignore[arg-type]
        for client in (a, b):
            client.close()
        for proc, d in ((server, workdir), (other, other_dir)):
            proc.kill()
            proc.wait(10)
            shutil.rmtree(d, ignore_errors=True)
        unregister_queue(app_service.QUEUE)
