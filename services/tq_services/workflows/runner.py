"""Drive one workflow instance through its steps: pending -> running -> completed | failed.

Every attempt of a step is a WorkflowStepExecution row, written before the step runs and settled
after, and a ``workflow.step`` event. The instance's ``current_step`` moves past a step only when
its attempt completed, in the same transaction that records it, so a resumed run (a continuation,
a job reclaimed after a crash, a DLQ replay) starts at the first unfinished step and never repeats
a completed one. An attempt left open by a run that died mid-step is settled as failed
("interrupted") and counts against the step's retries; a waiting enqueue or delay step is simply
picked up again (its child job and due time are on the row).

Waiting (a delay, a retry's backoff, a child job not done yet) does not hold a worker slot for
long: up to ``workflow_inline_wait_s`` per run is slept in the handler, then the run records where
it stands, enqueues a delayed run-workflow continuation for the instance (idempotency key per
wake-up, so a re-run of this job does not schedule two) and completes. A lease in Redis, renewed
while the run lives, keeps two runs of one instance from overlapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tq import keys
from tq.envelope import EventType
from tq.handlers import JobContext
from tq.payloads import RunWorkflow
from tq.producer import Producer
from tq.settings import Settings, get_settings

from tq_services.store import sessions
from tq_services.workflows import steps as st
from tq_services.workflows.errors import (
    InstanceBusy,
    StepError,
    StepFailedForGood,
    WorkflowFailed,
    WorkflowUnavailable,
)
from tq_services.workflows.models import WorkflowDefinition, WorkflowInstance, WorkflowStepExecution
from tq_services.workflows.settings import WorkflowSettings, get_workflow_settings

log = logging.getLogger("tq.workflows")

WORKFLOW_QUEUE = "workflows:run"
ERROR_MAX = 4000
INLINE_POLL_S = 0.1  # how often a child job is looked at while the run may still wait inline

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def lease_key(instance_id: int) -> str:
    return f"{keys.prefix(WORKFLOW_QUEUE)}:lease:{instance_id}"


@contextlib.asynccontextmanager
async def lease(redis: Any, instance_id: int, seconds: float) -> AsyncIterator[None]:
    """Hold the instance's lease for the run, renewing it at a third of its life."""
    key, token, ms = lease_key(instance_id), uuid.uuid4().hex, max(int(seconds * 1000), 100)
    if not await redis.set(key, token, nx=True, px=ms):
        raise InstanceBusy(f"workflow instance {instance_id} is being run by another job; retrying later")

    async def renew() -> None:
        while True:
            await asyncio.sleep(seconds / 3)
            await redis.eval(_RENEW, 1, key, token, ms)

    renewer = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await renewer
        await redis.eval(_RELEASE, 1, key, token)


@contextlib.asynccontextmanager
async def tx(session: AsyncSession) -> AsyncIterator[None]:
    """One transaction; also takes over one that reading an attribute began on its own."""
    try:
        yield
        await session.commit()
    except BaseException:
        await session.rollback()
        raise


def _now() -> datetime:
    return datetime.now(UTC)


def _clip(text: str) -> str:
    return text[:ERROR_MAX]


async def open_instance(session: AsyncSession, ctx: JobContext, payload: RunWorkflow) -> WorkflowInstance:
    """The instance this job runs: the payload's, the one this job (or the job it replays) owns,
    or a new one owned by this job."""
    if payload.instance_id is not None:
        instance = await session.get(WorkflowInstance, payload.instance_id)
        if instance is None or instance.workflow_id != payload.workflow_id:
            raise WorkflowUnavailable(
                f"workflow instance {payload.instance_id} of workflow {payload.workflow_id} does not exist"
            )
        return instance
    owners = [ctx.job_id] + ([ctx.envelope.replay_of] if ctx.envelope.replay_of else [])
    found = (
        await session.execute(select(WorkflowInstance).where(WorkflowInstance.job_id.in_(owners)))
    ).scalar_one_or_none()
    if found is not None:
        found.job_id = ctx.job_id  # a replay takes the instance over, so its own replay finds it too
        return found
    instance = WorkflowInstance(
        workflow_id=payload.workflow_id, status="pending", input=payload.input, outputs=[], job_id=ctx.job_id
    )
    session.add(instance)
    await session.flush()
    return instance


