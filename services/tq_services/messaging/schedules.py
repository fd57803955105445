"""The messaging family's default schedules (``tq schedule install-defaults``; ``make dev``):
process-email-queue turns pending EmailQueue rows into send-email jobs every minute."""

from __future__ import annotations

from tq.schedules import ConcurrencyPolicy, ScheduleSpec

SCHEDULES: tuple[ScheduleSpec, ...] = (
    ScheduleSpec(
        name="email-process-email-queue",
        queue="email:send",
        job="process-email-queue",
        payload={"limit": 100},
        interval_seconds=60,
        concurrency_policy=ConcurrencyPolicy.FORBID,
        starting_deadline_seconds=60,
    ),
)
