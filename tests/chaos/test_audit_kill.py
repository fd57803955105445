"""Worker processes, each with its audit writer, SIGKILLed again and again while jobs flow: every
job outcome has its audit row, none has two. A writer killed between its commit and its ack
leaves its batch pending; the writer that claims it writes it again, and the unique key
(``event_key``) turns the second insert into nothing."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from typing import Any

from sqlalchemy import text
from support import wait_for
from support.audit_outage import JOB, Q, spawn_worker
from tq import keys
from tq.db import make_engine
from tq.producer import Producer
from tq.settings import Settings

RATE, SECONDS, KILLS, WORKERS = 1000, 8, 6, 3


async def test_killed_writers_leave_each_outcome_written_once(
    redis_client: Any, redis_url: str, database_url: str
) -> None:
    rng = random.Random(20261202)
    env = {"AUDIT_CLAIM_IDLE_MS": "1000"}  # a killed writer's entries are claimed after 1 s
    spawn = lambda: spawn_worker(redis_url, database_url, **env)  # noqa: E731
    live: list[subprocess.Popen[str]] = [await asyncio.to_thread(spawn) for _ in range(WORKERS)]
    every = list(live)
    producer = Producer(redis_client, Settings(redis_url=redis_url))
    jobs, kills = 0, 0
    try:
        t0 = time.monotonic()
        next_kill = t0 + 1.0
        while time.monotonic() - t0 < SECONDS or kills < KILLS:  # every kill, however slow the machine
            await producer.enqueue_many(
                Q, [(JOB, {"to": f"u{jobs + i}@b.co", "template": "w"}) for i in range(100)]
            )
            jobs += 100
            if time.monotonic() >= next_kill and kills < KILLS:
                victim = live.pop(rng.randrange(len(live)))
                victim.send_signal(signal.SIGKILL)
                await asyncio.to_thread(victim.wait, 10)
                kills += 1
                fresh = await asyncio.to_thread(spawn)
                live.append(fresh)
                every.append(fresh)
                next_kill += 1.0
            await asyncio.sleep(100 / RATE)

        async def done() -> bool:
            c = {k.decode(): int(v) for k, v in (await redis_client.hgetall(keys.counters(Q))).items()}
            backlog = await redis_client.xlen(keys.audit(Q))
            pending = (await redis_client.xpending(keys.audit(Q), "audit"))["pending"]
            return c.get("completed", 0) + c.get("dead", 0) >= jobs and backlog == 0 and pending == 0

        await wait_for(done, timeout=120, what="every job done and every audit record written")
    finally:
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        outputs = [(await asyncio.to_thread(proc.communicate, timeout=60))[0] for proc in every]
    # what the writers that stopped gracefully wrote again and skipped (the killed ones say nothing)
    skipped = sum(
        json.loads(ln)["skipped"] for out in outputs for ln in out.splitlines() if ln.startswith("{")
    )
    counters = {k.decode(): int(v) for k, v in (await redis_client.hgetall(keys.counters(Q))).items()}
    outcomes = sum(counters.get(k, 0) for k in ("completed", "skipped", "retried", "dead"))
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows, keyed = (
                await conn.execute(
                    text("SELECT count(*), count(DISTINCT event_key) FROM audit_log WHERE actor = 'worker'")
                )
            ).one()
            completed_rows = (
                await conn.execute(
                    text("SELECT count(DISTINCT target) FROM audit_log WHERE outcome = 'completed'")
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    print(
        f"\nchaos audit under kills: jobs={jobs} kills={kills} outcomes={outcomes} rows={rows} "
        f"lost={outcomes - rows} duplicates={rows - keyed} redelivered_skipped={skipped} "
        f"reclaimed={counters.get('reclaimed', 0)}"
    )
    assert kills == KILLS
    assert counters.get("completed", 0) == jobs == completed_rows
    assert rows == keyed == outcomes  # one row per outcome the settle scripts recorded, none twice
