"""The QueueConfig CRD: generated from the registry and the spec models, never stale, and strict.

"The schema rejects" here means what the API server would do, checked offline: the openAPIV3Schema
with jsonschema (unknown fields refused, as the API server's strict field validation does), plus
every CEL rule (``x-kubernetes-validations``) evaluated with cel-python. The spec models must refuse
the same specs, so one that slips past the API server is still reported by the operator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from support import crd_check
from support.crd_check import cel_env, schema_nodes
from tq import config
from tq.registry import PRODUCT_QUEUE_NAMES, get_queue
from tq_operator import crd
from tq_operator.spec import (
    QueueConfigSpec,
    QueueConfigStatus,
    SpecError,
    format_duration,
    parse_duration,
    to_runtime_config,
)

# --- helpers -------------------------------------------------------------------------------------


def checked_in_crd() -> dict[str, Any]:
    return crd_check.checked_in_crd(crd.CRD_PATH)


def openapi_schema() -> dict[str, Any]:
    return crd_check.checked_in_schema(crd.CRD_PATH)


def schema_errors(resource: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return crd_check.schema_errors(openapi_schema(), resource, old)


def model_errors(spec: dict[str, Any]) -> list[str]:
    try:
        QueueConfigSpec.model_validate(spec)
    except ValidationError as e:
        return [".".join(str(p) for p in err["loc"]) + ": " + err["msg"] for err in e.errors()]
    return []


def resource(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "queues.teknav.io/v1alpha1",
        "kind": "QueueConfig",
        "metadata": {"name": "x", "namespace": "tq"},
        "spec": spec,
    }


def example(queue: str) -> dict[str, Any]:
    return dict(yaml.safe_load((crd.REPO_ROOT / crd.example_path(queue)).read_text()))


# --- generation ----------------------------------------------------------------------------------


def test_checked_in_crd_and_examples_are_fresh() -> None:
    stale = crd.stale_files(crd.REPO_ROOT, examples=True)
    assert not stale, f"stale generated files {stale}: run `make crd`"


def test_check_flag_fails_on_a_stale_tree_and_passes_after_writing(tmp_path: Path) -> None:
    assert crd.main(["--check", "--examples", "--root", str(tmp_path)]) == 1
    assert crd.main(["--examples", "--root", str(tmp_path)]) == 0
    assert crd.main(["--check", "--examples", "--root", str(tmp_path)]) == 0
    target = tmp_path / crd.CRD_PATH
    target.write_text(target.read_text().replace("maximum: 1000\n", "maximum: 999\n", 1))
    assert crd.main(["--check", "--root", str(tmp_path)]) == 1


def test_generation_is_deterministic() -> None:
    assert crd.render_crd() == crd.render_crd()
    assert yaml.safe_load(crd.render_crd()) == crd.build_crd()


def test_crd_identity_scope_and_subresources() -> None:
    doc = checked_in_crd()
    assert doc["metadata"]["name"] == "queueconfigs.queues.teknav.io"
    spec = doc["spec"]
    assert spec["group"] == "queues.teknav.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "QueueConfig"
    assert spec["names"]["plural"] == "queueconfigs"
    assert spec["names"]["singular"] == "queueconfig"
    assert spec["names"]["shortNames"] == ["qc"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    [version] = checked_in_crd()["spec"]["versions"]
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert list(columns) == [
        "Queue",
        "Concurrency",
        "Paused",
        "Waiting",
        "DLQ",
        "Ready",
        "Applied",
        "Generation",
        "Observed",
        "Age",
    ]
    wide = {c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) > 0}
    assert wide == {"Applied", "Generation", "Observed"}  # `kubectl get qc -o wide` only
    assert columns["Applied"] == ("string", '.status.conditions[?(@.type=="Applied")].status')
    assert columns["Generation"] == ("integer", ".metadata.generation")
    assert columns["Observed"] == ("integer", ".status.observedGeneration")
    assert columns["Waiting"] == ("integer", ".status.depth.waiting")
    assert columns["DLQ"] == ("integer", ".status.depth.dlq")
    assert columns["Ready"] == ("string", '.status.conditions[?(@.type=="Ready")].status')
    assert columns["Age"] == ("date", ".metadata.creationTimestamp")


def test_every_schema_node_has_a_description() -> None:
    """So that `kubectl explain queueconfig.spec.retry.backoff` (and every other path) reads well."""
    undescribed = [path for path, node in schema_nodes(openapi_schema()) if not node.get("description")]
    assert undescribed == []
    for column in checked_in_crd()["spec"]["versions"][0]["additionalPrinterColumns"]:
        assert column["description"], column["name"]


def test_queue_enum_is_the_registrys_product_queues() -> None:
    assert openapi_schema()["properties"]["spec"]["properties"]["queue"]["enum"] == list(PRODUCT_QUEUE_NAMES)


def test_schema_is_structural() -> None:
    """Kubernetes' structural-schema rules that can be checked offline."""
    forbidden = {"$ref", "anyOf", "allOf", "oneOf", "not", "nullable", "default", "title", "definitions"}
    for path, node in schema_nodes(openapi_schema()):
        assert "type" in node, f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        assert not forbidden & set(node), f"{path}: {forbidden & set(node)}"
        if node["type"] == "array":
            assert "items" in node, path


