"""Durable history: migrations, ``record`` and the ``AuditWriter`` (real Redis; SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from support.db import reset_postgres
from tq import keys
from tq.audit import AUDIT_GROUP, AuditWriter, entry_to_row, record
from tq.db import (
    alembic_config,
    current_revision,
    make_engine,
    make_sessionmaker,
    migrate,
    migrate_async,
    normalize_url,
)
from tq.models import AuditLog, Base, QueueMetricAggregate
from tq.settings import Settings

STREAM = keys.audit("email:send")
BASE_MS = 1_700_000_000_000


def fake_entry(i: int) -> dict[str, str]:
    """An entry laid out as the engine's Lua writes it; every 3rd has no trace id, every 5th no details."""
    failed = i % 4 == 1
    details = (
        ""
        if i % 5 == 0
        else json.dumps(
            {"attempt": 1 + i % 3, "duration_ms": i / 10}
            | ({"error_type": "TimeoutError", "error": f"took too long #{i}"} if failed else {})
        )
    )
    return {
        "a": "job.failed" if failed else "job.completed",
        "q": "emails" if i % 2 else "ai:content",
        "id": f"job-{i:05d}",
        "n": f"send_{i % 7}",
        "o": "retried" if failed else "completed",
        "tr": "" if i % 3 == 0 else f"trace-{i}",
        "at": str(BASE_MS + i),
        "d": details,
    }


async def xadd_many(client: aioredis.Redis, entries: list[dict[str, str]]) -> list[bytes]:
    async with client.pipeline(transaction=True) as pipe:  # atomic: a blocked reader sees all
        for fields in entries:
            pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
        return list(await pipe.execute())


async def count_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(AuditLog))).scalar_one())


async def pending_count(client: aioredis.Redis, consumer: str | None = None) -> int:
    info = await client.xpending(STREAM, AUDIT_GROUP)
    if consumer is None:
        return int(info["pending"])
    return sum(int(c["pending"]) for c in info["consumers"] if c["name"] in (consumer, consumer.encode()))


async def rename_table(engine: AsyncEngine, old: str, new: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f'ALTER TABLE "{old}" RENAME TO "{new}"'))


class TableGone:
    """``audit_log`` renamed away (the database is "broken") until ``restore()`` or the block ends."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.away = False

    async def __aenter__(self) -> TableGone:
        await rename_table(self.engine, "audit_log", "audit_log_away")
        self.away = True
        return self

    async def restore(self) -> None:
        if self.away:
            await rename_table(self.engine, "audit_log_away", "audit_log")
            self.away = False

    async def __aexit__(self, *exc: object) -> None:
        await self.restore()


ENGINE_TABLES = {AuditLog.__tablename__, QueueMetricAggregate.__tablename__}


def engine_objects(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """An ``include_object`` hook that keeps the engine's tables only: ``Base.metadata`` also holds
    the families' tables (tq_services), which the engine's own migrations do not create."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return table is None or table.name in ENGINE_TABLES


def settings(**kw: Any) -> Settings:
    return Settings(**({"audit_batch": 1000} | kw))


# --------------------------------------------------------------------------- migrations


