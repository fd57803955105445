"""search: search_document and its full-text index (issue 6)

The full-text index is per dialect: on PostgreSQL a stored generated ``tsvector`` column
(title weight A, tags B, body C; the ``simple`` configuration, like SQLite's tokenizer: no
stemming) with a GIN index; on SQLite an FTS5 table (rowid = search_document.id) that triggers
keep in step with search_document. ``tq_services.search.models.include_object`` keeps both out of the
autogenerate comparison. A later SQLite batch migration that recreates search_document must
recreate the triggers too.

The release's revision 0009 created the media family's tables too; they are now revision 0008a
(tq_services/media/migrations), which runs just before this one, so a database stamped 0009 by
that release counts both as applied. See tq_services/schema.py.

Revision ID: 0009
Revises: 0008a
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")

TSVECTOR_SQL = (
    "setweight(to_tsvector('simple'::regconfig, title), 'A') || "
    "setweight(jsonb_to_tsvector('simple'::regconfig, tags, '[\"string\"]'), 'B') || "
    "setweight(to_tsvector('simple'::regconfig, body), 'C')"
)
SQLITE_TAGS = "(SELECT group_concat(value, ' ') FROM json_each(new.tags))"
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE search_document_fts USING fts5("
    "title, tags, body, tokenize = 'unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_document_fts_insert AFTER INSERT ON search_document BEGIN "
    "INSERT INTO search_document_fts (rowid, title, tags, body) "
    f"VALUES (new.id, new.title, {SQLITE_TAGS}, new.body); END",
    "CREATE TRIGGER search_document_fts_update AFTER UPDATE ON search_document BEGIN "
    "DELETE FROM search_document_fts WHERE rowid = old.id; "
    "INSERT INTO search_document_fts (rowid, title, tags, body) "
    f"VALUES (new.id, new.title, {SQLITE_TAGS}, new.body); END",
    "CREATE TRIGGER search_document_fts_delete AFTER DELETE ON search_document BEGIN "
    "DELETE FROM search_document_fts WHERE rowid = old.id; END",
]


def upgrade() -> None:
    op.create_table(
        "search_document",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("article_id", BIGINT_PK, nullable=False),
        sa.Column("translation_id", BIGINT_PK, nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("locale", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("job_id", sa.String(length=100), nullable=True),
        sa.Column("indexed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("source IN ('article', 'translation')", name=op.f("ck_search_document_source")),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["article.id"],
            name=op.f("fk_search_document_article_id_article"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["translation_id"],
            ["translation.id"],
            name=op.f("fk_search_document_translation_id_translation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_document")),
        sa.UniqueConstraint("article_id", "locale", name=op.f("uq_search_document_article_id_locale")),
    )
    op.create_index(op.f("ix_search_document_locale"), "search_document", ["locale"])
    op.create_index(op.f("ix_search_document_translation_id"), "search_document", ["translation_id"])

    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.add_column(
            "search_document",
            sa.Column("search_vector", TSVECTOR(), sa.Computed(TSVECTOR_SQL, persisted=True), nullable=False),
        )
        op.create_index(
            "ix_search_document_search_vector", "search_document", ["search_vector"], postgresql_using="gin"
        )
    elif dialect == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS search_document_fts_{name}")
        op.execute("DROP TABLE IF EXISTS search_document_fts")
    elif dialect == "postgresql":
        op.drop_index("ix_search_document_search_vector", table_name="search_document")
    op.drop_index(op.f("ix_search_document_translation_id"), table_name="search_document")
    op.drop_index(op.f("ix_search_document_locale"), table_name="search_document")
    op.drop_table("search_document")
