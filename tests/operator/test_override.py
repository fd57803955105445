"""What the operator writes to ``tq:{q}:config``: only the fields a QueueConfig gives (plus its
generation and paused), in the engine's units; consumers merge it over their own defaults."""

from __future__ import annotations

from typing import Any

from tq import config, keys
from tq.queue_config import to_hash
from tq_operator.spec import QueueConfigSpec, to_override, to_runtime_config


def spec(**fields: Any) -> QueueConfigSpec:
    return QueueConfigSpec.model_validate({"queue": "ai:content", **fields})


def test_a_bare_spec_writes_only_generation_and_paused() -> None:
    assert to_hash(to_override(spec(), 5)) == {"generation": "5", "paused": "0"}


def test_a_spec_writes_exactly_the_fields_it_gives() -> None:
    given = spec(
        concurrency=3,
        paused=True,
        retry={"backoff": {"initial": "500ms"}},
        rateLimit={"jobs": 100, "per": "1m"},
        retention={"failed": 10},
        dlqMaxLen=1000,
        idempotencyTTL="1.5s",
    )
    assert to_hash(to_override(given, 2)) == {
        "generation": "2",
        "paused": "1",
        "concurrency": "3",
        "backoff_initial_s": "0.5",
        "rate_jobs": "100",
        "rate_per_s": "60.0",
        "retention_failed": "10",
        "dlq_max_len": "1000",
        "idempotency_ttl_s": "2",
    }
    # merged over the defaults, the override is the runtime config the operator checks
    assert config.resolve("ai:content", to_override(given, 2)) == to_runtime_config(given, 2)


async def test_written_and_read_back_by_consumers(redis_client: Any) -> None:
    given = spec(concurrency=4, retry={"attempts": 2})
    await config.write(redis_client, "ai:content", to_override(given, 3))
    raw = {k.decode(): v.decode() for k, v in (await redis_client.hgetall(keys.config("ai:content"))).items()}
    assert raw == {"generation": "3", "paused": "0", "concurrency": "4", "attempts": "2"}
    assert await config.read(redis_client, "ai:content") == to_runtime_config(given, 3)
    assert await config.read_override(redis_client, "ai:content") == to_override(given, 3)
