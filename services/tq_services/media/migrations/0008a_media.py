"""media: file, file_variant (issue 6)

Split out of the release's revision 0009 (which created these with the search family's tables).
It runs just before 0009 (now search only), so that a database stamped 0009 by that release counts
it as applied: nothing is created twice. See tq_services/schema.py.

Revision ID: 0008a
Revises: 0008
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008a"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "file",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("format", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        sa.Column("optimized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("status IN ('uploaded', 'optimized', 'failed')", name=op.f("ck_file_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file")),
    )
    op.create_table(
        "file_variant",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("file_id", BIGINT_PK, nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("format", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"], ["file.id"], name=op.f("fk_file_variant_file_id_file"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_variant")),
        sa.UniqueConstraint("file_id", "width", "format", name=op.f("uq_file_variant_file_id_width_format")),
    )
    op.create_index(op.f("ix_file_variant_file_id"), "file_variant", ["file_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_file_variant_file_id"), table_name="file_variant")
    op.drop_table("file_variant")
    op.drop_table("file")
