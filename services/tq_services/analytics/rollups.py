"""Set-based roll-ups of ``analytics_event``: one ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT
DO UPDATE`` per table, through SQLAlchemy's SQLite and PostgreSQL insert constructs.

Every roll-up recomputes the whole key (a day, a funnel over its window, a retention cohort) and
overwrites it: a re-run, a replay or a run racing another leaves the same numbers. Rows of a key
that no longer has events are deleted (every row written by a run carries that run's
``computed_at``; older rows of the same key are the stale ones). Each function runs inside the
caller's transaction, so a reader sees a day either before or after its roll-up, never half.

Days are UTC days of ``occurred_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    String,
    and_,
    case,
    cast,
    delete,
    distinct,
    extract,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from tq.models import UTCDateTime

from tq_services.analytics.models import (
    AggregateBucket,
    AnalyticsAggregate,
    AnalyticsEvent,
    AnalyticsEventType,
    AnalyticsWatermark,
    ArticleStatsDaily,
    SearchQueryStatsDaily,
    UserEngagementDaily,
)

E = AnalyticsEvent
Period = Literal["day", "week", "month"]
WATERMARK = "process-events"
EPOCH = date(1970, 1, 1)


# ---- dialect helpers ----------------------------------------------------------------------------
def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert(session: AsyncSession) -> Any:
    """The dialect's ``insert`` (both have ``on_conflict_do_update`` and ``excluded``)."""
    return postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert


def _json_object(dialect: str, **values: ColumnElement[Any]) -> ColumnElement[Any]:
    args: list[Any] = []
    for key, value in values.items():
        args += [literal(key, String()), value]
    return func.jsonb_build_object(*args) if dialect == "postgresql" else func.json_object(*args)


def utc_day(dialect: str, column: Any) -> ColumnElement[Any]:
    """The UTC day of a timestamp column (SQLite stores UTC text; PostgreSQL needs the zone)."""
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def day_number(dialect: str, column: Any) -> ColumnElement[int]:
    """Days since 1970-01-01 of a timestamp column's UTC day, as an integer."""
    if dialect == "postgresql":
        return cast(utc_day(dialect, column) - literal_column("DATE '1970-01-01'"), Integer)
    return cast(func.julianday(func.date(column)) - 2440587.5, Integer)


def period_number(dialect: str, column: Any, period: Period) -> ColumnElement[int]:
    """The index of the day / ISO week (Monday first) / calendar month a timestamp falls in;
    ``period_index`` computes the same for a Python date."""
    if period == "day":
        return day_number(dialect, column)
    if period == "week":  # 1970-01-01 was a Thursday: +3 puts Mondays on multiples of 7
        return (day_number(dialect, column) + 3) // 7
    if dialect == "postgresql":
        local = func.timezone("UTC", column)
        return cast(extract("year", local) * 12 + extract("month", local) - 1, Integer)
    year = cast(func.strftime("%Y", column), Integer)
    month = cast(func.strftime("%m", column), Integer)
    return year * 12 + month - 1


def period_index(day: date, period: Period) -> int:
    if period == "day":
        return (day - EPOCH).days
    if period == "week":
        return ((day - EPOCH).days + 3) // 7
    return day.year * 12 + day.month - 1