async def test_migrate_creates_table_and_is_idempotent(database_backend: str) -> None:
    url = database_backend
    if normalize_url(url).get_backend_name() == "postgresql":
        await reset_postgres(url)
    else:
        assert not Path(normalize_url(url).database or "").parent.exists()
    assert await asyncio.to_thread(current_revision, url) is None

    migrate(url)  # the engine's own migrations; the sync entry point, safe with a loop running
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    # the engine's revisions only: its base, then its later steps right after it (0002a: the steps
    # the whole platform's chain runs as 0010; see tests/families/test_schema_upgrade.py)
    assert head == "0002a"
    assert await asyncio.to_thread(current_revision, url) == head

    engine = make_engine(url)
    try:

        def schema(conn: Any) -> tuple[set[str], dict[str, Any], set[str], list[Any]]:
            insp = inspect(conn)
            columns = {c["name"]: c for c in insp.get_columns("audit_log")}
            indexes = {ix["name"] for ix in insp.get_indexes("audit_log")}
            # the engine's tables against the engine's migrations (the whole schema's check, with
            # every family's tables and the search family's hook: tests/families/test_schema_upgrade.py)
            context = MigrationContext.configure(conn, opts={"include_object": engine_objects})
            diff = compare_metadata(context, Base.metadata)
            return set(insp.get_table_names()), columns, indexes, diff

        async with engine.connect() as conn:
            tables, columns, indexes, diff = await conn.run_sync(schema)
        assert {"audit_log", "alembic_version"} <= tables
        assert tables == ENGINE_TABLES | {"alembic_version"}  # nothing of the families
        assert list(columns) == [
            "id",
            "actor",
            "action",
            "target",
            "outcome",
            "details",
            "trace_id",
            "created_at",
            "event_key",
        ]
        assert columns["trace_id"]["nullable"] is True
        assert columns["event_key"]["nullable"] is True
        assert columns["action"]["nullable"] is False
        assert indexes == {
            "ix_audit_log_action",
            "ix_audit_log_target",
            "ix_audit_log_trace_id",
            "ix_audit_log_created_at",
            "ix_audit_log_event_key",
        }
        assert diff == [], f"models and migrations disagree: {diff}"

        row_id = await record(engine, actor="a", action="x", target="t", outcome="ok")
        await migrate_async(url)  # again: a no-op that keeps the data
        migrate(url)
        async with engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
            ids = (await conn.execute(select(AuditLog.id))).scalars().all()
            if normalize_url(url).get_backend_name() == "sqlite":
                assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
        assert versions == [head]
        assert ids == [row_id]
    finally:
        await engine.dispose()


def test_normalize_url_fills_in_async_drivers() -> None:
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql+aiomysql://u@h/db")


# --------------------------------------------------------------------------- record


async def test_record_writes_a_row(db_engine: AsyncEngine) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    row_id = await record(
        db_engine,
        actor="admin@example.com",
        action="queue.pause",
        target="emails",
        outcome="ok",
        details={"reason": "maintenance", "by": ["cli"]},
        trace_id="abc123",
    )
    bare_id = await record(
        db_engine, actor="op", action="dlq.purge", target="emails", outcome="ok", trace_id=""
    )
    assert bare_id > row_id

    sessions = make_sessionmaker(db_engine)
    async with sessions() as session:
        row = await session.get(AuditLog, row_id)
        bare = await session.get(AuditLog, bare_id)
    assert row is not None and bare is not None
    assert (row.actor, row.action, row.target, row.outcome, row.trace_id) == (
        "admin@example.com",
        "queue.pause",
        "emails",
        "ok",
        "abc123",
    )
    assert row.details == {"reason": "maintenance", "by": ["cli"]}
    assert row.created_at.tzinfo is not None
    assert before <= row.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert bare.details == {} and bare.trace_id is None

    # With a session it joins the caller's transaction: rolled back with it, committed with it.
    async with sessions() as session:
        rolled = await record(session, actor="op", action="queue.resume", target="emails", outcome="ok")
        assert rolled > bare_id
        await session.rollback()
    async with sessions() as session, session.begin():
        kept = await record(session, actor="op", action="queue.resume", target="emails", outcome="ok")
    async with db_engine.connect() as conn:
        ids = (await conn.execute(select(AuditLog.id).order_by(AuditLog.id))).scalars().all()
    assert ids == [row_id, bare_id, kept]


# --------------------------------------------------------------------------- the writer


def test_entry_to_row_never_raises_on_malformed_entries() -> None:
    row = entry_to_row(
        {
            b"a": b"job.failed",
            b"q": b"q",
            b"id": b"1",
            b"n": b"j",
            b"o": b"dead_lettered",
            b"tr": b"",
            b"at": b"garbage",
            b"d": b"{not json",
        }
    )
    assert row["details"] == {"job": "j", "raw": "{not json"}
    assert row["trace_id"] is None
    assert abs((row["created_at"] - datetime.now(UTC)).total_seconds()) < 60
    nan = entry_to_row({b"n": b"j", b"d": b'{"x": NaN}', b"at": b"1000"})
    assert nan["details"] == {"job": "j", "raw": '{"x": NaN}'}
    assert nan["created_at"] == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    # "job" always names the job, even if the details carry a key of that name
    shadowed = entry_to_row({b"n": b"real", b"d": b'{"job": "fake", "k": 1}'})
    assert shadowed["details"] == {"job": "real", "k": 1}


