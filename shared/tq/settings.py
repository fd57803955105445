"""Every setting tq reads, in one place (pydantic-settings, prefix ``TQ_``).

Nothing else in the code base reads the environment: take a ``Settings`` (or ``get_settings()``).
Per-queue defaults can be overridden per queue with ``TQ_QUEUES__<queue>__<field>``, e.g.
``TQ_QUEUES__ai:content__concurrency=4`` or, easier, as JSON in ``TQ_QUEUES``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RetryPolicy(BaseModel):
    """Exponential backoff: ``initial * 2**(attempt-1)`` capped at ``max``, +/- ``jitter``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(5, ge=1, le=100, description="runs in all, the first included")
    initial_s: PositiveFloat = 2.0
    max_s: PositiveFloat = 120.0
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="fraction of the delay, drawn uniformly +/-")


class QueueDefaults(BaseModel):
    """What a queue runs with when no QueueConfig says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(16, ge=1, le=1000, description="in-flight jobs per replica")
    retry: RetryPolicy = RetryPolicy()
    retention_completed: int = Field(1000, ge=0)
    retention_failed: int = Field(5000, ge=0)
    idempotency_ttl_s: PositiveInt = 24 * 3600
    visibility_timeout_s: PositiveFloat = Field(
        60.0, description="a pending entry idle this long belongs to a dead consumer and is reclaimed"
    )


class QueueOverride(BaseModel):
    """Per-queue overrides of ``QueueDefaults`` given through settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | None = Field(None, ge=1, le=1000)
    retry: RetryPolicy | None = None
    retention_completed: int | None = Field(None, ge=0)
    retention_failed: int | None = Field(None, ge=0)
    idempotency_ttl_s: PositiveInt | None = None
    visibility_timeout_s: PositiveFloat | None = None


