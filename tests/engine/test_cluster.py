"""tq on a real Redis Cluster (3 masters from redis-server processes): the same engine code with the
cluster clients (``TQ_REDIS_CLUSTER``) - enqueue, consume, retry, DLQ, replay, pause, stats, the
audit writer, and the FastStream-hosted WorkerApp."""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from sqlalchemy import select
from support import (
    app_worker,
    fast_settings,
    helper_command,
    helper_env,
    running,
    tiny_retry,
    wait_for,
    wait_until,
)
from support.redis_server import start_redis_server
from tq import config, dlq, jobs, keys
from tq.audit import AuditWriter
from tq.connection import async_client, is_cluster, sync_client
from tq.db import make_engine, migrate_async
from tq.envelope import JobState
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.models import AuditLog
from tq.payloads import SendEmail, SendOtp
from tq.producer import JobRequest, Producer, SyncProducer
from tq.registry import all_queues, get_queue, unregister_queue
from tq.settings import Settings
from tq.stats import StatsLeader, read_stats
from tq.worker import Worker

Q = "email:send"  # slot 3650: the first master
Q2 = "otp:send"  # slot 13108: the third master
EMAIL = {"to": "a@example.com", "template": "welcome"}
OTP = {"user_id": 1, "channel": "sms", "destination": "+15550100"}


def _cluster_manager() -> str | None:
    """Why the cluster cannot be built here, or None."""
    exe = shutil.which("redis-cli")
    if exe is None or shutil.which("redis-server") is None:
        return "redis-server / redis-cli are not installed"
    out = subprocess.run([exe, "--cluster", "help"], capture_output=True, text=True, timeout=10)
    if "create" not in out.stdout + out.stderr:
        return "this redis-cli has no --cluster manager (Redis >= 5 needed)"
    return None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_node() -> tuple[subprocess.Popen[bytes], int, str]:
    """A cluster-enabled redis-server on a free port whose bus port (port + 10000) is free too."""
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(20_000, 50_000)
        if _bindable(port) and _bindable(port + 10_000):
            try:
                return start_redis_server(
                    "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", port=port
                )
            except RuntimeError:  # lost the port to someone else meanwhile: try another
                continue
    raise RuntimeError("could not start a cluster node")


