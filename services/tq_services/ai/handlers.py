"""Handlers of the ai family, registered on the process-wide ``tq.handlers.default_handlers``.

Every job runs the same way (``_run``): check a provider is configured, load the article (a
missing one dead-letters with its id), write an ``AiRun`` and publish ``ai.task`` started; call
the model; keep the conversation (``AiMessage``) and publish model_answered; then, in one
transaction, store the result and mark the run succeeded, and publish done. Any failure marks
the run retrying or failed, writes an ``AiEventLog`` "failed" row (with the raw answer when it
was malformed), publishes ``ai.task`` failed and re-raises for the engine to retry or dead-letter.

What each job stores (nothing overwrites an article's body):

- generate-draft, generate-summary, rewrite-section: an ``AiDraft`` (draft, summary, rewrite);
- translate: an ``AiDraft`` of kind translation in the target locale. It does not upsert the
  ``Translation`` row: that may hold an editor's work, and a draft is accepted by a person;
- enhance-content: a new ``ArticleVersion`` (source ``ai:enhance-content``);
- generate-seo, generate-meta, suggest-keywords: the article's SEO fields and an ``AIReport``;
- review-article: ``AIReport`` + ``ArticleQualityReport`` (local checks, ``checks``), and the
  article's ``review_status``, ``ai_score`` (and ``readability`` / ``seo_score`` when checked).
  ``ai_score`` is the mean of the checked scores (0-100; ai_probability counts as 100*(1-p),
  structure as 100 or 0); 70 and a valid structure approve, 40 needs changes, less rejects.
  Asked only for readability and structure, it calls no model and needs no provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tq.envelope import EventType
from tq.handlers import JobContext, default_handlers
from tq.models import utcnow
from tq.payloads import (
    EnhanceContent,
    GenerateDraft,
    GenerateMeta,
    GenerateSeo,
    GenerateSummary,
    ReviewArticle,
    RewriteSection,
    SuggestKeywords,
    Translate,
)
from tq.settings import Settings, get_settings

from tq_services.ai.answers import (
    KeywordsAnswer,
    MetaAnswer,
    ReviewAnswer,
    SeoAnswer,
    TranslationAnswer,
    parse_answer,
    schema_hint,
)
from tq_services.ai.checks import analyze, words
from tq_services.ai.errors import ArticleNotFound, InvalidRequest, LlmNotConfigured, MalformedAnswer
from tq_services.ai.llm import NOT_CONFIGURED, Completion, Message, complete, model_for
from tq_services.ai.models import AiDraft, AiEventLog, AiMessage, AIReport, AiRun, ArticleQualityReport
from tq_services.ai.settings import get_ai_settings
from tq_services.content.models import Article, ArticleVersion
from tq_services.store import sessions

log = logging.getLogger("tq.ai")

CONTENT_QUEUE = "ai:content"
SEO_QUEUE = "ai:seo"
REVIEW_QUEUE = "ai:review"
ERROR_MAX = 2000
INTERRUPTED = "Interrupted: the worker stopped during the call; the job runs again"
CANCELLED = "Cancelled during the call (tq job cancel): the job ends cancelled and does not run again"
SUMMARY_SLACK = 1.25  # a summary may run this much over max_words before it counts as malformed
APPROVE_FROM, NEEDS_CHANGES_FROM = 70.0, 40.0
MODEL_CHECKS = frozenset({"originality", "seo", "ai_probability"})  # the rest are computed locally

SYSTEM = (
    "You are the writing assistant of a publishing platform. Follow the instructions exactly, "
    "keep facts from the given text, and answer in the language asked for."
)


@dataclass(frozen=True)
class Ask:
    """What to send the model, and whether the job wants a JSON object back."""

    messages: list[Message]
    want_json: bool = False


Build = Callable[[Article], Ask]
Apply = Callable[[AsyncSession, Article, Completion, int], Awaitable[dict[str, Any]]]


def _conversation(user: str, system: str = SYSTEM) -> list[Message]:
    return [Message("system", system), Message("user", user)]


def _json_instructions(answer: type[Any]) -> str:
    return f"Answer with one JSON object only, no prose, matching this JSON Schema: {schema_hint(answer)}"


def _article_text(article: Article) -> str:
    return f"# {article.title}\n\n{article.body}"


def _text_answer(completion: Completion, what: str) -> str:
    text = completion.content.strip()
    if not text:
        raise MalformedAnswer(f"model answered an empty {what}", completion.content)
    return text


def _need_body(article: Article, what: str) -> None:
    if not article.body.strip():
        raise InvalidRequest(f"article {article.id} has no body to {what}")


async def _run(ctx: JobContext, article_id: int, build: Build, apply: Apply, model: str | None = None) -> Any:
    settings = get_settings()
    ai = get_ai_settings()
    if not ai.llm_base_url:
        raise LlmNotConfigured(NOT_CONFIGURED)
    model = model_for(ai, ctx.envelope.name, model)
    async with sessions(settings.database_url)() as session:
        async with session.begin():
            article = await session.get(Article, article_id)
            if article is None:
                raise ArticleNotFound(f"article {article_id} does not exist")
            ask = build(article)
            run = AiRun(
                job_id=ctx.job_id,
                queue=ctx.queue,
                job_name=ctx.envelope.name,
                attempt=ctx.attempt,
                article_id=article_id,
                model=model,
                status="running",
                trace_id=ctx.trace_id,
            )
            session.add(run)
            await session.flush()
            run_id = run.id
            session.add(AiEventLog(run_id=run_id, job_id=ctx.job_id, event="started", model=model))
        await ctx.publish(EventType.AI_TASK, stage="started", article_id=article_id, model=model)
        await ctx.progress(0.1, f"asking {model}")

        started = time.perf_counter()
        completion: Completion | None = None
        try:
            completion = await complete(ai, ask.messages, model, want_json=ask.want_json)
            usage = {
                "model": completion.model,
                "tokens_in": completion.tokens_in,
                "tokens_out": completion.tokens_out,
                "cost": completion.cost,
            }
            async with session.begin():  # the conversation is kept whatever becomes of the answer
                session.add_all(
                    AiMessage(run_id=run_id, role=m.role, content=m.content) for m in ask.messages
                )
                session.add(AiMessage(run_id=run_id, role="assistant", content=completion.content))
                await session.execute(
                    update(AiRun)
                    .where(AiRun.id == run_id)
                    .values(duration_ms=completion.duration_ms, **usage)
                )
                session.add(
                    AiEventLog(
                        run_id=run_id,
                        job_id=ctx.job_id,
                        event="model_answered",
                        duration_ms=completion.duration_ms,
                        **usage,
                    )
                )
            await ctx.publish(EventType.AI_TASK, stage="model_answered", article_id=article_id, **usage)
            await ctx.progress(0.8, f"{completion.model} answered ({completion.tokens_out} tokens): applying")

            async with session.begin():
                article = await session.get(Article, article_id, populate_existing=True)
                if article is None:
                    raise ArticleNotFound(f"article {article_id} was deleted while the model answered")
                result = await apply(session, article, completion, run_id)
                await session.execute(
                    update(AiRun).where(AiRun.id == run_id).values(status="succeeded", finished_at=utcnow())
                )
                session.add(
                    AiEventLog(run_id=run_id, job_id=ctx.job_id, event="done", model=completion.model)
                )
        except asyncio.CancelledError:  # the worker stopped mid-call (grace over): the job runs again;
            # or the job was cancelled (tq.cancel): it does not
            elapsed = time.perf_counter() - started
            await asyncio.shield(_interrupted(settings, run_id, elapsed, cancelled=ctx.cancel_requested))
            raise
        except Exception as exc:
            # a RateLimited job goes back uncharged: never its last attempt
            final = ctx.is_last_failure(exc)
            reason = str(exc)[:ERROR_MAX]
            elapsed = round((time.perf_counter() - started) * 1000, 3)
            async with session.begin():
                await session.execute(
                    update(AiRun)
                    .where(AiRun.id == run_id)
                    .values(
                        status="failed" if final else "retrying",
                        error=f"{type(exc).__name__}: {reason}",
                        finished_at=utcnow(),
                        duration_ms=completion.duration_ms if completion else elapsed,
                    )
                )
                session.add(
                    AiEventLog(
                        run_id=run_id,
                        job_id=ctx.job_id,
                        event="failed",
                        model=completion.model if completion else model,
                        duration_ms=elapsed,
                        message=f"{type(exc).__name__}: {reason}",
                        detail=exc.raw if isinstance(exc, MalformedAnswer) else None,
                    )
                )
            await ctx.publish(
                EventType.AI_TASK, stage="failed", article_id=article_id, model=model, message=reason[:500]
            )
            log.warning(
                "%s for article %s %s (attempt %d): %s",
                ctx.envelope.name,
                article_id,
                "failed" if final else "will retry",
                ctx.attempt,
                reason,
            )
            raise
    await ctx.publish(EventType.AI_TASK, stage="done", article_id=article_id, **usage)
    await ctx.progress(1.0, "done")
    return {"run_id": run_id, **usage, **result}


async def _interrupted(settings: Settings, run_id: int, elapsed_s: float, cancelled: bool) -> None:
    """Record a run cut short by a shutdown (its job stays pending and is run again after reclaim),
    or by a cancel of its job (``failed``: it is not run again)."""
    async with sessions(settings.database_url)() as session, session.begin():
        await session.execute(
            update(AiRun)
            .where(AiRun.id == run_id, AiRun.status == "running")
            .values(
                status="failed" if cancelled else "retrying",
                error=CANCELLED if cancelled else INTERRUPTED,
                finished_at=utcnow(),
                duration_ms=round(elapsed_s * 1000, 3),
            )
        )


def _draft(article: Article, run_id: int, ctx: JobContext, kind: str, content: str, **kw: Any) -> AiDraft:
    return AiDraft(
        article_id=article.id,
        run_id=run_id,
        kind=kind,
        locale=kw.pop("locale", article.locale),
        content=content,
        status="pending",
        job_id=ctx.job_id,
        **kw,
    )


# ---- ai:content ---------------------------------------------------------------------------------
@default_handlers.register(CONTENT_QUEUE, "generate-draft")
async def generate_draft(ctx: JobContext, payload: GenerateDraft) -> Any:
    def build(article: Article) -> Ask:
        return Ask(
            _conversation(
                f"Write a complete article in Markdown, in the language with code {payload.locale!r}. "
                "Start with its title as a '# ' heading and use '## ' section headings. "
                f"Answer with the article only.\n\nWorking title: {article.title}\n\nBrief:\n{payload.prompt}"
            )
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        text = _text_answer(answer, "draft")
        first, _, rest = text.partition("\n")
        title = first.lstrip("#").strip()[:500] if first.startswith("# ") else None
        draft = _draft(
            article, run_id, ctx, "draft", text, locale=payload.locale, title=title or article.title
        )
        session.add(draft)
        await session.flush()
        return {"draft_id": draft.id, "words": len(words(rest if title else text))}

    return await _run(ctx, payload.article_id, build, apply, payload.model)


@default_handlers.register(CONTENT_QUEUE, "generate-summary")
async def generate_summary(ctx: JobContext, payload: GenerateSummary) -> Any:
    def build(article: Article) -> Ask:
        _need_body(article, "summarize")
        return Ask(
            _conversation(
                f"Summarize this article in at most {payload.max_words} words, in the language with code "
                f"{payload.locale!r}. Answer with the summary only.\n\n{_article_text(article)}"
            )
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        text = _text_answer(answer, "summary")
        count = len(words(text))
        if count > payload.max_words * SUMMARY_SLACK:
            raise MalformedAnswer(
                f"summary has {count} words; at most {payload.max_words} were asked for", answer.content
            )
        draft = _draft(article, run_id, ctx, "summary", text, locale=payload.locale)
        session.add(draft)
        await session.flush()
        return {"draft_id": draft.id, "words": count}

    return await _run(ctx, payload.article_id, build, apply)


@default_handlers.register(CONTENT_QUEUE, "translate")
async def translate(ctx: JobContext, payload: Translate) -> Any:
    def build(article: Article) -> Ask:
        _need_body(article, "translate")
        source = payload.source_locale or article.locale
        if source == payload.target_locale:
            raise InvalidRequest(f"article {article.id} is already in {payload.target_locale}")
        return Ask(
            _conversation(
                f"Translate this article from {source!r} to {payload.target_locale!r} (language codes), "
                "keeping its Markdown structure. Put the translated title in 'title' and the translated "
                f"body in 'body'. {_json_instructions(TranslationAnswer)}\n\n"
                f"Title: {article.title}\n\nBody:\n{article.body}"
            ),
            want_json=True,
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        parsed = parse_answer(answer.content, TranslationAnswer)
        draft = _draft(
            article, run_id, ctx, "translation", parsed.body, locale=payload.target_locale, title=parsed.title
        )
        session.add(draft)
        await session.flush()
        return {"draft_id": draft.id, "locale": payload.target_locale}

    return await _run(ctx, payload.article_id, build, apply)


@default_handlers.register(CONTENT_QUEUE, "enhance-content")
async def enhance_content(ctx: JobContext, payload: EnhanceContent) -> Any:
    def build(article: Article) -> Ask:
        _need_body(article, "enhance")
        tone = f" Use a {payload.tone} tone." if payload.tone else ""
        return Ask(
            _conversation(
                f"Improve this article following the instructions.{tone} Keep its language and Markdown "
                "structure. Answer with the improved body only, without the title.\n\n"
                f"Instructions: {payload.instructions}\n\n{_article_text(article)}"
            )
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        text = _text_answer(answer, "article body")
        latest = await session.scalar(
            select(func.max(ArticleVersion.version)).where(ArticleVersion.article_id == article.id)
        )
        version = ArticleVersion(
            article_id=article.id,
            version=(latest or 0) + 1,
            title=article.title,
            body=text,
            source="ai:enhance-content",
            job_id=ctx.job_id,
        )
        session.add(version)
        await session.flush()
        return {"article_version_id": version.id, "version": version.version}

    return await _run(ctx, payload.article_id, build, apply)


@default_handlers.register(CONTENT_QUEUE, "rewrite-section")
async def rewrite_section(ctx: JobContext, payload: RewriteSection) -> Any:
    def build(article: Article) -> Ask:
        if payload.section not in article.body:
            raise InvalidRequest(f"the section to rewrite is not in the body of article {article.id}")
        return Ask(
            _conversation(
                "Rewrite the section below following the instructions, in the same language and Markdown. "
                "Answer with the rewritten section only.\n\n"
                f"Instructions: {payload.instructions}\n\nArticle title: {article.title}\n\n"
                f"Section:\n{payload.section}"
            )
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        text = _text_answer(answer, "section")
        draft = _draft(article, run_id, ctx, "rewrite", text, source_text=payload.section)
        session.add(draft)
        await session.flush()
        return {"draft_id": draft.id}

    return await _run(ctx, payload.article_id, build, apply)


# ---- ai:seo -------------------------------------------------------------------------------------
def _report(article: Article, run_id: int, ctx: JobContext, kind: str, data: Any, **scores: Any) -> AIReport:
    return AIReport(article_id=article.id, run_id=run_id, kind=kind, data=data, job_id=ctx.job_id, **scores)


def _unique(phrases: list[str], limit: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for phrase in phrases:
        if phrase.casefold() not in seen:
            seen.add(phrase.casefold())
            out.append(phrase)
    return out[:limit]


@default_handlers.register(SEO_QUEUE, "generate-seo")
async def generate_seo(ctx: JobContext, payload: GenerateSeo) -> Any:
    def build(article: Article) -> Ask:
        return Ask(
            _conversation(
                f"Write the SEO fields of this article in the language with code {payload.locale!r}: "
                "a meta title of at most 60 characters, a meta description of at most 160, the main "
                "keyword, up to 10 keywords, and seo_score, how well the article is optimized (0-100). "
                f"{_json_instructions(SeoAnswer)}\n\n{_article_text(article)}"
            ),
            want_json=True,
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        parsed = parse_answer(answer.content, SeoAnswer)
        article.meta_title = parsed.meta_title
        article.meta_description = parsed.meta_description
        article.main_keyword = parsed.main_keyword
        article.keywords = _unique(parsed.keywords, 50)
        article.seo_score = parsed.seo_score
        report = _report(article, run_id, ctx, "seo", parsed.model_dump(), seo_score=parsed.seo_score)
        session.add(report)
        await session.flush()
        return {"report_id": report.id, "seo_score": parsed.seo_score}

    return await _run(ctx, payload.article_id, build, apply)


@default_handlers.register(SEO_QUEUE, "generate-meta")
async def generate_meta(ctx: JobContext, payload: GenerateMeta) -> Any:
    def build(article: Article) -> Ask:
        return Ask(
            _conversation(
                f"Write a meta title of at most {payload.max_title_chars} characters and a meta "
                f"description of at most {payload.max_description_chars} characters for this article, "
                f"in its language. {_json_instructions(MetaAnswer)}\n\n{_article_text(article)}"
            ),
            want_json=True,
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        parsed = parse_answer(answer.content, MetaAnswer)
        for name, value, limit in (
            ("meta_title", parsed.meta_title, payload.max_title_chars),
            ("meta_description", parsed.meta_description, payload.max_description_chars),
        ):
            if len(value) > limit:
                raise MalformedAnswer(
                    f"{name} has {len(value)} characters; the limit is {limit}", answer.content
                )
        article.meta_title = parsed.meta_title
        article.meta_description = parsed.meta_description
        report = _report(article, run_id, ctx, "meta", parsed.model_dump())
        session.add(report)
        await session.flush()
        return {"report_id": report.id}

    return await _run(ctx, payload.article_id, build, apply)


@default_handlers.register(SEO_QUEUE, "suggest-keywords")
async def suggest_keywords(ctx: JobContext, payload: SuggestKeywords) -> Any:
    def build(article: Article) -> Ask:
        return Ask(
            _conversation(
                f"Suggest the main keyword and up to {payload.count} search keywords for this article, in "
                f"its language, best first. {_json_instructions(KeywordsAnswer)}\n\n{_article_text(article)}"
            ),
            want_json=True,
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        parsed = parse_answer(answer.content, KeywordsAnswer)
        keywords = _unique(parsed.keywords, payload.count)
        article.main_keyword = parsed.main_keyword
        article.keywords = keywords
        data = {"main_keyword": parsed.main_keyword, "keywords": keywords}
        report = _report(article, run_id, ctx, "keywords", data)
        session.add(report)
        await session.flush()
        return {"report_id": report.id, "keywords": len(keywords)}

    return await _run(ctx, payload.article_id, build, apply)


# ---- ai:review ----------------------------------------------------------------------------------
def review_status(score: float, structure_ok: bool) -> str:
    if score >= APPROVE_FROM and structure_ok:
        return "approved"
    return "needs_changes" if score >= NEEDS_CHANGES_FROM else "rejected"


def _review(
    session: AsyncSession,
    ctx: JobContext,
    article: Article,
    checks: set[str],
    parsed: ReviewAnswer | None,
    run_id: int | None,
) -> tuple[AIReport, ArticleQualityReport, str, float]:
    """Score the article from the model's answer (None: local checks only) and ``checks``; update
    it and add its two reports to ``session``."""
    quality = analyze(article.body, article.main_keyword)
    # only what was asked for is scored and stored; the model answers all three regardless
    originality = parsed.originality_score if parsed and "originality" in checks else None
    seo = parsed.seo_score if parsed and "seo" in checks else None
    ai_probability = parsed.ai_probability if parsed and "ai_probability" in checks else None
    structure_ok = quality.structure_valid if "structure" in checks else True
    parts = [p for p in (originality, seo) if p is not None]
    if ai_probability is not None:
        parts.append((1 - ai_probability) * 100)
    if "readability" in checks:
        parts.append(quality.readability)
    if "structure" in checks:
        parts.append(100.0 if quality.structure_valid else 0.0)
    score = round(sum(parts) / len(parts), 1)
    status = review_status(score, structure_ok)

    article.review_status = status
    article.ai_score = score
    if "readability" in checks:
        article.readability = quality.readability
    if seo is not None:
        article.seo_score = seo
    model_issues = [str(i) for i in parsed.issues] if parsed else []
    report = AIReport(
        article_id=article.id,
        run_id=run_id,
        kind="review",
        data={
            "checks": sorted(checks),
            "summary": parsed.summary if parsed else None,
            "issues": model_issues,
            "score": score,
        },
        job_id=ctx.job_id,
        originality_score=originality,
        seo_score=seo,
        structure_valid=quality.structure_valid if "structure" in checks else None,
        ai_probability=ai_probability,
    )
    quality_report = ArticleQualityReport(
        article_id=article.id,
        run_id=run_id,
        word_count=quality.word_count,
        sentence_count=quality.sentence_count,
        avg_sentence_words=quality.avg_sentence_words,
        long_sentence_ratio=quality.long_sentence_ratio,
        heading_count=quality.heading_count,
        structure_valid=quality.structure_valid,
        keyword=quality.keyword,
        keyword_density=quality.keyword_density,
        readability=quality.readability,
        score=score,
        issues=quality.issues + model_issues,
        job_id=ctx.job_id,
    )
    session.add_all([report, quality_report])
    log.info("article %s reviewed: %s (%.1f) %s", article.id, status, score, json.dumps(quality.issues))
    return report, quality_report, status, score


async def _review_locally(ctx: JobContext, article_id: int, checks: set[str]) -> dict[str, Any]:
    """Readability and structure need no model (nor a provider): no AiRun, the same reports."""
    await ctx.publish(EventType.AI_TASK, stage="started", article_id=article_id)
    await ctx.progress(0.1, "reviewing locally (no model)")
    async with sessions(get_settings().database_url)() as session, session.begin():
        article = await session.get(Article, article_id)
        if article is None:
            raise ArticleNotFound(f"article {article_id} does not exist")
        _need_body(article, "review")
        report, quality_report, status, score = _review(session, ctx, article, checks, None, None)
        await session.flush()
        result = {
            "report_id": report.id,
            "quality_report_id": quality_report.id,
            "review_status": status,
            "score": score,
        }
    await ctx.publish(EventType.AI_TASK, stage="done", article_id=article_id)
    await ctx.progress(1.0, "done")
    return result


@default_handlers.register(REVIEW_QUEUE, "review-article")
async def review_article(ctx: JobContext, payload: ReviewArticle) -> Any:
    checks: set[str] = set(payload.checks)
    if not checks & MODEL_CHECKS:
        return await _review_locally(ctx, payload.article_id, checks)

    def build(article: Article) -> Ask:
        _need_body(article, "review")
        return Ask(
            _conversation(
                "Review this article as an editor. originality_score: how original it is (0-100); "
                "seo_score: how well it is optimized for search (0-100); ai_probability: how likely it "
                "was written by a language model (0-1); summary: your verdict in one sentence; issues: "
                f"what to fix. {_json_instructions(ReviewAnswer)}\n\n{_article_text(article)}"
            ),
            want_json=True,
        )

    async def apply(
        session: AsyncSession, article: Article, answer: Completion, run_id: int
    ) -> dict[str, Any]:
        parsed = parse_answer(answer.content, ReviewAnswer)
        report, quality_report, status, score = _review(session, ctx, article, checks, parsed, run_id)
        await session.flush()
        return {
            "report_id": report.id,
            "quality_report_id": quality_report.id,
            "review_status": status,
            "score": score,
        }

    return await _run(ctx, payload.article_id, build, apply)
