"""Handler of the search family, registered on the process-wide ``tq.handlers.default_handlers``.

index-article with ``action="upsert"`` builds or refreshes the article's search documents (see
``tq_services.search.index``); a missing article dead-letters with the reason. ``action="delete"``
removes them (an article that is already gone is fine: its documents go). Each run logs its
duration and counts.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tq.errors import NonRetryableError
from tq.handlers import JobContext, default_handlers
from tq.payloads import IndexArticle
from tq.settings import get_settings

from tq_services.search import index
from tq_services.store import sessions

log = logging.getLogger("tq.search")

SEARCH_QUEUE = "search:index"


class ArticleNotFound(NonRetryableError):
    """index-article (upsert) names an article that does not exist."""


@default_handlers.register(SEARCH_QUEUE, "index-article")
async def index_article(ctx: JobContext, payload: IndexArticle) -> dict[str, Any]:
    started = time.perf_counter()
    async with sessions(get_settings().database_url)() as session, session.begin():
        if payload.action == "delete":
            removed = await index.remove_article(session, payload.article_id)
            indexed: list[str] = []
        else:
            try:
                result = await index.index_article(session, payload.article_id, ctx.job_id)
            except index.ArticleMissing as exc:
                raise ArticleNotFound(str(exc)) from None
            indexed, removed = result.indexed, result.removed
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info(
        "search: article %s %s: %d documents written (%s), %d removed in %.1f ms",
        payload.article_id,
        payload.action,
        len(indexed),
        ", ".join(indexed) or "-",
        removed,
        elapsed_ms,
    )
    return {
        "article_id": payload.article_id,
        "action": payload.action,
        "indexed": indexed,
        "removed": removed,
        "ms": round(elapsed_ms, 1),
    }
