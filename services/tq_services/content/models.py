"""The content the handlers work on: articles, their saved versions and translations.

Shared by the ai family (drafts, SEO fields, reviews), search (index-article) and plugins (the
read-an-article capability).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow

ARTICLE_STATUSES = ("draft", "review", "published", "archived")
REVIEW_STATUSES = ("pending", "approved", "needs_changes", "rejected")
ArticleFK = BigInteger().with_variant(Integer(), "sqlite")


class Article(Base):
    __tablename__ = "article"
    __table_args__ = (
        CheckConstraint(one_of("status", ARTICLE_STATUSES), name="status"),
        CheckConstraint(one_of("review_status", REVIEW_STATUSES), name="review_status"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text, default="")
    locale: Mapped[str] = mapped_column(String(20), default="en")
    status: Mapped[str] = mapped_column(String(20), default="draft")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    meta_title: Mapped[str | None] = mapped_column(String(300))
    meta_description: Mapped[str | None] = mapped_column(String(1000))
    main_keyword: Mapped[str | None] = mapped_column(String(200))
    keywords: Mapped[list[str]] = mapped_column(JSONType, default=list)
    seo_score: Mapped[float | None] = mapped_column(Float)
    readability: Mapped[float | None] = mapped_column(Float)
    review_status: Mapped[str] = mapped_column(String(20), default="pending")
    ai_score: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return (
            f"Article(id={self.id!r}, title={self.title!r}, locale={self.locale!r}, status={self.status!r})"
        )


class ArticleVersion(Base):
    """A saved body of an article (an edit, or an AI enhancement offered for review): versions are
    numbered per article and never overwritten."""

    __tablename__ = "article_version"
    __table_args__ = (UniqueConstraint("article_id", "version"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(ArticleFK, ForeignKey("article.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(100), doc="who made it: 'editor', 'ai:enhance-content', ...")
    job_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return (
            f"ArticleVersion(article_id={self.article_id!r}, version={self.version!r}, "
            f"source={self.source!r})"
        )


class Translation(Base):
    """An article in another locale (one row per article and locale)."""

    __tablename__ = "translation"
    __table_args__ = (UniqueConstraint("article_id", "locale"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(ArticleFK, ForeignKey("article.id", ondelete="CASCADE"))
    locale: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return f"Translation(article_id={self.article_id!r}, locale={self.locale!r}, title={self.title!r})"
