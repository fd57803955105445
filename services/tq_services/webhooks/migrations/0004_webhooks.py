"""webhooks: webhook_endpoint, webhook_delivery_log

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=500), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("events", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
    )

    op.create_table(
        "webhook_delivery_log",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("endpoint_id", BIGINT_PK, nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_ms", sa.Float(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        sa.Column("trace_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('delivered', 'retrying', 'failed')", name=op.f("ck_webhook_delivery_log_outcome")
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoint.id"],
            name=op.f("fk_webhook_delivery_log_endpoint_id_webhook_endpoint"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery_log")),
    )
    op.create_index(op.f("ix_webhook_delivery_log_delivery_id"), "webhook_delivery_log", ["delivery_id"])
    op.create_index(op.f("ix_webhook_delivery_log_job_id"), "webhook_delivery_log", ["job_id"])
    op.create_index(
        "ix_webhook_delivery_log_endpoint_id_created_at",
        "webhook_delivery_log",
        ["endpoint_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_delivery_log_endpoint_id_created_at", table_name="webhook_delivery_log")
    op.drop_index(op.f("ix_webhook_delivery_log_job_id"), table_name="webhook_delivery_log")
    op.drop_index(op.f("ix_webhook_delivery_log_delivery_id"), table_name="webhook_delivery_log")
    op.drop_table("webhook_delivery_log")
    op.drop_table("webhook_endpoint")
