"""The chart's JobSchedules (templates/jobschedules.yaml): the families' default schedules, rendered
from files/default-schedules.yaml, which is generated from the code and never stale; the user's own
from values; every one valid for the CRD; values.schema.json refusing what the CRD would."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.chart import CHART, ENVS, NAMESPACE, RELEASE, Doc, env_values, render_docs
from support.crd_check import checked_in_schema, schema_errors
from tq_operator import crd, jobschedule
from tq_operator.schedule_handlers import parse
from tq_services import default_schedules, schedule_manifest

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")


def render(values: dict[str, Any] | None = None) -> dict[str, Doc]:
    """The JobSchedules the chart renders, by name."""
    return {d["metadata"]["name"]: d for d in render_docs(values or {}) if d.get("kind") == "JobSchedule"}


def crd_schema() -> dict[str, Any]:
    return checked_in_schema(crd.SCHEDULE_CRD_PATH)


def refused(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as info:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return str(info.value)


def test_the_default_schedules_file_is_generated_from_the_code_and_current(tmp_path: Path) -> None:
    assert schedule_manifest.stale_files(schedule_manifest.REPO_ROOT) == [], "run `make crd`"
    assert schedule_manifest.main(["--check", "--root", str(tmp_path)]) == 1
    assert schedule_manifest.main(["--root", str(tmp_path)]) == 0
    assert schedule_manifest.main(["--check", "--root", str(tmp_path)]) == 0


@pytest.mark.parametrize("env", ENVS)
def test_the_families_defaults_are_rendered_and_valid_for_the_crd(env: str) -> None:
    rendered = render(env_values(env))
    assert sorted(rendered) == sorted(s.name for s in default_schedules())
    schema = crd_schema()
    for name, doc in rendered.items():
        assert doc["apiVersion"] == "queues.teknav.io/v1alpha1"
        assert schema_errors(schema, doc) == [], name
        # the very spec the code declares, as the operator will read it
        assert parse(doc["spec"], name, 0.0) == next(s for s in default_schedules() if s.name == name)
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE and labels["app.kubernetes.io/part-of"] == "tq"


def test_toggle_disabled_family_overrides_and_own_schedules() -> None:
    assert render({"jobSchedules": {"defaults": False}}) == {}
    no_analytics = render(
        {"families": {"analytics": {"enabled": False, "queues": ["analytics:process", "analytics:snapshot"]}}}
    )
    assert sorted(no_analytics) == ["email-process-email-queue"]

    own = {
        "queue": "analytics:process",
        "job": "rollup-daily",
        "payload": {"day": "$today"},
        "cron": "0 3 * * *",
    }
    rendered = render(
        {
            "jobSchedules": {
                "overrides": {"analytics-process-events": {"suspend": True, "startingDeadlineSeconds": 120}},
                "schedules": {"late-rollup": own, "email-process-email-queue": {**own, "cron": "0 4 * * *"}},
            }
        }
    )
    events = rendered["analytics-process-events"]["spec"]
    assert (events["suspend"], events["startingDeadlineSeconds"], events["intervalSeconds"]) == (
        True,
        120,
        60,
    )
    assert rendered["late-rollup"]["spec"] == own
    # a user schedule named like a default replaces it
    assert rendered["email-process-email-queue"]["spec"]["job"] == "rollup-daily"
    for name, doc in rendered.items():
        assert schema_errors(crd_schema(), doc) == [], name


def test_values_schema_carries_the_crds_spec_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$defs"]["jobScheduleSpec"] == jobschedule.values_spec_schema()
    assert schema["$defs"]["jobScheduleSpecOverride"] == jobschedule.values_spec_schema(partial=True)
    overridable = schema["properties"]["jobSchedules"]["properties"]["overrides"]["properties"]
    assert sorted(overridable) == sorted(s.name for s in default_schedules())
    assert crd.default_schedule_names() == [s.name for s in default_schedules()]


OWN = {"queue": "email:send", "job": "process-email-queue", "intervalSeconds": 30}


@pytest.mark.parametrize(
    ("values", "named"),
    [
        pytest.param({"schedules": {"x": {**OWN, "intervalSecs": 3}}}, "intervalSecs", id="unknown-field"),
        pytest.param(
            {"schedules": {"x": {**OWN, "concurrencyPolicy": "Overlap"}}}, "concurrencyPolicy", id="policy"
        ),
        pytest.param({"schedules": {"x": {**OWN, "intervalSeconds": 0}}}, "intervalSeconds", id="interval-0"),
        pytest.param({"schedules": {"x": {**OWN, "cron": "* * * * *"}}}, "oneOf", id="cron-and-interval"),
        pytest.param(
            {"schedules": {"x": {"queue": "email:send", "job": "process-email-queue"}}}, "oneOf", id="neither"
        ),
        pytest.param({"schedules": {"x": {**OWN, "queue": "email:sned"}}}, "queue", id="unknown-queue"),
        pytest.param({"schedules": {"Bad_Name": OWN}}, "Bad_Name", id="bad-name"),
        pytest.param(
            {"overrides": {"analytics-rollup-dayly": {"suspend": True}}},
            "analytics-rollup-dayly",
            id="unknown-default",
        ),
        pytest.param(
            {"overrides": {"analytics-rollup-daily": {"suspnd": True}}}, "suspnd", id="override-typo"
        ),
        pytest.param({"default": False}, "default", id="typo-toggle"),
    ],
)
def test_values_schema_refuses_what_the_crd_would(values: dict[str, Any], named: str) -> None:
    assert named in refused({"jobSchedules": values})


def readme_yaml_blocks() -> list[Any]:
    """The YAML blocks of README.md's JobSchedule section, as written there."""
    text = (CHART.parents[1] / "README.md").read_text()
    section = text.split("### JobSchedule: the Kubernetes way", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def test_the_readme_examples_are_valid() -> None:
    resource, values = readme_yaml_blocks()
    assert schema_errors(crd_schema(), resource) == []
    parse(resource["spec"], resource["metadata"]["name"], 0.0)
    rendered = render(values)  # values.schema.json accepts it
    assert rendered["analytics-rollup-daily"]["spec"]["suspend"] is True
    nightly = rendered["nightly-funnel"]
    assert schema_errors(crd_schema(), nightly) == []
    parse(nightly["spec"], "nightly-funnel", 0.0)
