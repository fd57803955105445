"""Building and removing an article's search documents: one per locale, the article's own and one
per translation (a translation in the article's own locale is left to the article), each with the
article's tags. A refresh updates documents in place, adds new locales and removes documents of
translations that are gone, in one transaction; the full-text index follows by itself (the
PostgreSQL column is generated, SQLite's FTS5 table is kept by triggers)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from tq.models import utcnow

from tq_services.content.models import Article, Translation
from tq_services.search.models import SearchDocument, SearchSource
from tq_services.search.text import plain_text


@dataclass(frozen=True)
class IndexResult:
    indexed: list[str]  # locales written
    removed: int  # documents deleted


class ArticleMissing(LookupError):
    pass


def _tags(values: list[str] | None) -> list[str]:
    return [str(t).strip() for t in values or [] if str(t).strip()]


async def index_article(session: AsyncSession, article_id: int, job_id: str | None = None) -> IndexResult:
    """Build or refresh the documents of ``article_id`` (inside the caller's transaction)."""
    article = await session.get(Article, article_id)
    if article is None:
        raise ArticleMissing(f"article {article_id} does not exist")
    tags = _tags(article.tags)
    wanted: dict[str, dict[str, object]] = {
        article.locale: {
            "source": SearchSource.ARTICLE.value,
            "translation_id": None,
            "title": article.title,
            "body": plain_text(article.body or ""),
        }
    }
    translations = await session.scalars(select(Translation).where(Translation.article_id == article_id))
    for tr in translations:
        wanted.setdefault(
            tr.locale,
            {
                "source": SearchSource.TRANSLATION.value,
                "translation_id": tr.id,
                "title": tr.title,
                "body": plain_text(tr.body or ""),
            },
        )
    existing = {
        doc.locale: doc
        for doc in await session.scalars(
            select(SearchDocument).where(SearchDocument.article_id == article_id)
        )
    }
    removed = 0
    for locale, doc in existing.items():
        if locale not in wanted:
            await session.delete(doc)
            removed += 1
    for locale, fields in wanted.items():
        target = existing.get(locale)
        if target is None:
            target = SearchDocument(article_id=article_id, locale=locale)
            session.add(target)
        for name, value in fields.items():
            setattr(target, name, value)
        target.tags, target.job_id, target.indexed_at = tags, job_id, utcnow()
    await session.flush()
    return IndexResult(indexed=sorted(wanted), removed=removed)


async def remove_article(session: AsyncSession, article_id: int) -> int:
    """Delete every document of ``article_id``; how many there were (0 is fine: already gone)."""
    result = await session.execute(delete(SearchDocument).where(SearchDocument.article_id == article_id))
    return int(getattr(result, "rowcount", 0) or 0)