async def test_writer_drains_2500_entries_in_batches(redis_client: aioredis.Redis, database_url: str) -> None:
    entries = [fake_entry(i) for i in range(2500)]
    await xadd_many(redis_client, entries)
    assert await redis_client.xlen(STREAM) == 2500

    async with AuditWriter(redis_client, database_url, settings(), consumer="w1") as writer:
        batches = []
        while (n := await writer.drain_once()) > 0:
            batches.append(n)
        assert batches == [1000, 1000, 500]
        assert writer.rows_written == 2500
        assert await count_rows(writer.engine) == 2500

        async with writer.engine.connect() as conn:
            rows = {r.target: r for r in (await conn.execute(select(AuditLog))).all()}
            actions = dict(
                (await conn.execute(select(AuditLog.outcome, func.count()).group_by(AuditLog.outcome))).all()
            )
    assert len(rows) == 2500  # every job once: nothing lost, nothing doubled
    assert actions == {"completed": 1875, "retried": 625}

    failed = rows["emails/job-00041"]  # 41 % 4 == 1: a failure, with trace and details
    assert failed.actor == "worker"
    assert failed.action == "job.failed"
    assert failed.outcome == "retried"
    assert failed.trace_id == "trace-41"
    assert failed.details == {
        "job": "send_6",
        "attempt": 3,
        "duration_ms": 4.1,
        "error_type": "TimeoutError",
        "error": "took too long #41",
    }
    assert failed.created_at == datetime.fromtimestamp((BASE_MS + 41) / 1000, UTC)

    no_trace = rows["ai:content/job-00030"]  # 30: no trace id, no details
    assert (no_trace.action, no_trace.outcome, no_trace.trace_id) == ("job.completed", "completed", None)
    assert no_trace.details == {"job": "send_2"}

    assert await redis_client.xlen(STREAM) == 0
    assert await pending_count(redis_client) == 0


async def test_failing_database_leaves_entries_pending_then_recovers(
    redis_client: aioredis.Redis, database_url: str
) -> None:
    ids = await xadd_many(redis_client, [fake_entry(i) for i in range(50)])
    engine = make_engine(database_url)
    try:
        async with TableGone(engine) as gone:
            broken = AuditWriter(redis_client, database_url, settings(), consumer="w1")
            for _ in range(2):  # the retry re-reads the same pending batch and fails the same way
                with pytest.raises(DBAPIError):
                    await broken.drain_once()
                assert await redis_client.xlen(STREAM) == 50
                assert await pending_count(redis_client, "w1") == 50
            assert broken.rows_written == 0
            # New entries are not read past the failed batch either.
            await xadd_many(redis_client, [fake_entry(i) for i in range(50, 60)])
            with pytest.raises(DBAPIError):
                await broken.drain_once()
            assert await pending_count(redis_client, "w1") == 50
            await broken.aclose()

            await gone.restore()  # fixed
            async with AuditWriter(redis_client, database_url, settings(), consumer="w1") as writer:
                assert await writer.drain_once() == 50  # its pending entries first
                assert await writer.drain_once() == 10  # then the new ones
                assert await writer.drain_once() == 0
            assert await count_rows(engine) == 60
            async with engine.connect() as conn:
                targets = set((await conn.execute(select(AuditLog.target))).scalars())
            assert targets == {fake_entry(i)["q"] + "/" + fake_entry(i)["id"] for i in range(60)}
            assert await redis_client.xlen(STREAM) == 0
            assert await pending_count(redis_client) == 0
            assert len(ids) == 50
    finally:
        await engine.dispose()


