"""Tables of the ai family (tq_services.ai): what each model call cost and said, and what it produced.

An ``AiRun`` is one attempt of one AI job; its ``AiMessage`` rows are the conversation sent and
answered, its ``AiEventLog`` rows the trace (started, model answered, failed, done; a malformed
answer is kept there verbatim). Results never overwrite an article's body: text lands in
``AiDraft`` (or an ``ArticleVersion``), SEO and review scores in ``AIReport`` and
``ArticleQualityReport``; only SEO fields, review status and scores are written onto ``Article``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow

import tq_services.content.models  # noqa: F401  (the article tables its foreign keys name)

AI_RUN_STATUSES = ("running", "succeeded", "retrying", "failed")
AI_MESSAGE_ROLES = ("system", "user", "assistant")
AI_DRAFT_KINDS = ("draft", "summary", "translation", "rewrite")
AI_DRAFT_STATUSES = ("pending", "accepted", "discarded")
AI_REPORT_KINDS = ("seo", "meta", "keywords", "review")
RefFK = BigInteger().with_variant(Integer(), "sqlite")


class AiRun(Base):
    """One attempt of one AI job: the model, tokens, cost (None when the model has no price),
    how long the call took and, when it failed, why."""

    __tablename__ = "ai_run"
    __table_args__ = (
        CheckConstraint(one_of("status", AI_RUN_STATUSES), name="status"),
        Index("ix_ai_run_article_id_created_at", "article_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(100), index=True)
    queue: Mapped[str] = mapped_column(String(100))
    job_name: Mapped[str] = mapped_column(String(100))
    attempt: Mapped[int] = mapped_column(Integer)
    article_id: Mapped[int | None] = mapped_column(RefFK, ForeignKey("article.id", ondelete="SET NULL"))
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="running")
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float, doc="USD, from settings.llm_prices")
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    trace_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return (
            f"AiRun(id={self.id!r}, job_name={self.job_name!r}, attempt={self.attempt!r}, "
            f"model={self.model!r}, status={self.status!r})"
        )


class AiMessage(Base):
    """One message of a run's conversation: system and user are what was sent, assistant the answer."""

    __tablename__ = "ai_message"
    __table_args__ = (CheckConstraint(one_of("role", AI_MESSAGE_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(RefFK, ForeignKey("ai_run.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return f"AiMessage(id={self.id!r}, run_id={self.run_id!r}, role={self.role!r})"


class AiEventLog(Base):
    """The trace of a run: ``event`` is the AiTaskData stage (started, model_answered, failed, done);
    ``detail`` keeps what is too long for ``message``, such as a malformed answer verbatim."""

    __tablename__ = "ai_event_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(RefFK, ForeignKey("ai_run.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(String(100), index=True)
    event: Mapped[str] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(200))
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return f"AiEventLog(id={self.id!r}, run_id={self.run_id!r}, event={self.event!r})"


class AiDraft(Base):
    """Text a model wrote for an article, offered to an editor (never written into the article):
    a draft, a summary, a translation (``locale``) or a rewritten section (``source_text``)."""

    __tablename__ = "ai_draft"
    __table_args__ = (
        CheckConstraint(one_of("kind", AI_DRAFT_KINDS), name="kind"),
        CheckConstraint(one_of("status", AI_DRAFT_STATUSES), name="status"),
        Index("ix_ai_draft_article_id_kind", "article_id", "kind"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(RefFK, ForeignKey("article.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(RefFK, ForeignKey("ai_run.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))
    locale: Mapped[str] = mapped_column(String(20))
    title: Mapped[str | None] = mapped_column(String(500))
    content: Mapped[str] = mapped_column(Text)
    source_text: Mapped[str | None] = mapped_column(Text, doc="the section a rewrite replaces")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    job_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return f"AiDraft(id={self.id!r}, article_id={self.article_id!r}, kind={self.kind!r})"


class AIReport(Base):
    """A model's judgement of an article (SEO fields, keywords, review): the scores it gave and its
    whole validated answer in ``data``. Scores are 0-100; ``ai_probability`` is 0-1."""

    __tablename__ = "ai_report"
    __table_args__ = (
        CheckConstraint(one_of("kind", AI_REPORT_KINDS), name="kind"),
        Index("ix_ai_report_article_id_created_at", "article_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(RefFK, ForeignKey("article.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(RefFK, ForeignKey("ai_run.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))
    originality_score: Mapped[float | None] = mapped_column(Float)
    seo_score: Mapped[float | None] = mapped_column(Float)
    structure_valid: Mapped[bool | None] = mapped_column(Boolean)
    ai_probability: Mapped[float | None] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    job_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return f"AIReport(id={self.id!r}, article_id={self.article_id!r}, kind={self.kind!r})"


class ArticleQualityReport(Base):
    """Checks computed without a model (tq_services.ai.checks): sentence length, readability,
    headings, keyword density; ``issues`` lists what failed, in words."""

    __tablename__ = "article_quality_report"
    __table_args__ = (Index("ix_article_quality_report_article_id_created_at", "article_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(RefFK, ForeignKey("article.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(RefFK, ForeignKey("ai_run.id", ondelete="SET NULL"))
    word_count: Mapped[int] = mapped_column(Integer)
    sentence_count: Mapped[int] = mapped_column(Integer)
    avg_sentence_words: Mapped[float] = mapped_column(Float)
    long_sentence_ratio: Mapped[float] = mapped_column(Float)
    heading_count: Mapped[int] = mapped_column(Integer)
    structure_valid: Mapped[bool] = mapped_column(Boolean)
    keyword: Mapped[str | None] = mapped_column(String(200))
    keyword_density: Mapped[float | None] = mapped_column(Float, doc="percent of words")
    readability: Mapped[float] = mapped_column(Float, doc="0-100, from sentence lengths")
    score: Mapped[float | None] = mapped_column(
        Float, doc="the overall 0-100 score also set as Article.ai_score"
    )
    issues: Mapped[list[str]] = mapped_column(JSONType, default=list)
    job_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return (
            f"ArticleQualityReport(id={self.id!r}, article_id={self.article_id!r}, "
            f"readability={self.readability!r}, structure_valid={self.structure_valid!r})"
        )
