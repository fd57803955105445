"""The search family through the real engine (the suite's Redis; SQLite and PostgreSQL).

index-article builds one search document per locale (the article's and each translation's) with
the body's markup stripped; the full-text index (FTS5 on SQLite, a generated tsvector with a GIN
index on PostgreSQL) ranks a title match above a tag match above a body match; a refresh follows
edits and removed translations; action delete removes the documents; a missing article
dead-letters with the reason; ``tq search`` prints the same ranking.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tq_services.search.handlers  # noqa: F401  (registers the handler)
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, running, settled_job
from support.settings import clear_settings_caches
from tq import dlq, jobs
from tq.db import make_sessionmaker
from tq.envelope import JobState
from tq.handlers import default_handlers
from tq.producer import Producer
from tq.settings import Settings
from tq_services import load_handlers
from tq_services.content.models import Article, Translation
from tq_services.search.models import SearchDocument
from tq_services.search.query import SearchHit, search, words
from tq_services.search.text import plain_text
from tq_services.store import dispose_engines

SQ = "search:index"


@pytest.fixture
async def env(database_url: str, redis_url: str) -> AsyncIterator[Settings]:
    clear_settings_caches()
    yield fast_settings(redis_url, database_url=database_url)
    clear_settings_caches()
    await dispose_engines()


async def _article(engine: AsyncEngine, **kw: Any) -> int:
    async with make_sessionmaker(engine)() as session, session.begin():
        row = Article(**({"locale": "en", "body": "", "tags": []} | kw))
        session.add(row)
    return row.id


async def _run(client: Any, settings: Settings, *payloads: dict[str, Any]) -> list[jobs.JobRecord]:
    p = Producer(client, settings)
    ids = [await p.enqueue(SQ, "index-article", payload) for payload in payloads]

    async with running(client, settings, default_handlers, SQ):
        return [await settled_job(client, SQ, job_id, timeout=20) for job_id in ids]


async def _docs(engine: AsyncEngine, article_id: int) -> dict[str, SearchDocument]:
    async with make_sessionmaker(engine)() as session:
        rows = await session.scalars(select(SearchDocument).where(SearchDocument.article_id == article_id))
        return {d.locale: d for d in rows}


async def _search(engine: AsyncEngine, query: str, **kw: Any) -> list[SearchHit]:
    async with make_sessionmaker(engine)() as session:
        return await search(session, query, **kw)


# ---- without the engine -------------------------------------------------------------------------
def test_plain_text_strips_markup_scripts_entities_and_markdown() -> None:
    html = (
        "<h1>Queues</h1><p>Streams&nbsp;&amp; <b>groups</b></p><script>var hidden = 1;</script>"
        "<style>p { color: red }</style><p>end</p>"
    )
    assert plain_text(html) == "Queues Streams & groups end"
    assert plain_text("## Title\n\nSome **bold** and [a link](https://example.com) `code`") == (
        "Title Some bold and a link code"
    )
    assert words("Kubernetes-native, QUEUES!") == ["kubernetes", "native", "queues"]


def test_load_handlers_finds_the_search_family() -> None:
    assert "tq_services.search.handlers" in load_handlers(["search"])
    assert (SQ, "index-article") in default_handlers


# ---- through the engine -------------------------------------------------------------------------
async def test_index_article_ranks_title_over_tags_over_body(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, database_url: str
) -> None:
    # created in the reverse of the expected ranking, so the ids (the tie-break) cannot decide it
    in_body = await _article(
        db_engine,
        title="A week of incidents",
        body="<p>Monday the queue stalled; by Friday we moved it to kubernetes.</p>"
        "<script>trackVisitor('zebracorn')</script>",
        tags=["postmortem"],
    )
    in_title = await _article(
        db_engine,
        title="Kubernetes operators explained",
        body="<p>Operators reconcile custom resources until the cluster matches.</p>",
        tags=["operators", "platform"],
    )
    in_tags = await _article(
        db_engine,
        title="Running queues in production",
        body="<p>Alerts, dashboards and backups for a production queue.</p>",
        tags=["kubernetes", "operations"],
    )
    unrelated = [
        await _article(db_engine, title=f"Baking bread {n}", body="Flour, water, salt.", tags=["food"])
        for n in range(4)
    ]
    async with make_sessionmaker(db_engine)() as session, session.begin():
        session.add(
            Translation(
                article_id=in_title,
                locale="de",
                title="Kubernetes-Operatoren erklärt",
                body="<p>Operatoren gleichen Ressourcen ab.</p>",
            )
        )
    records = await _run(
        redis_client, env, *({"article_id": a} for a in (in_title, in_tags, in_body, *unrelated))
    )
    assert [r.state for r in records] == [JobState.COMPLETED] * 7, records

    docs = await _docs(db_engine, in_title)
    assert set(docs) == {"en", "de"}
    assert (docs["en"].source, docs["en"].translation_id) == ("article", None)
    assert docs["de"].source == "translation" and docs["de"].translation_id is not None
    assert docs["en"].body == "Operators reconcile custom resources until the cluster matches."
    assert docs["de"].tags == ["operators", "platform"] and docs["de"].job_id == records[0].id
    assert "<" not in (await _docs(db_engine, in_body))["en"].body

    hits = await _search(db_engine, "kubernetes", locale="en")
    assert [h.article_id for h in hits] == [in_title, in_tags, in_body], hits
    assert hits[0].score > hits[1].score > hits[2].score
    assert "[kubernetes]" in hits[2].snippet.lower()
    assert [(h.article_id, h.locale) for h in await _search(db_engine, "kubernetes", locale="de")] == [
        (in_title, "de")
    ]
    assert {(h.article_id, h.locale) for h in await _search(db_engine, "Kubernetes")} >= {
        (in_title, "en"),
        (in_title, "de"),
    }
    assert [h.article_id for h in await _search(db_engine, "production queue")] == [in_tags]
    assert await _search(db_engine, "zebracorn") == []  # script content is not text
    assert len(await _search(db_engine, "kubernetes", limit=2)) == 2
    with pytest.raises(ValueError, match="no words"):
        await _search(db_engine, "  !! ")

    # the CLI, as a user runs it, against the same database
    cli_env = os.environ | {"TQ_DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tq_cli",
        "search",
        "kubernetes",
        "--locale",
        "en",
        "--json",
        env=cli_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errs = await proc.communicate()
    assert proc.returncode == 0, errs.decode()
    assert [h["article_id"] for h in json.loads(out)] == [in_title, in_tags, in_body]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tq_cli", "search", "?!", env=cli_env, stderr=asyncio.subprocess.PIPE
    )
    _, errs = await proc.communicate()
    assert proc.returncode == 2 and "no words" in errs.decode()


async def test_refresh_follows_edits_and_delete_removes_the_documents(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    article_id = await _article(
        db_engine, title="Draft about streams", body="consumer groups", tags=["redis"]
    )
    async with make_sessionmaker(db_engine)() as session, session.begin():
        session.add(Translation(article_id=article_id, locale="fr", title="Flux", body="groupes"))
    [first] = await _run(redis_client, env, {"article_id": article_id})
    assert first.state is JobState.COMPLETED and first.result["indexed"] == ["en", "fr"]
    assert [h.article_id for h in await _search(db_engine, "streams")] == [article_id]
    first_ids = {locale: doc.id for locale, doc in (await _docs(db_engine, article_id)).items()}

    async with make_sessionmaker(db_engine)() as session, session.begin():
        row = await session.get(Article, article_id)
        assert row is not None
        row.title, row.tags = "Published: consumer groups", ["valkey"]
        await session.execute(
            update(Translation).where(Translation.article_id == article_id).values(locale="es")
        )
    [refresh] = await _run(redis_client, env, {"article_id": article_id})
    assert refresh.state is JobState.COMPLETED
    assert (refresh.result["indexed"], refresh.result["removed"]) == (["en", "es"], 1)  # fr went
    docs = await _docs(db_engine, article_id)
    assert set(docs) == {"en", "es"} and docs["en"].title == "Published: consumer groups"
    assert docs["en"].id == first_ids["en"]  # refreshed in place
    async with make_sessionmaker(db_engine)() as session, session.begin():
        await session.execute(delete(Translation).where(Translation.article_id == article_id))
    assert set(await _docs(db_engine, article_id)) == {"en"}  # a translation's document goes with it
    assert await _search(db_engine, "streams") == []  # the old title is out of the index too
    assert await _search(db_engine, "redis") == []
    assert [h.article_id for h in await _search(db_engine, "valkey")] == [article_id]

    [deleted] = await _run(redis_client, env, {"article_id": article_id, "action": "delete"})
    assert deleted.state is JobState.COMPLETED and deleted.result["removed"] == 1
    assert await _docs(db_engine, article_id) == {}
    assert await _search(db_engine, "valkey") == []
    if db_engine.dialect.name == "sqlite":  # the FTS5 rows went with the documents
        async with db_engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM search_document_fts"))).scalar() == 0
    async with make_sessionmaker(db_engine)() as session:
        assert await session.get(Article, article_id) is not None  # only the index entry goes

    [again] = await _run(redis_client, env, {"article_id": article_id, "action": "delete"})
    assert again.state is JobState.COMPLETED and again.result["removed"] == 0  # idempotent


async def test_missing_article_dead_letters_with_the_reason(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    [rec] = await _run(redis_client, env, {"article_id": 424242})
    assert rec.state is JobState.DEAD and rec.attempts == 1, rec
    [letter] = (await dlq.list_dead(redis_client, SQ)).items
    assert letter.job_id == rec.id and letter.error_type == "ArticleNotFound"
    assert letter.error == "article 424242 does not exist"
    async with make_sessionmaker(db_engine)() as session:
        assert list(await session.scalars(select(SearchDocument))) == []


async def test_seed_indexes_unindexed_articles_once(db_engine: AsyncEngine, database_url: str) -> None:
    from tq_services import seed

    first = await _article(db_engine, title="Seeded streams", body="<p>pending entries</p>")
    second = await _article(db_engine, title="Seeded groups", body="consumer groups")
    try:
        assert "search" in await seed(database_url, ["search"])
        ids = {a: {loc: d.id for loc, d in (await _docs(db_engine, a)).items()} for a in (first, second)}
        assert set(ids[first]) == {"en"} and set(ids[second]) == {"en"}
        await seed(database_url, ["search"])  # twice: nothing changes
        assert {a: {loc: d.id for loc, d in (await _docs(db_engine, a)).items()} for a in ids} == ids
        assert [h.article_id for h in await _search(db_engine, "pending")] == [first]
    finally:
        await dispose_engines()
