"""Make the test data of tests/families/test_schema_upgrade.py: databases created by the release
whose revisions all lived in the engine (``tq/migrations``, head 0009), i.e. git commit ce29c81.

Run it with THAT release's engine on the path, never the current one (it refuses otherwise)::

    rel=$(mktemp -d) && git archive ce29c81 shared | tar -x -C "$rel" \\
      && PYTHONPATH="$rel/shared" .venv/bin/python tests/support/release_db.py tests/support/data

It writes, into the folder given:

- ``release-0009.sqlite``: the release's ``tq.db.migrate`` on a new SQLite file, then a few rows in
  every table (the audit log, the queue aggregates and each family's), written by the release's
  own models, with fixed timestamps; left in rollback-journal mode, so the one file is all of it;
- ``release-0009.postgresql.sql``: the release's migrations rendered as PostgreSQL DDL (Alembic's
  offline ``--sql`` mode), ending with ``alembic_version`` at 0009. The test runs it on an empty
  database and copies the SQLite file's rows in (PostgreSQL only when one is reachable).
"""

from __future__ import annotations

import contextlib
import io
import sqlite3
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

SQLITE_NAME = "release-0009.sqlite"
POSTGRES_NAME = "release-0009.postgresql.sql"
RELEASE_HEAD = "0009"

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rows() -> list[object]:
    """The rows, as the release's models (imported here: they exist only in the release)."""
    from tq.models import (  # type: ignore[attr-defined]
        AiDraft,
        AiEventLog,
        AiMessage,
        AIReport,
        AiRun,
        AnalyticsAggregate,
        AnalyticsEvent,
        AnalyticsWatermark,
        Article,
        ArticleQualityReport,
        ArticleStatsDaily,
        ArticleVersion,
        AuditLog,
        EmailLog,
        EmailQueue,
        File,
        FileVariant,
        OtpLog,
        Plugin,
        PluginExecutionLog,
        QueueMetricAggregate,
        SearchDocument,
        SearchQueryStatsDaily,
        Translation,
        UserEngagementDaily,
        WebhookDeliveryLog,
        WebhookEndpoint,
        WorkflowDefinition,
        WorkflowInstance,
        WorkflowStepExecution,
    )

    day = date(2026, 11, 30)
    wasm = b"\x00asm\x01\x00\x00\x00"
    return [
        AuditLog(
            id=1,
            actor="worker",
            action="job.completed",
            target="email:send/job-1",
            outcome="completed",
            details={"attempt": 1, "duration_ms": 12.5},
            trace_id="trace-1",
            created_at=at(0),
        ),
        AuditLog(
            id=2,
            actor="admin@example.com",
            action="queue.pause",
            target="ai:content",
            outcome="ok",
            details={},
            created_at=at(1),
        ),
        QueueMetricAggregate(
            id=1,
            queue="email:send",
            bucket_start=at(-5),
            enqueued=10,
            completed=9,
            failed=1,
            retried=1,
            dead=0,
            avg_duration_ms=12.5,
            p95_duration_ms=40.0,
            max_waiting=3,
            max_dlq=0,
            created_at=at(0),
        ),
        EmailQueue(
            id=1,
            to="a@example.com",
            template="welcome",
            locale="en",
            variables={"name": "Ada"},
            status="sent",
            attempts=1,
            created_at=at(0),
            updated_at=at(1),
        ),
        EmailLog(
            id=1,
            email_queue_id=1,
            to="a@example.com",
            template="welcome",
            locale="en",
            subject="Welcome, Ada",
            status="sent",
            smtp_response="250 OK",
            job_id="job-1",
            created_at=at(1),
        ),
        OtpLog(
            id=1,
            user_id=42,
            channel="email",
            destination="a@example.com",
            purpose="login",
            code_hash="sha256$abc",
            expires_at=at(5),
            attempts=0,
            max_attempts=5,
            status="sent",
            created_at=at(0),
        ),
        WebhookEndpoint(
            id=1,
            url="https://hooks.example.com/tq",
            secret="s3cret",
            active=True,
            events=["article.published"],
            created_at=at(0),
        ),
        WebhookDeliveryLog(
            id=1,
            endpoint_id=1,
            delivery_id="dlv-1",
            event="article.published",
            attempt=1,
            outcome="delivered",
            status_code=200,
            response_ms=35.0,
            job_id="job-2",
            created_at=at(2),
        ),
        Article(
            id=1,
            title="Redis Streams in practice",
            body="Consumer groups, pending entries and XAUTOCLAIM.",
            locale="en",
            status="published",
            tags=["redis", "queues"],
            keywords=["redis streams"],
            main_keyword="redis streams",
            seo_score=71.0,
            review_status="approved",
            created_at=at(0),
            updated_at=at(3),
        ),
        ArticleVersion(
            id=1,
            article_id=1,
            version=1,
            title="Redis Streams in practice",
            body="A first draft.",
            source="editor",
            created_at=at(0),
        ),
        Translation(
            id=1,
            article_id=1,
            locale="fa",
            title="Redis Streams در عمل",
            body="گروه‌های مصرف‌کننده",
            created_at=at(4),
            updated_at=at(4),
        ),
        AiRun(
            id=1,
            job_id="job-3",
            queue="ai:content",
            job_name="enhance-content",
            attempt=1,
            model="openai/gpt-4o-mini",
            status="succeeded",
            article_id=1,
            tokens_in=100,
            tokens_out=50,
            cost=0.0001,
            duration_ms=850.0,
            finished_at=at(6),
            created_at=at(5),
        ),
        AiMessage(id=1, run_id=1, role="user", content="Improve this article.", created_at=at(5)),
        AiEventLog(id=1, run_id=1, job_id="job-3", event="done", message="ok", created_at=at(6)),
        AiDraft(
            id=1,
            article_id=1,
            run_id=1,
            kind="draft",
            locale="en",
            content="A better body.",
            status="pending",
            created_at=at(6),
        ),
        AIReport(id=1, article_id=1, run_id=1, kind="seo", data={"score": 71}, created_at=at(6)),
        ArticleQualityReport(
            id=1,
            article_id=1,
            word_count=7,
            sentence_count=1,
            avg_sentence_words=7.0,
            long_sentence_ratio=0.0,
            heading_count=0,
            structure_valid=False,
            readability=80.0,
            issues=["no headings"],
            created_at=at(6),
        ),
        WorkflowDefinition(
            id=1,
            name="publish",
            description="on publish: index and notify",
            trigger="article.published",
            steps=[{"type": "enqueue", "queue": "search:index", "job": "index-article"}],
            enabled=True,
            created_at=at(0),
            updated_at=at(0),
        ),
        WorkflowInstance(
            id=1,
            workflow_id=1,
            status="completed",
            input={"article_id": 1},
            outputs=[{"job_id": "job-4"}],
            current_step=1,
            job_id="job-5",
            trigger="article.published",
            started_at=at(7),
            finished_at=at(8),
            created_at=at(7),
        ),
        WorkflowStepExecution(
            id=1,
            instance_id=1,
            step_index=0,
            step_name="index",
            step_type="enqueue",
            attempt=1,
            status="completed",
            output={"job_id": "job-4"},
            child_queue="search:index",
            child_job_id="job-4",
            started_at=at(7),
            finished_at=at(8),
        ),
        Plugin(
            id=1,
            name="word-count",
            version="1.0.0",
            module=wasm,
            sha256="0" * 64,
            size_bytes=len(wasm),
            exports=["run"],
            permissions=["article:read"],
            enabled=True,
            created_at=at(0),
            updated_at=at(0),
        ),
        PluginExecutionLog(
            id=1,
            plugin_id=1,
            plugin_version="1.0.0",
            entrypoint="run",
            status="succeeded",
            duration_ms=3.5,
            fuel_consumed=1234,
            output={"words": 7},
            job_id="job-6",
            created_at=at(9),
        ),
        AnalyticsEvent(
            id=1,
            event_type="view",
            article_id=1,
            user_id=42,
            session_id="sess-1",
            occurred_at=at(10),
            meta={"ua": "test"},
        ),
        AnalyticsEvent(id=2, event_type="search", user_id=42, query="redis", occurred_at=at(11)),
        ArticleStatsDaily(
            id=1,
            day=day,
            article_id=1,
            views=1,
            reads=0,
            clicks=0,
            shares=0,
            events=1,
            unique_users=1,
            unique_sessions=1,
            computed_at=at(12),
        ),
        SearchQueryStatsDaily(
            id=1,
            day=day,
            query="redis",
            searches=1,
            clicks=0,
            unique_users=1,
            unique_sessions=0,
            computed_at=at(12),
        ),
        UserEngagementDaily(
            id=1,
            day=day,
            user_id=42,
            events=2,
            views=1,
            reads=0,
            clicks=0,
            searches=1,
            shares=0,
            sessions=1,
            articles=1,
            first_seen_at=at(10),
            last_seen_at=at(11),
            computed_at=at(12),
        ),
        AnalyticsAggregate(
            id=1,
            bucket="day",
            name="",
            period=day.isoformat(),
            event_type="view",
            seq=0,
            count=1,
            computed_at=at(12),
        ),
        AnalyticsWatermark(name="rollup", last_event_id=2, updated_at=at(12)),
        File(
            id=1,
            path="uploads/cat.png",
            content_type="image/png",
            bytes=2048,
            width=64,
            height=48,
            format="png",
            status="optimized",
            job_id="job-7",
            optimized_at=at(13),
            created_at=at(0),
            updated_at=at(13),
        ),
        FileVariant(
            id=1,
            file_id=1,
            path="uploads/cat-32.webp",
            width=32,
            height=24,
            bytes=512,
            format="webp",
            created_at=at(13),
        ),
        SearchDocument(
            id=1,
            article_id=1,
            source="article",
            locale="en",
            title="Redis Streams in practice",
            body="Consumer groups, pending entries and XAUTOCLAIM.",
            tags=["redis", "queues"],
            job_id="job-8",
            indexed_at=at(14),
        ),
        SearchDocument(
            id=2,
            article_id=1,
            translation_id=1,
            source="translation",
            locale="fa",
            title="Redis Streams در عمل",
            body="گروه‌های مصرف‌کننده",
            tags=["redis", "queues"],
            job_id="job-9",
            indexed_at=at(14),
        ),
    ]


