"""The registry: twelve queues in eight families, every job name of the design, strict payloads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from tq import payloads, producer, registry
from tq.errors import UnknownJob, UnknownQueue
from tq.registry import QueueSpec


def test_twelve_queues_in_eight_families() -> None:
    assert len(registry.PRODUCT_QUEUE_NAMES) == 12
    fams = registry.families()
    assert set(fams) == {
        "ai",
        "workflows",
        "plugins",
        "analytics",
        "messaging",
        "webhooks",
        "media",
        "search",
    }
    assert sum(len(qs) for qs in fams.values()) == 12


def test_every_job_of_the_design_including_older_names() -> None:
    jobs = {(q.name, j) for q in registry.all_queues() for j in q.jobs}
    for expected in [
        ("ai:content", "rewrite-section"),
        ("ai:seo", "generate-meta"),
        ("ai:seo", "suggest-keywords"),
        ("workflows:run", "trigger-workflow"),
        ("plugins:execute", "install-plugin"),
        ("plugins:execute", "update-plugin"),
        ("analytics:process", "rollup-daily"),
        ("analytics:process", "compute-funnels"),
        ("analytics:process", "compute-retention"),
        ("analytics:snapshot", "snapshot-realtime"),
        ("email:send", "process-email-queue"),
        ("ai:review", "review-article"),
        ("otp:send", "send-otp"),
        ("media:optimize", "optimize-image"),
        ("webhooks:deliver", "deliver-webhook"),
        ("search:index", "index-article"),
    ]:
        assert expected in jobs
    assert len(jobs) == 26
    assert registry.get_queue("ai:seo").legacy_jobs == {"generate-meta", "suggest-keywords"}


def test_defaults_follow_the_design() -> None:
    for q in registry.all_queues():
        d = q.defaults
        if q.name != "otp:send" and q.name != "webhooks:deliver":
            assert (d.retry.attempts, d.retry.initial_s, d.retry.max_s) == (5, 2.0, 120.0)
        assert (d.retention_completed, d.retention_failed, d.idempotency_ttl_s) == (
            1000,
            5000,
            86400,
        ) or q.name == "otp:send"
        assert d.retry.jitter > 0


def test_payload_models_are_strict() -> None:
    model = registry.get_queue("ai:content").payload_model("generate-draft")
    assert model.model_validate({"article_id": 1, "prompt": "x"})
    for bad in (
        {"article_id": "1", "prompt": "x"},  # wrong type, no coercion
        {"article_id": 1, "prompt": ""},  # empty required string
        {"article_id": 1, "prompt": "x", "extra": 1},  # unknown field
        {"prompt": "x"},
    ):  # missing field
        with pytest.raises(ValidationError):
            model.model_validate(bad)
    assert payloads.RollupDaily.model_validate({"day": "2026-11-23"}).day.isoformat() == "2026-11-23"


def test_unknown_queue_and_job_name_what_exists() -> None:
    with pytest.raises(UnknownQueue, match="ai:content"):
        registry.get_queue("nope")
    with pytest.raises(UnknownJob, match="generate-draft"):
        registry.get_queue("ai:content").payload_model("nope")


def test_programs_add_queues_but_cannot_replace_product_ones() -> None:
    class Noop(payloads.Payload):
        n: int

    spec = registry.register_queue(QueueSpec("test:extra", "test", {"noop": Noop}))
    try:
        assert registry.get_queue("test:extra") is spec
        assert "test" in registry.families()
    finally:
        registry.unregister_queue("test:extra")
    with pytest.raises(ValueError):
        registry.register_queue(QueueSpec("ai:content", "x", {"noop": Noop}))
    assert len(registry.PRODUCT_QUEUE_NAMES) == 12


def test_one_typed_helper_per_product_queue() -> None:
    helpers = {name for name in dir(producer) if name.startswith("enqueue_") and name != "enqueue_many"}
    expected = {"enqueue_" + q.replace(":", "_") for q in registry.PRODUCT_QUEUE_NAMES}
    assert helpers == expected
