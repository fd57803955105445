"""Demo articles for ``make dev`` (English and Persian), for the ai, search and plugins families to
work on. Idempotent: an article is inserted only when none has its title."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tq_services.content.models import Article

ARTICLES: tuple[dict[str, object], ...] = (
    {
        "title": "Getting started with background jobs",
        "locale": "en",
        "status": "draft",
        "tags": ["queues", "redis"],
        "body": (
            "## Why a queue\n\n"
            "Slow work does not belong in a web request. A queue lets the request return at once while "
            "a worker does the work. Retries with backoff absorb flaky providers.\n\n"
            "## Redis Streams\n\n"
            "Streams keep every entry until a consumer acknowledges it. A consumer that dies leaves its "
            "entries pending, and another one claims them."
        ),
    },
    {
        "title": "Writing good article summaries",
        "locale": "en",
        "status": "review",
        "tags": ["writing"],
        "main_keyword": "summary",
        "body": (
            "## The first sentence\n\n"
            "A summary tells the reader what the article says and why it matters. Lead with the main "
            "point. Keep sentences short.\n\n"
            "## What to leave out\n\n"
            "Leave out examples, asides and anything the reader can skip. A good summary is a promise."
        ),
    },
    {
        "title": "صف‌های پیام و کارهای پس‌زمینه",
        "locale": "fa",
        "status": "draft",
        "tags": ["queues"],
        "body": (
            "## چرا صف\n\n"
            "کارهای کند نباید درخواست وب را معطل کنند. صف به درخواست اجازه می‌دهد فوراً پاسخ دهد. "
            "یک کارگر کار را جداگانه انجام می‌دهد.\n\n"
            "## تلاش دوباره\n\n"
            "اگر سرویس بیرونی خطا دهد، کار با فاصله‌ای رو به افزایش دوباره اجرا می‌شود."
        ),
    },
    {
        "title": "راهنمای نوشتن عنوان خوب",
        "locale": "fa",
        "status": "published",
        "tags": ["writing", "seo"],
        "body": (
            "## عنوان کوتاه\n\n"
            "عنوان خوب کوتاه و روشن است. خواننده باید از عنوان بفهمد مقاله درباره چیست.\n\n"
            "## کلمه کلیدی\n\n"
            "کلمه کلیدی اصلی را در ابتدای عنوان بیاورید؟ بله، اگر طبیعی باشد."
        ),
    },
)


async def seed(session: AsyncSession) -> None:
    titles = {str(a["title"]) for a in ARTICLES}
    existing = set(await session.scalars(select(Article.title).where(Article.title.in_(titles))))
    session.add_all(Article(**row) for row in ARTICLES if row["title"] not in existing)