def make_sqlite(path: Path) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session
    from tq.db import current_revision, migrate

    path.unlink(missing_ok=True)
    url = f"sqlite+aiosqlite:///{path}"
    migrate(url)
    assert current_revision(url) == RELEASE_HEAD
    engine = create_engine(f"sqlite:///{path}")
    try:
        with Session(engine) as session, session.begin():
            for row in rows():  # one at a time, in order: parents before their children
                session.add(row)
                session.flush()
    finally:
        engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file (no -wal beside it)
        conn.execute("PRAGMA page_size=1024")  # small pages: a small file for the repository
        conn.execute("VACUUM")


def make_postgres_sql(path: Path) -> None:
    from alembic import command
    from tq.db import alembic_config

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):  # offline mode prints the DDL
        command.upgrade(alembic_config("postgresql+asyncpg://tq@localhost/tq"), "head", sql=True)
    ddl = buffer.getvalue()
    assert f"version_num='{RELEASE_HEAD}'" in ddl, "the DDL does not end at the release's head"
    path.write_text("\n".join(line.rstrip() for line in ddl.splitlines()) + "\n")


def main(folder: str) -> None:
    import tq.db

    try:
        import tq.models.search  # type: ignore[import-not-found]
    except ImportError:
        sys.exit(f"{tq.db.__file__} is not the release's engine: put ce29c81's shared/ on PYTHONPATH")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    make_sqlite(out / SQLITE_NAME)
    make_postgres_sql(out / POSTGRES_NAME)
    print(f"wrote {out / SQLITE_NAME} and {out / POSTGRES_NAME}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parent / "data"))