def test_every_cel_rule_compiles_and_its_strings_are_bounded() -> None:
    rules = 0
    for path, node in schema_nodes(openapi_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            cel_env.compile(rule["rule"])
            assert rule["message"], path
            rules += 1
        # Unbounded strings make the API server's CEL cost estimate refuse the CRD.
        if node["type"] == "string" and "x-kubernetes-validations" in node:
            assert "maxLength" in node or "enum" in node, path
    assert rules >= 5


def test_status_schema_accepts_a_status_written_by_the_model() -> None:
    status = QueueConfigStatus.model_validate(
        {
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Applied",
                    "message": "2 consumers run generation 3",
                    "lastTransitionTime": "2026-11-23T12:00:00Z",
                }
            ],
            "depth": {"waiting": 0, "active": 1, "delayed": 0, "dlq": 12},
            "consumers": 2,
            "lastReplay": {"token": "1732345678", "replayed": 12, "skipped": 0, "at": "2026-11-23T12:00:00Z"},
        }
    )
    doc = {**resource({"queue": "ai:content"}), "status": status.model_dump(mode="json", exclude_none=True)}
    assert schema_errors(doc) == []


# --- examples ------------------------------------------------------------------------------------


@pytest.mark.parametrize("queue", PRODUCT_QUEUE_NAMES)
def test_example_is_valid_and_writes_out_the_registry_defaults(queue: str) -> None:
    doc = example(queue)
    assert doc["metadata"] == {"name": queue.replace(":", "-"), "namespace": "tq"}
    assert schema_errors(doc) == []
    spec = QueueConfigSpec.model_validate(doc["spec"])
    assert spec.queue == queue
    d = get_queue(queue).defaults
    cfg = to_runtime_config(spec, generation=1)
    assert (cfg.concurrency, cfg.paused, cfg.rate_limit) == (d.concurrency, False, None)
    assert cfg.retry == d.retry
    assert (cfg.retention_completed, cfg.retention_failed) == (d.retention_completed, d.retention_failed)
    assert cfg.idempotency_ttl_s == d.idempotency_ttl_s


# --- invalid specs: the schema and the models both refuse, naming the field ----------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = value

    return mutate