async def test_same_writer_retries_its_failed_batch(redis_client: aioredis.Redis, database_url: str) -> None:
    await xadd_many(redis_client, [fake_entry(i) for i in range(30)])
    async with (
        AuditWriter(redis_client, database_url, settings(), consumer="w1") as writer,
        TableGone(writer.engine) as gone,
    ):
        with pytest.raises(DBAPIError):
            await writer.drain_once()
        await gone.restore()
        assert await writer.drain_once() == 30  # the failed batch, re-read from its pending list
        assert await writer.drain_once() == 0
        assert await count_rows(writer.engine) == 30
    assert await redis_client.xlen(STREAM) == 0


async def test_unmigrated_database_then_the_right_one(
    redis_client: aioredis.Redis, database_url: str, tmp_path: Path
) -> None:
    await xadd_many(redis_client, [fake_entry(i) for i in range(20)])
    empty = f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}"  # no audit_log table at all
    async with AuditWriter(redis_client, empty, settings(), consumer="w1") as broken:
        with pytest.raises(DBAPIError):
            await broken.drain_once()
    assert await redis_client.xlen(STREAM) == 20
    assert await pending_count(redis_client, "w1") == 20

    async with AuditWriter(redis_client, database_url, settings(), consumer="w1") as writer:
        assert await writer.drain_once() == 20
        assert await count_rows(writer.engine) == 20
    assert await redis_client.xlen(STREAM) == 0
    assert await pending_count(redis_client) == 0


async def test_entries_of_a_dead_writer_are_claimed(redis_client: aioredis.Redis, database_url: str) -> None:
    await xadd_many(redis_client, [fake_entry(i) for i in range(15)])
    engine = make_engine(database_url)
    try:
        async with (
            TableGone(engine),
            AuditWriter(redis_client, database_url, settings(), consumer="dead") as dead,
        ):
            with pytest.raises(DBAPIError):
                await dead.drain_once()
        assert await pending_count(redis_client, "dead") == 15

        # Another writer does not steal entries that are pending only briefly ...
        async with AuditWriter(redis_client, engine, settings(), consumer="other") as patient:
            assert await patient.drain_once() == 0
        assert await pending_count(redis_client, "dead") == 15
        # ... but takes them over once idle past claim_idle_ms.
        async with AuditWriter(redis_client, engine, settings(), consumer="other", claim_idle_ms=0) as other:
            assert await other.drain_once() == 15
        assert await count_rows(engine) == 15
        assert await pending_count(redis_client) == 0
        assert await redis_client.xlen(STREAM) == 0
    finally:
        await engine.dispose()


async def test_pending_entries_trimmed_from_the_stream_are_acked(
    redis_client: aioredis.Redis, database_url: str
) -> None:
    ids = await xadd_many(redis_client, [fake_entry(i) for i in range(5)])
    async with AuditWriter(redis_client, database_url, settings(audit_batch=2), consumer="w1") as writer:
        await writer.ensure_group()
        # w1 took them (e.g. then crashed), and someone deleted some (XDEL) while they were pending
        await redis_client.xreadgroup(AUDIT_GROUP, "w1", {STREAM: ">"}, count=10)
        await redis_client.xdel(STREAM, ids[0], ids[1], ids[3])
        assert await pending_count(redis_client, "w1") == 5
        # the first pending batch is tombstones only: acked, and the call reads on rather than report 0
        assert await writer.drain_once() == 1
        assert await writer.drain_once() == 1
        assert await writer.drain_once() == 0
        assert await pending_count(redis_client) == 0
        async with writer.engine.connect() as conn:
            targets = set((await conn.execute(select(AuditLog.target))).scalars())
    assert targets == {"ai:content/job-00002", "ai:content/job-00004"}


