"""The live runtime config of a queue in Redis: ``tq:{q}:config``, a hash of what overrides the queue's
defaults (a ``ConfigOverride``, encoded by ``tq.queue_config``), written by the operator, the CLI
and the admin API and applied by consumers without restart.

``resolve`` is the one merge: registry defaults, then the settings' overrides (``TQ_QUEUES``),
then the hash. The models themselves live in ``tq.queue_config``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from tq import keys
from tq.envelope import Event, EventType
from tq.queue_config import ConfigOverride, RateLimit, RuntimeConfig, apply, parse_hash, to_hash
from tq.registry import get_queue
from tq.settings import Settings

__all__ = [
    "ConfigOverride",
    "RateLimit",
    "RuntimeConfig",
    "defaults",
    "from_hash",
    "read",
    "read_override",
    "reset",
    "resolve",
    "set_concurrency",
    "set_paused",
    "to_hash",
    "write",
]


def defaults(queue: str, settings: Settings | None = None) -> RuntimeConfig:
    """What the queue runs with under no live config: registry defaults, then ``TQ_QUEUES``."""
    return RuntimeConfig(**dict(get_queue(queue).effective_defaults(settings)))


def resolve(queue: str, override: ConfigOverride | None, settings: Settings | None = None) -> RuntimeConfig:
    """The queue's defaults (``defaults``) with a live override applied."""
    return apply(defaults(queue, settings), override)


def from_hash(
    queue: str, raw: Mapping[bytes, bytes] | Mapping[str, str], settings: Settings | None = None
) -> RuntimeConfig:
    """The queue's defaults overridden by whatever the hash holds."""
    return resolve(queue, parse_hash(raw), settings)


def override(**fields: Any) -> ConfigOverride:
    """A ``ConfigOverride`` of these fields; a value out of bounds is a ``ValueError`` naming it."""
    try:
        return ConfigOverride.model_validate(fields)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(reasons) from None


async def read(client: Any, queue: str, settings: Settings | None = None) -> RuntimeConfig:
    """The config the queue's consumers run with."""
    return from_hash(queue, await client.hgetall(keys.config(queue)), settings)


async def read_override(client: Any, queue: str) -> ConfigOverride:
    """What the hash overrides (``ValidationError``: it holds a value the model refuses)."""
    return parse_hash(await client.hgetall(keys.config(queue)))


def _event(kind: EventType, queue: str, **data: Any) -> str:
    return Event(type=kind, queue=queue, at=time.time(), data=data).model_dump_json()


async def _signal(client: Any, queue: str, *events: str) -> None:
    """Tell consumers (and event listeners) once the write is done. Plain PUBLISH calls, not part
    of the write's MULTI: a cluster pipeline refuses PUBLISH, and a lost signal only delays the
    change until the next poll."""
    await client.publish(keys.CONTROL_CHANNEL, json.dumps({"queue": queue}))
    for event in events:
        await client.publish(keys.EVENTS_CHANNEL, event)


async def write(client: Any, queue: str, cfg: ConfigOverride | RuntimeConfig) -> None:
    """Replace the hash with ``cfg`` (an override: only its fields; a whole config: all of them) and
    tell consumers (they also poll: a lost signal only delays it)."""
    key, fields = keys.config(queue), to_hash(cfg)
    async with client.pipeline(transaction=True) as pipe:  # one key: one slot on a cluster
        pipe.delete(key)
        if fields:
            pipe.hset(key, mapping=fields)
        await pipe.execute()
    generation = int(fields.get("generation", 0))
    await _signal(client, queue, _event(EventType.CONFIG_APPLIED, queue, generation=generation))


async def reset(client: Any, queue: str) -> None:
    """Back to registry defaults, unpaused."""
    await client.delete(keys.config(queue))
    await _signal(client, queue)


async def _set(client: Any, queue: str, change: ConfigOverride) -> None:
    """Override some fields, keeping the hash's others."""
    get_queue(queue)
    await client.hset(keys.config(queue), mapping=to_hash(change))


async def set_paused(client: Any, queue: str, paused: bool) -> None:
    await _set(client, queue, override(paused=paused))
    await _signal(client, queue, _event(EventType.QUEUE_PAUSED if paused else EventType.QUEUE_RESUMED, queue))


async def set_concurrency(client: Any, queue: str, concurrency: int) -> None:
    await _set(client, queue, override(concurrency=concurrency))
    await _signal(client, queue)
