"""A queue as the API (``GET /api/owner/queues``) and the live events (the ``state`` event) both
show it: registry facts, counts by state, the live stats snapshot."""

from __future__ import annotations

from typing import Any

from tq import jobs
from tq.registry import all_queues, get_queue
from tq.stats import read_stats

from tq_services.admin.schemas import QueueSummary


async def queue_summary(client: Any, queue: str) -> QueueSummary:
    spec = get_queue(queue)
    return QueueSummary.model_validate(
        {
            "queue": spec.name,
            "family": spec.family,
            "description": spec.description,
            "jobs": list(spec.jobs),
            "counts": await jobs.counts(client, spec.name),
            "stats": await read_stats(client, spec.name),
        }
    )


async def all_queue_summaries(client: Any) -> list[QueueSummary]:
    return [await queue_summary(client, spec.name) for spec in all_queues()]
