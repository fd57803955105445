"""Search documents for ``make dev``: every article without one is indexed (the ai family's seed
inserts the demo articles first), so ``tq search`` answers at once. Idempotent: an article that
has documents is left alone."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from tq_services.content.models import Article
from tq_services.search.index import index_article
from tq_services.search.models import SearchDocument


async def seed(session: AsyncSession) -> None:
    unindexed = select(Article.id).where(~exists().where(SearchDocument.article_id == Article.id))
    for article_id in list(await session.scalars(unindexed.order_by(Article.id))):
        await index_article(session, article_id)
