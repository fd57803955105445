"""Handlers of the analytics family, registered on the process-wide ``tq.handlers.default_handlers``.

Importing this module registers them (``tq_services.load_handlers(["analytics"])``).

process-events, without ``since``: reads the next ``limit`` events past the watermark (the
highest ``analytics_event.id`` processed, row ``process-events`` of ``analytics_watermark``),
recomputes every UTC day those events fall on (whole days, so late events are counted exactly
once) and moves the watermark to the last id read, all in one transaction: a crash or a replay
re-reads the same batch and overwrites the same days. ``more`` in the result says events are
still waiting. With ``since`` (and optionally ``until``, default now): recomputes every day of
that range, a backfill that leaves the watermark alone; ``limit`` does not apply.

rollup-daily recomputes one day. compute-funnels and compute-retention store
``analytics_aggregate`` rows (see ``rollups``). snapshot-dashboard / snapshot-realtime write their
payloads to Redis (see ``snapshots``). Impossible requests dead-letter with the reason.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tq.handlers import JobContext, default_handlers
from tq.payloads import (
    ComputeFunnels,
    ComputeRetention,
    ProcessEvents,
    RollupDaily,
    SnapshotDashboard,
    SnapshotRealtime,
)
from tq.settings import get_settings

from tq_services.analytics import rollups, snapshots
from tq_services.analytics.errors import InvalidAnalyticsRequest
from tq_services.analytics.settings import get_analytics_settings
from tq_services.store import sessions

log = logging.getLogger("tq.analytics")

PROCESS_QUEUE = "analytics:process"
SNAPSHOT_QUEUE = "analytics:snapshot"
MAX_DAYS = 366  # most days one job recomputes (a backfill, a funnel window)


def _utc(moment: datetime) -> datetime:
    """Payload moments without a zone are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _days(first: date, last: date, what: str) -> list[date]:
    if last < first:
        raise InvalidAnalyticsRequest(f"{what}: ends ({last}) before it starts ({first})")
    count = (last - first).days + 1
    if count > MAX_DAYS:
        raise InvalidAnalyticsRequest(f"{what}: {count} days, more than the {MAX_DAYS} one job recomputes")
    return [first + timedelta(days=i) for i in range(count)]


def _backfill_days(payload: ProcessEvents, now: datetime) -> list[date]:
    if payload.since is None:
        raise InvalidAnalyticsRequest("process-events: 'until' needs 'since' (a backfill range)")
    since = _utc(payload.since)
    until = _utc(payload.until) if payload.until is not None else now
    if until <= since:
        raise InvalidAnalyticsRequest(f"process-events: until ({until}) is not after since ({since})")
    last = (until - timedelta(microseconds=1)).date()  # an end at midnight closes the day before
    return _days(since.date(), last, "process-events")


@default_handlers.register(PROCESS_QUEUE, "process-events")
async def process_events(ctx: JobContext, payload: ProcessEvents) -> dict[str, Any]:
    now = datetime.now(UTC)
    backfill = payload.since is not None or payload.until is not None
    async with sessions(get_settings().database_url)() as session, session.begin():
        if backfill:
            days = _backfill_days(payload, now)
            done = await _rollup_days(ctx, session, days, now, 0.0)
            result: dict[str, Any] = {"mode": "backfill", "days": [d.as_dict() for d in done]}
        else:
            after = await rollups.read_watermark(session)
            batch = await rollups.next_batch(session, after, payload.limit)
            await ctx.progress(0.2, f"{batch.events} new events over {len(batch.days)} day(s)")
            done = await _rollup_days(ctx, session, batch.days, now, 0.2)
            if batch.last_event_id is not None:
                await rollups.advance_watermark(session, batch.last_event_id)
            result = {
                "mode": "watermark",
                "events": batch.events,
                "watermark": batch.last_event_id if batch.last_event_id is not None else after,
                "more": batch.more,
                "days": [d.as_dict() for d in done],
            }
    log.info("process-events (%s): %d day(s) rolled up", result["mode"], len(done))
    return result


