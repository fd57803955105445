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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TQ_", env_nested_delimiter="__", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = Field(
        False,
        description="redis_url names a node of a Redis Cluster: cluster clients and RedisClusterBroker",
    )
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
    max_payload_bytes: PositiveInt = 1_000_000
    events: bool = Field(True, description="publish every job transition on tq:events")
    uvloop: bool = True

    # operator
    operator_refresh_s: PositiveFloat = Field(10.0, description="how often QueueConfig status is refreshed")

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
