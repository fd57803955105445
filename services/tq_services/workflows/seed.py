"""Demo rows for ``make dev``: one workflow definition, started by the ``article.published`` trigger."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tq_services.workflows.models import WorkflowDefinition

DEMO_NAME = "demo-article-published"
DEMO_STEPS = [
    {
        "type": "enqueue",
        "name": "index",
        "queue": "search:index",
        "job": "index-article",
        "payload": {"article_id": "$input.article_id"},
        "timeout_s": 600,
        "retry": {"attempts": 3, "initial_s": 5, "max_s": 60},
    },
    {"type": "condition", "name": "indexed", "path": "", "op": "truthy", "on_false": "fail"},
    {"type": "delay", "name": "settle", "seconds": 5},
]


async def seed(session: AsyncSession) -> None:
    found = await session.execute(select(WorkflowDefinition.id).where(WorkflowDefinition.name == DEMO_NAME))
    if found.first() is None:
        session.add(
            WorkflowDefinition(
                name=DEMO_NAME,
                description="index a published article, check the indexer answered, then settle",
                trigger="article.published",
                steps=DEMO_STEPS,
            )
        )
