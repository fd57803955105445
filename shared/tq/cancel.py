"""Cancelling a job: ``cancel_job`` (the CLI and the admin API) and ``CancelWatch`` (each worker).

A waiting or delayed job (also one in retry backoff) is removed in one script step, before any
consumer can take it: it never runs, its record goes and its idempotency key stays bound, as for a
removal. A delivered job - running, or fetched and about to start - gets a durable marker in
``tq:{q}:cancels`` and a message on ``tq:control``; the consumer that holds it cancels its handler's
task (the handler's ``except CancelledError``/``finally`` run), and the job settles in state
``cancelled``: not retried, not dead-lettered, counted, audited, ``job.cancelled`` published. A
consumer that missed the message finds the marker at its next poll (every touch interval).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tq import keys
from tq.envelope import FINISHED_STATES, JobState
from tq.errors import NotFound, TqError
from tq.jobs import get_job
from tq.scripts import Scripts
from tq.settings import Settings, get_settings

_FINISHED_RAW = {s.value.encode() for s in FINISHED_STATES}


class JobFinished(TqError):
    """The job already ended (completed, dead or cancelled): there is nothing to cancel."""


class CancelOutcome(str, Enum):
    REMOVED = "removed"  # it was waiting or delayed: gone, it never runs
    REQUESTED = "requested"  # it was delivered: the consumer holding it cancels it


@dataclass(frozen=True)
class CancelResult:
    queue: str
    job_id: str
    outcome: CancelOutcome
    was: JobState  # the state it was cancelled from


async def cancel_job(client: Any, queue: str, job_id: str, settings: Settings | None = None) -> CancelResult:
    """Cancel ``job_id`` on ``queue``. Raises ``NotFound`` for an unknown job and ``JobFinished``
    for one that already ended."""
    s = settings or get_settings()
    scripts = Scripts(client)
    for _ in range(10):  # the job may move between the read and the script: read again
        rec = await get_job(client, queue, job_id)
        if rec.state in FINISHED_STATES:
            raise JobFinished(f"job {job_id} is already {rec.state.value}; there is nothing to cancel")
        answer = await scripts.cancel(
            keys=[
                keys.stream(queue),
                keys.delayed(queue),
                keys.job(queue, job_id),
                keys.cancels(queue),
                keys.counters(queue),
                keys.audit(queue),
            ],
            args=[
                keys.GROUP,
                int(time.time() * 1000),
                queue,
                job_id,
                rec.name,
                rec.state.value,
                rec.entry_id or "",
                rec.attempts,
                rec.trace_id or "",
                int(s.audit_enabled),
                int(s.events),
            ],
        )
        answer = answer.decode() if isinstance(answer, bytes) else str(answer)
        if answer == "removed":
            was = JobState.WAITING if rec.state is JobState.ACTIVE else rec.state
            return CancelResult(queue, job_id, CancelOutcome.REMOVED, was)
        if answer == "requested":
            return CancelResult(queue, job_id, CancelOutcome.REQUESTED, JobState.ACTIVE)
        await asyncio.sleep(0.01)
    raise TqError(f"job {job_id} kept changing state; try the cancel again")


async def wait_settled(client: Any, queue: str, job_id: str, timeout_s: float) -> JobState | None:
    """The state a job whose cancel was requested ends in (``cancelled``, or ``completed``/``dead``
    when it ended first), or None when it is still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = (await get_job(client, queue, job_id)).state
        except NotFound:
            return None
        if state in FINISHED_STATES:
            return state
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)


