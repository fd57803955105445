"""Demo analytics events for ``make dev``: the last ``DAYS`` UTC days (today included) of visits.

Each demo session id starts with ``seed-<day>-``; a day that already has one is left alone, so
running the seed again inserts nothing (and a later day adds only the days now missing).
Sessions are drawn from a generator seeded by the day, so a day's events are always the same.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tq_services.analytics.models import AnalyticsEvent

DAYS = 4
SESSIONS_PER_DAY = 60
ARTICLES = range(1, 13)
QUERIES = ("redis streams", "kubernetes operator", "python asyncio", "grafana dashboards", "helm chart")


def _session_events(rng: random.Random, day: date, number: int) -> list[AnalyticsEvent]:
    session_id = f"seed-{day.isoformat()}-{number}"
    user_id = rng.choice([None, *range(1, 31)])
    moment = datetime.combine(day, time.min, tzinfo=UTC) + timedelta(seconds=rng.randrange(0, 86_000))
    events: list[AnalyticsEvent] = []

    def add(event_type: str, article_id: int | None = None, query: str | None = None) -> None:
        nonlocal moment
        moment += timedelta(seconds=rng.randrange(5, 90))
        events.append(
            AnalyticsEvent(
                event_type=event_type,
                article_id=article_id,
                user_id=user_id,
                session_id=session_id,
                query=query,
                occurred_at=moment,
            )
        )

    query = rng.choice(QUERIES) if rng.random() < 0.4 else None
    if query is not None:
        add("search", query=query)
    for _ in range(rng.randrange(1, 4)):
        article = rng.choice(ARTICLES)
        if query is not None:
            add("click", article, query)
        add("view", article)
        if rng.random() < 0.6:
            add("read", article)
            if rng.random() < 0.2:
                add("share", article)
    return events


async def seed(session: AsyncSession) -> None:
    today = datetime.now(UTC).date()
    for back in range(DAYS):
        day = today - timedelta(days=back)
        prefix = f"seed-{day.isoformat()}-"
        present = await session.scalar(
            select(AnalyticsEvent.id)
            .where(AnalyticsEvent.session_id.startswith(prefix, autoescape=True))
            .limit(1)
        )
        if present is not None:
            continue
        rng = random.Random(day.toordinal())
        for number in range(SESSIONS_PER_DAY):
            session.add_all(_session_events(rng, day, number))
