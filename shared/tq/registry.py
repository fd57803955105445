"""The one registry of queues: names, families, job names, payload models and defaults.

Services, the operator, chart values, dashboards and the CLI derive from this data; nothing
restates it. Programs (benchmarks, tests) may add queues with ``register_queue``; the product's
twelve are fixed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import BaseModel

from tq import payloads
from tq.errors import UnknownJob, UnknownQueue
from tq.queue_config import QueueDefaults
from tq.settings import Settings, get_settings


@dataclass(frozen=True)
class QueueSpec:
    name: str
    family: str
    jobs: Mapping[str, type[BaseModel]]
    defaults: QueueDefaults = field(default_factory=QueueDefaults)
    description: str = ""
    # Job names kept from the older queue layout: same handlers and models, listed apart for docs.
    legacy_jobs: frozenset[str] = frozenset()
    # Per job name: its time limit (s; 0: none) where it differs from the queue's ``timeout_s``.
    # A per-queue ``timeout_s`` from ``TQ_QUEUES`` or a QueueConfig overrides these too.
    job_timeouts: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for job, limit in self.job_timeouts.items():
            if job not in self.jobs or not 0 <= limit <= 86400:
                raise ValueError(
                    f"{self.name}: job_timeouts[{job!r}]={limit!r}: a job of the queue, 0..86400 s"
                )

    def payload_model(self, job: str) -> type[BaseModel]:
        try:
            return self.jobs[job]
        except KeyError:
            raise UnknownJob(self.name, job, sorted(self.jobs)) from None

    def effective_defaults(self, settings: Settings | None = None) -> QueueDefaults:
        return (settings or get_settings()).queue_defaults_for(self.name, self.defaults)


def _spec(
    name: str,
    family: str,
    jobs: dict[str, type[BaseModel]],
    *,
    legacy: dict[str, type[BaseModel]] | None = None,
    description: str,
    **defaults: object,
) -> QueueSpec:
    legacy = legacy or {}
    return QueueSpec(
        name=name,
        family=family,
        jobs=MappingProxyType({**jobs, **legacy}),
        defaults=QueueDefaults.model_validate(defaults),
        description=description,
        legacy_jobs=frozenset(legacy),
    )


# Long-running LLM jobs get few slots and a long visibility timeout; quick I/O jobs get many.
_PRODUCT_QUEUES: tuple[QueueSpec, ...] = (
    _spec(
        "ai:content",
        "ai",
        {
            "generate-draft": payloads.GenerateDraft,
            "generate-summary": payloads.GenerateSummary,
            "translate": payloads.Translate,
            "enhance-content": payloads.EnhanceContent,
        },
        legacy={"rewrite-section": payloads.RewriteSection},
        description="LLM drafting, summaries, translation and rewriting",
        concurrency=8,
        visibility_timeout_s=300,
    ),
    _spec(
        "ai:seo",
        "ai",
        {"generate-seo": payloads.GenerateSeo},
        legacy={"generate-meta": payloads.GenerateMeta, "suggest-keywords": payloads.SuggestKeywords},
        description="LLM SEO fields: title, description, keywords",
        concurrency=8,
        visibility_timeout_s=300,
    ),
    _spec(
        "ai:review",
        "ai",
        {"review-article": payloads.ReviewArticle},
        description="article quality and originality review",
        concurrency=4,
        visibility_timeout_s=300,
    ),
    _spec(
        "workflows:run",
        "workflows",
        {"run-workflow": payloads.RunWorkflow},
        legacy={"trigger-workflow": payloads.TriggerWorkflow},
        description="multi-step workflow instances",
        concurrency=16,
        visibility_timeout_s=120,
    ),
    _spec(
        "plugins:execute",
        "plugins",
        {"execute-plugin": payloads.ExecutePlugin},
        legacy={"install-plugin": payloads.InstallPlugin, "update-plugin": payloads.UpdatePlugin},
        description="sandboxed WASM plugin runs",
        concurrency=8,
    ),
    _spec(
        "analytics:process",
        "analytics",
        {"process-events": payloads.ProcessEvents},
        legacy={
            "rollup-daily": payloads.RollupDaily,
            "compute-funnels": payloads.ComputeFunnels,
            "compute-retention": payloads.ComputeRetention,
        },
        description="event aggregation, rollups, funnels, retention",
        concurrency=2,
        visibility_timeout_s=600,
    ),
    _spec(
        "analytics:snapshot",
        "analytics",
        {"snapshot-dashboard": payloads.SnapshotDashboard},
        legacy={"snapshot-realtime": payloads.SnapshotRealtime},
        description="precomputed dashboard payloads",
        concurrency=4,
    ),
    _spec(
        "email:send",
        "messaging",
        {"send-email": payloads.SendEmail},
        legacy={"process-email-queue": payloads.ProcessEmailQueue},
        description="templated email over SMTP",
        concurrency=16,
    ),
    _spec(
        "otp:send",
        "messaging",
        {"send-otp": payloads.SendOtp},
        description="one-time codes by email or SMS",
        concurrency=16,
        retry={"attempts": 3, "initial_s": 1.0, "max_s": 10.0},
        idempotency_ttl_s=600,
    ),
    _spec(
        "webhooks:deliver",
        "webhooks",
        {"deliver-webhook": payloads.DeliverWebhook},
        description="signed webhook deliveries",
        concurrency=32,
        retry={"attempts": 8, "initial_s": 2.0, "max_s": 120.0},
    ),
    _spec(
        "media:optimize",
        "media",
        {"optimize-image": payloads.OptimizeImage},
        description="image resizing and format conversion",
        concurrency=2,
        visibility_timeout_s=180,
    ),
    _spec(
        "search:index",
        "search",
        {"index-article": payloads.IndexArticle},
        description="search index updates",
        concurrency=16,
    ),
)

_queues: dict[str, QueueSpec] = {q.name: q for q in _PRODUCT_QUEUES}
PRODUCT_QUEUE_NAMES: tuple[str, ...] = tuple(q.name for q in _PRODUCT_QUEUES)


def register_queue(spec: QueueSpec) -> QueueSpec:
    """Add a queue (benchmarks, tests, extensions). The product's queues cannot be replaced."""
    if spec.name in PRODUCT_QUEUE_NAMES:
        raise ValueError(f"{spec.name!r} is a product queue and cannot be re-registered")
    if not spec.name or any(c in spec.name for c in '{}\n\r "\\') or not spec.jobs:
        raise ValueError(f"invalid queue spec {spec.name!r}: a name without braces/spaces and >= 1 job")
    _queues[spec.name] = spec
    return spec


def unregister_queue(name: str) -> None:
    if name in PRODUCT_QUEUE_NAMES:
        raise ValueError(f"{name!r} is a product queue")
    _queues.pop(name, None)


def get_queue(name: str) -> QueueSpec:
    try:
        return _queues[name]
    except KeyError:
        raise UnknownQueue(name, sorted(_queues)) from None


def all_queues() -> tuple[QueueSpec, ...]:
    return tuple(_queues.values())


def families() -> dict[str, tuple[QueueSpec, ...]]:
    """Family name -> its queues, in registry order."""
    out: dict[str, list[QueueSpec]] = {}
    for q in _queues.values():
        out.setdefault(q.family, []).append(q)
    return {k: tuple(v) for k, v in out.items()}


def queues_of(family_names: Iterable[str]) -> tuple[QueueSpec, ...]:
    fams = families()
    out: list[QueueSpec] = []
    for f in family_names:
        if f not in fams:
            raise UnknownQueue(f"family {f}", sorted(fams))
        out.extend(fams[f])
    return tuple(out)
