"""A queue as the API (``GET /api/owner/queues``) and the live events (the ``state`` event) both
show it: registry facts, counts by state, the live stats snapshot.

The engine keeps delayed jobs and jobs waiting out a retry backoff (state ``failed``) in one sorted
set, so ``tq.jobs.counts`` gives their sum as ``delayed``. Here they are told apart by each job's
state, as ``GET /{queue}/jobs?state=delayed`` and ``?state=failed`` list them: ``delayed`` counts
what the delayed listing shows and ``retrying`` what the failed one does. Over ``SPLIT_LIMIT``
scheduled jobs the split is not made (``retrying`` is null and ``delayed`` is both, as the stats
snapshot's ``delayed`` always is)."""

from __future__ import annotations

from typing import Any

from tq import jobs, keys
from tq.envelope import JobState
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
            "counts": await _split_scheduled(client, spec.name, await jobs.counts(client, spec.name)),
            "stats": await read_stats(client, spec.name),
        }
    )


async def all_queue_summaries(client: Any) -> list[QueueSummary]:
    return [await queue_summary(client, spec.name) for spec in all_queues()]


SPLIT_LIMIT = 10_000
_CHUNK = 1000


async def _split_scheduled(client: Any, queue: str, counts: dict[str, Any]) -> dict[str, Any]:
    """``counts`` with its ``delayed`` split into ``delayed`` and ``retrying`` by each job's state."""
    scheduled = int(counts["delayed"])
    if scheduled > SPLIT_LIMIT:
        return {**counts, "retrying": None}
    found = {JobState.DELAYED.value: 0, JobState.FAILED.value: 0}
    for start in range(0, scheduled, _CHUNK):
        ids = await client.zrange(keys.delayed(queue), start, start + _CHUNK - 1)
        async with client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(keys.job(queue, job_id.decode() if isinstance(job_id, bytes) else job_id), "s")
            states = await pipe.execute()
        for state in states:
            name = state.decode() if isinstance(state, bytes) else state
            if name in found:
                found[name] += 1
    # a member whose record is gone (trimmed) is in neither listing, so in neither count
    return {**counts, "delayed": found[JobState.DELAYED.value], "retrying": found[JobState.FAILED.value]}