def period_start(index: int, period: Period) -> date:
    if period == "day":
        return EPOCH + timedelta(days=index)
    if period == "week":
        return EPOCH + timedelta(days=index * 7 - 3)
    return date(index // 12, index % 12 + 1, 1)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def as_date(value: Any) -> date:
    """A day as the drivers return it: a date (asyncpg) or ISO text (SQLite)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _count_of(event_type: AnalyticsEventType) -> ColumnElement[Any]:
    return func.sum(case((E.event_type == event_type.value, 1), else_=0))


def _stamp(value: datetime) -> ColumnElement[Any]:
    return literal(value, UTCDateTime())


# ---- daily roll-up ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DayRollup:
    day: date
    events: int
    articles: int
    queries: int
    users: int
    event_types: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "events": self.events,
            "articles": self.articles,
            "queries": self.queries,
            "users": self.users,
            "event_types": self.event_types,
        }


async def _upsert_select(
    session: AsyncSession,
    table: Any,
    keys: Sequence[str],
    columns: dict[str, Any],
    where: Sequence[Any],
    group_by: Sequence[Any],
) -> None:
    query = select(*(expr.label(name) for name, expr in columns.items())).where(*where).group_by(*group_by)
    stmt = _insert(session)(table).from_select(list(columns), query)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: stmt.excluded[name] for name in columns if name not in keys},
    )
    await session.execute(stmt)


async def _drop_stale(session: AsyncSession, table: Any, day: date, stamp: datetime) -> int:
    result = await session.execute(delete(table).where(table.day == day, table.computed_at != stamp))
    return int(getattr(result, "rowcount", 0) or 0)


async def rollup_day(session: AsyncSession, day: date, now: datetime) -> DayRollup:
    """Recompute ``day`` in the four roll-up tables from its events and overwrite it."""
    dialect = _dialect(session)
    lo, hi = day_bounds(day)
    in_day = [E.occurred_at >= lo, E.occurred_at < hi]
    the_day = literal(day, Date())
    stamp = _stamp(now)
    V, R, C, S, H = (
        AnalyticsEventType.VIEW,
        AnalyticsEventType.READ,
        AnalyticsEventType.CLICK,
        AnalyticsEventType.SEARCH,
        AnalyticsEventType.SHARE,
    )

    await _upsert_select(
        session,
        ArticleStatsDaily,
        ("day", "article_id"),
        {
            "day": the_day,
            "article_id": E.article_id,
            "views": _count_of(V),
            "reads": _count_of(R),
            "clicks": _count_of(C),
            "shares": _count_of(H),
            "events": func.count(),
            "unique_users": func.count(distinct(E.user_id)),
            "unique_sessions": func.count(distinct(E.session_id)),
            "computed_at": stamp,
        },
        [*in_day, E.article_id.is_not(None)],
        [E.article_id],
    )
    query = func.lower(func.trim(E.query))
    await _upsert_select(
        session,
        SearchQueryStatsDaily,
        ("day", "query"),
        {
            "day": the_day,
            "query": query,
            "searches": _count_of(S),
            "clicks": _count_of(C),
            "unique_users": func.count(distinct(E.user_id)),
            "unique_sessions": func.count(distinct(E.session_id)),
            "computed_at": stamp,
        },
        [*in_day, E.query.is_not(None), func.trim(E.query) != ""],
        [query],
    )
    await _upsert_select(
        session,
        UserEngagementDaily,
        ("day", "user_id"),
        {
            "day": the_day,
            "user_id": E.user_id,
            "events": func.count(),
            "views": _count_of(V),
            "reads": _count_of(R),
            "clicks": _count_of(C),
            "searches": _count_of(S),
            "shares": _count_of(H),
            "sessions": func.count(distinct(E.session_id)),
            "articles": func.count(distinct(E.article_id)),
            "first_seen_at": func.min(E.occurred_at),
            "last_seen_at": func.max(E.occurred_at),
            "computed_at": stamp,
        },
        [*in_day, E.user_id.is_not(None)],
        [E.user_id],
    )
    await _upsert_select(
        session,
        AnalyticsAggregate,
        ("bucket", "name", "period", "event_type", "seq"),
        {
            "bucket": literal(AggregateBucket.DAY.value, String()),
            "name": literal("", String()),
            "period": literal(day.isoformat(), String()),
            "event_type": E.event_type,
            "seq": literal(0, Integer()),
            "count": func.count(),
            "meta": _json_object(
                dialect,
                users=func.count(distinct(E.user_id)),
                sessions=func.count(distinct(E.session_id)),
                articles=func.count(distinct(E.article_id)),
            ),
            "computed_at": stamp,
        },
        in_day,
        [E.event_type],
    )
    for table in (ArticleStatsDaily, SearchQueryStatsDaily, UserEngagementDaily):
        await _drop_stale(session, table, day, now)
    A = AnalyticsAggregate
    await session.execute(
        delete(A).where(
            A.bucket == AggregateBucket.DAY.value, A.period == day.isoformat(), A.computed_at != now
        )
    )

    async def rows(table: Any) -> int:
        return int(await session.scalar(select(func.count()).select_from(table).where(table.day == day)) or 0)

    totals = (
        await session.execute(
            select(func.coalesce(func.sum(A.count), 0), func.count()).where(
                A.bucket == AggregateBucket.DAY.value, A.period == day.isoformat()
            )
        )
    ).one()
    return DayRollup(
        day=day,
        events=int(totals[0]),
        articles=await rows(ArticleStatsDaily),
        queries=await rows(SearchQueryStatsDaily),
        users=await rows(UserEngagementDaily),
        event_types=int(totals[1]),
    )


# ---- process-events: the watermark --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Batch:
    """What process-events found past the watermark."""

    events: int
    last_event_id: int | None
    days: list[date]
    more: bool


async def read_watermark(session: AsyncSession, name: str = WATERMARK) -> int:
    row = await session.get(AnalyticsWatermark, name)
    return row.last_event_id if row is not None else 0


async def next_batch(session: AsyncSession, after_id: int, limit: int) -> Batch:
    """The first ``limit`` events with an id above ``after_id``: how many, the last id, the UTC days
    they fall on, and whether more are waiting."""
    dialect = _dialect(session)
    ids = select(E.id, E.occurred_at).where(E.id > after_id).order_by(E.id).limit(limit).subquery()
    count, last = (await session.execute(select(func.count(), func.max(ids.c.id)))).one()
    if not count:
        return Batch(events=0, last_event_id=None, days=[], more=False)
    found = await session.scalars(select(utc_day(dialect, ids.c.occurred_at)).distinct())
    days = sorted(as_date(d) for d in found)
    more = await session.scalar(select(E.id).where(E.id > last).limit(1)) is not None
    return Batch(events=int(count), last_event_id=int(last), days=days, more=more)


async def advance_watermark(session: AsyncSession, last_event_id: int, name: str = WATERMARK) -> None:
    """Move the watermark forward to ``last_event_id`` (never back: a slower concurrent run that
    read an older batch cannot rewind it)."""
    stmt = _insert(session)(AnalyticsWatermark).values(name=name, last_event_id=last_event_id)
    stmt = stmt.on_conflict_do_nothing(index_elements=["name"])
    await session.execute(stmt)
    W = AnalyticsWatermark
    await session.execute(
        update(W)
        .where(W.name == name, W.last_event_id < last_event_id)
        .values(last_event_id=last_event_id, updated_at=datetime.now(UTC))
    )


# ---- funnels ------------------------------------------------------------------------------------
async def _upsert_aggregates(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = _insert(session)(AnalyticsAggregate).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["bucket", "name", "period", "event_type", "seq"],
        set_={
            "count": stmt.excluded.count,
            "meta": stmt.excluded.meta,
            "computed_at": stmt.excluded.computed_at,
        },
    )
    await session.execute(stmt)


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


async def funnel_counts(
    session: AsyncSession, steps: Sequence[str], start: date, end: date, by: Literal["session", "user"]
) -> list[int]:
    """How many sessions (or users) did ``steps[0]``, then ``steps[1]`` strictly later, ... all
    within ``start``..``end`` (UTC days, inclusive). Taking each step's earliest occurrence after
    the previous step is optimal for an ordered funnel, so a MIN per step is enough."""
    actor: Any = E.session_id if by == "session" else E.user_id
    lo, hi = day_bounds(start)[0], day_bounds(end)[1]
    window = [E.occurred_at >= lo, E.occurred_at < hi, actor.is_not(None)]
    reached = (
        select(actor.label("actor"), func.min(E.occurred_at).label("at"))
        .where(*window, E.event_type == steps[0])
        .group_by(actor)
        .cte("step_1")
    )
    stages = [reached]
    for number, step in enumerate(steps[1:], start=2):
        reached = (
            select(actor.label("actor"), func.min(E.occurred_at).label("at"))
            .join_from(E, reached, and_(reached.c.actor == actor, E.occurred_at > reached.c.at))
            .where(*window, E.event_type == step)
            .group_by(actor)
            .cte(f"step_{number}")
        )
        stages.append(reached)
    counts = (
        await session.execute(
            select(*(select(func.count()).select_from(s).scalar_subquery() for s in stages))
        )
    ).one()
    return [int(c) for c in counts]


async def compute_funnel(
    session: AsyncSession, name: str, steps: Sequence[str], start: date, end: date, now: datetime
) -> dict[str, list[int]]:
    """Both funnels (per session and per user) stored as ``analytics_aggregate`` rows, step ``seq``
    1..n; rows of an earlier, longer definition of the same funnel and window are removed."""
    period = f"{start.isoformat()}/{end.isoformat()}"
    result: dict[str, list[int]] = {}
    rows: list[dict[str, Any]] = []
    for by, bucket in (("session", AggregateBucket.FUNNEL_SESSION), ("user", AggregateBucket.FUNNEL_USER)):
        counts = await funnel_counts(session, steps, start, end, by)  # type: ignore[arg-type]
        result[by] = counts
        for seq, (step, count) in enumerate(zip(steps, counts, strict=True), start=1):
            previous = counts[seq - 2] if seq > 1 else count
            meta = {"conversion": _ratio(count, counts[0]), "from_previous": _ratio(count, previous)}
            rows.append(
                {
                    "bucket": bucket.value,
                    "name": name,
                    "period": period,
                    "event_type": step,
                    "seq": seq,
                    "count": count,
                    "meta": meta,
                    "computed_at": now,
                }
            )
    await _upsert_aggregates(session, rows)
    A = AnalyticsAggregate
    await session.execute(
        delete(A).where(
            A.bucket.in_([AggregateBucket.FUNNEL_SESSION.value, AggregateBucket.FUNNEL_USER.value]),
            A.name == name,
            A.period == period,
            A.computed_at != now,
        )
    )
    return result


# ---- retention ----------------------------------------------------------------------------------
RETENTION_EVENT = "active"


async def compute_retention(
    session: AsyncSession, cohort_start: date, cohort_end: date, periods: int, period: Period, now: datetime
) -> dict[str, list[int]]:
    """Cohort retention: a user's cohort is the period of their first event ever; cell ``k`` of a
    cohort counts its users with any event ``k`` periods later (``k`` = 0..periods; cell 0 is the
    cohort size). Stored as ``analytics_aggregate`` rows (bucket retention, name = the period
    kind, period = the cohort's first day, seq = k). Returns {cohort first day: cells}."""
    dialect = _dialect(session)
    first_cohort, last_cohort = period_index(cohort_start, period), period_index(cohort_end, period)
    number = period_number(dialect, E.occurred_at, period)
    firsts = (
        select(E.user_id.label("user_id"), func.min(number).label("cohort"))
        .where(E.user_id.is_not(None))
        .group_by(E.user_id)
        .cte("firsts")
    )
    lo = day_bounds(period_start(first_cohort, period))[0]
    hi = day_bounds(period_start(last_cohort + periods + 1, period))[0]
    active = (
        select(E.user_id.label("user_id"), number.label("p"))
        .where(E.user_id.is_not(None), E.occurred_at >= lo, E.occurred_at < hi)
        .distinct()
        .cte("active")
    )
    offset = (active.c.p - firsts.c.cohort).label("k")
    query = (
        select(firsts.c.cohort, offset, func.count())
        .join_from(firsts, active, active.c.user_id == firsts.c.user_id)
        .where(
            firsts.c.cohort >= first_cohort,
            firsts.c.cohort <= last_cohort,
            active.c.p >= firsts.c.cohort,
            active.c.p <= firsts.c.cohort + periods,
        )
        .group_by(firsts.c.cohort, offset)
    )
    cells: dict[int, list[int]] = {}
    for cohort, k, count in await session.execute(query):
        cells.setdefault(int(cohort), [0] * (periods + 1))[int(k)] = int(count)
    rows: list[dict[str, Any]] = []
    table: dict[str, list[int]] = {}
    for cohort in sorted(cells):
        label = period_start(cohort, period).isoformat()
        table[label] = cells[cohort]
        size = cells[cohort][0]
        for k, count in enumerate(cells[cohort]):
            rows.append(
                {
                    "bucket": AggregateBucket.RETENTION.value,
                    "name": period,
                    "period": label,
                    "event_type": RETENTION_EVENT,
                    "seq": k,
                    "count": count,
                    "meta": {"cohort_size": size, "rate": _ratio(count, size)},
                    "computed_at": now,
                }
            )
    await _upsert_aggregates(session, rows)
    labels = [period_start(c, period).isoformat() for c in range(first_cohort, last_cohort + 1)]
    A = AnalyticsAggregate
    await session.execute(
        delete(A).where(
            A.bucket == AggregateBucket.RETENTION.value,
            A.name == period,
            A.period.in_(labels),
            A.computed_at != now,
        )
    )
    return table
