"""The analytics family through the real engine: jobs enqueued on the suite's Redis, consumed by a
worker, rows checked in SQLite and PostgreSQL.

Expected numbers are computed here in plain Python from the same hand-built events (counters,
a step-by-step walk for funnels, calendar arithmetic for cohorts), independently of the SQL
under test. Every roll-up is run twice (and replayed past a rewound watermark) to show that
re-runs overwrite instead of adding.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import tq_services.analytics.handlers  # noqa: F401  (registers the handlers)
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, running, settled_job, tiny_retry, wait_for
from support.settings import clear_settings_caches
from tq import dlq, jobs
from tq.db import make_sessionmaker
from tq.envelope import JobState
from tq.handlers import default_handlers
from tq.producer import Producer
from tq.settings import Settings
from tq_services import load_handlers
from tq_services.analytics import seed as analytics_seed
from tq_services.analytics.models import (
    AggregateBucket,
    AnalyticsAggregate,
    AnalyticsEvent,
    AnalyticsWatermark,
    ArticleStatsDaily,
    SearchQueryStatsDaily,
    UserEngagementDaily,
)
from tq_services.analytics.rollups import WATERMARK, period_index, period_start
from tq_services.analytics.snapshots import SnapshotState, dashboard_key, read_dashboard, read_realtime
from tq_services.store import dispose_engines

PQ = "analytics:process"
SQ = "analytics:snapshot"
DAY = date(2026, 3, 10)


@dataclass(frozen=True)
class Ev:
    event_type: str
    at: datetime
    article_id: int | None = None
    user_id: int | None = None
    session_id: str | None = None
    query: str | None = None


def at(day: date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=UTC)


@pytest.fixture
async def env(database_url: str, redis_url: str) -> AsyncIterator[Settings]:
    clear_settings_caches()
    yield fast_settings(redis_url, queues={PQ: tiny_retry(attempts=2), SQ: tiny_retry(attempts=2)})
    clear_settings_caches()
    await dispose_engines()


async def _add(engine: AsyncEngine, events: Iterable[Ev]) -> None:
    async with make_sessionmaker(engine)() as session, session.begin():
        session.add_all(
            AnalyticsEvent(
                event_type=e.event_type,
                occurred_at=e.at,
                article_id=e.article_id,
                user_id=e.user_id,
                session_id=e.session_id,
                query=e.query,
            )
            for e in events
        )


async def _run(client: Any, settings: Settings, queue: str, job: str, data: dict[str, Any]) -> jobs.JobRecord:
    """Enqueue one job, let a worker consume it, return its settled record."""
    async with running(client, settings, default_handlers, queue):
        job_id = await Producer(client, settings).enqueue(queue, job, data)
        return await settled_job(client, queue, job_id, timeout=30)


async def _ok(client: Any, settings: Settings, queue: str, job: str, data: dict[str, Any]) -> Any:
    rec = await _run(client, settings, queue, job, data)
    assert rec.state is JobState.COMPLETED, (rec.error_type, rec.error, rec.stack)
    return rec.result


async def _rows(engine: AsyncEngine, model: Any, *where: Any) -> list[Any]:
    async with make_sessionmaker(engine)() as session:
        return list(await session.scalars(select(model).where(*where).order_by(model.id)))


# ---- the expected numbers, in plain Python ------------------------------------------------------
def expected_articles(events: list[Ev], day: date) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, Any]] = {}
    for e in events:
        if e.at.date() != day or e.article_id is None:
            continue
        row = out.setdefault(e.article_id, {"counts": Counter(), "users": set(), "sessions": set()})
        row["counts"][e.event_type] += 1
        row["users"].add(e.user_id)
        row["sessions"].add(e.session_id)
    return {
        article: {
            "views": r["counts"]["view"],
            "reads": r["counts"]["read"],
            "clicks": r["counts"]["click"],
            "shares": r["counts"]["share"],
            "events": sum(r["counts"].values()),
            "unique_users": len(r["users"] - {None}),
            "unique_sessions": len(r["sessions"] - {None}),
        }
        for article, r in out.items()
    }


def expected_queries(events: list[Ev], day: date) -> dict[str, tuple[int, int, int]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    users: dict[str, set[int]] = defaultdict(set)
    for e in events:
        if e.at.date() == day and e.query and e.query.strip():
            q = e.query.strip().lower()
            counts[q][e.event_type] += 1
            if e.user_id is not None:
                users[q].add(e.user_id)
    return {q: (c["search"], c["click"], len(users[q])) for q, c in counts.items()}


def expected_users(events: list[Ev], day: date) -> dict[int, tuple[int, int, int, int, datetime, datetime]]:
    mine: dict[int, list[Ev]] = defaultdict(list)
    for e in events:
        if e.at.date() == day and e.user_id is not None:
            mine[e.user_id].append(e)
    return {
        user: (
            len(evs),
            sum(e.event_type == "view" for e in evs),
            len({e.session_id for e in evs} - {None}),
            len({e.article_id for e in evs} - {None}),
            min(e.at for e in evs),
            max(e.at for e in evs),
        )
        for user, evs in mine.items()
    }


def expected_totals(events: list[Ev], day: date) -> dict[str, int]:
    return dict(Counter(e.event_type for e in events if e.at.date() == day))


def walk_funnel(events: list[Ev], steps: list[str], start: date, end: date, by: str) -> list[int]:
    """Each actor's events in time order; advance one step whenever the next step's type comes
    strictly later than the step before."""
    per_actor: dict[Any, list[Ev]] = defaultdict(list)
    for e in events:
        actor = e.session_id if by == "session" else e.user_id
        if actor is not None and start <= e.at.date() <= end:
            per_actor[actor].append(e)
    reached = [0] * len(steps)
    for evs in per_actor.values():
        done, last = 0, None
        for e in sorted(evs, key=lambda e: e.at):
            if done < len(steps) and e.event_type == steps[done] and (last is None or e.at > last):
                done, last = done + 1, e.at
        for i in range(done):
            reached[i] += 1
    return reached


def retention_table(
    events: list[Ev], first: date, last: date, periods: int, kind: str
) -> dict[str, list[int]]:
    def start_of(d: date) -> date:
        if kind == "week":
            return d - timedelta(days=d.weekday())
        if kind == "month":
            return d.replace(day=1)
        return d

    def shift(d: date, k: int) -> date:
        if kind == "week":
            return d + timedelta(weeks=k)
        if kind == "month":
            months = d.year * 12 + d.month - 1 + k
            return date(months // 12, months % 12 + 1, 1)
        return d + timedelta(days=k)

    active: dict[int, set[date]] = defaultdict(set)
    for e in events:
        if e.user_id is not None:
            active[e.user_id].add(start_of(e.at.date()))
    table: dict[str, list[int]] = {}
    for periods_seen in active.values():
        cohort = min(periods_seen)
        if not start_of(first) <= cohort <= start_of(last):
            continue
        cells = table.setdefault(cohort.isoformat(), [0] * (periods + 1))
        for k in range(periods + 1):
            if shift(cohort, k) in periods_seen:
                cells[k] += 1
    return table


def day_events(rng: random.Random, day: date, n: int) -> list[Ev]:
    types = ["view", "view", "view", "read", "click", "search", "share", "signup"]
    out = []
    for _ in range(n):
        kind = rng.choice(types)
        user = rng.choice([None, 1, 2, 3, 4, 5, 6])
        out.append(
            Ev(
                kind,
                at(day, rng.randrange(24), rng.randrange(60), rng.randrange(60), rng.randrange(10**6)),
                article_id=rng.choice([None, 11, 12, 13]) if kind != "search" else None,
                user_id=user,
                session_id=rng.choice([None, "s1", "s2", "s3", f"u{user}"]),
                query=rng.choice(["  Redis ", "redis", "Kubernetes", "", None])
                if kind in ("search", "click")
                else None,
            )
        )
    return out


async def assert_day(engine: AsyncEngine, events: list[Ev], day: date) -> None:
    articles = {r.article_id: r for r in await _rows(engine, ArticleStatsDaily, ArticleStatsDaily.day == day)}
    want = expected_articles(events, day)
    assert set(articles) == set(want)
    for article, values in want.items():
        row = articles[article]
        assert {k: getattr(row, k) for k in values} == values, article

    queries = await _rows(engine, SearchQueryStatsDaily, SearchQueryStatsDaily.day == day)
    assert {r.query: (r.searches, r.clicks, r.unique_users) for r in queries} == expected_queries(events, day)

    users = await _rows(engine, UserEngagementDaily, UserEngagementDaily.day == day)
    got_users = {
        r.user_id: (r.events, r.views, r.sessions, r.articles, r.first_seen_at, r.last_seen_at) for r in users
    }
    assert got_users == expected_users(events, day)

    totals = await _rows(
        engine,
        AnalyticsAggregate,
        AnalyticsAggregate.bucket == AggregateBucket.DAY.value,
        AnalyticsAggregate.period == day.isoformat(),
    )
    assert {r.event_type: r.count for r in totals} == expected_totals(events, day)
    for r in totals:
        users_of_type = {e.user_id for e in events if e.at.date() == day and e.event_type == r.event_type}
        assert r.meta is not None and r.meta["users"] == len(users_of_type - {None})


# ---- registration -------------------------------------------------------------------------------
def test_load_handlers_finds_every_analytics_job() -> None:
    assert load_handlers(["analytics"]) == ["tq_services.analytics.handlers"]
    for job in ("process-events", "rollup-daily", "compute-funnels", "compute-retention"):
        assert (PQ, job) in default_handlers
    for job in ("snapshot-dashboard", "snapshot-realtime"):
        assert (SQ, job) in default_handlers


def test_period_index_and_start_agree_with_the_calendar() -> None:
    for offset in range(0, 800, 3):
        d = date(2025, 1, 1) + timedelta(days=offset)
        assert period_start(period_index(d, "week"), "week") == d - timedelta(days=d.weekday())
        assert period_start(period_index(d, "month"), "month") == d.replace(day=1)
        assert period_start(period_index(d, "day"), "day") == d


# ---- rollup-daily -------------------------------------------------------------------------------
async def test_rollup_daily_counts_and_reruns_overwrite(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    rng = random.Random(61)
    events = day_events(rng, DAY, 400)
    # the day's edges: the last microsecond before it and its first instant after
    events += [
        Ev(
            "view",
            at(DAY - timedelta(days=1), 23, 59, 59, 999_999),
            article_id=11,
            user_id=1,
            session_id="s1",
        ),
        Ev("view", at(DAY + timedelta(days=1), 0), article_id=11, user_id=1, session_id="s1"),
        Ev("view", at(DAY, 0), article_id=99, user_id=9, session_id="edge"),
    ]
    await _add(db_engine, events)

    first = await _ok(redis_client, env, PQ, "rollup-daily", {"day": DAY.isoformat()})
    assert first["events"] == sum(1 for e in events if e.at.date() == DAY) == 401
    await assert_day(db_engine, events, DAY)
    ids = [r.id for r in await _rows(db_engine, ArticleStatsDaily)]

    again = await _ok(redis_client, env, PQ, "rollup-daily", {"day": DAY.isoformat()})
    assert again == first
    await assert_day(db_engine, events, DAY)
    assert [r.id for r in await _rows(db_engine, ArticleStatsDaily)] == ids  # updated in place

    # events change (article 99's go away, new ones arrive): the re-run reflects exactly that
    async with make_sessionmaker(db_engine)() as session, session.begin():
        await session.execute(delete(AnalyticsEvent).where(AnalyticsEvent.article_id == 99))
    events = [e for e in events if e.article_id != 99]
    extra = [Ev("share", at(DAY, 12), article_id=12, user_id=2, session_id="s9")]
    await _add(db_engine, extra)
    events += extra
    third = await _ok(redis_client, env, PQ, "rollup-daily", {"day": DAY.isoformat()})
    assert third["events"] == 401
    await assert_day(db_engine, events, DAY)
    assert not await _rows(db_engine, ArticleStatsDaily, ArticleStatsDaily.article_id == 99)
    assert not await _rows(db_engine, UserEngagementDaily, UserEngagementDaily.user_id == 9)


# ---- process-events -----------------------------------------------------------------------------
async def test_process_events_follows_the_watermark_and_replays_idempotently(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    rng = random.Random(5)
    day1, day2, day3 = DAY, DAY + timedelta(days=1), DAY + timedelta(days=2)
    events = day_events(rng, day1, 150) + day_events(rng, day2, 120)
    await _add(db_engine, events)

    first = await _ok(redis_client, env, PQ, "process-events", {})
    assert (first["mode"], first["events"], first["more"]) == ("watermark", 270, False)
    assert [d["day"] for d in first["days"]] == [day1.isoformat(), day2.isoformat()]
    [rec] = (await jobs.list_jobs(redis_client, PQ, JobState.COMPLETED, limit=1)).items
    assert (rec.progress, rec.progress_message) == (0.95, f"rolled up {day2} (2 of 2)")  # per day
    async with make_sessionmaker(db_engine)() as session:
        mark = await session.get(AnalyticsWatermark, WATERMARK)
        top = max(await session.scalars(select(AnalyticsEvent.id)))
    assert mark is not None and mark.last_event_id == top == first["watermark"]
    for day in (day1, day2):
        await assert_day(db_engine, events, day)

    nothing = await _ok(redis_client, env, PQ, "process-events", {})
    assert (nothing["events"], nothing["days"], nothing["watermark"]) == (0, [], top)

    # a late event for day 1 and a new day: only those days are recomputed, in small batches
    late = [
        Ev("read", at(day1, 8), article_id=13, user_id=4, session_id="late"),
        Ev("view", at(day3, 9), article_id=11, user_id=5, session_id="s1"),
        Ev("view", at(day3, 10), article_id=11, user_id=6, session_id="s2"),
    ]
    await _add(db_engine, late)
    events += late
    part = await _ok(redis_client, env, PQ, "process-events", {"limit": 2})
    assert (part["events"], part["more"]) == (2, True)
    assert [d["day"] for d in part["days"]] == [day1.isoformat(), day3.isoformat()]
    rest = await _ok(redis_client, env, PQ, "process-events", {"limit": 2})
    assert (rest["events"], rest["more"], rest["watermark"]) == (1, False, top + 3)
    for day in (day1, day2, day3):
        await assert_day(db_engine, events, day)

    # replay: rewind the watermark as if every batch were delivered again; nothing double-counts
    async with make_sessionmaker(db_engine)() as session, session.begin():
        await session.execute(update(AnalyticsWatermark).values(last_event_id=0))
    replay = await _ok(redis_client, env, PQ, "process-events", {})
    assert (replay["events"], replay["watermark"]) == (273, top + 3)
    for day in (day1, day2, day3):
        await assert_day(db_engine, events, day)


async def test_process_events_backfill_and_bad_ranges(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    rng = random.Random(9)
    events = day_events(rng, DAY, 60) + day_events(rng, DAY + timedelta(days=1), 40)
    await _add(db_engine, events)
    since, until = at(DAY, 0), at(DAY + timedelta(days=2), 0)  # ends at midnight: two days
    result = await _ok(
        redis_client, env, PQ, "process-events", {"since": since.isoformat(), "until": until.isoformat()}
    )
    assert result["mode"] == "backfill"
    assert [(d["day"], d["events"]) for d in result["days"]] == [
        (DAY.isoformat(), 60),
        ((DAY + timedelta(days=1)).isoformat(), 40),
    ]
    await assert_day(db_engine, events, DAY)
    async with make_sessionmaker(db_engine)() as session:
        assert await session.get(AnalyticsWatermark, WATERMARK) is None  # a backfill leaves it alone

    backwards = await _run(
        redis_client, env, PQ, "process-events", {"since": until.isoformat(), "until": since.isoformat()}
    )
    assert backwards.state is JobState.DEAD and backwards.attempts == 1
    assert backwards.error_type == "InvalidAnalyticsRequest" and "is not after since" in (
        backwards.error or ""
    )
    too_long = await _run(redis_client, env, PQ, "process-events", {"since": "2020-01-01T00:00:00Z"})
    assert too_long.state is JobState.DEAD and "more than the 366" in (too_long.error or "")
    dead = await dlq.list_dead(redis_client, PQ)
    assert {d.job_id for d in dead.items} == {backwards.id, too_long.id}


# ---- compute-funnels ----------------------------------------------------------------------------
def funnel_events() -> list[Ev]:
    d = DAY
    return [
        # s1 / user 1: view -> read -> click, in order
        Ev("view", at(d, 9), 11, 1, "s1"),
        Ev("read", at(d, 9, 5), 11, 1, "s1"),
        Ev("click", at(d, 9, 7), 11, 1, "s1"),
        # s2 / user 2: read before view does not count; view -> click never reads after the view
        Ev("read", at(d, 10), 12, 2, "s2"),
        Ev("view", at(d, 10, 1), 12, 2, "s2"),
        Ev("click", at(d, 10, 2), 12, 2, "s2"),
        # s3 / user 3: view, read; user 3 clicks later in another session s4
        Ev("view", at(d, 11), 11, 3, "s3"),
        Ev("read", at(d, 11, 1), 11, 3, "s3"),
        Ev("click", at(d + timedelta(days=1), 8), 11, 3, "s4"),
        # s5, anonymous: the whole funnel, but the click falls after the window
        Ev("view", at(d, 12), 13, None, "s5"),
        Ev("read", at(d, 12, 1), 13, None, "s5"),
        Ev("click", at(d + timedelta(days=3), 1), 13, None, "s5"),
        # user 6 with no session: view then read on two days
        Ev("view", at(d, 13), 11, 6, None),
        Ev("read", at(d + timedelta(days=1), 13), 11, 6, None),
        # s7 / user 7: two views, a read between them, then a click: view->read->click
        Ev("view", at(d, 14), 12, 7, "s7"),
        Ev("read", at(d, 14, 1), 12, 7, "s7"),
        Ev("view", at(d, 14, 2), 12, 7, "s7"),
        Ev("click", at(d, 14, 3), 12, 7, "s7"),
        # s8: only clicks
        Ev("click", at(d, 15), 12, 8, "s8"),
        # before the window
        Ev("view", at(d - timedelta(days=1), 23), 11, 9, "s9"),
        Ev("read", at(d, 0, 30), 11, 9, "s9"),
    ]


async def test_compute_funnels_matches_a_walk_over_the_events(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    events = funnel_events()
    await _add(db_engine, events)
    steps = ["view", "read", "click"]
    start, end = DAY, DAY + timedelta(days=1)
    by_session = walk_funnel(events, steps, start, end, "session")
    by_user = walk_funnel(events, steps, start, end, "user")
    assert by_session == [5, 4, 2] and by_user == [5, 4, 3]  # the hand count agrees with the walk

    payload = {"name": "read-through", "steps": steps, "start": start.isoformat(), "end": end.isoformat()}
    result = await _ok(redis_client, env, PQ, "compute-funnels", payload)
    assert (result["session"], result["user"]) == (by_session, by_user)
    period = f"{start.isoformat()}/{end.isoformat()}"

    async def stored() -> dict[str, list[tuple[int, str, int]]]:
        rows = await _rows(db_engine, AnalyticsAggregate, AnalyticsAggregate.name == "read-through")
        out: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
        for r in sorted(rows, key=lambda r: (r.bucket, r.seq)):
            assert r.period == period
            out[r.bucket].append((r.seq, r.event_type, r.count))
        return dict(out)

    want = {
        AggregateBucket.FUNNEL_SESSION.value: [
            (i + 1, s, n) for i, (s, n) in enumerate(zip(steps, by_session, strict=True))
        ],
        AggregateBucket.FUNNEL_USER.value: [
            (i + 1, s, n) for i, (s, n) in enumerate(zip(steps, by_user, strict=True))
        ],
    }
    assert await stored() == want
    [last] = await _rows(
        db_engine, AnalyticsAggregate, AnalyticsAggregate.bucket == "funnel_user", AnalyticsAggregate.seq == 3
    )
    assert last.meta == {"conversion": round(3 / 5, 6), "from_previous": round(3 / 4, 6)}

    await _ok(redis_client, env, PQ, "compute-funnels", payload)  # a re-run: the same rows
    assert await stored() == want

    # the same funnel redefined with two steps: the third step's rows go
    shorter = walk_funnel(events, ["view", "click"], start, end, "session")
    await _ok(redis_client, env, PQ, "compute-funnels", {**payload, "steps": ["view", "click"]})
    got = await stored()
    assert got[AggregateBucket.FUNNEL_SESSION.value] == [(1, "view", shorter[0]), (2, "click", shorter[1])]

    bad = await _run(
        redis_client,
        env,
        PQ,
        "compute-funnels",
        {**payload, "start": end.isoformat(), "end": start.isoformat()},
    )
    assert bad.state is JobState.DEAD and "ends" in (bad.error or "") and bad.attempts == 1


# ---- compute-retention --------------------------------------------------------------------------
def retention_events() -> list[Ev]:
    rng = random.Random(23)
    base = date(2026, 1, 5)  # a Monday
    out = []
    for user in range(1, 61):
        first = base + timedelta(days=rng.randrange(-10, 50))
        out.append(Ev("view", at(first, rng.randrange(24)), 11, user, f"s{user}"))
        for _ in range(rng.randrange(0, 8)):
            later = first + timedelta(days=rng.randrange(0, 70))
            out.append(Ev(rng.choice(["view", "read"]), at(later, rng.randrange(24)), 12, user, f"s{user}"))
    out.append(Ev("view", at(base, 5), 11, None, "anon"))  # no user: in no cohort
    return out


@pytest.mark.parametrize("kind", ["week", "month"])
async def test_compute_retention_matches_the_calendar(
    kind: str, env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    events = retention_events()
    await _add(db_engine, events)
    first, last, periods = date(2026, 1, 5), date(2026, 2, 15), 4
    want = retention_table(events, first, last, periods, kind)
    assert len(want) >= 2 and all(cells[0] > 0 for cells in want.values())
    assert any(0 < cells[k] < cells[0] for cells in want.values() for k in range(1, periods + 1))

    payload = {
        "cohort_start": first.isoformat(),
        "cohort_end": last.isoformat(),
        "periods": periods,
        "period": kind,
    }
    result = await _ok(redis_client, env, PQ, "compute-retention", payload)
    assert result["cohorts"] == want

    async def stored() -> dict[str, list[int]]:
        rows = await _rows(
            db_engine,
            AnalyticsAggregate,
            AnalyticsAggregate.bucket == "retention",
            AnalyticsAggregate.name == kind,
        )
        table: dict[str, list[int]] = {}
        for r in rows:
            table.setdefault(r.period, [0] * (periods + 1))[r.seq] = r.count
            assert r.meta is not None and r.meta["cohort_size"] == want[r.period][0]
        return table

    assert await stored() == want
    await _ok(redis_client, env, PQ, "compute-retention", payload)  # re-run: identical
    assert await stored() == want


# ---- snapshots ----------------------------------------------------------------------------------
async def test_snapshot_dashboard_fresh_then_stale_then_missing(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    today = datetime.now(UTC).date()
    rng = random.Random(3)
    events = day_events(rng, today, 80) + day_events(rng, today - timedelta(days=2), 50)
    events += day_events(rng, today - timedelta(days=30), 20)  # outside the 7-day dashboards
    await _add(db_engine, events)
    await _ok(redis_client, env, PQ, "process-events", {})

    assert (await read_dashboard(redis_client, "overview")).state is SnapshotState.MISSING
    await _ok(redis_client, env, SQ, "snapshot-dashboard", {"dashboard": "overview", "ttl_s": 2})
    got = await read_dashboard(redis_client, "overview")
    assert got.state is SnapshotState.FRESH and not got.stale and got.data is not None
    days = {d["day"]: d for d in got.data["days"]}
    assert len(days) == 7 and max(days) == today.isoformat()
    for day in (today, today - timedelta(days=2)):
        assert days[day.isoformat()]["events"] == expected_totals(events, day)
        assert days[day.isoformat()]["active_users"] == len(expected_users(events, day))
    assert days[(today - timedelta(days=1)).isoformat()]["total"] == 0
    assert got.data["total_events"] == 130
    assert 0 < await redis_client.ttl(dashboard_key("overview")) <= 4

    await _ok(redis_client, env, SQ, "snapshot-dashboard", {"dashboard": "content", "ttl_s": 60})
    content = await read_dashboard(redis_client, "content")
    views: Counter[int] = Counter()
    for e in events:
        if e.event_type == "view" and e.article_id is not None and e.at.date() > today - timedelta(days=7):
            views[e.article_id] += 1
    assert content.data is not None
    assert [(a["article_id"], a["views"]) for a in content.data["top_articles"]] == sorted(
        views.items(), key=lambda kv: (-kv[1], kv[0])
    )

    await _ok(redis_client, env, SQ, "snapshot-dashboard", {"dashboard": "search"})
    searched = await read_dashboard(redis_client, "search")
    per_query: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for day in (today, today - timedelta(days=2)):
        for q, (s, c, _) in expected_queries(events, day).items():
            per_query[q][0] += s
            per_query[q][1] += c
    assert searched.data is not None
    assert [(q["query"], q["searches"], q["clicks"]) for q in searched.data["top_queries"]] == sorted(
        ((q, s, c) for q, (s, c) in per_query.items()), key=lambda t: (-t[1], t[0])
    )

    stale = await read_dashboard(redis_client, "overview", now=got.generated_at + 2.5)  # type: ignore[operator]
    assert stale.state is SnapshotState.STALE and stale.stale and stale.data == got.data

    async def gone() -> bool:
        return (await read_dashboard(redis_client, "overview")).state is SnapshotState.MISSING

    async def aged() -> bool:
        return (await read_dashboard(redis_client, "overview")).state is SnapshotState.STALE

    await wait_for(aged, timeout=5, what="the snapshot to go stale")
    await wait_for(gone, timeout=6, what="the stale snapshot to expire")

    bad = await _run(redis_client, env, SQ, "snapshot-dashboard", {"dashboard": "nope"})
    assert bad.state is JobState.DEAD and "unknown dashboard 'nope'" in (bad.error or "")


async def test_snapshot_realtime_counts_the_window(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    events = [
        Ev("view", now - timedelta(seconds=5), 11, 1, "a"),
        Ev("view", now - timedelta(seconds=20), 11, 2, "b"),
        Ev("view", now - timedelta(seconds=40), 12, 2, "b"),
        Ev("search", now - timedelta(seconds=50), None, None, "c", "redis"),
        Ev("view", now - timedelta(seconds=500), 13, 3, "d"),  # outside a 120 s window
    ]
    await _add(db_engine, events)
    result = await _ok(redis_client, env, SQ, "snapshot-realtime", {"window_s": 120, "ttl_s": 30})
    assert result["events"] == 4
    got = await read_realtime(redis_client)
    assert got.state is SnapshotState.FRESH and got.data is not None
    assert got.data["events"] == {"view": 3, "search": 1}
    assert (got.data["active_users"], got.data["active_sessions"]) == (2, 3)
    assert got.data["top_articles"] == [{"article_id": 11, "views": 2}, {"article_id": 12, "views": 1}]
    assert (await read_realtime(redis_client, now=got.generated_at + 31)).state is SnapshotState.STALE  # type: ignore[operator]


# ---- seed ---------------------------------------------------------------------------------------
async def test_seed_inserts_demo_events_once(database_url: str, db_engine: AsyncEngine) -> None:
    async def count() -> int:
        return len(await _rows(db_engine, AnalyticsEvent))

    async with make_sessionmaker(db_engine)() as session, session.begin():
        await analytics_seed.seed(session)
    seeded = await count()
    assert seeded > 100
    days = {e.occurred_at.date() for e in await _rows(db_engine, AnalyticsEvent)}
    assert len(days) >= 3
    async with make_sessionmaker(db_engine)() as session, session.begin():
        await analytics_seed.seed(session)
    assert await count() == seeded
