"""Analytics: raw events and what the analytics family computes from them.

``analytics_event`` is written by the application (one row per view, read, click, search,
share, ...). The handlers of ``analytics:process`` roll it up per UTC day into the ``*_daily``
tables and ``analytics_aggregate`` (daily totals, funnels, retention); every roll-up row is
recomputed whole and overwritten, never incremented, so re-runs and replays never double-count.
``analytics_watermark`` remembers how far process-events has read.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Date, Index, Integer, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow

RefId = BigInteger().with_variant(Integer(), "sqlite")


class AnalyticsEventType(StrEnum):
    """The event types the roll-ups count in columns of their own; other types are accepted and
    counted in ``events`` and in the daily ``analytics_aggregate`` rows."""

    VIEW = "view"
    READ = "read"
    CLICK = "click"
    SEARCH = "search"
    SHARE = "share"


class AggregateBucket(StrEnum):
    """What an ``analytics_aggregate`` row is.

    ``day``: events of one type on one day (``period`` = the ISO day, ``seq`` 0, meta: distinct
    users and sessions). ``funnel_session`` / ``funnel_user``: step ``seq`` (1-based) of funnel
    ``name`` over ``period`` = ``start/end``, counting sessions or users. ``retention``: cohort
    ``period`` (its first day) of ``name`` = day|week|month, ``seq`` = periods after the first,
    count = cohort users active then (meta: cohort size).
    """

    DAY = "day"
    FUNNEL_SESSION = "funnel_session"
    FUNNEL_USER = "funnel_user"
    RETENTION = "retention"


class AnalyticsEvent(Base):
    __tablename__ = "analytics_event"
    __table_args__ = (Index("ix_analytics_event_occurred_at", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(50))
    article_id: Mapped[int | None] = mapped_column(RefId)
    user_id: Mapped[int | None] = mapped_column(RefId)
    session_id: Mapped[str | None] = mapped_column(String(100))
    query: Mapped[str | None] = mapped_column(String(500))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    def __repr__(self) -> str:
        return (
            f"AnalyticsEvent(id={self.id!r}, event_type={self.event_type!r}, "
            f"occurred_at={self.occurred_at!r})"
        )


class ArticleStatsDaily(Base):
    __tablename__ = "article_stats_daily"
    __table_args__ = (UniqueConstraint("day", "article_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    article_id: Mapped[int] = mapped_column(RefId)
    views: Mapped[int] = mapped_column(BigInteger)
    reads: Mapped[int] = mapped_column(BigInteger)
    clicks: Mapped[int] = mapped_column(BigInteger)
    shares: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger)
    unique_users: Mapped[int] = mapped_column(BigInteger)
    unique_sessions: Mapped[int] = mapped_column(BigInteger)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())


class SearchQueryStatsDaily(Base):
    """Per normalised query (trimmed, lower-case): searches, and clicks that carry the query."""

    __tablename__ = "search_query_stats_daily"
    __table_args__ = (UniqueConstraint("day", "query"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    query: Mapped[str] = mapped_column(String(500))
    searches: Mapped[int] = mapped_column(BigInteger)
    clicks: Mapped[int] = mapped_column(BigInteger)
    unique_users: Mapped[int] = mapped_column(BigInteger)
    unique_sessions: Mapped[int] = mapped_column(BigInteger)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())


class UserEngagementDaily(Base):
    __tablename__ = "user_engagement_daily"
    __table_args__ = (UniqueConstraint("day", "user_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    user_id: Mapped[int] = mapped_column(RefId)
    events: Mapped[int] = mapped_column(BigInteger)
    views: Mapped[int] = mapped_column(BigInteger)
    reads: Mapped[int] = mapped_column(BigInteger)
    clicks: Mapped[int] = mapped_column(BigInteger)
    searches: Mapped[int] = mapped_column(BigInteger)
    shares: Mapped[int] = mapped_column(BigInteger)
    sessions: Mapped[int] = mapped_column(BigInteger)
    articles: Mapped[int] = mapped_column(BigInteger)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())


class AnalyticsAggregate(Base):
    """One number of a daily total, a funnel step or a retention cell (see ``AggregateBucket``)."""

    __tablename__ = "analytics_aggregate"
    __table_args__ = (UniqueConstraint("bucket", "name", "period", "event_type", "seq"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    bucket: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), default="")
    period: Mapped[str] = mapped_column(String(50))
    event_type: Mapped[str] = mapped_column(String(200))
    seq: Mapped[int] = mapped_column(Integer, default=0)
    count: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return (
            f"AnalyticsAggregate(bucket={self.bucket!r}, name={self.name!r}, period={self.period!r}, "
            f"event_type={self.event_type!r}, seq={self.seq!r}, count={self.count!r})"
        )


class AnalyticsWatermark(Base):
    """How far a reader of ``analytics_event`` has got: the highest event id it has processed.
    Written in the same transaction as the roll-ups it led to."""

    __tablename__ = "analytics_watermark"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )
