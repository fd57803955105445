"""Tables of the search family (tq_services.search): one search document per article and locale.

The full-text index is dialect-specific DDL that migration 0009 owns, not this model: on
PostgreSQL a generated ``tsvector`` column (title weight A, tags B, body C) with a GIN index, on
SQLite an FTS5 table ``search_document_fts`` (rowid = document id) kept in step by triggers.
``include_object`` keeps those objects out of Alembic's autogenerate comparison, so the model and
the migrations still agree on everything portable.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow

import tq_services.content.models  # noqa: F401  (the article tables its foreign keys name)

# the dialect-specific full-text objects of migration 0009
FTS_TABLE = "search_document_fts"  # SQLite FTS5; its shadow tables are search_document_fts_*
TSVECTOR_COLUMN = "search_vector"  # PostgreSQL
TSVECTOR_INDEX = "ix_search_document_search_vector"  # PostgreSQL GIN


class SearchSource(str, Enum):
    ARTICLE = "article"  # the article itself, in its own locale
    TRANSLATION = "translation"  # one of its translations


SEARCH_SOURCES = tuple(s.value for s in SearchSource)
_ForeignId = BigInteger().with_variant(Integer(), "sqlite")


class SearchDocument(Base):
    """What search sees of an article in one locale: title, body as plain text (markup stripped)
    and tags. Rebuilt by index-article; removed with the article (action delete, or cascade)."""

    __tablename__ = "search_document"
    __table_args__ = (
        UniqueConstraint("article_id", "locale"),
        CheckConstraint(one_of("source", SEARCH_SOURCES), name="source"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(_ForeignId, ForeignKey("article.id", ondelete="CASCADE"))
    translation_id: Mapped[int | None] = mapped_column(
        _ForeignId, ForeignKey("translation.id", ondelete="CASCADE"), index=True
    )
    source: Mapped[str] = mapped_column(String(20))
    locale: Mapped[str] = mapped_column(String(20), index=True)
    title: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    job_id: Mapped[str | None] = mapped_column(String(100), doc="the index-article job that wrote it")
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return f"SearchDocument(article_id={self.article_id!r}, locale={self.locale!r}, title={self.title!r})"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic ``include_object`` hook: leave out the full-text objects migration 0009 creates per
    dialect (they have no place in the portable model)."""
    if not reflected or compare_to is not None or name is None:
        return True
    if type_ == "table":
        return not name.startswith(FTS_TABLE)
    if type_ == "column":
        return not (name == TSVECTOR_COLUMN and obj.table.name == SearchDocument.__tablename__)
    if type_ == "index":
        return name != TSVECTOR_INDEX
    return True
