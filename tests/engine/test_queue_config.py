"""The queue-config models and the ``tq:{q}:config`` hash derived from them: every field round-trips,
the wire names stay the ones running operators wrote, overrides hold only what they override."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from tq import config, keys
from tq.queue_config import (
    HASH_FIELDS,
    ConfigOverride,
    QueueDefaults,
    QueueOverride,
    RateLimit,
    RetryPolicy,
    RuntimeConfig,
    apply,
    parse_hash,
    to_hash,
)
from tq.settings import Settings

Q = "email:send"

# Every field with a value unlike its default, so a field the encoding drops fails the round trip.
EVERY_FIELD = RuntimeConfig(
    generation=7,
    concurrency=3,
    paused=True,
    retry=RetryPolicy(attempts=9, initial_s=0.5, max_s=30.0, jitter=0.1),
    retention_completed=11,
    retention_failed=12,
    dlq_max_len=13,
    idempotency_ttl_s=600,
    visibility_timeout_s=42.5,
    timeout_s=30.5,
    rate_limit=RateLimit(jobs=100, per_s=0.5),
)

# The names in hashes written before the encoding was derived (operators, CLIs, tests): stable.
WIRE_NAMES = {
    "generation": "7",
    "concurrency": "3",
    "paused": "1",
    "attempts": "9",
    "backoff_initial_s": "0.5",
    "backoff_max_s": "30.0",
    "jitter": "0.1",
    "retention_completed": "11",
    "retention_failed": "12",
    "dlq_max_len": "13",
    "idempotency_ttl_s": "600",
    "visibility_timeout_s": "42.5",
    "timeout_s": "30.5",
    "rate_jobs": "100",
    "rate_per_s": "0.5",
}


def test_every_field_round_trips_through_the_hash_under_its_wire_name() -> None:
    raw = to_hash(EVERY_FIELD)
    assert raw == WIRE_NAMES
    assert set(HASH_FIELDS) == set(WIRE_NAMES)
    # as HGETALL returns it, over defaults that differ in every field
    read = apply(RuntimeConfig(), parse_hash({k.encode(): v.encode() for k, v in raw.items()}))
    assert read == EVERY_FIELD
    assert config.from_hash(Q, raw) == EVERY_FIELD


def test_an_override_round_trips_and_holds_only_what_it_gives() -> None:
    override = ConfigOverride.model_validate({"concurrency": 4, "retry": {"initial_s": 1.5}})
    raw = to_hash(override)
    assert raw == {"concurrency": "4", "backoff_initial_s": "1.5"}
    assert parse_hash(raw) == override
    merged = config.resolve(Q, override)
    base = config.defaults(Q)
    assert (merged.concurrency, merged.retry.initial_s) == (4, 1.5)
    assert merged.model_copy(update={"concurrency": base.concurrency, "retry": base.retry}) == base


def test_the_hash_is_parsed_by_the_models_own_validation() -> None:
    with pytest.raises(ValidationError, match="concurrency"):
        parse_hash({"concurrency": "0"})
    with pytest.raises(ValidationError, match="attempts"):
        parse_hash({"attempts": "101"})
    # unknown fields are ignored; a rate window without its job count is no rate limit
    assert parse_hash({"surprise": "1", "rate_per_s": "2"}) == ConfigOverride()
    assert parse_hash({"paused": "true"}) == parse_hash({"paused": "1"})


def test_overrides_share_the_defaults_bounds() -> None:
    for bad in ({"concurrency": 0}, {"concurrency": 1001}, {"retention_failed": -1}):
        with pytest.raises(ValidationError):
            QueueDefaults.model_validate(bad)
        with pytest.raises(ValidationError):
            QueueOverride.model_validate(bad)
        with pytest.raises(ValidationError):
            ConfigOverride.model_validate(bad)
    assert set(QueueOverride.model_fields) == set(QueueDefaults.model_fields)
    assert set(ConfigOverride.model_fields) == set(RuntimeConfig.model_fields)


def test_settings_retry_replaces_the_policy_and_the_hash_merges_it_field_by_field() -> None:
    queue = "otp:send"  # registry retry: attempts 3, initial 1s, max 10s
    s = Settings(queues={queue: {"retry": {"attempts": 4}}})
    assert config.defaults(queue, s).retry == RetryPolicy(attempts=4)
    cfg = config.from_hash(queue, {"attempts": "4"})
    assert (cfg.retry.attempts, cfg.retry.initial_s, cfg.retry.max_s) == (4, 1.0, 10.0)


async def hash_of(client: Any, queue: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await client.hgetall(keys.config(queue))).items()}


async def test_cli_and_admin_writers_set_only_their_field(redis_client: Any) -> None:
    await config.write(redis_client, Q, ConfigOverride.model_validate({"generation": 2, "paused": False}))
    await config.set_concurrency(redis_client, Q, 6)
    await config.set_paused(redis_client, Q, True)
    assert await hash_of(redis_client, Q) == {"generation": "2", "paused": "1", "concurrency": "6"}
    with pytest.raises(ValueError, match="concurrency"):
        await config.set_concurrency(redis_client, Q, 1001)
    cfg = await config.read(redis_client, Q)
    assert cfg == config.defaults(Q).model_copy(update={"generation": 2, "paused": True, "concurrency": 6})
    await config.reset(redis_client, Q)
    assert await hash_of(redis_client, Q) == {}