async def test_malformed_entries_are_written_not_stuck(
    redis_client: aioredis.Redis, database_url: str
) -> None:
    bad = [
        fake_entry(1) | {"d": "{oops"},
        fake_entry(2) | {"d": '{"error": "nul\\u0000byte", "x": NaN}'},
        fake_entry(3) | {"d": '{"error": "nul\\u0000byte"}', "tr": "t\x00r"},
        fake_entry(4) | {"at": "soon"},
        {"a": "job.completed"},  # almost nothing
    ]
    await xadd_many(redis_client, bad)
    async with AuditWriter(redis_client, database_url, settings(), consumer="w1") as writer:
        assert await writer.drain_once() == 5
        async with writer.engine.connect() as conn:
            rows = (await conn.execute(select(AuditLog).order_by(AuditLog.id))).all()
    assert rows[0].details == {"job": "send_1", "raw": "{oops"}
    assert rows[2].details["error"] == "nulbyte" and rows[2].trace_id == "tr"
    assert rows[4].target == "/" and rows[4].details == {"job": ""}
    assert await redis_client.xlen(STREAM) == 0


async def test_run_forever_drains_retries_and_stops(redis_client: aioredis.Redis, database_url: str) -> None:
    engine = make_engine(database_url)
    stop = asyncio.Event()
    writer = AuditWriter(
        redis_client,
        engine,
        settings(audit_flush_s=0.05),
        consumer="w1",
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    task = asyncio.create_task(writer.run_forever(stop))
    gone = TableGone(engine)
    try:
        await xadd_many(redis_client, [fake_entry(i) for i in range(10)])
        await wait_for(lambda: count_rows(engine), 10)

        await gone.__aenter__()
        await xadd_many(redis_client, [fake_entry(i) for i in range(10, 25)])
        await wait_for(lambda: pending_count(redis_client, "w1"), 15)
        await asyncio.sleep(0.5)  # several failed attempts with backoff; the loop survives them
        assert not task.done()
        assert await redis_client.xlen(STREAM) == 15  # nothing acked or deleted meanwhile
        assert await pending_count(redis_client, "w1") == 15
        assert writer.rows_written == 10
        await gone.restore()
        await wait_for(lambda: count_rows(engine), 25)
        await wait_for(lambda: redis_client.xlen(STREAM), 0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await gone.restore()
        await engine.dispose()
    assert writer.rows_written == 25


async def wait_for(probe: Any, expected: int, within_s: float = 10.0) -> None:
    """Poll ``await probe()`` until it returns ``expected``."""
    deadline = asyncio.get_running_loop().time() + within_s
    value = None
    while asyncio.get_running_loop().time() < deadline:
        value = await probe()
        if value == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"waited {within_s}s for {expected}, last saw {value}")


# --------------------------------------------------------------------------- exactly once


async def test_a_redelivered_entry_writes_no_second_row(
    redis_client: aioredis.Redis, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer commits its batch and dies before the ack: the entries stay pending, another writer
    claims them and writes them again - and no second row appears."""
    await xadd_many(redis_client, [fake_entry(i) for i in range(12)])
    engine = make_engine(database_url)
    try:
        async with AuditWriter(redis_client, engine, settings(), consumer="dies") as dies:

            def no_ack(*_a: Any, **_k: Any) -> Any:
                raise ConnectionError("killed between the commit and the ack")

            monkeypatch.setattr(dies.redis, "pipeline", no_ack)
            with pytest.raises(ConnectionError):
                await dies.drain_once()
            monkeypatch.undo()
        assert await count_rows(engine) == 12  # committed ...
        assert await pending_count(redis_client, "dies") == 12  # ... and never acked

        async with AuditWriter(redis_client, engine, settings(), consumer="next", claim_idle_ms=0) as nxt:
            assert await nxt.drain_once() == 12  # claimed and written again ...
            assert nxt.rows_written == 0 and nxt.duplicates_skipped == 12
        assert await count_rows(engine) == 12  # ... but no row twice
        assert await pending_count(redis_client) == 0
        assert await redis_client.xlen(STREAM) == 0

        # the same outcome in a new entry (e.g. a stream replayed by hand) is no new row either
        await xadd_many(redis_client, [fake_entry(1), fake_entry(2)])
        async with AuditWriter(redis_client, engine, settings()) as again:
            assert await again.drain_once() == 2
        assert await count_rows(engine) == 12
        async with engine.connect() as conn:
            keys_ = (await conn.execute(select(AuditLog.event_key).order_by(AuditLog.id))).scalars().all()
        assert keys_[1] == "emails/job-00001#2:retried"
        assert keys_[0].startswith("ai:content/job-00000@")  # no details: keyed by its entry id
        # admin actions have no key: each is its own row
        await record(engine, actor="a", action="queue.pause", target="emails", outcome="ok")
        await record(engine, actor="a", action="queue.pause", target="emails", outcome="ok")
        assert await count_rows(engine) == 14
    finally:
        await engine.dispose()


async def test_writers_have_unique_names_and_dead_ones_leave_the_group(
    redis_client: aioredis.Redis, database_url: str
) -> None:
    engine = make_engine(database_url)
    try:
        async with (
            AuditWriter(redis_client, engine, settings()) as one,
            AuditWriter(redis_client, engine, settings()) as two,
        ):
            assert one.consumer != two.consumer and one.consumer.startswith("writer-")
            await xadd_many(redis_client, [fake_entry(i) for i in range(3)])
            assert await one.drain_once() == 3
            names = {c["name"] for c in await redis_client.xinfo_consumers(STREAM, AUDIT_GROUP)}
            assert one.consumer.encode() in names or one.consumer in names
            # a writer that is gone, with nothing pending: removed once idle past claim_idle_ms
            async with AuditWriter(redis_client, engine, settings(), claim_idle_ms=0) as sweeper:
                await asyncio.sleep(0.01)
                assert await sweeper.drain_once() == 0
            left = {c["name"] for c in await redis_client.xinfo_consumers(STREAM, AUDIT_GROUP)}
            assert one.consumer not in left and one.consumer.encode() not in left
    finally:
        await engine.dispose()


async def test_migration_keys_old_rows_and_removes_their_duplicates(database_backend: str) -> None:
    """A database written before the key (at-least-once: some outcomes twice) upgrades: job outcome
    rows get their key, the duplicates are deleted (the first row kept), admin rows stay."""
    url = database_backend
    if normalize_url(url).get_backend_name() == "postgresql":
        await reset_postgres(url)
    migrate(url, "0002")
    engine = make_engine(url)
    try:
        rows = [
            ("worker", "job.completed", "q/a", "completed", {"job": "j", "attempt": 1}),
            ("worker", "job.failed", "q/b", "retried", {"job": "j", "attempt": 1}),
            ("worker", "job.completed", "q/a", "completed", {"job": "j", "attempt": 1}),  # duplicate
            ("worker", "job.completed", "q/b", "completed", {"job": "j", "attempt": 2}),
            ("worker", "job.failed", "q/b", "retried", {"job": "j", "attempt": 1}),  # duplicate
            ("worker", "job.completed", "q/c", "completed", {"job": "j"}),  # no attempt: no key
            ("worker", "job.completed", "q/c", "completed", {"job": "j"}),
            ("admin", "queue.pause", "q", "ok", {}),
            ("admin", "queue.pause", "q", "ok", {}),
        ]
        cols = "actor, action, target, outcome, details, created_at"
        async with engine.begin() as conn:
            for actor, action, target, outcome, details in rows:
                await conn.execute(
                    text(f"INSERT INTO audit_log ({cols}) VALUES (:a, :b, :c, :d, :e, CURRENT_TIMESTAMP)"),
                    {"a": actor, "b": action, "c": target, "d": outcome, "e": json.dumps(details)},
                )
        await migrate_async(url)
        async with engine.connect() as conn:
            got = (await conn.execute(select(AuditLog.id, AuditLog.event_key).order_by(AuditLog.id))).all()
        assert got == [
            (1, "q/a#1:completed"),
            (2, "q/b#1:retried"),
            (4, "q/b#2:completed"),
            (6, None),
            (7, None),
            (8, None),
            (9, None),
        ]
        # the key is enforced, and the writer's key of such an entry is the migration's
        row = entry_to_row(
            {b"a": b"job.completed", b"q": b"q", b"id": b"a", b"o": b"completed", b"d": b'{"attempt": 1}'}
        )
        assert row["event_key"] == "q/a#1:completed"
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(AuditLog.__table__.insert(), [row])
    finally:
        await engine.dispose()
