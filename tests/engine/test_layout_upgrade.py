"""Jobs in the storage layout before issue 19 (written by that release's own scripts,
``support.legacy_layout``) when the new layout lands: waiting, delayed, in backoff and dead jobs are
read by ``get_job`` and the DLQ, run by the new worker, replayed; nothing is lost or run twice."""

from __future__ import annotations

from typing import Any

from support import fast_settings, legacy_layout, running, wait_for
from tq import dlq, jobs, keys
from tq.envelope import JobState
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer
from tq.worker import ensure_group

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}


async def _completed(client: Any) -> int:
    return int(await client.hget(keys.counters(Q), "completed") or 0)


async def test_legacy_jobs_in_every_state_are_read_run_and_replayed(
    redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url)
    await ensure_group(redis_client, Q)
    # what the old release left behind: two jobs in backoff, two dead, five waiting, one delayed
    for _ in range(2):
        await legacy_layout.enqueue(redis_client, Q, "send-email", EMAIL)
    retrying = await legacy_layout.fail(redis_client, Q, "old-consumer", dead=False, due_s=0.3)
    for _ in range(2):
        await legacy_layout.enqueue(redis_client, Q, "send-email", EMAIL)
    dead = await legacy_layout.fail(redis_client, Q, "old-consumer", dead=True)
    waiting = [
        await legacy_layout.enqueue(redis_client, Q, "send-email", {**EMAIL, "to": f"{i}@example.com"})
        for i in range(4)
    ]
    waiting.append(
        await legacy_layout.enqueue(redis_client, Q, "send-email", EMAIL, idempotency_key="legacy-k")
    )
    delayed = await legacy_layout.enqueue(redis_client, Q, "send-email", EMAIL, delay_s=0.3)
    assert len(retrying) == 2 and len(dead) == 2

    # the readers understand the legacy records
    rec = await jobs.get_job(redis_client, Q, waiting[0])
    assert (rec.state, rec.payload["to"], rec.name) == (JobState.WAITING, "0@example.com", "send-email")
    rec = await jobs.get_job(redis_client, Q, dead[0])
    assert rec.state is JobState.DEAD and rec.payload["to"] == "a@example.com" and rec.stack == "Traceback"
    assert (await jobs.get_job(redis_client, Q, retrying[0])).state is JobState.FAILED
    assert (await jobs.get_job(redis_client, Q, delayed)).state is JobState.DELAYED
    listed = await jobs.list_jobs(redis_client, Q, JobState.WAITING)
    assert {r.id for r in listed.items} == set(waiting)
    # a new enqueue with the legacy job's key answers with that job
    dup = await Producer(redis_client, s).enqueue_detailed(Q, "send-email", EMAIL, idempotency_key="legacy-k")
    assert dup.duplicate and dup.id == waiting[-1]

    runs: list[tuple[str, int, str]] = []
    h = HandlerRegistry()

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        runs.append((ctx.job_id, ctx.attempt, payload.to))

    async with running(redis_client, s, h):
        await wait_for(
            lambda: _is(redis_client, 8), timeout=15, what="the legacy waiting, delayed and retrying jobs"
        )
        replay = await dlq.replay(redis_client, Q)
        assert replay.replayed == 2
        await wait_for(lambda: _is(redis_client, 10), timeout=15, what="the replayed legacy dead jobs")

    ran = {job_id: attempt for job_id, attempt, _ in runs}
    assert len(runs) == 10 == len(ran)  # each exactly once
    assert {ran[i] for i in retrying} == {2}  # their second attempt
    assert all(ran[i] == 1 for i in [*waiting, delayed, *replay.job_ids])
    assert sorted(to for _, _, to in runs).count("a@example.com") == 6
    for job_id in [*waiting, delayed, *retrying]:
        rec = await jobs.get_job(redis_client, Q, job_id)
        assert rec.state is JobState.COMPLETED and rec.payload["template"] == "welcome"
    for new in replay.job_ids:
        rec = await jobs.get_job(redis_client, Q, new)
        assert rec.state is JobState.COMPLETED and rec.replay_of in dead
    assert await redis_client.xlen(keys.stream(Q)) == 0 and await redis_client.zcard(keys.delayed(Q)) == 0
    assert await redis_client.get(keys.idempotency(Q, "legacy-k")) == f"done:{waiting[-1]}".encode()


async def _is(client: Any, n: int) -> bool:
    return await _completed(client) == n
