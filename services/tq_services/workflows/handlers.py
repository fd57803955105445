"""Handlers of the workflows family, registered on the process-wide ``tq.handlers.default_handlers``.

run-workflow runs (or resumes) an instance of a definition (``runner``). trigger-workflow starts
every enabled definition subscribed to the trigger name: it creates a pending instance per
definition, owned by ``trigger:<job id>:<workflow id>`` so a retried trigger creates none twice,
and enqueues a run-workflow job for each (idempotency key per instance).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from tq.handlers import JobContext, default_handlers
from tq.payloads import RunWorkflow, TriggerWorkflow
from tq.producer import Producer
from tq.settings import get_settings

from tq_services.store import sessions
from tq_services.workflows import runner
from tq_services.workflows.models import WorkflowDefinition, WorkflowInstance
from tq_services.workflows.runner import WORKFLOW_QUEUE

log = logging.getLogger("tq.workflows")


@default_handlers.register(WORKFLOW_QUEUE, "run-workflow")
async def run_workflow(ctx: JobContext, payload: RunWorkflow) -> dict[str, Any]:
    return await runner.run_workflow(ctx, payload)


@default_handlers.register(WORKFLOW_QUEUE, "trigger-workflow")
async def trigger_workflow(ctx: JobContext, payload: TriggerWorkflow) -> dict[str, Any]:
    settings = get_settings()
    started: list[tuple[int, int]] = []
    async with sessions(settings.database_url)() as session, session.begin():
        definitions = (
            await session.execute(
                select(WorkflowDefinition)
                .where(WorkflowDefinition.trigger == payload.trigger, WorkflowDefinition.enabled.is_(True))
                .order_by(WorkflowDefinition.id)
            )
        ).scalars()
        for definition in definitions:
            owner = f"trigger:{ctx.job_id}:{definition.id}"
            instance = (
                await session.execute(select(WorkflowInstance).where(WorkflowInstance.job_id == owner))
            ).scalar_one_or_none()
            if instance is None:
                instance = WorkflowInstance(
                    workflow_id=definition.id,
                    status="pending",
                    input=payload.context,
                    outputs=[],
                    job_id=owner,
                    trigger=payload.trigger,
                )
                session.add(instance)
                await session.flush()
            started.append((definition.id, instance.id))
    producer = Producer(ctx.redis, settings)
    runs = []
    for workflow_id, instance_id in started:
        runs.append(
            await producer.enqueue(
                WORKFLOW_QUEUE,
                "run-workflow",
                RunWorkflow(workflow_id=workflow_id, instance_id=instance_id, input=payload.context),
                idempotency_key=f"wf-{instance_id}-start",
                trace_id=ctx.trace_id,
            )
        )
    log.info("trigger %r started %d workflow instance(s)", payload.trigger, len(started))
    return {
        "trigger": payload.trigger,
        "instances": [instance_id for _, instance_id in started],
        "jobs": runs,
    }