async def _rollup_days(
    ctx: JobContext, session: Any, days: list[date], now: datetime, base: float
) -> list[rollups.DayRollup]:
    """Roll up ``days`` in order, reporting progress after each (from ``base`` to 0.95)."""
    done = []
    for n, day in enumerate(days, 1):
        done.append(await rollups.rollup_day(session, day, now))
        await ctx.progress(base + (0.95 - base) * n / len(days), f"rolled up {day} ({n} of {len(days)})")
    return done


@default_handlers.register(PROCESS_QUEUE, "rollup-daily")
async def rollup_daily(ctx: JobContext, payload: RollupDaily) -> dict[str, Any]:
    await ctx.progress(0.0, f"rolling up {payload.day}")
    async with sessions(get_settings().database_url)() as session, session.begin():
        done = await rollups.rollup_day(session, payload.day, datetime.now(UTC))
        await ctx.progress(0.9, f"{payload.day}: {done.events} events rolled up; committing")
    log.info("rollup-daily %s: %d events", payload.day, done.events)
    return done.as_dict()


@default_handlers.register(PROCESS_QUEUE, "compute-funnels")
async def compute_funnels(ctx: JobContext, payload: ComputeFunnels) -> dict[str, Any]:
    _days(payload.start, payload.end, f"funnel {payload.name!r}")
    async with sessions(get_settings().database_url)() as session, session.begin():
        counts = await rollups.compute_funnel(
            session, payload.name, payload.steps, payload.start, payload.end, datetime.now(UTC)
        )
    return {"name": payload.name, "steps": list(payload.steps), **counts}


@default_handlers.register(PROCESS_QUEUE, "compute-retention")
async def compute_retention(ctx: JobContext, payload: ComputeRetention) -> dict[str, Any]:
    if payload.cohort_end < payload.cohort_start:
        raise InvalidAnalyticsRequest(
            f"compute-retention: cohort_end ({payload.cohort_end}) is before "
            f"cohort_start ({payload.cohort_start})"
        )
    async with sessions(get_settings().database_url)() as session, session.begin():
        table = await rollups.compute_retention(
            session,
            payload.cohort_start,
            payload.cohort_end,
            payload.periods,
            payload.period,
            datetime.now(UTC),
        )
    return {"period": payload.period, "cohorts": table}


@default_handlers.register(SNAPSHOT_QUEUE, "snapshot-dashboard")
async def snapshot_dashboard(ctx: JobContext, payload: SnapshotDashboard) -> dict[str, Any]:
    try:
        dashboard = snapshots.Dashboard(payload.dashboard)
    except ValueError:
        known = ", ".join(d.value for d in snapshots.Dashboard)
        raise InvalidAnalyticsRequest(f"unknown dashboard {payload.dashboard!r} (known: {known})") from None
    settings = get_settings()
    analytics = get_analytics_settings()
    await ctx.progress(0.0, f"building dashboard {dashboard.value}")
    async with sessions(settings.database_url)() as session:
        data = await snapshots.build_dashboard(
            session,
            dashboard,
            snapshots.utc_today(),
            analytics.analytics_dashboard_days,
            analytics.analytics_top_n,
        )
    key = snapshots.dashboard_key(dashboard.value)
    await ctx.progress(0.8, f"storing the snapshot at {key}")
    generated_at = await snapshots.store(ctx.redis, key, f"dashboard:{dashboard.value}", data, payload.ttl_s)
    return {"key": key, "generated_at": generated_at, "ttl_s": payload.ttl_s}


@default_handlers.register(SNAPSHOT_QUEUE, "snapshot-realtime")
async def snapshot_realtime(ctx: JobContext, payload: SnapshotRealtime) -> dict[str, Any]:
    settings = get_settings()
    analytics = get_analytics_settings()
    async with sessions(settings.database_url)() as session:
        data = await snapshots.build_realtime(
            session, datetime.now(UTC), payload.window_s, analytics.analytics_top_n
        )
    key = snapshots.REALTIME_KEY
    generated_at = await snapshots.store(ctx.redis, key, "realtime", data, payload.ttl_s)
    return {"key": key, "generated_at": generated_at, "ttl_s": payload.ttl_s, "events": data["total_events"]}