class LlmPrice(BaseModel):
    """What a model costs, in USD per million tokens (for ``AiRun.cost``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0.0)
    output: float = Field(ge=0.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TQ_", env_nested_delimiter="__", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = Field(
        False,
        description="redis_url names a node of a Redis Cluster: cluster clients and RedisClusterBroker",
    )
    redis_sentinels: str = Field(
        "",
        description="comma-separated host:port of Redis Sentinels: the master named redis_sentinel_master "
        "is found through them and followed across failovers (redis_url then gives only db and credentials)",
    )
    redis_sentinel_master: str = "mymaster"

    @property
    def sentinel_nodes(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs; empty: no Sentinel."""
        nodes = []
        for item in filter(None, (part.strip() for part in self.redis_sentinels.split(","))):
            host, _, port = item.rpartition(":")
            nodes.append((host or item, int(port) if port.isdigit() else 26379))
        return nodes

    database_url: str = "sqlite+aiosqlite:///tq.db"

    queues: dict[str, QueueOverride] = Field(
        default_factory=dict, description="per-queue overrides of the registry's defaults"
    )

    # consumer runtime
    read_batch: int = Field(
        100, ge=1, le=10_000, description="most entries per XREADGROUP (and at most the concurrency)"
    )
    block_ms: int = Field(500, ge=1, le=1000, description="XREADGROUP BLOCK; bounds how fast a pause bites")
    config_poll_s: PositiveFloat = Field(1.0, description="re-read queue config even without a signal")
    promote_interval_s: PositiveFloat = 0.1
    promote_batch: int = Field(500, ge=1)
    reclaim_interval_s: PositiveFloat = 5.0
    shutdown_grace_s: PositiveFloat = 30.0
    heartbeat_ttl_s: PositiveFloat = 15.0
    crash_watch_s: PositiveFloat = Field(
        600.0,
        description="after a consumer dies holding jobs, how long job starts are recorded so that a "
        "later crash charges an attempt only to the jobs that were running (see docs/engine.md)",
    )
    max_payload_bytes: PositiveInt = 1_000_000
    events: bool = Field(True, description="publish every job transition on tq:events")
    uvloop: bool = True

    # operator
    operator_refresh_s: PositiveFloat = Field(10.0, description="how often QueueConfig status is refreshed")
    operator_deployment: str = Field(
        "tq-{family}", description="name of a family's Deployment that spec.replicas scales ({family})"
    )
    operator_keda: bool = Field(False, description="KEDA scales the families: spec.replicas is ignored")
    operator_peering: str = Field(
        "tq-operator", description="ClusterKopfPeering the replicas elect a leader in; empty: standalone"
    )
    operator_priority: int | None = Field(
        None, description="peering priority; unset: seniority (the oldest live replica leads)"
    )

    # durable history
    audit_enabled: bool = True
    audit_flush_s: PositiveFloat = 1.0
    audit_batch: PositiveInt = 1000
    audit_stream_maxlen: PositiveInt = 200_000

    # live stats (tq.stats): one elected process per Redis writes tq:{q}:stats this often
    stats_interval_s: PositiveFloat = 10.0

    # messaging (tq_services.messaging): SMTP for send-email and OTPs by email
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "starttls", description="none: plain; starttls: upgrade (required); tls: implicit TLS (port 465)"
    )
    smtp_validate_certs: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "no-reply@localhost"
    smtp_timeout_s: PositiveFloat = Field(15.0, description="connect and per-command timeout")

    # one-time codes (send-otp)
    otp_length: int = Field(6, ge=4, le=12, description="digits")
    otp_ttl_s: PositiveInt = 300
    otp_cooldown_s: int = Field(60, ge=0, description="a second code for the same user and purpose waits")
    otp_max_attempts: int = Field(5, ge=1, le=100, description="verification attempts per code")
    sms_provider_url: str | None = Field(None, description="POST {to, message} as JSON, bearer token")
    sms_provider_token: SecretStr | None = None
    sms_timeout_s: PositiveFloat = 10.0

    # webhooks (tq_services.webhooks): deliver-webhook
    webhook_timeout_s: PositiveFloat = Field(10.0, description="connect, write, read and pool timeout")
    webhook_max_response_bytes: int = Field(
        2048, ge=0, le=1_000_000, description="most bytes of a receiver's answer read and kept in the log"
    )
    webhook_allow_private_networks: bool = Field(
        False,
        description="allow URLs resolving to loopback, private, link-local (metadata) addresses: SSRF",
    )
    webhook_user_agent: str = "tq-webhooks/1"

    # workflows (tq_services.workflows): run-workflow, trigger-workflow
    workflow_inline_wait_s: float = Field(
        2.0,
        ge=0.0,
        le=60.0,
        description="waits (delay, backoff, a child job) up to this per run are slept in the handler; "
        "longer ones end the run and schedule a delayed continuation job",
    )
    workflow_poll_interval_s: PositiveFloat = Field(
        5.0, description="how soon a continuation checks again on a child job that has not finished"
    )
    workflow_http_timeout_s: PositiveFloat = Field(10.0, description="default timeout of an http step")
    workflow_lease_s: PositiveFloat = Field(
        30.0, description="an instance's run lease, renewed while it runs: a crashed run frees it after this"
    )
    workflow_max_output_bytes: int = Field(
        65_536, ge=1, le=10_000_000, description="most bytes of an http step's answer kept as its output"
    )

    # plugins (tq_services.plugins): execute-plugin, install-plugin, update-plugin
    plugin_max_module_bytes: int = Field(5_000_000, ge=8, description="largest WASM module accepted")
    plugin_fuel: int = Field(
        200_000_000, ge=1_000, description="wasmtime fuel per run (about one unit per instruction)"
    )
    plugin_max_memory_bytes: int = Field(
        16 * 1024 * 1024, ge=65_536, description="linear memory a plugin may grow to"
    )
    plugin_timeout_s: PositiveFloat = Field(5.0, description="wall-clock limit per run (epoch interruption)")
    plugin_max_output_bytes: int = Field(1_000_000, ge=1, description="largest output a plugin may return")
    plugin_download_timeout_s: PositiveFloat = Field(30.0, description="fetching a module_url over http(s)")

    # media (tq_services.media): optimize-image
    media_storage: Literal["local", "s3"] = Field("local", description="where originals and variants live")
    media_root: str = Field("media", description="directory of the local file store (originals, variants)")
    media_s3_endpoint: str | None = Field(None, description="S3-compatible endpoint, path-style addressing")
    media_s3_bucket: str | None = None
    media_s3_region: str = "us-east-1"
    media_s3_access_key_id: str | None = None
    media_s3_secret_access_key: SecretStr | None = None
    media_s3_timeout_s: PositiveFloat = Field(30.0, description="one object store request")
    media_max_pixels: PositiveInt = Field(
        40_000_000, description="larger images are refused as decompression bombs"
    )
    media_max_source_bytes: PositiveInt = Field(50_000_000, description="larger originals are refused")
    media_quality: int = Field(80, ge=1, le=100, description="lossy quality (WebP, JPEG, AVIF)")

    # search (tq_services.search): index-article and `tq search`
    search_weight_title: float = Field(1.0, gt=0, description="rank weight of a title match")
    search_weight_tags: float = Field(0.6, gt=0, description="rank weight of a tag match")
    search_weight_body: float = Field(0.3, gt=0, description="rank weight of a body match")

    # ai (tq_services.ai): an OpenAI-compatible chat-completions API (OpenRouter, OpenAI, Ollama, llama.cpp)
    llm_base_url: str | None = Field(
        None, description="e.g. https://openrouter.ai/api/v1; unset: AI jobs dead-letter (no provider)"
    )
    llm_api_key: SecretStr | None = Field(None, description="bearer token; local servers need none")
    llm_model: str = Field("openai/gpt-4o-mini", description="the model of every AI job not in llm_models")
    llm_models: dict[str, str] = Field(
        default_factory=dict, description='job name -> model, e.g. {"review-article": "..."}'
    )
    llm_timeout_s: PositiveFloat = Field(120.0, description="a whole chat-completion request")
    llm_max_tokens: PositiveInt = Field(2048, description="most tokens a model may answer")
    llm_temperature: float = Field(0.3, ge=0.0, le=2.0)
    llm_json_mode: bool = Field(
        True, description='ask for response_format {"type": "json_object"} where a job wants JSON'
    )
    llm_prices: dict[str, LlmPrice] = Field(
        default_factory=dict, description="model -> USD per million tokens in/out; unlisted: cost unknown"
    )

    # analytics (tq_services.analytics): dashboards precomputed by snapshot-dashboard/-realtime
    analytics_dashboard_days: int = Field(
        7, ge=1, le=366, description="days a dashboard covers, today included"
    )
    analytics_top_n: int = Field(10, ge=1, le=1000, description="rows in a dashboard's top lists")

    # admin (tq_services.admin): the owner's API and live events, `tq serve admin`, `tq token create`
    admin_jwt_issuer: str = Field("tq", description="iss of the admin API's bearer tokens")
    admin_jwt_audience: str = Field("tq-admin", description="aud of the admin API's bearer tokens")
    admin_jwt_key: SecretStr | None = Field(
        None, description="HMAC key (>= 32 bytes) signing and verifying the tokens; unset: no admin API"
    )
    admin_jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    admin_viewer_enabled: bool = Field(False, description="tokens with role viewer may call the reads")
    admin_rate_limit: int = Field(600, ge=1, description="requests per token per admin_rate_window_s")
    admin_rate_window_s: PositiveFloat = Field(60.0, description="the rate limit's sliding window")
    admin_cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed to call cross-origin (JSON list); empty: none"
    )
    admin_sse_buffer: int = Field(
        1000, ge=1, le=1_000_000, description="recent events kept for SSE Last-Event-ID resume"
    )
    admin_client_queue: int = Field(
        1000, ge=1, le=1_000_000, description="events queued per live client; one this far behind is dropped"
    )
    admin_heartbeat_s: PositiveFloat = Field(15.0, description="live streams send a heartbeat this often")

    def queue_defaults_for(self, queue: str, registry_defaults: QueueDefaults) -> QueueDefaults:
        """Registry defaults, overridden by ``queues[queue]`` where set."""
        override = self.queues.get(queue)
        if override is None:
            return registry_defaults
        changes = {name: getattr(override, name) for name in override.model_fields_set}
        return registry_defaults.model_copy(update={k: v for k, v in changes.items() if v is not None})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
