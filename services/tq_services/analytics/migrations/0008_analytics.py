"""analytics: analytics_event and the daily roll-up tables (issue 6)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _computed_at() -> sa.Column[Any]:
    return sa.Column("computed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "analytics_event",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("event_type", sa.String(length=50), nullable=False),
        sa.Column("article_id", BIGINT_PK, nullable=True),
        sa.Column("user_id", BIGINT_PK, nullable=True),
        sa.Column("session_id", sa.String(length=100), nullable=True),
        sa.Column("query", sa.String(length=500), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("meta", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_event")),
    )
    op.create_index("ix_analytics_event_occurred_at", "analytics_event", ["occurred_at"])
    op.create_table(
        "article_stats_daily",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("article_id", BIGINT_PK, nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.Column("reads", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("shares", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("unique_users", sa.BigInteger(), nullable=False),
        sa.Column("unique_sessions", sa.BigInteger(), nullable=False),
        _computed_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_article_stats_daily")),
        sa.UniqueConstraint("day", "article_id", name=op.f("uq_article_stats_daily_day_article_id")),
    )
    op.create_table(
        "search_query_stats_daily",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("query", sa.String(length=500), nullable=False),
        sa.Column("searches", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("unique_users", sa.BigInteger(), nullable=False),
        sa.Column("unique_sessions", sa.BigInteger(), nullable=False),
        _computed_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_query_stats_daily")),
        sa.UniqueConstraint("day", "query", name=op.f("uq_search_query_stats_daily_day_query")),
    )
    op.create_table(
        "user_engagement_daily",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", BIGINT_PK, nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("views", sa.BigInteger(), nullable=False),
        sa.Column("reads", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("searches", sa.BigInteger(), nullable=False),
        sa.Column("shares", sa.BigInteger(), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("articles", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        _computed_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_engagement_daily")),
        sa.UniqueConstraint("day", "user_id", name=op.f("uq_user_engagement_daily_day_user_id")),
    )
    op.create_table(
        "analytics_aggregate",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("bucket", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("period", sa.String(length=50), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("meta", JSON, nullable=True),
        _computed_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analytics_aggregate")),
        sa.UniqueConstraint(
            "bucket",
            "name",
            "period",
            "event_type",
            "seq",
            name=op.f("uq_analytics_aggregate_bucket_name_period_event_type_seq"),
        ),
    )
    op.create_table(
        "analytics_watermark",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_analytics_watermark")),
    )


def downgrade() -> None:
    op.drop_table("analytics_watermark")
    op.drop_table("analytics_aggregate")
    op.drop_table("user_engagement_daily")
    op.drop_table("search_query_stats_daily")
    op.drop_table("article_stats_daily")
    op.drop_index("ix_analytics_event_occurred_at", table_name="analytics_event")
    op.drop_table("analytics_event")