@contextmanager
def _cluster(masters: int, replicas_per_master: int) -> Iterator[list[int]]:
    """A Redis Cluster of its own nodes, ready (state ok, every replica in sync); torn down after."""
    reason = _cluster_manager()
    if reason:
        pytest.skip(reason)
    nodes = []
    try:
        for _ in range(masters * (1 + replicas_per_master)):
            nodes.append(_start_node())
        ports = [port for _, port, _ in nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                str(replicas_per_master),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_until(lambda: all(_cluster_ok(p) for p in ports), 30, "cluster_state:ok", step=0.1)
        if replicas_per_master:
            wait_until(
                lambda: all(_replicated_shards(p, masters) for p in ports),
                30,
                "every shard with its replica in sync",
            )
        yield ports
    finally:
        for proc, _, _ in nodes:
            proc.terminate()
        for proc, _, workdir in nodes:
            proc.wait(10)
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_nodes() -> Iterator[list[int]]:
    with _cluster(masters=3, replicas_per_master=0) as ports:
        yield ports


@pytest.fixture
def cluster_url(cluster_nodes: list[int], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty cluster for one test; ``TQ_REDIS_URL``/``TQ_REDIS_CLUSTER`` point at it."""
    url = f"redis://127.0.0.1:{cluster_nodes[0]}/0"
    c = RedisCluster.from_url(url)
    c.flushall(target_nodes=RedisCluster.PRIMARIES)
    c.close()
    monkeypatch.setenv("TQ_REDIS_URL", url)
    monkeypatch.setenv("TQ_REDIS_CLUSTER", "true")
    from tq.settings import get_settings

    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def settings(url: str, **overrides: Any) -> Settings:
    return fast_settings(url, redis_cluster=True, **overrides)


@pytest.fixture
async def client(cluster_url: str) -> AsyncIterator[Any]:
    c = async_client(settings(cluster_url))
    assert is_cluster(c)
    yield c
    await c.aclose()


def test_the_twelve_queues_spread_over_the_masters(cluster_url: str) -> None:
    c = sync_client(settings(cluster_url))
    try:
        assert isinstance(c, RedisCluster)
        owners = {}
        for spec in all_queues():
            q = spec.name
            slot = int(c.cluster_keyslot(keys.stream(q)))  # the server's CLUSTER KEYSLOT
            # every key of a queue lives in its hash tag's slot, so each script is single-slot
            for key in (
                keys.job(q, "x"),
                keys.dlq(q),
                keys.audit(q),
                keys.config(q),
                keys.idempotency(q, "k"),
            ):
                assert int(c.cluster_keyslot(key)) == slot
            owners[q] = c.get_node_from_key(keys.stream(q)).name
        assert len(owners) == 12
        assert len(set(owners.values())) == 3  # every master owns some queues
        assert owners[Q] != owners[Q2]
    finally:
        c.close()


async def test_enqueue_single_bulk_and_idempotent(client: Any, cluster_url: str) -> None:
    s = settings(cluster_url)
    p = Producer(client, s)
    first = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="k1")
    assert await p.enqueue(Q, "send-email", EMAIL, idempotency_key="k1") == first
    bulk = await p.enqueue_many(Q2, [("send-otp", OTP)] * 5 + [JobRequest("send-otp", OTP, "k2")] * 2)
    assert len({r.id for r in bulk}) == 6  # the second k2 is the first one's id
    sync = SyncProducer(settings=s)  # builds its own cluster client from settings
    try:
        assert isinstance(sync.client, RedisCluster)
        assert sync.enqueue(Q, "send-email", EMAIL, idempotency_key="k1") == first
        many = sync.enqueue_many(Q, [("send-email", EMAIL)] * 5, chunk=2)  # 3 script calls
        assert len({r.id for r in many}) == 5
    finally:
        sync.close()
    assert await client.xlen(keys.stream(Q)) == 6 and await client.xlen(keys.stream(Q2)) == 6
    assert (await jobs.get_job(client, Q, first)).state is JobState.WAITING


async def test_consume_retry_dead_letter_and_replay(client: Any, cluster_url: str) -> None:
    s = settings(cluster_url, queues={Q: tiny_retry(attempts=3), Q2: tiny_retry(attempts=2)})
    h = HandlerRegistry()
    done: list[str] = []
    fail = {"mode": "flaky"}

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        if payload.template == "broken" and fail["mode"] == "flaky":
            raise ConnectionError(f"smtp down (attempt {ctx.attempt})")
        done.append(ctx.job_id)

    @h.register(Q2, "send-otp")
    async def otp(ctx: JobContext, payload: SendOtp) -> None:
        if payload.purpose == "forbidden":
            raise NonRetryableError("no such purpose")
        done.append(ctx.job_id)

    p = Producer(client, s)
    worker = Worker(client, [get_queue(Q), get_queue(Q2)], h, s)  # one heartbeat pipeline, two slots
    await worker.start()
    try:
        ok = [await p.enqueue(Q, "send-email", EMAIL) for _ in range(5)]
        ok += [r.id for r in await p.enqueue_many(Q2, [("send-otp", OTP)] * 5)]
        broken = await p.enqueue(
            Q, "send-email", {**EMAIL, "template": "broken"}, idempotency_key="once", trace_id="trace-7"
        )
        forbidden = await p.enqueue(Q2, "send-otp", {**OTP, "purpose": "forbidden"})
        await wait_for(lambda: len(done) == 10, what="10 completed jobs")
        await wait_for(lambda: client.xlen(keys.dlq(Q)), what="the dead letter of Q")
        await wait_for(lambda: client.xlen(keys.dlq(Q2)), what="the dead letter of Q2")
        assert sorted(done) == sorted(ok)
        assert await client.zcard(keys.consumers(Q)) == 1 and await client.zcard(keys.consumers(Q2)) == 1

        [letter] = (await dlq.list_dead(client, Q)).items
        assert (letter.job_id, letter.queue, letter.name, letter.attempts) == (broken, Q, "send-email", 3)
        assert (letter.error_type, letter.error) == ("ConnectionError", "smtp down (attempt 3)")
        assert "smtp down" in letter.stack and letter.trace_id == "trace-7"
        assert letter.payload["template"] == "broken" and letter.idempotency_key == "once"
        assert abs(letter.failed_at - time.time()) < 10 and letter.enqueued_at is not None
        rec = await jobs.get_job(client, Q, broken)
        assert rec.state is JobState.DEAD and rec.dlq_id == letter.dlq_id and len(rec.failures) == 3
        [other] = (await dlq.list_dead(client, Q2)).items
        assert (other.job_id, other.error_type, other.attempts) == (forbidden, "NonRetryableError", 1)
        counts = await jobs.counts(client, Q)
        assert counts["dead"] == 1 and counts["consumers"] == 1 and counts["completed"] == 5

        fail["mode"] = "fixed"
        replayed = await dlq.replay_one(client, Q, letter.dlq_id)
        await wait_for(lambda: replayed in done, what="the replayed job")
        assert await client.xlen(keys.dlq(Q)) == 0
        assert (await jobs.get_job(client, Q, replayed)).state is JobState.COMPLETED
        result = await dlq.replay(client, Q2)  # replay all: the script on Q2's master
        assert result.replayed == 1
        # the replayed job is refused again (non-retryable): back in the DLQ, where purge finds it
        await wait_for(lambda: client.xlen(keys.dlq(Q2)), what="the replayed job dead-lettered again")
        assert await dlq.purge(client, Q2, confirm=Q2) == 1
        assert await client.xlen(keys.dlq(Q2)) == 0
    finally:
        await worker.stop()
    assert await client.hget(keys.counters(Q), "dead") == b"1"
    assert await client.zcard(keys.consumers(Q)) == 0


async def test_pause_reaches_the_worker_through_the_control_channel(client: Any, cluster_url: str) -> None:
    s = settings(cluster_url, config_poll_s=30)  # no polling within the test: only the signal
    h = HandlerRegistry()
    done: list[str] = []

    @h.register(Q2, "send-otp")
    async def otp(ctx: JobContext, payload: SendOtp) -> None:
        done.append(ctx.job_id)

    p = Producer(client, s)
    async with running(client, s, h, queue=Q2) as worker:
        runner = worker.runners[Q2]
        await config.set_paused(client, Q2, True)
        await wait_for(lambda: runner.cfg.paused, 5, what="the pause to arrive")
        await p.enqueue_many(Q2, [("send-otp", OTP)] * 3)
        await asyncio.sleep(0.3)
        assert done == [] and (await jobs.counts(client, Q2))["waiting"] == 3
        await config.set_concurrency(client, Q2, 2)
        await config.set_paused(client, Q2, False)
        await wait_for(lambda: len(done) == 3, 5, what="the jobs after resume")
        assert runner.cfg.concurrency == 2
        await config.reset(client, Q2)
        await wait_for(lambda: runner.cfg.concurrency == get_queue(Q2).effective_defaults(s).concurrency, 5)


async def test_stats_snapshot_and_audit_writer(client: Any, cluster_url: str, tmp_path: Path) -> None:
    s = settings(cluster_url, audit_enabled=True, queues={Q2: tiny_retry(attempts=1)})
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        pass

    @h.register(Q2, "send-otp")
    async def otp(ctx: JobContext, payload: SendOtp) -> None:
        raise ConnectionError("sms gateway down")

    p = Producer(client, s)
    worker = Worker(client, [get_queue(Q), get_queue(Q2)], h, s)
    await worker.start()
    try:
        await p.enqueue_many(Q, [("send-email", EMAIL)] * 4)
        await p.enqueue(Q2, "send-otp", OTP, trace_id="t-otp")
        await wait_for(lambda: _xlen_is(client, keys.audit(Q), 4), what="Q's audit entries")
        await wait_for(lambda: _xlen_is(client, keys.audit(Q2), 1), what="Q2's audit entry")
    finally:
        await worker.stop()

    leader = StatsLeader(client, all_queues(), s)
    assert await leader.tick()  # elected (the lock is a global key) and wrote every queue's snapshot
    stats = await read_stats(client, Q)
    assert stats is not None and stats["completed"] == 4 and stats["waiting"] == 0
    stats2 = await read_stats(client, Q2)
    assert stats2 is not None and stats2["dlq"] == 1 and stats2["dead"] == 1
    await leader.release()

    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    await migrate_async(url)
    engine = make_engine(url)
    try:
        writer = AuditWriter(client, engine, s, consumer="w1")
        written = 0
        while (n := await writer.drain_once()) > 0:
            written += n
        assert written == 5
        async with engine.connect() as conn:
            rows = (await conn.execute(select(AuditLog.target, AuditLog.outcome, AuditLog.trace_id))).all()
        assert sorted(o for t, o, _ in rows if t.startswith(Q + "/")) == ["completed"] * 4
        [(_, outcome, trace)] = [r for r in rows if r[0].startswith(Q2 + "/")]
        assert (outcome, trace) == ("dead_lettered", "t-otp")
        assert await client.xlen(keys.audit(Q)) == 0 and await client.xlen(keys.audit(Q2)) == 0
    finally:
        await engine.dispose()


async def _xlen_is(client: Any, key: str, n: int) -> bool:
    return bool(await client.xlen(key) == n)


@pytest.fixture
def registered() -> Iterator[None]:
    app_worker.register()
    yield
    unregister_queue(app_worker.QUEUE)


def test_worker_app_consumes_on_the_cluster(cluster_url: str, registered: None) -> None:
    """FastStream's RedisClusterBroker hosts the worker: consume, heartbeat, stats, SIGTERM."""
    env = helper_env(TQ_REDIS_CLUSTER="true")
    c = sync_client(settings(cluster_url))
    producer = SyncProducer(c, settings(cluster_url))
    q = app_worker.QUEUE
    proc = subprocess.Popen(
        helper_command("app_worker", cluster_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_until(lambda: c.zcard(keys.consumers(q)) == 1, 20, "the worker's heartbeat")
        producer.enqueue_many(q, [("sleep", {"seconds": 0.0})] * 6)
        wait_until(lambda: int(c.hget(keys.counters(q), "completed") or 0) == 6, 10, "6 completed jobs")
        wait_until(lambda: c.exists(keys.stats(q)), 15, "the stats leader's snapshot")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert c.xpending(keys.stream(q), keys.GROUP)["pending"] == 0
    assert c.zcard(keys.consumers(q)) == 0 and not c.exists(keys.STATS_LEADER)
    c.close()


# ---- CLUSTER FAILOVER while jobs flow --------------------------------------------------------------


@pytest.fixture
def cluster_with_replicas() -> Iterator[list[int]]:
    """3 masters + 3 replicas (one per master), for one test: its own nodes, torn down after."""
    with _cluster(masters=3, replicas_per_master=1) as ports:
        yield ports


def _cluster_ok(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=5
    ).stdout
    return "cluster_state:ok" in out


def _replicated_shards(port: int, masters: int) -> bool:
    """Every shard this node knows has a replica, and its replicas report the link up."""
    with redis.Redis(port=port) as r:
        shards = r.execute_command("CLUSTER", "SLOTS")
        role = r.info("replication")
    return (
        len(shards) == masters
        and all(len(s) >= 4 for s in shards)
        and (role["role"] == "master" or role.get("master_link_status") == "up")
    )


def _slot_owner(ports: list[int], slot: int) -> tuple[int, int]:
    """(master port, its replica's port) of the shard serving ``slot``."""
    r = redis.Redis(port=ports[0])
    try:
        for start, end, master, *replicas in r.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1]), int(replicas[0][1])
    finally:
        r.close()
    raise AssertionError(f"no shard serves slot {slot}")


async def test_cluster_failover_while_jobs_flow_completes_every_job(cluster_with_replicas: list[int]) -> None:
    """CLUSTER FAILOVER of the shard holding the queue while the worker runs: the old master turns
    replica (MOVED / READONLY to its clients), the worker's supervised tasks retry and the cluster
    client follows the new topology; every job is completed and the intake runs again."""
    ports = cluster_with_replicas
    url = f"redis://127.0.0.1:{ports[0]}/0"
    s = settings(url, queues={Q: {"concurrency": 20, "visibility_timeout_s": 2.0}})
    c = async_client(s)
    h = HandlerRegistry()
    done: set[str] = set()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        await asyncio.sleep(0.003)
        done.add(ctx.job_id)

    slot = key_slot(keys.stream(Q).encode())
    master, replica = _slot_owner(ports, slot)
    batch = [JobRequest("send-email", {"to": f"u{i}@example.com", "template": "t"}) for i in range(3000)]
    worker = Worker(async_client(s), [get_queue(Q)], h, s)
    await worker.start()
    try:
        ids = {r.id for r in await Producer(c, s).enqueue_many(Q, batch)}
        await wait_for(lambda: len(done) >= 600, timeout=30, what="progress before the failover")
        with redis.Redis(port=replica) as r:  # a manual failover: the replica catches up, then takes over
            assert r.execute_command("CLUSTER", "FAILOVER")
        await wait_for(
            lambda: _slot_owner(ports, slot)[0] == replica, timeout=20, what="the replica promoted"
        )
        await wait_for(lambda: ids <= done, timeout=60, what="every job completed after the failover")
        await wait_for(lambda: _xlen_is(c, keys.stream(Q), 0), timeout=30, what="the stream drained")
        await wait_for(lambda: worker.intake_problem() is None, timeout=10, what="the intake running")
        more = {r.id for r in await Producer(c, s).enqueue_many(Q, batch[:100])}
        await wait_for(lambda: more <= done, timeout=20, what="new jobs run on the new master")
        assert master != replica
    finally:
        await worker.stop()
        await c.aclose()


async def test_schedules_fire_once_per_tick_on_the_cluster(client: Any, cluster_url: str) -> None:
    """The scheduler's keys (spec hash, per-schedule state, lock) and the queue's sit in different
    slots; every step touches one of them only."""
    from tq import schedules

    t0 = 1_800_000_000.0
    now = [t0]
    spec = schedules.ScheduleSpec(
        name="mails", queue="email:send", job="process-email-queue", payload={"limit": 5}, interval_seconds=60
    )
    await schedules.add(client, spec, now=t0)
    a = schedules.Scheduler(client, settings(cluster_url), clock=lambda: now[0], token="a")
    b = schedules.Scheduler(client, settings(cluster_url), clock=lambda: now[0], token="b")
    now[0] = t0 + 61
    # a leader enqueued the tick and died before recording it: the next one fires it again
    first = await Producer(client, settings(cluster_url)).enqueue(
        "email:send",
        "process-email-queue",
        {"limit": 5},
        idempotency_key=schedules.idempotency_key("mails", t0 + 60),
    )
    assert await a.tick() and not await b.tick()
    assert await client.xlen(keys.stream("email:send")) == 1  # the same job
    [(_, state)] = await schedules.list_with_state(client)
    assert (state["fired"], state["last"], state["job"]) == (1, t0 + 60, first)
    await schedules.remove(client, "mails")
