"""The live runtime config of a queue: ``tq:{q}:config`` (a hash of the fields that differ from the
registry defaults), written by the operator or the CLI and applied by consumers without restart."""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from tq import keys
from tq.envelope import Event, EventType
from tq.registry import get_queue
from tq.settings import RetryPolicy, Settings


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    jobs: PositiveInt
    per_s: PositiveFloat = 1.0


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    generation: int = Field(0, ge=0, description="the QueueConfig generation this came from; 0: defaults")
    concurrency: int = Field(ge=1, le=1000)
    paused: bool = False
    retry: RetryPolicy
    retention_completed: int = Field(ge=0)
    retention_failed: int = Field(ge=0)
    idempotency_ttl_s: PositiveInt
    visibility_timeout_s: PositiveFloat
    rate_limit: RateLimit | None = None


# hash field -> (RuntimeConfig path, parser)
_RETRY_FIELDS = {"attempts": int, "backoff_initial_s": float, "backoff_max_s": float, "jitter": float}
_RETRY_NAMES = {
    "attempts": "attempts",
    "backoff_initial_s": "initial_s",
    "backoff_max_s": "max_s",
    "jitter": "jitter",
}
_TOP_FIELDS: dict[str, Any] = {
    "generation": int,
    "concurrency": int,
    "paused": lambda v: v in ("1", "true"),
    "retention_completed": int,
    "retention_failed": int,
    "idempotency_ttl_s": int,
    "visibility_timeout_s": float,
}


def defaults(queue: str, settings: Settings | None = None) -> RuntimeConfig:
    d = get_queue(queue).effective_defaults(settings)
    return RuntimeConfig(
        concurrency=d.concurrency,
        retry=d.retry,
        retention_completed=d.retention_completed,
        retention_failed=d.retention_failed,
        idempotency_ttl_s=d.idempotency_ttl_s,
        visibility_timeout_s=d.visibility_timeout_s,
    )


def from_hash(
    queue: str, raw: dict[bytes, bytes] | dict[str, str], settings: Settings | None = None
) -> RuntimeConfig:
    """Registry defaults overridden by whatever the hash holds."""
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    base = defaults(queue, settings)
    top = {name: parse(fields[name]) for name, parse in _TOP_FIELDS.items() if name in fields}
    retry = {
        _RETRY_NAMES[name]: parse(fields[name]) for name, parse in _RETRY_FIELDS.items() if name in fields
    }
    if retry:
        top["retry"] = base.retry.model_copy(update=retry)
    if "rate_jobs" in fields:
        top["rate_limit"] = RateLimit(jobs=int(fields["rate_jobs"]), per_s=float(fields.get("rate_per_s", 1)))
    return RuntimeConfig.model_validate({**base.model_dump(), **top})


def to_hash(cfg: RuntimeConfig) -> dict[str, str]:
    out = {
        name: str(int(v) if isinstance(v, bool) else v)
        for name in _TOP_FIELDS
        if (v := getattr(cfg, name)) is not None
    }
    for name, attr in _RETRY_NAMES.items():
        out[name] = str(getattr(cfg.retry, attr))
    if cfg.rate_limit is not None:
        out["rate_jobs"] = str(cfg.rate_limit.jobs)
        out["rate_per_s"] = str(cfg.rate_limit.per_s)
    return out


async def read(client: Any, queue: str, settings: Settings | None = None) -> RuntimeConfig:
    return from_hash(queue, await client.hgetall(keys.config(queue)), settings)


def _event(kind: EventType, queue: str, **data: Any) -> str:
    return Event(type=kind, queue=queue, at=time.time(), data=data).model_dump_json()


async def _signal(client: Any, queue: str, *events: str) -> None:
    """Tell consumers (and event listeners) once the write is done. Plain PUBLISH calls, not part
    of the write's MULTI: a cluster pipeline refuses PUBLISH, and a lost signal only delays the
    change until the next poll."""
    await client.publish(keys.CONTROL_CHANNEL, json.dumps({"queue": queue}))
    for event in events:
        await client.publish(keys.EVENTS_CHANNEL, event)


async def write(client: Any, queue: str, cfg: RuntimeConfig) -> None:
    """Replace the runtime config and tell consumers (they also poll: a lost signal only delays it)."""
    key = keys.config(queue)
    async with client.pipeline(transaction=True) as pipe:  # one key: one slot on a cluster
        pipe.delete(key)
        pipe.hset(key, mapping=to_hash(cfg))
        await pipe.execute()
    await _signal(client, queue, _event(EventType.CONFIG_APPLIED, queue, generation=cfg.generation))


async def reset(client: Any, queue: str) -> None:
    """Back to registry defaults, unpaused."""
    await client.delete(keys.config(queue))
    await _signal(client, queue)


async def set_paused(client: Any, queue: str, paused: bool) -> None:
    get_queue(queue)
    await client.hset(keys.config(queue), "paused", "1" if paused else "0")
    await _signal(client, queue, _event(EventType.QUEUE_PAUSED if paused else EventType.QUEUE_RESUMED, queue))


async def set_concurrency(client: Any, queue: str, concurrency: int) -> None:
    if not 1 <= concurrency <= 1000:
        raise ValueError("concurrency must be between 1 and 1000")
    get_queue(queue)
    await client.hset(keys.config(queue), "concurrency", str(concurrency))
    await _signal(client, queue)
