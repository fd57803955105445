"""queue_metric_aggregate: one row per queue per 5-minute bucket, written by the stats leader

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_metric_aggregate",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enqueued", sa.BigInteger(), nullable=False),
        sa.Column("completed", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("retried", sa.BigInteger(), nullable=False),
        sa.Column("dead", sa.BigInteger(), nullable=False),
        sa.Column("avg_duration_ms", sa.Float(), nullable=True),
        sa.Column("p95_duration_ms", sa.Float(), nullable=True),
        sa.Column("max_waiting", sa.BigInteger(), nullable=False),
        sa.Column("max_dlq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_metric_aggregate")),
        sa.UniqueConstraint(
            "queue", "bucket_start", name=op.f("uq_queue_metric_aggregate_queue_bucket_start")
        ),
    )
    op.create_index(
        op.f("ix_queue_metric_aggregate_bucket_start"), "queue_metric_aggregate", ["bucket_start"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_queue_metric_aggregate_bucket_start"), table_name="queue_metric_aggregate")
    op.drop_table("queue_metric_aggregate")
