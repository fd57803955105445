"""Analytics roll-up benchmark: one UTC day of N raw events (default 1 000 000) rolled up into the
four daily tables, on a SQLite file and on PostgreSQL.

    python bench/analytics_bench.py --backend sqlite [--events 1000000]
    python bench/analytics_bench.py --backend postgresql [--events 1000000]
    python bench/analytics_bench.py --summary RESULTS.jsonl     (a markdown section of the results)

The events are generated set-based inside the database (a recursive CTE on SQLite,
``generate_series`` on PostgreSQL), spread over the day in an order unrelated to their ids, then
ANALYZEd (no VACUUM). Timed, each in its own transaction, the way the handlers run them
(``tq_services.analytics.rollups``): ``rollup`` = rollup-daily's work for the day; ``rerun`` = the
same again (it overwrites: the counts must not change); ``process`` = process-events from an empty
watermark (find the batch's days, recompute them, move the watermark).

Databases: SQLite in a temporary directory. PostgreSQL: ``ANALYTICS_BENCH_DATABASE_URL`` (a
throwaway database: tq's tables in it are dropped and recreated) or else a private server started
here with ``initdb`` / ``postgres`` from PATH (or /usr/lib/postgresql/*/bin) on a free port in a
temporary directory, stopped and removed at the end; never another server's databases. Without
either, the run prints a ``skipped`` line.

Output: one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from tq.db import make_engine, make_sessionmaker
from tq_services.analytics import rollups
from tq_services.analytics.models import AnalyticsAggregate
from tq_services.schema import load_models, migrate_async

DAY = date(2026, 11, 2)
TARGET_S = 60.0

# The same generator on both back ends: integer hashing of the row number i picks each column.
_COLUMNS = """
    CASE WHEN (i * 7919) % 100 < 50 THEN 'view' WHEN (i * 7919) % 100 < 65 THEN 'read'
         WHEN (i * 7919) % 100 < 80 THEN 'click' WHEN (i * 7919) % 100 < 90 THEN 'search'
         ELSE 'share' END,
    CASE WHEN (i * 7919) % 100 BETWEEN 80 AND 89 THEN NULL ELSE (i * 2654435761) % 5000 + 1 END,
    CASE WHEN i % 5 = 0 THEN NULL ELSE (i * 48271) % 200000 + 1 END,
    's' || ((i * 16807) % 300000),
    CASE WHEN (i * 7919) % 100 >= 65 AND (i * 7919) % 100 < 90 THEN 'query ' || ((i * 31) % 2000) END,
