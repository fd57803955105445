"""The engine's settings (pydantic-settings, prefix ``TQ_``), and ``TqSettings``, the base of every
settings class in tq: every other owner (each queue family, the admin service, the operator) keeps
its settings in its own package, subclassing ``TqSettings``, so every variable is ``TQ_`` + the
upper-case field name of its owner's class.

Nothing else in the code base reads the environment: take a ``Settings`` (or ``get_settings()``).
Per-queue defaults can be overridden per queue with ``TQ_QUEUES__<queue>__<field>``, e.g.
``TQ_QUEUES__ai:content__concurrency=4`` or, easier, as JSON in ``TQ_QUEUES``.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from tq.queue_config import QueueDefaults, QueueOverride, apply


class TqSettings(BaseSettings):
    """The base of every settings class: prefix ``TQ_``, nested delimiter ``__``; the variables of
    other owners are ignored (each class reads only its own fields)."""

    model_config = SettingsConfigDict(env_prefix="TQ_", env_nested_delimiter="__", extra="ignore")


class Settings(TqSettings):
    """The engine's: Redis, the database, per-queue overrides, the consumer runtime, durable history,
    live stats and events."""

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the Redis holding the queues")
    redis_cluster: bool = Field(
        False,
        description="`true`: `TQ_REDIS_URL` names any node of a Redis Cluster (cluster clients, "
        "`RedisClusterBroker`)",
    )
    redis_sentinels: str = Field(
        "",
        description="`host:port,...` of Redis Sentinels: the master is found through them and followed "
        "across failovers (`TQ_REDIS_URL` then gives only db and credentials)",
    )
    redis_sentinel_master: str = Field("mymaster", description="the Sentinel master group name")

    @property
    def sentinel_nodes(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs; empty: no Sentinel."""
        nodes = []
        for item in filter(None, (part.strip() for part in self.redis_sentinels.split(","))):
            host, _, port = item.rpartition(":")
            nodes.append((host or item, int(port) if port.isdigit() else 26379))
        return nodes

    database_url: str = Field(
        "sqlite+aiosqlite:///tq.db", description="the SQL database for durable history (SQLite or PostgreSQL)"
    )

    queues: dict[str, QueueOverride] = Field(
        default_factory=dict, description="per-queue overrides of the registry's defaults"
    )

    # consumer runtime
    read_batch: int = Field(
        100,
        ge=1,
        le=10_000,
        description="most entries per XREADGROUP (a read takes at most one pool's worth: the concurrency)",
    )
    block_ms: int = Field(
        500, ge=1, le=1000, description="XREADGROUP BLOCK in ms; bounds how fast a pause bites"
    )
    config_poll_s: PositiveFloat = Field(
        1.0, description="re-read each queue's runtime config at least this often"
    )
    promote_interval_s: PositiveFloat = Field(
        0.1, description="how often due delayed/retrying jobs are moved back to the stream"
    )
    promote_batch: int = Field(500, ge=1, description="most delayed jobs moved per promotion")
    reclaim_interval_s: PositiveFloat = Field(
        5.0, description="how often stalled entries of dead consumers are looked for"
    )
    shutdown_grace_s: PositiveFloat = Field(
        30.0, description="on SIGTERM, how long in-flight jobs may take to finish"
    )
    heartbeat_ttl_s: PositiveFloat = Field(15.0, description="a consumer's heartbeat expires after this long")
    crash_watch_s: PositiveFloat = Field(
        600.0,
        description="after a consumer dies holding jobs, how long job starts are recorded so that a "
        "later crash charges an attempt only to the jobs that were running (see docs/engine.md)",
    )
    max_payload_bytes: PositiveInt = Field(1_000_000, description="largest accepted job payload")
    events: bool = Field(True, description="publish every job transition on `tq:events`")
    uvloop: bool = Field(True, description="run on uvloop")

    # durable history
    audit_enabled: bool = Field(True, description="record job outcomes in the database")
    audit_flush_s: PositiveFloat = Field(
        1.0, description="how often buffered audit records are written to the database"
    )
    audit_batch: PositiveInt = Field(1000, description="most audit records per database write")
    audit_backlog_max: PositiveInt = Field(
        2_000_000,
        description="most unwritten audit records a queue's Redis stream holds (e.g. while the "
        "database is away); at it the queue's intake waits until the writer catches up: jobs in "
        "flight still settle, no record is dropped",
    )

    # live stats (tq.stats)
    stats_interval_s: PositiveFloat = Field(
        10.0,
        description="how often the elected stats leader writes `tq:{q}:stats` and publishes "
        "`queue.stats` and `dlq.stats` (its lock and the snapshots live three intervals)",
    )

    # recurring schedules (tq.schedules)
    scheduler_enabled: bool = Field(
        True, description="run the schedules duty in this worker process (one elected process fires)"
    )
    scheduler_interval_s: PositiveFloat = Field(
        1.0, description="how often the elected scheduler evaluates every schedule"
    )
    scheduler_lock_ttl_s: PositiveFloat = Field(
        5.0,
        description="the scheduler lock's lifetime: another process takes over within it when the "
        "leader dies",
    )

    def queue_defaults_for(self, queue: str, registry_defaults: QueueDefaults) -> QueueDefaults:
        """Registry defaults, overridden by ``queues[queue]`` where set."""
        return apply(registry_defaults, self.queues.get(queue))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
