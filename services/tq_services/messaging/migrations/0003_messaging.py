"""messaging: email_queue, email_log, otp_log

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "email_queue",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("to", sa.String(length=320), nullable=False),
        sa.Column("template", sa.String(length=200), nullable=False),
        sa.Column("locale", sa.String(length=20), nullable=False),
        sa.Column("variables", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            _one_of("status", ("pending", "queued", "sending", "sent", "failed")),
            name=op.f("ck_email_queue_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_queue")),
    )
    op.create_index("ix_email_queue_status_id", "email_queue", ["status", "id"])

    op.create_table(
        "email_log",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("email_queue_id", BIGINT_PK, nullable=True),
        sa.Column("to", sa.String(length=320), nullable=False),
        sa.Column("template", sa.String(length=200), nullable=False),
        sa.Column("locale", sa.String(length=20), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("smtp_response", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        sa.Column("trace_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            _one_of("status", ("sent", "deferred", "failed")), name=op.f("ck_email_log_status")
        ),
        sa.ForeignKeyConstraint(
            ["email_queue_id"],
            ["email_queue.id"],
            name=op.f("fk_email_log_email_queue_id_email_queue"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_log")),
    )
    op.create_index(op.f("ix_email_log_email_queue_id"), "email_log", ["email_queue_id"])
    op.create_index(op.f("ix_email_log_job_id"), "email_log", ["job_id"])
    op.create_index(op.f("ix_email_log_created_at"), "email_log", ["created_at"])

    op.create_table(
        "otp_log",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("destination", sa.String(length=320), nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=False),
        sa.Column("code_hash", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            _one_of("status", ("pending", "sent", "failed", "verified", "superseded", "expired", "locked")),
            name=op.f("ck_otp_log_status"),
        ),
        sa.CheckConstraint("channel IN ('email', 'sms')", name=op.f("ck_otp_log_channel")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_otp_log")),
    )
    op.create_index("ix_otp_log_user_id_purpose_created_at", "otp_log", ["user_id", "purpose", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_otp_log_user_id_purpose_created_at", table_name="otp_log")
    op.drop_table("otp_log")
    op.drop_index(op.f("ix_email_log_created_at"), table_name="email_log")
    op.drop_index(op.f("ix_email_log_job_id"), table_name="email_log")
    op.drop_index(op.f("ix_email_log_email_queue_id"), table_name="email_log")
    op.drop_table("email_log")
    op.drop_index("ix_email_queue_status_id", table_name="email_queue")
    op.drop_table("email_queue")
