"""audit_log.event_key: each job outcome once (a unique key the AuditWriter inserts against)

A job outcome row is keyed ``queue/job-id#attempt:outcome`` (``tq.audit.event_key``); the unique
index makes a redelivered audit entry's insert a no-op (``ON CONFLICT DO NOTHING``). Admin rows
keep NULL (never equal to one another).

An upgraded database gets the key for the job outcome rows it already has (the attempt is in
``details``), and the duplicates that at-least-once delivery wrote before (same key) are deleted,
the first row (lowest id) kept, so the unique index can be built.

This revision continues the whole platform's chain (after the families' 0009); the engine alone
runs the same steps as 0002a (``versions_alone``). See ``tq.db.alembic_config``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("event_key", sa.String(length=400), nullable=True))
    sqlite = op.get_bind().dialect.name == "sqlite"
    attempt = "json_extract(details, '$.attempt')" if sqlite else "(details->>'attempt')"
    # the key tq.audit.event_key gives a job outcome: queue/job-id#attempt:outcome
    op.execute(
        f"UPDATE audit_log SET event_key = target || '#' || {attempt} || ':' || outcome "
        f"WHERE actor = 'worker' AND action IN ('job.completed', 'job.failed') AND {attempt} IS NOT NULL"
    )
    op.execute(
        "DELETE FROM audit_log WHERE event_key IS NOT NULL AND id NOT IN "
        "(SELECT MIN(id) FROM audit_log WHERE event_key IS NOT NULL GROUP BY event_key)"
    )
    op.create_index(op.f("ix_audit_log_event_key"), "audit_log", ["event_key"], unique=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_event_key"), table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("event_key")
