"""The ai family through the real engine: a local OpenAI-compatible server (``llm_server``), the
suite's Redis, SQLite and PostgreSQL.

Each job name runs enqueue -> consume -> rows: AiRun, AiMessage and AiEventLog for every model
call; drafts, versions, SEO fields and reports for the results; ``ai.task`` events on tq:events.
Provider failures steer the job: a 429 with Retry-After pauses the queue uncharged; 429, 500 and
timeouts retry; 400 and 401 dead-letter with the provider's reason; a malformed JSON answer retries
with the raw answer kept; no provider configured and a missing article dead-letter with a clear
reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import tq_services.ai.handlers  # noqa: F401  (registers the handlers)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, running, settled_job, tiny_retry, wait_for
from support.llm_server import LlmServer, Step, fail, llm_server, reply, reply_json
from support.settings import clear_settings_caches
from tq import dlq, jobs, keys
from tq.cancel import cancel_job, wait_settled
from tq.db import make_sessionmaker
from tq.envelope import JobState
from tq.handlers import default_handlers
from tq.producer import Producer
from tq.registry import families, get_queue
from tq.settings import Settings
from tq.worker import Worker
from tq_services import load_handlers
from tq_services import seed as seed_families
from tq_services.ai.answers import SeoAnswer, parse_answer
from tq_services.ai.checks import analyze, keyword_density
from tq_services.ai.errors import MalformedAnswer
from tq_services.ai.handlers import CANCELLED, INTERRUPTED
from tq_services.ai.models import AiDraft, AiEventLog, AiMessage, AIReport, AiRun, ArticleQualityReport
from tq_services.content.models import Article, ArticleVersion, Translation
from tq_services.store import dispose_engines

CQ, SQ, RQ = "ai:content", "ai:seo", "ai:review"
KEY = "sk-test-key"
MODEL = "test/model-small"
BODY = (
    "## Queues\n\nA queue decouples requests from slow work. Workers pick jobs up and retry failures.\n\n"
    "## Streams\n\nRedis Streams keep entries until they are acknowledged. A queue survives restarts."
)
SEO = {
    "meta_title": "Queues and Redis Streams",
    "meta_description": "How a queue decouples slow work, and why Redis Streams keep it safe.",
    "main_keyword": "queue",
    "keywords": ["queue", "Redis Streams", "Queue", "workers"],
    "seo_score": 72,
}
REVIEW = {
    "originality_score": 80,
    "seo_score": 60,
    "ai_probability": 0.1,
    "summary": "Short and clear.",
    "issues": ["add an example"],
}


@pytest.fixture
def llm() -> Iterator[LlmServer]:
    with llm_server() as server:
        yield server


@pytest.fixture
async def env(
    database_url: str, redis_url: str, llm: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Settings]:
    values = {
        "TQ_LLM_BASE_URL": llm.base_url,
        "TQ_LLM_API_KEY": KEY,
        "TQ_LLM_MODEL": MODEL,
        "TQ_LLM_MODELS": json.dumps({"review-article": "test/model-large"}),
        "TQ_LLM_TIMEOUT_S": "0.6",
        "TQ_LLM_PRICES": json.dumps({MODEL: {"input": 1.0, "output": 4.0}}),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    clear_settings_caches()
    yield fast_settings(redis_url, queues={q: tiny_retry(attempts=3) for q in (CQ, SQ, RQ)})
    clear_settings_caches()
    await dispose_engines()


async def _article(engine: AsyncEngine, **kw: Any) -> int:
    row: dict[str, Any] = {"title": "Background jobs", "body": BODY, "locale": "en"} | kw
    async with make_sessionmaker(engine)() as session, session.begin():
        article = Article(**row)
        session.add(article)
    return article.id


async def _get(engine: AsyncEngine, article_id: int) -> Article:
    async with make_sessionmaker(engine)() as session:
        article = await session.get(Article, article_id)
        assert article is not None
        return article


async def _rows(engine: AsyncEngine, model: Any, *where: Any) -> list[Any]:
    async with make_sessionmaker(engine)() as session:
        return list((await session.execute(select(model).where(*where).order_by(model.id))).scalars())


async def _settled(client: Any, queue: str, job_id: str) -> jobs.JobRecord:
    return await settled_job(client, queue, job_id)


async def _run_job(
    client: Any, settings: Settings, queue: str, job: str, payload: dict[str, Any]
) -> jobs.JobRecord:
    async with running(client, settings, default_handlers, queue):
        job_id = await Producer(client, settings).enqueue(queue, job, payload, trace_id="trace-ai")
        return await _settled(client, queue, job_id)


@asynccontextmanager
async def ai_events(client: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """Collects the ``ai.task`` events published on tq:events while open."""
    seen: list[dict[str, Any]] = []
    pubsub = client.pubsub()
    await pubsub.subscribe(keys.EVENTS_CHANNEL)

    async def pump() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                event = json.loads(message["data"])
                if event["type"] == "ai.task":
                    seen.append(event)

    task = asyncio.create_task(pump())
    try:
        yield seen
        await asyncio.sleep(0.2)  # the last events are in flight
    finally:
        task.cancel()
        await pubsub.unsubscribe()
        await pubsub.aclose()


def _dead_letter(letters: Any, job_id: str) -> Any:
    return {letter.job_id: letter for letter in letters.items}[job_id]


# ---- without the engine -------------------------------------------------------------------------
def test_load_handlers_registers_every_ai_job() -> None:
    assert load_handlers(["ai"]) == ["tq_services.ai.handlers"]
    specs = families()["ai"]
    assert {s.name for s in specs} == {CQ, SQ, RQ}
    for spec in specs:
        for job in spec.jobs:
            assert (spec.name, job) in default_handlers, (spec.name, job)


def test_local_checks_in_english_and_persian() -> None:
    long_sentence = " ".join(["word"] * 40) + "."
    flat = " ".join(["Short sentence here."] * 40) + " " + long_sentence
    q = analyze(flat, keyword="sentence")
    assert q.heading_count == 0 and not q.structure_valid
    assert "no headings in 160 words" in q.issues
    assert q.sentence_count == 41 and q.long_sentence_ratio == round(1 / 41, 3)
    assert q.keyword_density == pytest.approx(40 * 100 / 160, abs=0.01)
    assert any("above 3%" in issue for issue in q.issues)

    good = analyze(BODY)
    assert good.structure_valid and good.heading_count == 2 and good.issues == []
    assert good.readability == 100.0 and good.avg_sentence_words < 15
    assert analyze("# A\n\n#### D\n\ntext.").issues == ["heading level jumps from h1 to h4"]
    assert analyze(long_sentence * 3).readability < 50

    fa = "## صف\n\nصف کارها را جدا می‌کند. کارگر کار را انجام می‌دهد؟ بله."
    q_fa = analyze(fa, keyword="صف")
    assert q_fa.sentence_count == 3 and q_fa.heading_count == 1 and q_fa.structure_valid
    assert keyword_density("Redis streams, redis STREAMS!", "redis streams") == 100.0


def test_parse_answer_takes_fenced_json_and_rejects_the_rest() -> None:
    fenced = "Here you are:\n```json\n" + json.dumps(SEO) + "\n```"
    assert parse_answer(fenced, SeoAnswer).seo_score == 72
    with pytest.raises(MalformedAnswer, match="not JSON") as bad:
        parse_answer("I cannot help with that.", SeoAnswer)
    assert bad.value.raw == "I cannot help with that."
    with pytest.raises(MalformedAnswer, match=r"SeoAnswer: seo_score: .*less than or equal to 100"):
        parse_answer(json.dumps(SEO | {"seo_score": 250}), SeoAnswer)


async def test_seed_is_idempotent(database_url: str, db_engine: AsyncEngine) -> None:
    assert await seed_families(database_url, ["ai"]) == ["ai"]
    await seed_families(database_url, ["ai"])
    rows = await _rows(db_engine, Article)
    assert len(rows) == 4 and {r.locale for r in rows} == {"en", "fa"}
    assert all(r.body and r.title for r in rows)
    await dispose_engines()


# ---- ai:content ---------------------------------------------------------------------------------
async def test_generate_draft_records_the_run_and_stores_a_draft(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    llm.script(reply("# Queues, explained\n\nA queue holds work.", tokens_in=1200, tokens_out=300))
    async with ai_events(redis_client) as events:
        rec = await _run_job(
            redis_client, env, CQ, "generate-draft", {"article_id": article_id, "prompt": "explain queues"}
        )
    assert rec.state is JobState.COMPLETED and rec.attempts == 1, rec

    [request] = llm.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == MODEL and "response_format" not in request.body
    assert [m["role"] for m in request.body["messages"]] == ["system", "user"]
    assert "explain queues" in request.body["messages"][1]["content"]

    [run] = await _rows(db_engine, AiRun, AiRun.job_id == rec.id)
    assert (run.job_name, run.queue, run.attempt, run.article_id, run.model, run.status) == (
        "generate-draft",
        CQ,
        1,
        article_id,
        MODEL,
        "succeeded",
    )
    assert (run.tokens_in, run.tokens_out, run.error, run.trace_id) == (1200, 300, None, "trace-ai")
    assert run.cost == pytest.approx((1200 * 1.0 + 300 * 4.0) / 1e6)
    assert run.duration_ms is not None and run.duration_ms > 0 and run.finished_at is not None
    messages = await _rows(db_engine, AiMessage, AiMessage.run_id == run.id)
    assert [m.role for m in messages] == ["system", "user", "assistant"]
    assert messages[2].content == "# Queues, explained\n\nA queue holds work."
    trace = await _rows(db_engine, AiEventLog, AiEventLog.run_id == run.id)
    assert [e.event for e in trace] == ["started", "model_answered", "done"]
    assert (trace[1].tokens_in, trace[1].tokens_out, trace[1].cost) == (1200, 300, run.cost)

    [draft] = await _rows(db_engine, AiDraft, AiDraft.article_id == article_id)
    assert (draft.kind, draft.status, draft.title, draft.locale, draft.run_id, draft.job_id) == (
        "draft",
        "pending",
        "Queues, explained",
        "en",
        run.id,
        rec.id,
    )
    assert rec.result["draft_id"] == draft.id and rec.result["tokens_out"] == 300
    assert (rec.progress, rec.progress_message) == (1.0, "done")  # ctx.progress per LLM stage
    assert (await _get(db_engine, article_id)).body == BODY  # never overwritten

    assert [e["data"]["stage"] for e in events] == ["started", "model_answered", "done"]
    assert all(e["job_id"] == rec.id and e["data"]["article_id"] == article_id for e in events)
    assert events[1]["data"]["tokens_in"] == 1200 and events[1]["data"]["model"] == MODEL


async def test_summary_translate_rewrite_and_enhance(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    section = "A queue decouples requests from slow work."
    llm.script(
        reply("Queues decouple slow work; streams keep it safe."),
        reply_json({"title": "کارهای پس‌زمینه", "body": "## صف\n\nصف کار را جدا می‌کند."}),
        reply("Queues let a request return at once."),
        reply("## Queues\n\nBetter body one."),
        reply("## Queues\n\nBetter body two."),
    )
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, CQ):
        recs = []
        for job, payload in (
            ("generate-summary", {"article_id": article_id, "max_words": 20}),
            ("translate", {"article_id": article_id, "target_locale": "fa"}),
            ("rewrite-section", {"article_id": article_id, "section": section, "instructions": "simpler"}),
            ("enhance-content", {"article_id": article_id, "instructions": "tighten", "tone": "friendly"}),
            ("enhance-content", {"article_id": article_id, "instructions": "again"}),
        ):
            recs.append(await _settled(redis_client, CQ, await p.enqueue(CQ, job, payload)))
    assert [r.state for r in recs] == [JobState.COMPLETED] * 5, recs

    assert llm.requests[1].body["response_format"] == {"type": "json_object"}
    assert "friendly" in llm.requests[3].body["messages"][1]["content"]
    drafts = await _rows(db_engine, AiDraft, AiDraft.article_id == article_id)
    assert [(d.kind, d.locale, d.title) for d in drafts] == [
        ("summary", "en", None),
        ("translation", "fa", "کارهای پس‌زمینه"),
        ("rewrite", "en", None),
    ]
    assert drafts[0].content == "Queues decouple slow work; streams keep it safe."
    assert drafts[1].content == "## صف\n\nصف کار را جدا می‌کند."
    assert (drafts[2].source_text, drafts[2].content) == (section, "Queues let a request return at once.")
    assert await _rows(db_engine, Translation) == []  # a translation stays a draft until accepted

    versions = await _rows(db_engine, ArticleVersion, ArticleVersion.article_id == article_id)
    assert [(v.version, v.source, v.body, v.job_id) for v in versions] == [
        (1, "ai:enhance-content", "## Queues\n\nBetter body one.", recs[3].id),
        (2, "ai:enhance-content", "## Queues\n\nBetter body two.", recs[4].id),
    ]
    assert recs[4].result["version"] == 2
    assert (await _get(db_engine, article_id)).body == BODY
    runs = await _rows(db_engine, AiRun, AiRun.article_id == article_id)
    assert [r.job_name for r in runs] == [
        "generate-summary",
        "translate",
        "rewrite-section",
        "enhance-content",
        "enhance-content",
    ]
    assert {r.status for r in runs} == {"succeeded"}


async def test_bad_requests_dead_letter_without_calling_the_model(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    empty_id = await _article(db_engine, title="Empty", body="")
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, CQ):
        missing = await p.enqueue(CQ, "generate-draft", {"article_id": 987654, "prompt": "x"})
        not_there = await p.enqueue(
            CQ, "rewrite-section", {"article_id": article_id, "section": "not in it", "instructions": "x"}
        )
        same = await p.enqueue(CQ, "translate", {"article_id": article_id, "target_locale": "en"})
        empty = await p.enqueue(CQ, "generate-summary", {"article_id": empty_id})
        recs = [await _settled(redis_client, CQ, j) for j in (missing, not_there, same, empty)]
    assert [(r.state, r.attempts) for r in recs] == [(JobState.DEAD, 1)] * 4
    letters = await dlq.list_dead(redis_client, CQ)
    assert _dead_letter(letters, missing).error_type == "ArticleNotFound"
    assert _dead_letter(letters, missing).error == "article 987654 does not exist"
    assert _dead_letter(letters, not_there).error == (
        f"the section to rewrite is not in the body of article {article_id}"
    )
    assert _dead_letter(letters, same).error == f"article {article_id} is already in en"
    assert _dead_letter(letters, empty).error == f"article {empty_id} has no body to summarize"
    assert llm.requests == [] and await _rows(db_engine, AiRun) == []


async def test_no_provider_configured_dead_letters_with_that_reason(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TQ_LLM_BASE_URL")
    clear_settings_caches()
    article_id = await _article(db_engine)
    rec = await _run_job(redis_client, env, SQ, "generate-seo", {"article_id": article_id})
    assert rec.state is JobState.DEAD and rec.attempts == 1, rec
    letter = _dead_letter(await dlq.list_dead(redis_client, SQ), rec.id)
    assert letter.error_type == "LlmNotConfigured"
    assert letter.error.startswith("no LLM provider configured: set TQ_LLM_BASE_URL")
    assert llm.requests == [] and await _rows(db_engine, AiRun) == []


# ---- provider failures --------------------------------------------------------------------------
async def test_429_and_500_are_retried_then_succeed(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    llm.script(fail(429, "Rate limit exceeded"), fail(500, "upstream exploded"), reply("Hi"))
    rec = await _run_job(redis_client, env, CQ, "generate-summary", {"article_id": article_id})
    assert rec.state is JobState.COMPLETED and rec.attempts == 3, rec
    assert [f["type"] for f in rec.failures] == ["LlmUnavailable", "LlmUnavailable"]
    assert int(await redis_client.hget(keys.counters(CQ), "retried") or 0) == 2

    runs = await _rows(db_engine, AiRun, AiRun.job_id == rec.id)
    assert [(r.attempt, r.status) for r in runs] == [(1, "retrying"), (2, "retrying"), (3, "succeeded")]
    assert (
        runs[0].error == f"LlmUnavailable: LLM provider answered 429 for model {MODEL}: Rate limit exceeded"
    )
    assert runs[1].error == f"LlmUnavailable: LLM provider answered 500 for model {MODEL}: upstream exploded"
    failed = await _rows(db_engine, AiEventLog, AiEventLog.job_id == rec.id, AiEventLog.event == "failed")
    assert len(failed) == 2 and failed[0].message == runs[0].error
    assert len(await _rows(db_engine, AiDraft, AiDraft.article_id == article_id)) == 1


async def test_retry_after_is_honoured(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    """A 503 with Retry-After retries this job after that long, charged."""
    article_id = await _article(db_engine)
    settings = fast_settings(env.redis_url, queues={CQ: tiny_retry(attempts=2, max_s=2.0)})
    llm.script(fail(503, "overloaded", retry_after="0.5"), reply("Hi"))
    rec = await _run_job(redis_client, settings, CQ, "generate-summary", {"article_id": article_id})
    assert rec.state is JobState.COMPLETED and rec.attempts == 2, rec
    runs = await _rows(db_engine, AiRun, AiRun.job_id == rec.id)
    assert runs[0].finished_at is not None
    gap = (runs[1].created_at - runs[0].finished_at).total_seconds()
    assert gap >= 0.45, gap  # the queue's own backoff would be 10 ms


async def test_a_429_with_retry_after_pauses_the_queue_without_charging(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    """A 429 with Retry-After means the provider's quota is spent: ``LlmRateLimited``
    (``tq.errors.RateLimited``) puts the job back with no attempt charged and pauses the queue's
    intake that long, so another job of the queue does not call the provider meanwhile either."""
    article_id = await _article(db_engine)
    settings = fast_settings(env.redis_url, queues={CQ: tiny_retry(attempts=1, max_s=5.0)})
    llm.script(fail(429, "Rate limit reached", retry_after="1"), reply("Hi"))
    p = Producer(redis_client, settings)
    async with running(redis_client, settings, default_handlers, CQ):
        first = await p.enqueue(CQ, "generate-summary", {"article_id": article_id})
        await wait_for(lambda: _pttl(redis_client, keys.rate_pause(CQ)), timeout=10, what="the queue paused")
        second = await p.enqueue(CQ, "generate-summary", {"article_id": article_id})
        recs = [await _settled(redis_client, CQ, job_id) for job_id in (first, second)]
    for rec in recs:  # attempts=1: a charged 429 would have dead-lettered the first job
        assert rec.state is JobState.COMPLETED and rec.attempts == 1 and not rec.failures, rec
    assert int(await redis_client.hget(keys.counters(CQ), "retried") or 0) == 0
    limited, *after = llm.requests
    assert len(after) == 2 and min(r.at for r in after) - limited.at >= 0.95, "no call during the pause"
    runs = await _rows(db_engine, AiRun, AiRun.job_id == first)
    assert [(r.attempt, r.status) for r in runs] == [(1, "retrying"), (1, "succeeded")]
    assert runs[0].error == f"LlmRateLimited: LLM provider answered 429 for model {MODEL}: Rate limit reached"


async def _pttl(client: Any, key: str) -> bool:
    return int(await client.pttl(key)) > 0


async def test_400_and_401_dead_letter_with_the_providers_reason(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    p = Producer(redis_client, env)
    async with ai_events(redis_client) as events, running(redis_client, env, default_handlers, SQ):
        llm.script(fail(400, "model 'test/model-small' does not support json"))
        bad = await _settled(
            redis_client, SQ, await p.enqueue(SQ, "generate-seo", {"article_id": article_id})
        )
        llm.script(fail(401, "Incorrect API key provided"))
        refused = await _settled(
            redis_client, SQ, await p.enqueue(SQ, "suggest-keywords", {"article_id": article_id})
        )
    for rec in (bad, refused):
        assert rec.state is JobState.DEAD and rec.attempts == 1, rec
    assert len(llm.requests) == 2 and int(await redis_client.hget(keys.counters(SQ), "retried") or 0) == 0
    letters = await dlq.list_dead(redis_client, SQ)
    assert _dead_letter(letters, bad.id).error_type == "LlmRejected"
    assert _dead_letter(letters, bad.id).error == (
        f"LLM provider answered 400 for model {MODEL}: model 'test/model-small' does not support json"
    )
    assert _dead_letter(letters, refused.id).error == (
        f"LLM provider answered 401 for model {MODEL}: Incorrect API key provided"
    )
    runs = await _rows(db_engine, AiRun, AiRun.article_id == article_id)
    assert [r.status for r in runs] == ["failed", "failed"]
    stages = [(e["job_id"], e["data"]["stage"]) for e in events]
    assert stages == [
        (bad.id, "started"),
        (bad.id, "failed"),
        (refused.id, "started"),
        (refused.id, "failed"),
    ]
    assert "Incorrect API key provided" in events[3]["data"]["message"]
    article = await _get(db_engine, article_id)
    assert article.meta_title is None and article.keywords == []


async def test_timeout_and_a_garbled_answer_are_retried(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    garbled = Step(raw_body=b"<html>502 Bad Gateway</html>")  # a 200 that is no chat completion
    llm.script(reply("late", delay_s=1.5), garbled, reply("Queues, briefly."))
    rec = await _run_job(redis_client, env, CQ, "generate-summary", {"article_id": article_id})
    assert rec.state is JobState.COMPLETED and rec.attempts == 3, rec
    assert "LLM provider timed out" in rec.failures[0]["message"]
    assert rec.failures[1]["message"].startswith("LLM provider answered 200 without a chat completion")
    runs = await _rows(db_engine, AiRun, AiRun.job_id == rec.id)
    assert [r.status for r in runs] == ["retrying", "retrying", "succeeded"]
    assert runs[0].duration_ms is not None and 500 <= runs[0].duration_ms < 1500
    [draft] = await _rows(db_engine, AiDraft, AiDraft.article_id == article_id)
    assert draft.content == "Queues, briefly."


async def test_malformed_json_is_retried_and_kept(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    prose = "Sure! The meta title should be about queues."
    llm.script(reply(prose), reply_json(SEO | {"seo_score": "very high"}), reply_json(SEO))
    rec = await _run_job(redis_client, env, SQ, "generate-seo", {"article_id": article_id})
    assert rec.state is JobState.COMPLETED and rec.attempts == 3, rec
    assert [f["type"] for f in rec.failures] == ["MalformedAnswer", "MalformedAnswer"]

    failed = await _rows(db_engine, AiEventLog, AiEventLog.job_id == rec.id, AiEventLog.event == "failed")
    assert [e.detail for e in failed] == [prose, json.dumps(SEO | {"seo_score": "very high"})]
    assert failed[0].message is not None and failed[0].message.startswith(
        "MalformedAnswer: model answer is not JSON"
    )
    assert failed[1].message is not None and "seo_score" in failed[1].message
    assert failed[0].tokens_in is None and failed[0].model == MODEL

    article = await _get(db_engine, article_id)
    assert (article.meta_title, article.main_keyword, article.seo_score) == (SEO["meta_title"], "queue", 72.0)
    assert article.keywords == ["queue", "Redis Streams", "workers"]  # deduplicated, case-insensitively
    [report] = await _rows(db_engine, AIReport, AIReport.article_id == article_id)
    assert (report.kind, report.seo_score, report.data["main_keyword"]) == ("seo", 72.0, "queue")


async def test_always_malformed_dead_letters_after_the_last_attempt(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    llm.script(reply("no json here"))
    rec = await _run_job(redis_client, env, SQ, "generate-meta", {"article_id": article_id})
    assert rec.state is JobState.DEAD and rec.attempts == 3, rec
    assert _dead_letter(await dlq.list_dead(redis_client, SQ), rec.id).error_type == "MalformedAnswer"
    runs = await _rows(db_engine, AiRun, AiRun.job_id == rec.id)
    assert [r.status for r in runs] == ["retrying", "retrying", "failed"]
    assert await _rows(db_engine, AIReport) == []


# ---- ai:seo -------------------------------------------------------------------------------------
async def test_generate_meta_and_suggest_keywords_update_the_article(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    too_long = {"meta_title": "x" * 40, "meta_description": "fine"}
    meta = {"meta_title": "Queues", "meta_description": "Why queues matter."}
    llm.script(
        reply_json(too_long),
        reply_json(meta),
        reply_json({"main_keyword": "queue", "keywords": ["queue", "stream", "worker", "retry"]}),
    )
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, SQ):
        m = await _settled(
            redis_client,
            SQ,
            await p.enqueue(SQ, "generate-meta", {"article_id": article_id, "max_title_chars": 30}),
        )
        k = await _settled(
            redis_client, SQ, await p.enqueue(SQ, "suggest-keywords", {"article_id": article_id, "count": 2})
        )
    assert (m.state, m.attempts) == (JobState.COMPLETED, 2), m
    assert m.failures[0]["message"] == "meta_title has 40 characters; the limit is 30"
    assert (k.state, k.attempts) == (JobState.COMPLETED, 1), k
    article = await _get(db_engine, article_id)
    assert (article.meta_title, article.meta_description) == ("Queues", "Why queues matter.")
    assert (article.main_keyword, article.keywords) == ("queue", ["queue", "stream"])
    reports = await _rows(db_engine, AIReport, AIReport.article_id == article_id)
    assert [(r.kind, r.job_id) for r in reports] == [("meta", m.id), ("keywords", k.id)]
    assert reports[1].data == {"main_keyword": "queue", "keywords": ["queue", "stream"]}


# ---- ai:review ----------------------------------------------------------------------------------
async def test_review_article_writes_reports_and_review_status(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    good_id = await _article(db_engine, main_keyword="queue")
    wall = " ".join(["This sentence goes on and on without any pause at all for the reader"] * 20)
    poor_id = await _article(db_engine, title="Wall", body=wall, main_keyword="queue")
    llm.script(reply_json(REVIEW), reply_json(REVIEW | {"originality_score": 10, "ai_probability": 0.9}))
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, RQ):
        good = await _settled(
            redis_client, RQ, await p.enqueue(RQ, "review-article", {"article_id": good_id})
        )
        poor = await _settled(
            redis_client, RQ, await p.enqueue(RQ, "review-article", {"article_id": poor_id})
        )
    assert good.state is JobState.COMPLETED and poor.state is JobState.COMPLETED, (good, poor)
    assert llm.requests[0].body["model"] == "test/model-large"  # per-job model from TQ_LLM_MODELS

    g, w = await _get(db_engine, good_id), await _get(db_engine, poor_id)
    # good: mean of originality 80, seo 60, (1-0.1)*100, readability 100, structure 100
    assert g.ai_score == pytest.approx(round((80 + 60 + 90 + 100 + 100) / 5, 1))
    assert (g.review_status, g.readability, g.seo_score) == ("approved", 100.0, 60.0)
    assert w.review_status == "rejected" and w.ai_score is not None and w.ai_score < 40
    assert w.body == wall

    [report] = await _rows(db_engine, AIReport, AIReport.article_id == good_id)
    assert (report.kind, report.originality_score, report.seo_score, report.ai_probability) == (
        "review",
        80.0,
        60.0,
        0.1,
    )
    assert report.structure_valid is True and report.data["issues"] == ["add an example"]
    [quality] = await _rows(db_engine, ArticleQualityReport, ArticleQualityReport.article_id == poor_id)
    assert not quality.structure_valid and quality.heading_count == 0 and quality.score == w.ai_score
    assert quality.keyword == "queue" and quality.keyword_density == 0.0
    assert "no headings in 280 words" in quality.issues and "add an example" in quality.issues
    assert quality.avg_sentence_words == 280 and quality.long_sentence_ratio == 1.0
    async with make_sessionmaker(db_engine)() as session:
        count = await session.scalar(select(func.count()).select_from(ArticleQualityReport))
    assert count == 2


async def test_review_scores_only_the_checks_asked_for(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    llm.script(reply_json(REVIEW))
    rec = await _run_job(
        redis_client,
        env,
        RQ,
        "review-article",
        {"article_id": article_id, "checks": ["originality", "structure"]},
    )
    assert rec.state is JobState.COMPLETED, rec
    [report] = await _rows(db_engine, AIReport, AIReport.article_id == article_id)
    assert (report.originality_score, report.seo_score, report.ai_probability) == (80.0, None, None)
    article = await _get(db_engine, article_id)
    assert article.ai_score == 90.0 and article.readability is None and article.seo_score is None


async def test_review_of_local_checks_needs_no_model(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TQ_LLM_BASE_URL")  # no provider at all
    clear_settings_caches()
    article_id = await _article(db_engine)
    async with ai_events(redis_client) as events:
        rec = await _run_job(
            redis_client,
            env,
            RQ,
            "review-article",
            {"article_id": article_id, "checks": ["readability", "structure"]},
        )
    assert rec.state is JobState.COMPLETED and rec.result["review_status"] == "approved", rec
    assert llm.requests == [] and await _rows(db_engine, AiRun) == []
    [report] = await _rows(db_engine, AIReport, AIReport.article_id == article_id)
    assert (report.run_id, report.structure_valid, report.originality_score) == (None, True, None)
    [quality] = await _rows(db_engine, ArticleQualityReport, ArticleQualityReport.article_id == article_id)
    assert (quality.readability, quality.score) == (100.0, 100.0)
    article = await _get(db_engine, article_id)
    assert (article.review_status, article.ai_score, article.readability) == ("approved", 100.0, 100.0)
    assert [e["data"]["stage"] for e in events] == ["started", "done"]


async def test_a_local_server_without_key_json_mode_or_price(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TQ_LLM_API_KEY")  # Ollama, llama.cpp: no key
    monkeypatch.setenv("TQ_LLM_JSON_MODE", "false")
    clear_settings_caches()
    article_id = await _article(db_engine)
    llm.script(reply("Draft."), reply_json({"title": "T", "body": "B"}))
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, CQ):
        recs = []  # one after the other: the script's answers go in order
        for job, payload in (
            ("generate-draft", {"article_id": article_id, "prompt": "p", "model": "llama3.2"}),
            ("translate", {"article_id": article_id, "target_locale": "de"}),
        ):
            recs.append(await _settled(redis_client, CQ, await p.enqueue(CQ, job, payload)))
    assert [r.state for r in recs] == [JobState.COMPLETED] * 2, recs
    assert all("authorization" not in r.headers for r in llm.requests)
    assert [r.body["model"] for r in llm.requests] == ["llama3.2", MODEL]
    assert "response_format" not in llm.requests[1].body
    runs = await _rows(db_engine, AiRun, AiRun.article_id == article_id)
    assert [(r.model, r.cost is None) for r in runs] == [("llama3.2", True), (MODEL, False)]


async def test_a_run_cut_short_by_shutdown_is_recorded_and_its_job_left_for_reclaim(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    article_id = await _article(db_engine)
    llm.script(reply("too late", delay_s=0.5))
    worker = Worker(redis_client, [get_queue(CQ)], default_handlers, env)
    await worker.start()
    job_id = await Producer(redis_client, env).enqueue(CQ, "generate-summary", {"article_id": article_id})

    async def calling() -> bool:
        return [r.status for r in await _rows(db_engine, AiRun, AiRun.job_id == job_id)] == ["running"]

    await wait_for(calling, what="the model call to start")
    await worker.stop(grace_s=0.05)  # the grace ends mid-call: the handler is cancelled
    [run] = await _rows(db_engine, AiRun, AiRun.job_id == job_id)
    assert (run.status, run.error) == ("retrying", INTERRUPTED)
    assert run.finished_at is not None and run.duration_ms is not None
    assert (await redis_client.xpending(keys.stream(CQ), keys.GROUP))["pending"] == 1  # for reclaim
    assert not await _rows(db_engine, AiDraft, AiDraft.article_id == article_id)


async def test_a_run_cut_short_by_a_cancel_is_recorded_failed_and_not_run_again(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, llm: LlmServer
) -> None:
    """Issue 18: tq job cancel during the model call. Unlike the worker's stop, the job ends
    cancelled and its run is recorded failed with the reason (the handler tells them apart)."""
    article_id = await _article(db_engine)
    llm.script(reply("too late", delay_s=2.0))
    job_id = await Producer(redis_client, env).enqueue(CQ, "generate-summary", {"article_id": article_id})
    async with running(redis_client, env, default_handlers, CQ):

        async def calling() -> bool:
            return [r.status for r in await _rows(db_engine, AiRun, AiRun.job_id == job_id)] == ["running"]

        await wait_for(calling, what="the model call to start")
        await cancel_job(redis_client, CQ, job_id, env)
        assert await wait_settled(redis_client, CQ, job_id, 10) is JobState.CANCELLED
    [run] = await _rows(db_engine, AiRun, AiRun.job_id == job_id)
    assert (run.status, run.error) == ("failed", CANCELLED)
    rec = await jobs.get_job(redis_client, CQ, job_id)
    assert rec.state is JobState.CANCELLED and rec.progress == 0.1  # "asking the model" was its last report
    assert not await _rows(db_engine, AiDraft, AiDraft.article_id == article_id)
