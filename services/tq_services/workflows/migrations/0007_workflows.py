"""workflows: workflow_definition, workflow_instance, workflow_step_execution (issue 5)

The release's revision 0007 created these and the plugins family's tables together; the plugins
half is now revision 0006a (tq_services/plugins/migrations), which runs just before this one, so a
database stamped 0007 (or later) by that release already has both. See tq_services/schema.py.

Revision ID: 0007
Revises: 0006a
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "workflow_definition",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(length=200), nullable=True),
        sa.Column("steps", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _created_at(),
        _created_at("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_definition")),
        sa.UniqueConstraint("name", name=op.f("uq_workflow_definition_name")),
    )
    op.create_index(op.f("ix_workflow_definition_trigger"), "workflow_definition", ["trigger"])

    op.create_table(
        "workflow_instance",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("workflow_id", BIGINT_PK, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("input", JSON, nullable=False),
        sa.Column("outputs", JSON, nullable=False),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("step_attempts", sa.Integer(), nullable=False),
        sa.Column("resume_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wakeups", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        sa.Column("trigger", sa.String(length=200), nullable=True),
        sa.Column("failed_step", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        _created_at(),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed')",
            name=op.f("ck_workflow_instance_status"),
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflow_definition.id"],
            name=op.f("fk_workflow_instance_workflow_id_workflow_definition"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_instance")),
        sa.UniqueConstraint("job_id", name=op.f("uq_workflow_instance_job_id")),
    )

    op.create_table(
        "workflow_step_execution",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("instance_id", BIGINT_PK, nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_name", sa.String(length=200), nullable=False),
        sa.Column("step_type", sa.String(length=20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("output", JSON, nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("child_queue", sa.String(length=100), nullable=True),
        sa.Column("child_job_id", sa.String(length=100), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'skipped')",
            name=op.f("ck_workflow_step_execution_status"),
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["workflow_instance.id"],
            name=op.f("fk_workflow_step_execution_instance_id_workflow_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_step_execution")),
        sa.UniqueConstraint(
            "instance_id",
            "step_index",
            "attempt",
            name=op.f("uq_workflow_step_execution_instance_id_step_index_attempt"),
        ),
    )


def downgrade() -> None:
    op.drop_table("workflow_step_execution")
    op.drop_table("workflow_instance")
    op.drop_index(op.f("ix_workflow_definition_trigger"), table_name="workflow_definition")
    op.drop_table("workflow_definition")
