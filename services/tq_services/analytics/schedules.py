"""The analytics family's default schedules (``tq schedule install-defaults``; ``make dev``).

rollup-daily rolls up the UTC day before its tick (``$yesterday``, filled in by the scheduler from
the tick time, so a late run after an outage still rolls up the right day); process-events drains
new events every minute; snapshot-dashboard rebuilds each dashboard every five minutes, its
snapshot living two periods so a late tick never leaves a dashboard empty."""

from __future__ import annotations

from tq.schedules import ConcurrencyPolicy, ScheduleSpec

from tq_services.analytics.snapshots import Dashboard

SNAPSHOT_EVERY_S = 300

SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec(
        name="analytics-rollup-daily",
        queue="analytics:process",
        job="rollup-daily",
        payload={"day": "$yesterday"},
        cron="15 0 * * *",
        time_zone="UTC",  # the roll-ups are by UTC day
        concurrency_policy=ConcurrencyPolicy.FORBID,
        starting_deadline_seconds=6 * 3600,
    ),
    ScheduleSpec(
        name="analytics-process-events",
        queue="analytics:process",
        job="process-events",
        interval_seconds=60,
        concurrency_policy=ConcurrencyPolicy.FORBID,  # one batch at a time: it moves a watermark
        starting_deadline_seconds=60,
    ),
    *(
        ScheduleSpec(
            name=f"analytics-snapshot-{dashboard.value}",
            queue="analytics:snapshot",
            job="snapshot-dashboard",
            payload={"dashboard": dashboard.value, "ttl_s": 2 * SNAPSHOT_EVERY_S},
            interval_seconds=SNAPSHOT_EVERY_S,
            concurrency_policy=ConcurrencyPolicy.FORBID,
            starting_deadline_seconds=SNAPSHOT_EVERY_S,
        )
        for dashboard in Dashboard
    ),
)
