"""ai: ai_run, ai_message, ai_event_log, ai_draft, ai_report, article_quality_report (issue 5)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _created_at() -> sa.Column[datetime]:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def _fk(column: str, table: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "ai_run",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("job_name", sa.String(length=100), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("article_id", BIGINT_PK, nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("trace_id", sa.String(length=100), nullable=True),
        _created_at(),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'retrying', 'failed')", name=op.f("ck_ai_run_status")
        ),
        _fk("article_id", "ai_run", "article", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_run")),
    )
    op.create_index(op.f("ix_ai_run_job_id"), "ai_run", ["job_id"])
    op.create_index("ix_ai_run_article_id_created_at", "ai_run", ["article_id", "created_at"])

    op.create_table(
        "ai_message",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("run_id", BIGINT_PK, nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        _created_at(),
        sa.CheckConstraint("role IN ('system', 'user', 'assistant')", name=op.f("ck_ai_message_role")),
        _fk("run_id", "ai_message", "ai_run", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_message")),
    )
    op.create_index(op.f("ix_ai_message_run_id"), "ai_message", ["run_id"])

    op.create_table(
        "ai_event_log",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("run_id", BIGINT_PK, nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        _created_at(),
        _fk("run_id", "ai_event_log", "ai_run", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_event_log")),
    )
    op.create_index(op.f("ix_ai_event_log_run_id"), "ai_event_log", ["run_id"])
    op.create_index(op.f("ix_ai_event_log_job_id"), "ai_event_log", ["job_id"])

    op.create_table(
        "ai_draft",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("article_id", BIGINT_PK, nullable=False),
        sa.Column("run_id", BIGINT_PK, nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("locale", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("source_text", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        _created_at(),
        sa.CheckConstraint(
            "kind IN ('draft', 'summary', 'translation', 'rewrite')", name=op.f("ck_ai_draft_kind")
        ),
        sa.CheckConstraint("status IN ('pending', 'accepted', 'discarded')", name=op.f("ck_ai_draft_status")),
        _fk("article_id", "ai_draft", "article", "CASCADE"),
        _fk("run_id", "ai_draft", "ai_run", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_draft")),
    )
    op.create_index("ix_ai_draft_article_id_kind", "ai_draft", ["article_id", "kind"])

    op.create_table(
        "ai_report",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("article_id", BIGINT_PK, nullable=False),
        sa.Column("run_id", BIGINT_PK, nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("originality_score", sa.Float(), nullable=True),
        sa.Column("seo_score", sa.Float(), nullable=True),
        sa.Column("structure_valid", sa.Boolean(), nullable=True),
        sa.Column("ai_probability", sa.Float(), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        _created_at(),
        sa.CheckConstraint("kind IN ('seo', 'meta', 'keywords', 'review')", name=op.f("ck_ai_report_kind")),
        _fk("article_id", "ai_report", "article", "CASCADE"),
        _fk("run_id", "ai_report", "ai_run", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_report")),
    )
    op.create_index("ix_ai_report_article_id_created_at", "ai_report", ["article_id", "created_at"])

    op.create_table(
        "article_quality_report",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("article_id", BIGINT_PK, nullable=False),
        sa.Column("run_id", BIGINT_PK, nullable=True),
        sa.Column("word_count", sa.Integer(), nullable=False),
        sa.Column("sentence_count", sa.Integer(), nullable=False),
        sa.Column("avg_sentence_words", sa.Float(), nullable=False),
        sa.Column("long_sentence_ratio", sa.Float(), nullable=False),
        sa.Column("heading_count", sa.Integer(), nullable=False),
        sa.Column("structure_valid", sa.Boolean(), nullable=False),
        sa.Column("keyword", sa.String(length=200), nullable=True),
        sa.Column("keyword_density", sa.Float(), nullable=True),
        sa.Column("readability", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("issues", JSON, nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        _created_at(),
        _fk("article_id", "article_quality_report", "article", "CASCADE"),
        _fk("run_id", "article_quality_report", "ai_run", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_article_quality_report")),
    )
    op.create_index(
        "ix_article_quality_report_article_id_created_at",
        "article_quality_report",
        ["article_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_article_quality_report_article_id_created_at", table_name="article_quality_report")
    op.drop_table("article_quality_report")
    op.drop_index("ix_ai_report_article_id_created_at", table_name="ai_report")
    op.drop_table("ai_report")
    op.drop_index("ix_ai_draft_article_id_kind", table_name="ai_draft")
    op.drop_table("ai_draft")
    op.drop_index(op.f("ix_ai_event_log_job_id"), table_name="ai_event_log")
    op.drop_index(op.f("ix_ai_event_log_run_id"), table_name="ai_event_log")
    op.drop_table("ai_event_log")
    op.drop_index(op.f("ix_ai_message_run_id"), table_name="ai_message")
    op.drop_table("ai_message")
    op.drop_index("ix_ai_run_article_id_created_at", table_name="ai_run")
    op.drop_index(op.f("ix_ai_run_job_id"), table_name="ai_run")
    op.drop_table("ai_run")
