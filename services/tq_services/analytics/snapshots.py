"""Precomputed dashboard payloads in Redis, and the helper that reads them back.

snapshot-dashboard builds a named dashboard from the daily roll-ups (so it is as fresh as the
last process-events / rollup-daily run); snapshot-realtime counts the raw events of the last
``window_s`` seconds. A snapshot is stored as JSON ``{"kind", "generated_at", "ttl_s", "data"}``
under a key built here (``REALTIME_KEY``, ``dashboard_key``) and is fresh for ``ttl_s`` seconds.
Redis keeps it ``STALE_KEEP`` times as long, so a reader past the TTL still gets the last payload,
marked stale, instead of nothing while the next snapshot is computed; after that the key is gone
(missing).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import desc, distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tq_services.analytics.models import (
    AggregateBucket,
    AnalyticsAggregate,
    AnalyticsEvent,
    AnalyticsEventType,
    ArticleStatsDaily,
    SearchQueryStatsDaily,
    UserEngagementDaily,
)
from tq_services.analytics.rollups import as_date

STALE_KEEP = 2

# The family's Redis keys (no queue's hash tag: a snapshot belongs to no queue).
REALTIME_KEY = "tq:analytics:realtime"  # STRING (JSON, expiring): snapshot-realtime's payload


def dashboard_key(dashboard: str) -> str:
    """STRING (JSON, expiring): a dashboard payload precomputed by snapshot-dashboard."""
    return "tq:analytics:dashboard:" + dashboard


class Dashboard(StrEnum):
    """The dashboards snapshot-dashboard knows how to build."""

    OVERVIEW = "overview"  # per day: events by type, active users
    CONTENT = "content"  # top articles by views
    SEARCH = "search"  # top search queries with click-through


class SnapshotState(StrEnum):
    FRESH = "fresh"
    STALE = "stale"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class SnapshotRead:
    state: SnapshotState
    data: dict[str, Any] | None = None
    generated_at: float | None = None
    age_s: float | None = None

    @property
    def stale(self) -> bool:
        return self.state is not SnapshotState.FRESH


# ---- building -----------------------------------------------------------------------------------
def _window(today: date, days: int) -> tuple[date, date]:
    return today - timedelta(days=days - 1), today


async def overview(session: AsyncSession, today: date, days: int) -> dict[str, Any]:
    first, last = _window(today, days)
    A = AnalyticsAggregate
    per_day: dict[str, dict[str, Any]] = {
        (first + timedelta(days=i)).isoformat(): {"events": {}, "total": 0, "active_users": 0}
        for i in range(days)
    }
    rows = await session.execute(
        select(A.period, A.event_type, A.count).where(
            A.bucket == AggregateBucket.DAY.value, A.period >= first.isoformat(), A.period <= last.isoformat()
        )
    )
    for period, event_type, count in rows:
        per_day[period]["events"][event_type] = int(count)
        per_day[period]["total"] += int(count)
    U = UserEngagementDaily
    users = await session.execute(
        select(U.day, func.count()).where(U.day >= first, U.day <= last).group_by(U.day)
    )
    for day, count in users:
        per_day[as_date(day).isoformat()]["active_users"] = int(count)
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "days": [{"day": day, **values} for day, values in per_day.items()],
        "total_events": sum(v["total"] for v in per_day.values()),
    }


async def content(session: AsyncSession, today: date, days: int, top_n: int) -> dict[str, Any]:
    first, last = _window(today, days)
    S = ArticleStatsDaily
    views = func.sum(S.views).label("views")
    rows = await session.execute(
        select(S.article_id, views, func.sum(S.reads), func.sum(S.clicks), func.sum(S.shares))
        .where(S.day >= first, S.day <= last)
        .group_by(S.article_id)
        .order_by(desc(views), S.article_id)
        .limit(top_n)
    )
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "top_articles": [
            {"article_id": a, "views": int(v), "reads": int(r), "clicks": int(c), "shares": int(s)}
            for a, v, r, c, s in rows
        ],
    }


async def search(session: AsyncSession, today: date, days: int, top_n: int) -> dict[str, Any]:
    first, last = _window(today, days)
    Q = SearchQueryStatsDaily
    searches = func.sum(Q.searches).label("searches")
    rows = await session.execute(
        select(Q.query, searches, func.sum(Q.clicks))
        .where(Q.day >= first, Q.day <= last)
        .group_by(Q.query)
        .order_by(desc(searches), Q.query)
        .limit(top_n)
    )
    top = []
    for query, s, c in rows:
        s, c = int(s), int(c)
        top.append({"query": query, "searches": s, "clicks": c, "ctr": round(c / s, 4) if s else None})
    return {"from": first.isoformat(), "to": last.isoformat(), "top_queries": top}


async def build_dashboard(
    session: AsyncSession, dashboard: Dashboard, today: date, days: int, top_n: int
) -> dict[str, Any]:
    if dashboard is Dashboard.OVERVIEW:
        return await overview(session, today, days)
    if dashboard is Dashboard.CONTENT:
        return await content(session, today, days, top_n)
    return await search(session, today, days, top_n)


async def build_realtime(session: AsyncSession, now: datetime, window_s: int, top_n: int) -> dict[str, Any]:
    """Raw events of the last ``window_s`` seconds: counts by type, distinct users and sessions,
    and the most viewed articles."""
    E = AnalyticsEvent
    since = now - timedelta(seconds=window_s)
    recent = [E.occurred_at >= since, E.occurred_at <= now]
    by_type = {
        t: int(n)
        for t, n in await session.execute(
            select(E.event_type, func.count()).where(*recent).group_by(E.event_type)
        )
    }
    users, sessions = (
        await session.execute(
            select(func.count(distinct(E.user_id)), func.count(distinct(E.session_id))).where(*recent)
        )
    ).one()
    views = func.count().label("views")
    top = await session.execute(
        select(E.article_id, views)
        .where(*recent, E.event_type == AnalyticsEventType.VIEW.value, E.article_id.is_not(None))
        .group_by(E.article_id)
        .order_by(desc(views), E.article_id)
        .limit(top_n)
    )
    return {
        "window_s": window_s,
        "since": since.isoformat(),
        "until": now.isoformat(),
        "events": by_type,
        "total_events": sum(by_type.values()),
        "active_users": int(users),
        "active_sessions": int(sessions),
        "top_articles": [{"article_id": a, "views": int(v)} for a, v in top],
    }


# ---- storing and reading ------------------------------------------------------------------------
async def store(redis: Any, key: str, kind: str, data: dict[str, Any], ttl_s: int) -> float:
    """Write a snapshot; returns its ``generated_at`` (epoch seconds)."""
    generated_at = time.time()
    document = {"kind": kind, "generated_at": generated_at, "ttl_s": ttl_s, "data": data}
    await redis.set(key, json.dumps(document, separators=(",", ":")), ex=ttl_s * STALE_KEEP)
    return generated_at


async def read(redis: Any, key: str, now: float | None = None) -> SnapshotRead:
    """The snapshot under ``key``: fresh, stale (older than its TTL, payload still returned) or
    missing (never written, or gone)."""
    raw = await redis.get(key)
    if raw is None:
        return SnapshotRead(SnapshotState.MISSING)
    document = json.loads(raw)
    generated_at = float(document["generated_at"])
    age = max(0.0, (time.time() if now is None else now) - generated_at)
    state = SnapshotState.FRESH if age <= float(document["ttl_s"]) else SnapshotState.STALE
    return SnapshotRead(state, document["data"], generated_at, age)


async def read_dashboard(redis: Any, dashboard: str, now: float | None = None) -> SnapshotRead:
    return await read(redis, dashboard_key(dashboard), now)


async def read_realtime(redis: Any, now: float | None = None) -> SnapshotRead:
    return await read(redis, REALTIME_KEY, now)


def utc_today() -> date:
    return datetime.now(UTC).date()
