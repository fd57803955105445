"""``skaffold.yaml``, checked without a cluster: its structure against skaffold's own JSON schema
for its apiVersion (vendored in tests/chart/schemas: this machine cannot fetch it at test time), each
profile as patched, and that everything it names exists: the Dockerfile, the chart, every values
file, the values it sets and the admin Service it port-forwards."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = ROOT / "skaffold.yaml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
PROFILES = ("dev", "staging", "prod")


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return loaded


def schema_for(api_version: str) -> dict[str, Any]:
    path = SCHEMAS / f"skaffold-{api_version.removeprefix('skaffold/')}.json"
    assert path.exists(), f"vendor skaffold's schema for {api_version} as {path.name}"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def pointer_parts(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def apply_patches(doc: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove, what skaffold profiles use."""
    out = copy.deepcopy(doc)
    for patch in patches:
        *parents, last = pointer_parts(patch["path"])
        target: Any = out
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) and last != "-" else last
        if patch["op"] == "remove":
            del target[key]
        elif patch["op"] == "replace":
            if isinstance(target, dict):
                assert key in target, f"replace of a missing {patch['path']}"
            target[key] = patch["value"]
        elif patch["op"] == "add":
            if isinstance(target, list):
                target.insert(len(target) if key == "-" else key, patch["value"])
            else:
                target[key] = patch["value"]
        else:
            raise AssertionError(f"unexpected patch op {patch['op']}")
    return out


def effective(profile: str) -> dict[str, Any]:
    """The config skaffold runs with ``-p profile``: the patches applied, the profile's fields merged."""
    base = config()
    (prof,) = [p for p in base["profiles"] if p["name"] == profile]
    out = apply_patches({k: v for k, v in base.items() if k != "profiles"}, prof.get("patches", []))
    for key in ("build", "deploy", "portForward", "manifests", "test"):
        if key in prof:
            out[key] = prof[key]
    return out


def test_matches_skaffold_schema() -> None:
    doc = config()
    jsonschema.validate(doc, schema_for(doc["apiVersion"]))
    for profile in PROFILES:
        jsonschema.validate(effective(profile), schema_for(doc["apiVersion"]))


def test_schema_check_bites() -> None:
    doc = config()
    broken = copy.deepcopy(doc)
    broken["deploy"]["helm"]["releases"][0]["valueFiles"] = ["x.yaml"]  # typo of valuesFiles
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema_for(doc["apiVersion"]))


def test_profiles_use_their_values_file_and_every_named_file_exists() -> None:
    doc = config()
    assert [p["name"] for p in doc["profiles"]] == list(PROFILES)
    (dev,) = [p for p in doc["profiles"] if p["name"] == "dev"]
    assert {"command": "dev"} in dev["activation"]
    for profile in PROFILES:
        (release,) = effective(profile)["deploy"]["helm"]["releases"]
        assert release["valuesFiles"] == [f"charts/tq/values-{profile}.yaml"]
    named: list[str] = []
    for source in [doc, *doc["profiles"]]:
        named += [
            f for r in source.get("deploy", {}).get("helm", {}).get("releases", []) for f in r["valuesFiles"]
        ]
        for patch in source.get("patches", []):
            if patch["path"].endswith("/valuesFiles"):
                named += patch["value"]
    assert named
    for file in named:
        assert (ROOT / file).is_file(), file


def test_build_and_chart_exist_and_values_it_sets_are_in_the_chart() -> None:
    doc = config()
    (artifact,) = doc["build"]["artifacts"]
    assert (ROOT / artifact["docker"]["dockerfile"]).is_file()
    (release,) = doc["deploy"]["helm"]["releases"]
    chart = ROOT / release["chartPath"]
    assert (chart / "Chart.yaml").is_file()
    values = yaml.safe_load((chart / "values.yaml").read_text())
    for dotted in release["setValueTemplates"]:
        node: Any = values
        for part in dotted.split("."):
            assert isinstance(node, dict) and part in node, f"{dotted} is not a value of the chart"
            node = node[part]
    assert artifact["image"] == values["image"]["repository"]
    assert release["setValueTemplates"]["image.repository"] == f"{{{{.IMAGE_REPO_{artifact['image']}}}}}"


def test_dev_port_forwards_the_admin_service() -> None:
    (release,) = config()["deploy"]["helm"]["releases"]
    (forward,) = effective("dev")["portForward"]
    values = yaml.safe_load((ROOT / release["chartPath"] / "values.yaml").read_text())
    assert forward["resourceType"].lower() == "service"
    # the chart names components <release>-<component> (chart name tq contained in the release name)
    assert forward["resourceName"] == f"{release['name']}-admin"
    assert forward["namespace"] == release["namespace"]
    assert forward["port"] == values["admin"]["port"]