class Run:
    """One run-workflow job's pass over an instance."""

    def __init__(
        self,
        ctx: JobContext,
        settings: Settings,
        workflows: WorkflowSettings,
        session: AsyncSession,
        definition: WorkflowDefinition,
        steps: list[st.Step],
        instance: WorkflowInstance,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.workflows = workflows
        self.session = session
        self.definition = definition
        self.steps = steps
        self.instance = instance
        self.inline_until = time.monotonic() + workflows.workflow_inline_wait_s

    # ---- events and rows ------------------------------------------------------------------------
    async def publish(self, row: WorkflowStepExecution, status: str, error: str | None = None) -> None:
        await self.ctx.publish(
            EventType.WORKFLOW_STEP,
            workflow_id=self.definition.id,
            instance_id=self.instance.id,
            step=row.step_index,
            step_type=row.step_type,
            attempt=row.attempt,
            status=status,
            error=error,
        )
        if status in ("running", "completed"):  # the job's progress: steps done of the workflow's steps
            done = row.step_index + (status == "completed")
            label = f"step {row.step_index + 1} of {len(self.steps)} ({row.step_name}) {status}"
            await self.ctx.progress(done / len(self.steps), label)

    async def open_attempt(self, index: int, step: st.Step) -> tuple[WorkflowStepExecution, bool]:
        """The step's unfinished attempt (True: left open by an earlier run), or a new one."""
        async with tx(self.session):
            rows = (
                await self.session.execute(
                    select(WorkflowStepExecution)
                    .where(
                        WorkflowStepExecution.instance_id == self.instance.id,
                        WorkflowStepExecution.step_index == index,
                    )
                    .order_by(WorkflowStepExecution.attempt.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if rows is not None and rows.status == "running":
                return rows, True
            row = WorkflowStepExecution(
                instance_id=self.instance.id,
                step_index=index,
                step_name=step.name or f"step-{index}",
                step_type=step.type,
                attempt=(rows.attempt + 1) if rows is not None else 1,
                status="running",
                job_id=self.ctx.job_id,
                started_at=_now(),
            )
            self.session.add(row)
        await self.publish(row, "running")
        return row, False

    # ---- waiting --------------------------------------------------------------------------------
    async def wait_until(self, due: float) -> dict[str, Any] | None:
        """Sleep until ``due`` if this run may still wait inline (None), else schedule a
        continuation job for then and return this run's result."""
        remaining = due - time.time()
        if remaining <= 0:
            return None
        if time.monotonic() + remaining <= self.inline_until:
            await asyncio.sleep(remaining)
            return None
        instance = self.instance
        continuation = RunWorkflow(workflow_id=self.definition.id, instance_id=instance.id)
        job_id = await Producer(self.ctx.redis, self.settings).enqueue(
            WORKFLOW_QUEUE,
            "run-workflow",
            continuation,
            delay=remaining,
            idempotency_key=f"wf-{instance.id}-wake-{instance.wakeups}",
            trace_id=self.ctx.trace_id,
        )
        async with tx(self.session):
            instance.wakeups += 1
        log.info(
            "workflow instance %s waits %.1fs at step %d (continuation %s)",
            instance.id,
            remaining,
            instance.current_step,
            job_id,
        )
        return {
            "instance_id": instance.id,
            "status": "waiting",
            "step": instance.current_step,
            "resume_at": due,
            "continuation": job_id,
        }

    # ---- settling -------------------------------------------------------------------------------
    async def complete_step(self, row: WorkflowStepExecution, output: Any) -> None:
        async with tx(self.session):
            row.status, row.output, row.finished_at = "completed", output, _now()
            self.instance.outputs = [*self.instance.outputs, output]
            self.instance.current_step = row.step_index + 1
            self.instance.step_attempts = 0
            self.instance.resume_at = None
        await self.publish(row, "completed")

    async def fail_attempt(
        self, index: int, step: st.Step, row: WorkflowStepExecution, error: str, for_good: bool
    ) -> None:
        """Settle a failed attempt: schedule the next one (backoff) or fail the instance."""
        instance = self.instance
        failed = instance.step_attempts + 1
        final = for_good or failed >= step.retry.attempts
        async with tx(self.session):
            row.status, row.error_message, row.finished_at = "failed", _clip(error), _now()
            instance.step_attempts = failed
            if final:
                instance.status, instance.finished_at = "failed", _now()
                instance.failed_step, instance.error = index, _clip(error)
            else:
                instance.resume_at = _now() + timedelta(seconds=step.retry.backoff_s(failed))
        await self.publish(row, "failed" if final else "retrying", error=_clip(error))
        if final:
            tried = f"{failed} attempt{'s' if failed != 1 else ''}"
            raise WorkflowFailed(
                f"workflow {self.definition.name!r} (id {self.definition.id}) instance {instance.id} "
                f"failed at {st.label(index, step)} after {tried}: {error}"
            )
        log.warning(
            "workflow instance %s %s attempt %d failed: %s",
            instance.id,
            st.label(index, step),
            row.attempt,
            error,
        )

    async def finish(self, stopped_at: int | None = None) -> dict[str, Any]:
        skipped: list[WorkflowStepExecution] = []
        async with tx(self.session):
            if stopped_at is not None:  # a false condition: the steps after it do not run
                for index in range(stopped_at + 1, len(self.steps)):
                    step = self.steps[index]
                    row = WorkflowStepExecution(
                        instance_id=self.instance.id,
                        step_index=index,
                        step_name=step.name or f"step-{index}",
                        step_type=step.type,
                        attempt=1,
                        status="skipped",
                        job_id=self.ctx.job_id,
                        started_at=_now(),
                        finished_at=_now(),
                    )
                    self.session.add(row)
                    skipped.append(row)
                self.instance.current_step = len(self.steps)
            self.instance.status, self.instance.finished_at = "completed", _now()
        for row in skipped:
            await self.publish(row, "skipped")
        return {
            "instance_id": self.instance.id,
            "status": "completed",
            "steps": len(self.steps),
            "skipped": len(skipped),
            "output": self.instance.outputs[-1] if self.instance.outputs else None,
        }

    # ---- the loop -------------------------------------------------------------------------------
    async def attempt(self, index: int, step: st.Step, row: WorkflowStepExecution) -> st.Outcome:
        if isinstance(step, st.DelayStep):
            return await st.run_delay(step, row)
        outputs = self.instance.outputs[:index]
        if isinstance(step, st.EnqueueStep):
            payload = st.resolve(step.payload, self.instance.input, outputs)
            outcome = await st.run_enqueue(
                step, payload, row, self.ctx.redis, self.settings, self.workflows, self.instance.id
            )
            if isinstance(outcome, st.Waiting) and time.monotonic() + INLINE_POLL_S <= self.inline_until:
                return st.Waiting(time.time() + INLINE_POLL_S)
            return outcome
        if isinstance(step, st.HttpStep):
            return await st.run_http(
                step, st.resolve(step.body, self.instance.input, outputs), self.workflows
            )
        previous = self.instance.outputs[index - 1] if index > 0 else self.instance.input
        return st.run_condition(step, previous)

    async def go(self) -> dict[str, Any]:
        instance = self.instance
        while instance.current_step < len(self.steps):
            if instance.resume_at is not None:
                waiting = await self.wait_until(instance.resume_at.timestamp())
                if waiting is not None:
                    return waiting
            index = instance.current_step
            step = self.steps[index]
            row, reopened = await self.open_attempt(index, step)
            if reopened and isinstance(step, st.HttpStep | st.ConditionStep):
                # Left open by a run that died mid-request (within a run these settle at once):
                # whether it had an effect is unknown, so it counts as a failed attempt.
                await self.fail_attempt(
                    index,
                    step,
                    row,
                    f"interrupted: the run that held attempt {row.attempt} stopped mid-step",
                    for_good=False,
                )
                continue
            async with tx(self.session):
                row.job_id = self.ctx.job_id
            try:
                outcome = await self.attempt(index, step, row)
            except Exception as exc:
                known = isinstance(exc, StepError | StepFailedForGood)
                error = str(exc) if known else f"{type(exc).__name__}: {exc}"
                await self.fail_attempt(index, step, row, error, for_good=isinstance(exc, StepFailedForGood))
                continue
            if isinstance(outcome, st.Waiting):
                async with tx(self.session):
                    pass  # persist what the attempt learnt (child job id, due time)
                waiting = await self.wait_until(outcome.due)
                if waiting is not None:
                    return waiting
                continue
            await self.complete_step(row, outcome.output)
            if isinstance(step, st.ConditionStep) and not outcome.output["result"]:
                return await self.finish(stopped_at=index)
        return await self.finish()


async def run_workflow(ctx: JobContext, payload: RunWorkflow) -> dict[str, Any]:
    settings = get_settings()
    workflows = get_workflow_settings()
    async with sessions(settings.database_url)() as session:
        async with session.begin():
            definition = await session.get(WorkflowDefinition, payload.workflow_id)
            if definition is None:
                raise WorkflowUnavailable(f"workflow {payload.workflow_id} does not exist")
            steps = st.parse_steps(definition.steps, f"workflow {definition.name!r} (id {definition.id})")
            instance = await open_instance(session, ctx, payload)
            if instance.status == "pending" and not definition.enabled:
                raise WorkflowUnavailable(f"workflow {definition.name!r} (id {definition.id}) is disabled")
        async with lease(ctx.redis, instance.id, workflows.workflow_lease_s):
            async with tx(session):
                await session.refresh(instance)  # another run may have moved it on meanwhile
                if instance.status == "completed":
                    return {"instance_id": instance.id, "status": "completed", "already": True}
                if instance.status == "failed":
                    if ctx.envelope.replay_of is None:  # a stray continuation: nothing to do
                        return {"instance_id": instance.id, "status": "failed", "already": True}
                    # A DLQ replay resumes at the failed step with a fresh retry budget.
                    instance.status, instance.finished_at, instance.error = "running", None, None
                    instance.failed_step, instance.step_attempts, instance.resume_at = None, 0, None
                if instance.status == "pending":
                    instance.status, instance.started_at = "running", _now()
            return await Run(ctx, settings, workflows, session, definition, steps, instance).go()
