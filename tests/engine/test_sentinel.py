"""tq through Redis Sentinel: a master, a replica and a Sentinel (redis-server processes on free
ports); the master is killed, the Sentinel promotes the replica, and the same worker and producer
carry on against the new master without a restart."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from support import fast_settings, wait_for
from support.redis_server import free_port, start_redis_server
from tq import keys
from tq.connection import async_client
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import JobRequest, Producer, SyncProducer
from tq.registry import get_queue
from tq.settings import Settings
from tq.worker import Worker
from tq.worker_app import WorkerApp

Q = "email:send"
MASTER = "tqmaster"


@dataclass
class SentinelSetup:
    master: subprocess.Popen[bytes]
    master_port: int
    replica_port: int
    sentinel_port: int


def _replicated(master_port: int, replica_port: int) -> bool:
    m = redis.Redis(port=master_port).info("replication")
    r = redis.Redis(port=replica_port).info("replication")
    return r.get("master_link_status") == "up" and r["slave_repl_offset"] >= m["master_repl_offset"]


@pytest.fixture
def sentinel() -> Iterator[SentinelSetup]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    procs: list[subprocess.Popen[bytes]] = []
    dirs: list[str] = []
    try:
        master, master_port, d1 = start_redis_server()
        procs.append(master)
        dirs.append(d1)
        replica, replica_port, d2 = start_redis_server("--replicaof", "127.0.0.1", str(master_port))
        procs.append(replica)
        dirs.append(d2)
        sentinel_dir = tempfile.mkdtemp(prefix="tq-sentinel-")
        dirs.append(sentinel_dir)
        sentinel_port = free_port()
        conf = Path(sentinel_dir) / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {sentinel_dir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 500\n"
            f"sentinel failover-timeout {MASTER} 2000\n"
        )
        procs.append(
            subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        deadline = time.monotonic() + 20
        while True:  # the Sentinel knows the master and has found its replica
            try:
                replicas = redis.Redis(port=sentinel_port).sentinel_slaves(MASTER)
                if replicas and _replicated(master_port, replica_port):
                    break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel setup did not come up")
            time.sleep(0.1)
        yield SentinelSetup(master, master_port, replica_port, sentinel_port)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def _settings(setup: SentinelSetup) -> Settings:
    return fast_settings(
        "redis://unused:6379/0",  # only the db number counts with Sentinels
        redis_sentinels=f"127.0.0.1:{setup.sentinel_port}",
        redis_sentinel_master=MASTER,
    )


def test_sentinel_nodes_are_parsed() -> None:
    s = Settings(redis_sentinels=" a:1, b , [::1]:26380 ,")
    assert s.sentinel_nodes == [("a", 1), ("b", 26379), ("[::1]", 26380)]
    assert Settings().sentinel_nodes == []


async def test_worker_and_producer_follow_a_failover(sentinel: SentinelSetup) -> None:
    settings = _settings(sentinel)
    client = async_client(settings)
    producer = Producer(client, settings)
    h = HandlerRegistry()
    done: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        done.append(ctx.job_id)

    async def completed() -> int:
        return int(await client.hget(keys.counters(Q), "completed") or 0)

    batch = [JobRequest("send-email", {"to": f"u{i}@example.com", "template": "t"}) for i in range(500)]
    worker = Worker(async_client(settings), [get_queue(Q)], h, settings)
    await worker.start()
    try:
        await producer.enqueue_many(Q, batch)
        await wait_for(lambda: _at_least(completed, 500), timeout=30, what="the first batch")
        await wait_for(lambda: _replicated(sentinel.master_port, sentinel.replica_port), what="replication")

        sentinel.master.kill()  # no goodbye: the Sentinel must notice and promote the replica
        sentinel.master.wait(10)
        second: list[str] = []
        deadline = time.monotonic() + 30
        while len(second) < 500:  # producers see errors during the failover, then the new master
            try:
                second.extend(
                    r.id for r in await producer.enqueue_many(Q, batch[len(second) : len(second) + 50])
                )
            except (RedisConnectionError, RedisTimeoutError, ReadOnlyError, ConnectionError, OSError):
                assert time.monotonic() < deadline, "the producer never reached the new master"
                await asyncio.sleep(0.2)
        promoted = redis.Redis(port=sentinel.replica_port).info("replication")["role"]
        assert promoted == "master"
        await wait_for(
            lambda: _at_least(completed, 1000), timeout=60, what="the second batch on the new master"
        )
        assert set(second) <= set(done), "a job enqueued after the failover was not run"
        assert len(set(done)) >= 1000
    finally:
        await worker.stop()
        await client.aclose()


async def _at_least(fn: Any, n: int) -> bool:
    return bool(await fn() >= n)


async def test_worker_app_uses_a_sentinel_broker(sentinel: SentinelSetup) -> None:
    settings = _settings(sentinel)
    h = HandlerRegistry()
    ran: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        ran.append(ctx.job_id)

    app = WorkerApp(["messaging"], settings, h)
    assert type(app.broker).__name__ == "RedisSentinelBroker"
    await app.app.start()
    try:
        client = async_client(settings)
        job = await Producer(client, settings).enqueue(
            Q, "send-email", {"to": "a@example.com", "template": "t"}
        )
        await wait_for(lambda: job in ran, timeout=15, what="the job through the Sentinel broker")
        await client.aclose()
    finally:
        await app.app.stop()


async def test_a_sentinel_failover_while_jobs_flow_completes_every_job(sentinel: SentinelSetup) -> None:
    """SENTINEL FAILOVER while the worker runs: the old master turns replica under it (READONLY,
    blocked reads cut off), the supervised tasks retry and follow the Sentinel to the new master;
    every job is completed and the intake runs again."""
    settings = fast_settings(
        "redis://unused:6379/0",
        redis_sentinels=f"127.0.0.1:{sentinel.sentinel_port}",
        redis_sentinel_master=MASTER,
        queues={Q: {"concurrency": 20, "visibility_timeout_s": 2.0}},
    )
    client = async_client(settings)
    h = HandlerRegistry()
    done: set[str] = set()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        await asyncio.sleep(0.003)
        done.add(ctx.job_id)

    batch = [JobRequest("send-email", {"to": f"u{i}@example.com", "template": "t"}) for i in range(3000)]
    worker = Worker(async_client(settings), [get_queue(Q)], h, settings)
    await worker.start()
    try:
        ids = {r.id for r in await Producer(client, settings).enqueue_many(Q, batch)}
        await wait_for(lambda: len(done) >= 600, timeout=30, what="progress before the failover")
        await wait_for(lambda: _replicated(sentinel.master_port, sentinel.replica_port), what="replication")
        redis.Redis(port=sentinel.sentinel_port).execute_command("SENTINEL", "FAILOVER", MASTER)
        await wait_for(
            lambda: redis.Redis(port=sentinel.replica_port).info("replication")["role"] == "master",
            timeout=20,
            what="the replica promoted",
        )
        await wait_for(lambda: ids <= done, timeout=60, what="every job completed after the failover")

        async def drained() -> bool:
            try:
                pending = (await client.xpending(keys.stream(Q), keys.GROUP))["pending"]
                return pending == 0 and await client.xlen(keys.stream(Q)) == 0
            except (RedisConnectionError, ReadOnlyError, RedisTimeoutError):
                return False

        await wait_for(drained, timeout=30, what="nothing left pending on the new master")
        await wait_for(lambda: worker.intake_problem() is None, timeout=10, what="the intake running")
        more = {r.id for r in await Producer(client, settings).enqueue_many(Q, batch[:100])}
        await wait_for(lambda: more <= done, timeout=20, what="new jobs run on the new master")
    finally:
        await worker.stop()
        await client.aclose()


async def test_single_enqueues_follow_a_failover_on_their_held_connections(sentinel: SentinelSetup) -> None:
    """The producers' single enqueues keep a connection of their own (``Producer._call``,
    ``SyncProducer``); after the master dies each must reconnect through the Sentinel to the new
    master, not to the dead one's address."""
    settings = _settings(sentinel)
    # each with a client of its own: given one, Producer would borrow a pool connection per call
    producer, sync_producer = Producer(settings=settings), SyncProducer(settings=settings)
    email = {"to": "a@example.com", "template": "t"}
    try:
        before = [await producer.enqueue(Q, "send-email", email)]
        before.append(sync_producer.enqueue(Q, "send-email", email))
        await wait_for(lambda: _replicated(sentinel.master_port, sentinel.replica_port), what="replication")
        sentinel.master.kill()
        sentinel.master.wait(10)
        after: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(after) < 2:
            try:
                if "async" not in after:
                    after["async"] = await producer.enqueue(Q, "send-email", email)
                after["sync"] = sync_producer.enqueue(Q, "send-email", email)  # this thread's connection
            except (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError):
                assert time.monotonic() < deadline, f"only {sorted(after)} reached the new master"
                await asyncio.sleep(0.2)
        new_master = redis.Redis(port=sentinel.replica_port)
        assert new_master.info("replication")["role"] == "master"
        on_new = {fields[b"i"].decode() for _eid, fields in new_master.xrange(keys.stream(Q))}
        assert set(before) | set(after.values()) <= on_new
    finally:
        sync_producer.close()
        await producer.close()
