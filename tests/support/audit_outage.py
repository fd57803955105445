"""The database away while jobs flow: every audit record waits in Redis and lands once it is back.

Jobs are enqueued at a steady rate into ``email:send`` before, during and after an outage of the
database; worker processes (``python -m support.audit_outage worker ...``: a ``Worker`` and an
``AuditWriter``, as a family service runs them) run them with audit on. At the end every job must
be completed and have exactly one audit row. Used by tests/chaos/test_database_outage.py (a short
outage) and run by hand for the long one (figures in docs/bench.md)::

    cd tests && ../.venv/bin/python -m support.audit_outage

Knobs (environment): ``OUTAGE_S`` (600), ``RATE`` jobs/s (2000), ``BEFORE_S`` (30) and ``AFTER_S``
(30) of load around the outage, ``WORKERS`` processes (2), ``OUTAGE_DATABASE_URL`` (default: a new
database on the PostgreSQL at 127.0.0.1:5432 when it answers as trusted ``postgres``, dropped
afterwards; else a SQLite file). It starts its own redis-server. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import text

from support import helper_command, helper_env

Q = "email:send"
JOB = "send-email"
POLL_S = 1.0


@dataclass
class OutageResult:
    backend: str
    rate: float  # jobs/s asked
    outage_s: float
    jobs: int  # enqueued
    enqueue_rate: float  # jobs/s reached over the load
    completed: int
    rows: int  # audit rows of these jobs
    lost: int  # jobs without a row
    duplicates: int  # rows beyond one per job
    redelivered_skipped: int  # records written again by a writer and skipped by the unique key
    max_backlog: int  # most audit records waiting in Redis
    backlog_at_restore: int
    drain_s: float  # from the database's return until every row was written
    redis_peak_mb: float  # Redis used_memory, highest sample
    redis_base_mb: float  # before the load
    intake_held: bool  # the backlog reached its bound (intake waited)


def _settings(redis_url: str, database_url: str, concurrency: int = 50) -> Any:
    from tq.settings import Settings

    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        audit_enabled=True,
        audit_flush_s=0.2,
        audit_batch=2000,
        events=False,
        uvloop=False,
        queues={Q: {"concurrency": concurrency}},
    )


async def worker_main(redis_url: str, database_url: str) -> None:
    """One worker process: the queue's worker and an audit writer, until SIGTERM; then one JSON
    line with what its writer wrote and skipped."""
    from tq.audit import AuditWriter
    from tq.db import make_engine
    from tq.handlers import HandlerRegistry, JobContext
    from tq.payloads import SendEmail
    from tq.registry import get_queue
    from tq.worker import Worker

    settings = _settings(redis_url, database_url)
    client = aioredis.Redis.from_url(redis_url)
    handlers = HandlerRegistry()

    @handlers.register(Q, JOB)
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        pass

    connect_args = {"timeout": 3, "command_timeout": 10} if "asyncpg" in database_url else {}
    engine = make_engine(database_url, connect_args=connect_args)
    claim_idle_ms = int(os.environ.get("AUDIT_CLAIM_IDLE_MS", 60_000))  # a dead writer's entries
    writer = AuditWriter(
        client, engine, settings, backoff_initial_s=0.5, backoff_max_s=2.0, claim_idle_ms=claim_idle_ms
    )
    worker = Worker(client, [get_queue(Q)], handlers, settings)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    writing = asyncio.create_task(writer.run_forever(stop, worker.supervisor))
    print("READY", flush=True)
    await stop.wait()
    await worker.stop()
    await writing
    await engine.dispose()
    await client.aclose()
    print(json.dumps({"written": writer.rows_written, "skipped": writer.duplicates_skipped}), flush=True)


def spawn_worker(redis_url: str, database_url: str, **env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        helper_command("audit_outage", "worker", redis_url, database_url),
        stdout=subprocess.PIPE,
        text=True,
        env=helper_env(**env),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"worker did not start: {line!r}")
    return proc


async def run_outage(
    redis_url: str,
    database_url: str,
    *,
    rate: float,
    outage_s: float,
    before_s: float = 5.0,
    after_s: float = 5.0,
    workers: int = 2,
    drain_timeout_s: float = 900.0,
    log: Any = None,
) -> OutageResult:
    """Jobs at ``rate``/s for ``before_s`` + ``outage_s`` + ``after_s`` seconds, the database away
    for ``outage_s`` of them; then wait until every job is done and every record written. The
    database at ``database_url`` must be migrated and is reached through ``support.db_outage``."""
    from tq import keys
    from tq.db import make_engine, normalize_url
    from tq.producer import Producer

    from support.db_outage import outage_for

    say = log or (lambda *_: None)
    client = aioredis.Redis.from_url(redis_url)
    settings = _settings(redis_url, database_url)
    producer = Producer(client, settings)
    backend = normalize_url(database_url).get_backend_name()
    stats = {"max_backlog": 0, "peak": 0}
    base_mb = int((await client.info("memory"))["used_memory"]) / 2**20
    sampling = True

    async def sample() -> None:
        while sampling:
            backlog = int(await client.xlen(keys.audit(Q)))
            used = int((await client.info("memory"))["used_memory"])
            stats["max_backlog"] = max(stats["max_backlog"], backlog)
            stats["peak"] = max(stats["peak"], used)
            await asyncio.sleep(POLL_S)

    async def counter(name: str) -> int:
        return int(await client.hget(keys.counters(Q), name) or 0)

    async with outage_for(database_url) as (proxied_url, cut, restore):
        procs = [await asyncio.to_thread(spawn_worker, redis_url, proxied_url) for _ in range(workers)]
        sampler = asyncio.create_task(sample())
        try:
            jobs = 0
            tick = 0.1
            per_tick = max(1, round(rate * tick))
            t0 = time.monotonic()
            total_s = before_s + outage_s + after_s
            phase = "before"
            restored_at = 0.0
            backlog_at_restore = 0
            next_report = t0
            while (now := time.monotonic()) - t0 < total_s:
                if phase == "before" and now - t0 >= before_s:
                    await cut()
                    phase = "outage"
                    say(f"database away at {now - t0:.0f}s, {jobs} jobs enqueued")
                elif phase == "outage" and now - t0 >= before_s + outage_s:
                    backlog_at_restore = int(await client.xlen(keys.audit(Q)))
                    await restore()
                    restored_at = time.monotonic()
                    phase = "after"
                    say(f"database back at {now - t0:.0f}s, backlog {backlog_at_restore}")
                due = int((now - t0) / tick) + 1
                while jobs < due * per_tick:
                    batch = [
                        (JOB, {"to": f"u{jobs + i}@example.com", "template": "w"}) for i in range(per_tick)
                    ]
                    await producer.enqueue_many(Q, batch)
                    jobs += per_tick
                if now >= next_report:
                    backlog = await client.xlen(keys.audit(Q))
                    say(
                        f"{now - t0:.0f}s {phase}: enqueued {jobs}, completed {await counter('completed')}, "
                        f"backlog {backlog}, redis {stats['peak'] / 2**20:.0f} MB peak"
                    )
                    next_report = now + 30
                await asyncio.sleep(max(0.0, t0 + due * tick - time.monotonic()))
            load_s = time.monotonic() - t0
            if phase != "after":  # no load after the outage: end it now
                backlog_at_restore = int(await client.xlen(keys.audit(Q)))
                await restore()
                restored_at = time.monotonic()
            deadline = time.monotonic() + drain_timeout_s
            while time.monotonic() < deadline:
                if await counter("completed") >= jobs and int(await client.xlen(keys.audit(Q))) == 0:
                    break
                await asyncio.sleep(0.2)
            drain_s = time.monotonic() - restored_at
            completed = await counter("completed")
        finally:
            sampling = False
            await sampler
            outputs = []
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                out, _ = await asyncio.to_thread(proc.communicate, timeout=120)
                lines = [ln for ln in out.splitlines() if ln.startswith("{")]
                outputs.append(json.loads(lines[-1]) if lines else {})
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows, distinct = (
                await conn.execute(
                    text(
                        "SELECT count(*), count(DISTINCT target) FROM audit_log "
                        "WHERE actor = 'worker' AND target LIKE :q"
                    ),
                    {"q": f"{Q}/%"},
                )
            ).one()
    finally:
        await engine.dispose()
    await client.aclose()
    return OutageResult(
        backend=backend,
        rate=rate,
        outage_s=outage_s,
        jobs=jobs,
        enqueue_rate=round(jobs / load_s, 1),
        completed=completed,
        rows=int(rows),
        lost=jobs - int(distinct),
        duplicates=int(rows) - int(distinct),
        redelivered_skipped=sum(int(o.get("skipped", 0)) for o in outputs),
        max_backlog=stats["max_backlog"],
        backlog_at_restore=backlog_at_restore,
        drain_s=round(drain_s, 1),
        redis_peak_mb=round(stats["peak"] / 2**20, 1),
        redis_base_mb=round(base_mb, 1),
        intake_held=stats["max_backlog"] >= settings.audit_backlog_max,
    )


async def _local_postgres() -> tuple[str, str] | None:
    """A new database on the trusted local PostgreSQL: (url, name), or None."""
    import asyncpg

    try:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=5432, user="postgres", database="postgres", timeout=3
        )
    except (OSError, asyncpg.PostgresError):
        return None
    name = f"tq_outage_{secrets.token_hex(4)}"
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", name


async def _drop_local_postgres(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres", timeout=3)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def main() -> None:
    from tq_services.schema import migrate_async

    from support.redis_server import start_redis_server

    env = os.environ
    created: str | None = None
    url = env.get("OUTAGE_DATABASE_URL")
    if not url:
        local = await _local_postgres()
        if local is not None:
            url, created = local
        else:
            url = f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='tq-outage-')}/tq.db"
    proc, port, _ = start_redis_server()
    try:
        await migrate_async(url)
        result = await run_outage(
            f"redis://127.0.0.1:{port}/0",
            url,
            rate=float(env.get("RATE", 2000)),
            outage_s=float(env.get("OUTAGE_S", 600)),
            before_s=float(env.get("BEFORE_S", 30)),
            after_s=float(env.get("AFTER_S", 30)),
            workers=int(env.get("WORKERS", 2)),
            log=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
        print(json.dumps(asdict(result)), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        if created:
            await _drop_local_postgres(created)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        asyncio.run(worker_main(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(main())