INVALID: dict[str, tuple[Mutation, str]] = {
    "concurrency 0": (_set("concurrency", 0), "concurrency"),
    "concurrency 1001": (_set("concurrency", 1001), "concurrency"),
    "unknown field": (_set("concurency", 4), "concurency"),
    "unknown nested field": (_set("retry.backof", {}), "backof"),
    "queue not in the registry": (_set("queue", "ai:nope"), "queue"),
    "bad duration string": (_set("idempotencyTTL", "2 minutes"), "idempotencyTTL"),
    "bad backoff duration": (_set("retry.backoff.initial", "2 minutes"), "initial"),
    "negative retention completed": (_set("retention.completed", -1), "completed"),
    "negative retention failed": (_set("retention.failed", -5), "failed"),
    "negative replicas": (_set("replicas", -1), "replicas"),
    "attempts 0": (_set("retry.attempts", 0), "attempts"),
    "jitter above 1": (_set("retry.backoff.jitter", 1.5), "jitter"),
    "rate limit without jobs": (_set("rateLimit", {"per": "1s"}), "jobs"),
    # The rest pass the OpenAPI checks and are caught by CEL rules (and the model validators).
    "backoff max below initial": (_set("retry.backoff", {"initial": "2m", "max": "2s"}), "max"),
    "zero backoff": (_set("retry.backoff.initial", "0s"), "initial"),
    "zero rate window": (_set("rateLimit", {"jobs": 5, "per": "0ms"}), "per"),
    "sub-second idempotency TTL": (_set("idempotencyTTL", "500ms"), "idempotencyTTL"),
    "zero timeout": (_set("timeout", "0s"), "timeout"),
    "timeout above 24h": (_set("timeout", "25h"), "timeout"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_spec_is_rejected_by_schema_and_model(case: str) -> None:
    mutate, field = INVALID[case]
    spec: dict[str, Any] = {"queue": "ai:content"}
    mutate(spec)
    by_schema = schema_errors(resource(spec))
    by_model = model_errors(spec)
    assert by_schema, f"the schema accepted {spec}"
    assert by_model, f"the model accepted {spec}"
    assert any(field in e for e in by_schema), by_schema
    assert any(field in e for e in by_model), by_model


VALID: dict[str, dict[str, Any]] = {
    "only the queue": {"queue": "email:send"},
    "bounds": {"queue": "ai:seo", "concurrency": 1000, "replicas": 0, "retention": {"completed": 0}},
    "the design's example": {
        "queue": "ai:content",
        "concurrency": 8,
        "replicas": 2,
        "paused": False,
        "retry": {"attempts": 5, "backoff": {"initial": "2s", "max": "2m", "jitter": 0.2}},
        "rateLimit": {"jobs": 100, "per": "1s"},
        "retention": {"completed": 1000, "failed": 5000},
        "idempotencyTTL": "24h",
    },
    "compound and sub-second durations": {
        "queue": "webhooks:deliver",
        "retry": {"backoff": {"initial": "500ms", "max": "1h30m"}},
        "idempotencyTTL": "1.5s",
    },
    "equal backoff bounds": {"queue": "otp:send", "retry": {"backoff": {"initial": "2s", "max": "2s"}}},
    "time limits": {"queue": "ai:review", "timeout": "24h"},
}


@pytest.mark.parametrize("case", list(VALID))
def test_valid_spec_is_accepted_by_schema_and_model(case: str) -> None:
    spec = VALID[case]
    assert schema_errors(resource(spec)) == []
    assert model_errors(spec) == []


def test_queue_is_immutable_on_update() -> None:
    old = resource({"queue": "ai:content"})
    assert schema_errors(resource({"queue": "ai:content", "paused": True}), old) == []
    errors = schema_errors(resource({"queue": "ai:seo"}), old)
    assert errors == [".spec.queue: queue is immutable"]


# --- spec -> runtime config ----------------------------------------------------------------------


def test_absent_fields_keep_the_registry_defaults() -> None:
    for queue in PRODUCT_QUEUE_NAMES:
        cfg = to_runtime_config(QueueConfigSpec(queue=queue), generation=7)
        assert cfg == config.defaults(queue).model_copy(update={"generation": 7})


def test_given_fields_override_and_durations_become_seconds() -> None:
    spec = QueueConfigSpec.model_validate(
        {
            "queue": "ai:content",
            "concurrency": 3,
            "paused": True,
            "retry": {"backoff": {"initial": "500ms", "max": "2m"}},
            "rateLimit": {"jobs": 100, "per": "1m"},
            "retention": {"failed": 10},
            "idempotencyTTL": "1h30m",
            "timeout": "4m30s",
        }
    )
    cfg = to_runtime_config(spec, generation=3)
    base = config.defaults("ai:content")
    assert cfg.generation == 3
    assert (cfg.concurrency, cfg.paused) == (3, True)
    assert (cfg.retry.initial_s, cfg.retry.max_s) == (0.5, 120.0)
    assert (cfg.retry.attempts, cfg.retry.jitter) == (base.retry.attempts, base.retry.jitter)
    assert cfg.rate_limit == config.RateLimit(jobs=100, per_s=60.0)
    assert (cfg.retention_completed, cfg.retention_failed) == (base.retention_completed, 10)
    assert cfg.idempotency_ttl_s == 5400
    assert cfg.timeout_s == 270.0
    assert cfg.visibility_timeout_s == base.visibility_timeout_s  # not part of the resource
    # What the operator writes is what consumers read back.
    assert config.from_hash("ai:content", config.to_hash(cfg)) == cfg


def test_rate_limit_window_defaults_to_one_second_and_ttl_rounds_up() -> None:
    spec = QueueConfigSpec.model_validate(
        {"queue": "email:send", "rateLimit": {"jobs": 5}, "idempotencyTTL": "1.5s"}
    )
    cfg = to_runtime_config(spec, generation=1)
    assert cfg.rate_limit == config.RateLimit(jobs=5, per_s=1.0)
    assert cfg.idempotency_ttl_s == 2


def test_backoff_crossing_a_default_once_merged_is_a_spec_error() -> None:
    # ai:content's default max is 2m: an initial of 5m alone is valid for the schema, not once merged.
    spec = QueueConfigSpec.model_validate({"queue": "ai:content", "retry": {"backoff": {"initial": "5m"}}})
    with pytest.raises(SpecError, match="max"):
        to_runtime_config(spec, generation=1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("2m", 120.0), ("24h", 86400.0), ("1h30m", 5400.0), ("1.5s", 1.5)],
)
def test_durations_parse_and_format_back(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["2 minutes", "", "2", "1d", "-1s", "s", "2m ", "1e3s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