class CancelWatch:
    """One worker's view of cancel requests: the job ids asked (from ``tq:control`` and the polled
    markers) and the handler tasks it runs, so that a request cancels the right task.

    The hot path pays one dict insert and delete per job (``begin``/``ended``) and a lookup of the
    requests; the markers are read once per touch interval (``poll``), one HKEYS per queue."""

    def __init__(self, client: Any) -> None:
        self.client = client
        # queue -> job id whose cancel was asked -> when this process learnt it (monotonic)
        self.asked: dict[str, dict[str, float]] = {}
        # (queue, job id) -> the task running its handler, and the handler's JobContext
        self.running: dict[tuple[str, str], tuple[asyncio.Task[Any], Any]] = {}
        self.cancelling: set[tuple[str, str]] = set()  # tasks this watch cancelled, not yet handled

    def request(self, queue: str, job_id: str) -> None:
        """A cancel was asked: cancel the job's task if it runs here; remember it otherwise (it may
        be fetched and not yet started, or arrive in a read in flight)."""
        self.asked.setdefault(queue, {})[job_id] = time.monotonic()
        self._cancel_task(queue, job_id)

    def _cancel_task(self, queue: str, job_id: str) -> None:
        job = (queue, job_id)
        held = self.running.get(job)
        if held is not None and job not in self.cancelling:
            self.cancelling.add(job)
            task, ctx = held
            ctx.cancel_requested = True  # the handler can tell this cancel from the worker's stop
            task.cancel(f"job {job_id} cancelled")

    def begin(self, queue: str, job_id: str, ctx: Any, task: asyncio.Task[Any] | None) -> bool:
        """``task`` (the current one) is about to run the job's handler (with ``ctx``, its
        ``JobContext``): False when the job's cancel was already asked (it must not run), else it
        is registered so that a cancel finds its task."""
        asked = self.asked.get(queue)
        if asked and job_id in asked:
            return False
        if task is not None:
            self.running[(queue, job_id)] = (task, ctx)
        return True

    def ended(self, queue: str, job_id: str) -> bool:
        """The handler returned or raised: forget its task. True when this watch cancelled it and
        nothing else did: the job ends ``cancelled``. False for the process's own stop cancelling
        the task too (the job stays pending for reclaim, its marker kept) and when no cancel was
        asked. A cancel that was asked but not delivered (or swallowed by the handler) is
        withdrawn either way, so it cannot hit the task's next job."""
        job = (queue, job_id)
        self.running.pop(job, None)
        if job not in self.cancelling:
            return False
        self.cancelling.discard(job)
        task = asyncio.current_task()
        return task is None or task.uncancel() == 0

    async def poll(self, queues: Iterable[str]) -> None:
        """Read the markers of ``queues``: cancel what runs here, remember the rest, and drop the
        markers of jobs that already ended (a cancel that lost the race against the job's end)."""
        names = list(queues)
        sent = time.monotonic()
        async with self.client.pipeline(transaction=False) as pipe:
            for q in names:
                pipe.hkeys(keys.cancels(q))
            replies = await pipe.execute()
        for queue, ids in zip(names, replies, strict=True):
            marked = {i.decode() if isinstance(i, bytes) else str(i) for i in ids}
            asked = self.asked.setdefault(queue, {})
            # a request learnt after the read was sent may not be in its reply yet: kept
            for job_id in [j for j, at in asked.items() if j not in marked and at < sent]:
                del asked[job_id]
            for job_id in marked:
                asked.setdefault(job_id, sent)
                self._cancel_task(queue, job_id)
            if marked:
                for job_id in await self._drop_finished(queue, sorted(marked)):
                    asked.pop(job_id, None)

    async def _drop_finished(self, queue: str, ids: list[str]) -> list[str]:
        async with self.client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(keys.job(queue, job_id), "s")
            states = await pipe.execute()
        done = [i for i, s in zip(ids, states, strict=True) if s is None or s in _FINISHED_RAW]
        if done:
            await self.client.hdel(keys.cancels(queue), *done)
        return done


def control_message(message: Any) -> tuple[str, str] | None:
    """(queue, job id) when a ``tq:control`` message asks a cancel, else None (a config change)."""
    if isinstance(message, (bytes, str)):
        try:
            message = json.loads(message)
        except ValueError:
            return None
    if isinstance(message, dict) and message.get("cancel"):
        return str(message.get("queue", "")), str(message["cancel"])
    return None