"""
SQLITE_GENERATE = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) "
    "INSERT INTO analytics_event (event_type, article_id, user_id, session_id, query, occurred_at) "
    f"SELECT {_COLUMNS} "
    "printf('%s.%06d', datetime(:start, '+' || ((i * 37) % 86400) || ' seconds'), i % 1000000) "
    "FROM n"
)
POSTGRES_GENERATE = (
    "INSERT INTO analytics_event (event_type, article_id, user_id, session_id, query, occurred_at) "
    f"SELECT {_COLUMNS} CAST(:start AS timestamptz) + ((i * 37) % 86400) * interval '1 second' "
    "+ (i % 1000000) * interval '1 microsecond' "
    "FROM generate_series(CAST(1 AS bigint), CAST(:n AS bigint)) AS i"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextmanager
def private_postgres() -> Iterator[str]:
    """A PostgreSQL server of our own (trust auth, user postgres) in a temporary directory."""
    initdb, postgres = _pg_tool("initdb"), _pg_tool("postgres")
    if not initdb or not postgres:
        raise RuntimeError("initdb/postgres not found")
    as_user: list[str] = []
    workdir = tempfile.mkdtemp(prefix="tq-analytics-pg.")
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres account
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")
    data = os.path.join(workdir, "data")
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [*as_user, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = subprocess.Popen(
            [
                *as_user,
                postgres,
                "-D",
                data,
                "-p",
                str(port),
                "-k",
                workdir,
                "-c",
                "listen_addresses=127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the private PostgreSQL did not start") from None
                time.sleep(0.1)
        time.sleep(0.5)  # the port opens before the server accepts logins
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


async def _reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(load_models().sorted_tables):
            await conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version CASCADE"))


async def _day_counts(engine: AsyncEngine) -> dict[str, int]:
    async with make_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(AnalyticsAggregate.event_type, AnalyticsAggregate.count).where(
                AnalyticsAggregate.bucket == "day", AnalyticsAggregate.period == DAY.isoformat()
            )
        )
        return {t: int(c) for t, c in rows}


async def measure(url: str, backend: str, events: int, reset: bool) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        if reset:
            await _reset(engine)
        await migrate_async(url)
        start = datetime.combine(DAY, datetime.min.time())
        t0 = time.perf_counter()
        async with engine.begin() as conn:
            if backend == "sqlite":
                await conn.execute(text(SQLITE_GENERATE), {"n": events, "start": start.isoformat(sep=" ")})
            else:
                await conn.execute(text(POSTGRES_GENERATE), {"n": events, "start": start.replace(tzinfo=UTC)})
        generate_s = time.perf_counter() - t0
        async with engine.begin() as conn:  # fresh statistics, as autovacuum / a nightly ANALYZE keep them
            await conn.execute(text("ANALYZE analytics_event"))
        sessions = make_sessionmaker(engine)

        async def rollup() -> tuple[float, rollups.DayRollup]:
            t = time.perf_counter()
            async with sessions() as session, session.begin():
                done = await rollups.rollup_day(session, DAY, datetime.now(UTC))
            return time.perf_counter() - t, done

        rollup_s, first = await rollup()
        counts = await _day_counts(engine)
        rerun_s, second = await rollup()
        assert second == first and await _day_counts(engine) == counts, "a re-run changed the counts"

        t = time.perf_counter()
        async with sessions() as session, session.begin():
            batch = await rollups.next_batch(session, await rollups.read_watermark(session), events)
            for day in batch.days:
                await rollups.rollup_day(session, day, datetime.now(UTC))
            assert batch.last_event_id is not None
            await rollups.advance_watermark(session, batch.last_event_id)
        process_s = time.perf_counter() - t
        assert await _day_counts(engine) == counts and batch.events == events

        return {
            "system": "tq",
            "mode": "analytics-rollup",
            "backend": backend,
            "events": events,
            "generate_s": round(generate_s, 2),
            "rollup_s": round(rollup_s, 2),
            "rerun_s": round(rerun_s, 2),
            "process_s": round(process_s, 2),
            "rollup_events_per_s": round(events / rollup_s),
            "rows": {"articles": first.articles, "queries": first.queries, "users": first.users},
            "target_s": TARGET_S,
            "pass": max(rollup_s, rerun_s, process_s) < TARGET_S,
        }
    finally:
        await engine.dispose()


def run(backend: str, events: int) -> dict[str, Any]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="tq-analytics-") as tmp:
            return asyncio.run(measure(f"sqlite+aiosqlite:///{tmp}/bench.db", backend, events, reset=False))
    given = os.environ.get("ANALYTICS_BENCH_DATABASE_URL")
    if given:
        return asyncio.run(measure(given, backend, events, reset=True))
    try:
        with private_postgres() as url:
            return asyncio.run(measure(url, backend, events, reset=False))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        return {
            "system": "tq",
            "mode": "analytics-rollup",
            "backend": backend,
            "events": events,
            "skipped": str(exc),
        }


def summary(path: str) -> str:
    rows = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("{"):
                row = json.loads(line)
                if row.get("mode") == "analytics-rollup":
                    rows.append(row)
    if not rows:
        return ""
    out = [
        "\n### Analytics roll-up: one day of raw events into the daily tables\n",
        "| back end | events | generate s | rollup s | re-run s | process-events s | events/s | < 60 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r or "error" in r:
            out.append(
                f"| {r.get('backend', '?')} | {r.get('events', '-')} | "
                f"skipped: {r.get('skipped') or r.get('error')} |"
            )
            continue
        out.append(
            f"| {r['backend']} | {r['events']:,} | {r['generate_s']} | {r['rollup_s']} | {r['rerun_s']} | "
            f"{r['process_s']} | {r['rollup_events_per_s']:,} | {'PASS' if r['pass'] else 'FAIL'} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--summary", metavar="RESULTS_JSONL", help="print the markdown section and exit")
    args = parser.parse_args()
    if args.summary:
        sys.stdout.write(summary(args.summary))
        return
    print(json.dumps(run(args.backend, args.events)), flush=True)


if __name__ == "__main__":
    main()
