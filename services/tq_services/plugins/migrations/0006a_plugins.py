"""plugins: plugin, plugin_execution_log (issue 5)

Split out of the release's revision 0007 (which created these with the workflows tables). It runs
just before 0007 (now workflows only), so that every database stamped 0007 or later by that
release counts it as applied: nothing is created twice. See tq_services/schema.py.

Revision ID: 0006a
Revises: 0006
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006a"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "plugin",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("module", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("exports", JSON, nullable=False),
        sa.Column("permissions", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _created_at(),
        _created_at("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin")),
        sa.UniqueConstraint("name", name=op.f("uq_plugin_name")),
    )

    op.create_table(
        "plugin_execution_log",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("plugin_id", BIGINT_PK, nullable=False),
        sa.Column("plugin_version", sa.String(length=200), nullable=False),
        sa.Column("entrypoint", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("fuel_consumed", sa.BigInteger(), nullable=True),
        sa.Column("output", JSON, nullable=True),
        sa.Column("error_stack", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        sa.Column("trace_id", sa.String(length=100), nullable=True),
        _created_at(),
        sa.CheckConstraint(
            "status IN ('succeeded', 'trapped', 'timed_out', 'out_of_fuel', 'out_of_memory', "
            "'permission_denied', 'invalid_output', 'disabled')",
            name=op.f("ck_plugin_execution_log_status"),
        ),
        sa.ForeignKeyConstraint(
            ["plugin_id"],
            ["plugin.id"],
            name=op.f("fk_plugin_execution_log_plugin_id_plugin"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plugin_execution_log")),
    )
    op.create_index(op.f("ix_plugin_execution_log_plugin_id"), "plugin_execution_log", ["plugin_id"])
    op.create_index(op.f("ix_plugin_execution_log_job_id"), "plugin_execution_log", ["job_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_plugin_execution_log_job_id"), table_name="plugin_execution_log")
    op.drop_index(op.f("ix_plugin_execution_log_plugin_id"), table_name="plugin_execution_log")
    op.drop_table("plugin_execution_log")
    op.drop_table("plugin")
