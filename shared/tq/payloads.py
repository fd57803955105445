"""Payload models, one per job name. Strict: unknown fields, wrong types and empty strings are errors.

The registry (``tq.registry``) maps each queue's job names to these models.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(min_length=1)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")]
Id = Annotated[int, Field(ge=1)]
# Dates travel as ISO strings in JSON and in Python dicts alike, so they parse leniently.
Day = Annotated[date, Field(strict=False)]
Moment = Annotated[datetime, Field(strict=False)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---- ai:content
class GenerateDraft(Payload):
    article_id: Id
    prompt: Text
    locale: Locale = "en"
    model: Name | None = None


class GenerateSummary(Payload):
    article_id: Id
    max_words: int = Field(120, ge=10, le=2000)
    locale: Locale = "en"


class Translate(Payload):
    article_id: Id
    target_locale: Locale
    source_locale: Locale | None = None


class EnhanceContent(Payload):
    article_id: Id
    instructions: Text
    tone: Name | None = None


class RewriteSection(Payload):
    article_id: Id
    section: Text
    instructions: Text


# ---- ai:seo
class GenerateSeo(Payload):
    article_id: Id
    locale: Locale = "en"


class GenerateMeta(Payload):
    article_id: Id
    max_title_chars: int = Field(60, ge=10, le=200)
    max_description_chars: int = Field(160, ge=20, le=500)


class SuggestKeywords(Payload):
    article_id: Id
    count: int = Field(10, ge=1, le=100)


# ---- ai:review
ReviewCheck = Literal["originality", "seo", "structure", "ai_probability", "readability"]


def _all_checks() -> list[ReviewCheck]:
    return ["originality", "seo", "structure", "ai_probability", "readability"]


class ReviewArticle(Payload):
    article_id: Id
    checks: list[ReviewCheck] = Field(default_factory=_all_checks, min_length=1)


# ---- workflows:run
class RunWorkflow(Payload):
    workflow_id: Id
    input: dict[str, Any] = Field(default_factory=dict)
    instance_id: Id | None = None


class TriggerWorkflow(Payload):
    trigger: Name
    context: dict[str, Any] = Field(default_factory=dict)


# ---- plugins:execute
class ExecutePlugin(Payload):
    plugin_id: Id
    entrypoint: Name = "run"
    input: dict[str, Any] = Field(default_factory=dict)


class InstallPlugin(Payload):
    name: Name
    version: Name
    module_url: Text
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    permissions: list[Name] = Field(default_factory=list)


class UpdatePlugin(Payload):
    plugin_id: Id
    version: Name
    module_url: Text
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


# ---- analytics:process
class ProcessEvents(Payload):
    since: Moment | None = None
    until: Moment | None = None
    limit: int = Field(100_000, ge=1, le=10_000_000)


class RollupDaily(Payload):
    day: Day


class ComputeFunnels(Payload):
    name: Name
    steps: list[Name] = Field(min_length=2)
    start: Day
    end: Day


class ComputeRetention(Payload):
    cohort_start: Day
    cohort_end: Day
    periods: int = Field(8, ge=1, le=52)
    period: Literal["day", "week", "month"] = "week"


# ---- analytics:snapshot
class SnapshotDashboard(Payload):
    dashboard: Name
    ttl_s: int = Field(300, ge=1, le=86_400)


class SnapshotRealtime(Payload):
    window_s: int = Field(300, ge=10, le=3600)
    ttl_s: int = Field(30, ge=1, le=3600)


# ---- email:send
class SendEmail(Payload):
    to: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    template: Name
    locale: Locale = "en"
    variables: dict[str, Any] = Field(default_factory=dict)
    email_queue_id: Id | None = None


class ProcessEmailQueue(Payload):
    limit: int = Field(100, ge=1, le=10_000)


# ---- otp:send
class SendOtp(Payload):
    user_id: Id
    channel: Literal["email", "sms"]
    destination: Annotated[str, StringConstraints(min_length=3, max_length=320)]
    purpose: Name = "login"
    locale: Locale = "en"


# ---- webhooks:deliver
class DeliverWebhook(Payload):
    endpoint_id: Id
    event: Name
    data: dict[str, Any]
    delivery_id: Name | None = None


# ---- media:optimize
ImageFormat = Literal["webp", "avif", "jpeg", "png"]


def _default_formats() -> list[ImageFormat]:
    return ["webp", "jpeg"]


class OptimizeImage(Payload):
    media_id: Id
    source: Text
    widths: list[Annotated[int, Field(ge=16, le=8192)]] = Field(default_factory=lambda: [320, 768, 1280])
    formats: list[ImageFormat] = Field(default_factory=_default_formats)


# ---- search:index
class IndexArticle(Payload):
    article_id: Id
    action: Literal["upsert", "delete"] = "upsert"
