"""The JobSchedule CRD: generated from ``tq.schedules.ScheduleSpec`` and the registry, structural,
described for ``kubectl explain``, and strict: what the API server refuses (schema, CEL) the
engine's model refuses too, and the other way round for everything but the payload, which only
the operator can check against the job's model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from support import crd_check
from support.crd_check import cel_env, schema_errors, schema_nodes
from tq.registry import PRODUCT_QUEUE_NAMES, get_queue
from tq.schedules import ScheduleSpec
from tq_operator import crd, jobschedule
from tq_operator.schedule_handlers import parse


def checked_in_crd() -> dict[str, Any]:
    return crd_check.checked_in_crd(crd.SCHEDULE_CRD_PATH)


def openapi_schema() -> dict[str, Any]:
    return crd_check.checked_in_schema(crd.SCHEDULE_CRD_PATH)


def resource(spec: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {
        "apiVersion": "queues.teknav.io/v1alpha1",
        "kind": "JobSchedule",
        "metadata": {"name": name, "namespace": "tq"},
        "spec": spec,
    }


def errors(spec: dict[str, Any]) -> list[str]:
    return schema_errors(openapi_schema(), resource(spec))


def model_errors(spec: dict[str, Any]) -> list[str]:
    try:
        ScheduleSpec.model_validate({**spec, "name": "x"})
    except ValidationError as e:
        return [".".join(str(p) for p in err["loc"]) + ": " + err["msg"] for err in e.errors()]
    return []


BASE: dict[str, Any] = {"queue": "email:send", "job": "process-email-queue", "intervalSeconds": 60}


def test_checked_in_crd_is_the_generated_one() -> None:
    assert (crd.REPO_ROOT / crd.SCHEDULE_CRD_PATH).read_text() == crd.generated_files(False)[
        crd.SCHEDULE_CRD_PATH
    ]


def test_identity_names_and_status_subresource() -> None:
    doc = checked_in_crd()
    assert doc["metadata"]["name"] == "jobschedules.queues.teknav.io"
    spec = doc["spec"]
    assert (spec["group"], spec["scope"]) == ("queues.teknav.io", "Namespaced")
    assert spec["names"]["kind"] == "JobSchedule" and spec["names"]["shortNames"] == ["js"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_and_wide() -> None:
    [version] = checked_in_crd()["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [n for n, c in columns.items() if not c.get("priority")] == [
        "Queue",
        "Job",
        "Schedule",
        "Suspended",
        "Last",
        "Next",
        "Outcome",
        "Ready",
        "Age",
    ]
    assert [n for n, c in columns.items() if c.get("priority")] == ["Last Job", "Policy", "Fired", "Missed"]
    assert columns["Last"]["jsonPath"] == ".status.lastScheduleTime"
    assert columns["Last Job"]["jsonPath"] == ".status.lastJobId"
    status_props = openapi_schema()["properties"]["status"]["properties"]
    for column in columns.values():  # each column reads a field the schema has
        path = column["jsonPath"]
        if path.startswith(".status.") and "[" not in path:
            assert path.split(".")[2] in status_props, path
        assert column["description"]


def test_every_schema_node_is_described_and_structural() -> None:
    schema = openapi_schema()
    assert [path for path, node in schema_nodes(schema) if not node.get("description")] == []
    forbidden = {"$ref", "anyOf", "allOf", "oneOf", "not", "nullable", "default", "title", "definitions"}
    kept = []
    for path, node in schema_nodes(schema):
        assert "type" in node, path
        assert not forbidden & set(node), path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            kept.append(path)
    assert kept == [".spec.payload"]  # the job's model checks it (the operator), not the API server


def test_enums_are_the_registrys_and_replace_says_it_cancels() -> None:
    spec = openapi_schema()["properties"]["spec"]
    assert spec["properties"]["queue"]["enum"] == list(PRODUCT_QUEUE_NAMES)
    jobs = {j for q in PRODUCT_QUEUE_NAMES for j in get_queue(q).jobs}
    assert set(spec["properties"]["job"]["enum"]) == jobs
    policy = spec["properties"]["concurrencyPolicy"]
    assert policy["enum"] == ["Allow", "Forbid", "Replace"] and "cancelled" in policy["description"]
    assert "name" not in spec["properties"]  # metadata.name
    for _, node in schema_nodes(openapi_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            cel_env.compile(rule["rule"])


Mutation = Callable[[dict[str, Any]], None]


def _set(**fields: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for k, v in fields.items():
            if v is None:
                spec.pop(k, None)
            else:
                spec[k] = v

    return mutate


INVALID: dict[str, tuple[Mutation, str]] = {
    "unknown field": (_set(intervalSecs=60), "intervalSecs"),
    "interval 0": (_set(intervalSeconds=0), "intervalSeconds"),
    "deadline 0": (_set(startingDeadlineSeconds=0), "startingDeadlineSeconds"),
    "unknown policy": (_set(concurrencyPolicy="Overlap"), "concurrencyPolicy"),
    "no queue": (_set(queue=None), "queue"),
    # CEL (the model's validator for the same rule)
    "cron and interval": (_set(cron="* * * * *"), "exactly one of cron and intervalSeconds"),
    "neither cron nor interval": (_set(intervalSeconds=None), "exactly one of cron and intervalSeconds"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_spec_is_rejected_by_schema_and_model(case: str) -> None:
    mutate, named = INVALID[case]
    spec = dict(BASE)
    mutate(spec)
    by_schema, by_model = errors(spec), model_errors(spec)
    assert any(named in e for e in by_schema), by_schema
    assert any(named in e for e in by_model), by_model


def test_a_job_of_another_queue_is_refused_by_cel_and_the_operator() -> None:
    spec = {**BASE, "job": "rollup-daily"}  # a job of analytics:process
    assert errors(spec) == [".spec.job: job is not one of the queue's jobs"]
    with pytest.raises(LookupError, match="unknown job 'rollup-daily'"):
        parse(spec, "x", 0.0)


def test_what_only_the_operator_catches_passes_the_api_server() -> None:
    """A bad cron, time zone or payload: the schema cannot know; the operator refuses them."""
    for spec, reason in (
        ({**BASE, "payload": {"limit": "lots"}}, "limit"),
        ({"queue": "email:send", "job": "process-email-queue", "cron": "61 * * * *"}, "cron"),
        ({**BASE, "timeZone": "Mars/Olympus"}, "time zone"),
    ):
        assert errors(spec) == []
        with pytest.raises(ValueError, match=reason):
            parse(spec, "x", 0.0)


def test_examples_and_the_charts_defaults_pass_the_crd_and_the_operator() -> None:
    paths = sorted((crd.REPO_ROOT / "examples").glob("jobschedule-*.yaml"))
    assert len(paths) >= 2
    docs = [yaml.safe_load(p.read_text()) for p in paths]
    defaults = yaml.safe_load((crd.REPO_ROOT / crd.DEFAULT_SCHEDULES_PATH).read_text())["schedules"]
    docs += [resource(d["spec"], d["name"]) for d in defaults]
    for doc in docs:
        assert schema_errors(openapi_schema(), doc) == [], doc["metadata"]["name"]
        parse(doc["spec"], doc["metadata"]["name"], 0.0)


def test_status_schema_accepts_a_status_written_by_the_model() -> None:
    status = jobschedule.JobScheduleStatus.model_validate(
        {
            "observedGeneration": 2,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Scheduled",
                    "message": "written",
                    "lastTransitionTime": "2026-12-02T10:00:00Z",
                }
            ],
            "schedule": "every 60s",
            "suspended": False,
            "lastScheduleTime": "2026-12-02T10:00:00Z",
            "nextScheduleTime": "2026-12-02T10:01:00Z",
            "lastJobId": "01JD0000000000000000000000",
            "lastJobOutcome": "completed",
            "ticks": {"fired": 3, "skipped": 1, "missed": 0},
        }
    )
    doc = {**resource(BASE), "status": status.model_dump(mode="json", exclude_none=True)}
    assert schema_errors(openapi_schema(), doc) == []
