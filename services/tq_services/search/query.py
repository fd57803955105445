"""Ranked full-text search over the search documents.

The query is split into words, all of which must match (no operators: user input never reaches
the FTS syntax). Ranking weighs a match in the title, the tags and the body by
``search_weight_title``/``_tags``/``_body``: SQLite ranks with FTS5's bm25, PostgreSQL with
ts_rank over the generated ``search_vector`` (title A, tags B, body C). Both tokenize without
stemming, so the two back ends find the same documents.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tq_services.search.settings import SearchSettings, get_search_settings

_WORD = re.compile(r"\w+", re.UNICODE)

_SQLITE = """
SELECT d.article_id, d.locale, d.title, d.source,
       snippet(search_document_fts, 2, '[', ']', '...', 12) AS snippet,
       -bm25(search_document_fts, :w_title, :w_tags, :w_body) AS score
FROM search_document_fts JOIN search_document AS d ON d.id = search_document_fts.rowid
WHERE search_document_fts MATCH :match {locale}
ORDER BY score DESC, d.id
LIMIT :limit
"""

_POSTGRES = """
SELECT d.article_id, d.locale, d.title, d.source,
       ts_headline('simple', d.body, q, 'StartSel=[, StopSel=], MaxWords=24, MinWords=8') AS snippet,
       ts_rank(CAST(:weights AS real[]), d.search_vector, q) AS score
FROM search_document AS d, plainto_tsquery('simple', :words) AS q
WHERE d.search_vector @@ q {locale}
ORDER BY score DESC, d.id
LIMIT :limit
"""


@dataclass(frozen=True)
class SearchHit:
    article_id: int
    locale: str
    title: str
    source: str
    snippet: str
    score: float  # higher is better; comparable within one result list only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def words(query: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(query)]


async def search(
    session: AsyncSession,
    query: str,
    *,
    locale: str | None = None,
    limit: int = 10,
    settings: SearchSettings | None = None,
) -> list[SearchHit]:
    """The best ``limit`` documents matching every word of ``query`` (in ``locale``, if given)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    terms = words(query)
    if not terms:
        raise ValueError(f"the query {query!r} has no words to search for")
    s = settings or get_search_settings()
    where = "AND d.locale = :locale" if locale else ""
    params: dict[str, Any] = {"limit": limit, **({"locale": locale} if locale else {})}
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        sql = _SQLITE.format(locale=where)
        params |= {
            "match": " ".join(f'"{t}"' for t in terms),
            "w_title": s.search_weight_title,
            "w_tags": s.search_weight_tags,
            "w_body": s.search_weight_body,
        }
    elif dialect == "postgresql":
        sql = _POSTGRES.format(locale=where)
        top = max(s.search_weight_title, s.search_weight_tags, s.search_weight_body)
        # ts_rank takes weights in [0, 1] for the labels D, C, B, A; D is unused
        params |= {
            "words": " ".join(terms),
            "weights": [
                0.0,
                s.search_weight_body / top,
                s.search_weight_tags / top,
                s.search_weight_title / top,
            ],
        }
    else:
        raise ValueError(f"search needs SQLite or PostgreSQL, not {dialect}")
    rows = await session.execute(text(sql), params)
    return [
        SearchHit(
            article_id=int(r.article_id),
            locale=r.locale,
            title=r.title,
            source=r.source,
            snippet=r.snippet or "",
            score=float(r.score),
        )
        for r in rows
    ]
