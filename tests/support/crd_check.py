"""A custom resource checked offline as the API server would: the CRD's openAPIV3Schema with
jsonschema (unknown fields refused, as with strict field validation, except where the schema keeps
them), then every CEL rule (``x-kubernetes-validations``) evaluated with cel-python."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def checked_in_crd(path: Path) -> dict[str, Any]:
    """A CRD as checked in (``path`` relative to the repository root, e.g. ``crd.CRD_PATH``)."""
    return dict(yaml.safe_load((REPO_ROOT / path).read_text()))


def checked_in_schema(path: Path) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of a checked-in CRD's (only) version."""
    return dict(checked_in_crd(path)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path or ".", node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if "items" in node:
        yield from schema_nodes(node["items"], f"{path}[]")


def strict(node: dict[str, Any]) -> dict[str, Any]:
    """The schema as the API server applies it with strict field validation: unknown fields refused."""
    node = copy.deepcopy(node)
    for _, sub in schema_nodes(node):
        if sub.get("type") == "object" and "properties" in sub:
            sub["additionalProperties"] = False
    return node


cel_env = celpy.Environment()


def cel_errors(
    schema: dict[str, Any], value: Any, path: str = "", old: Any = None, has_old: bool = False
) -> list[str]:
    """Evaluate every CEL rule on the value's nodes; transition rules (oldSelf) only on updates."""
    errors: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and not has_old:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if uses_old:
            activation["oldSelf"] = celpy.json_to_cel(old)
        result = cel_env.program(cel_env.compile(rule["rule"])).evaluate(activation)
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            errors.append(f"{path}{rule.get('fieldPath', '')}: {rule['message']}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                old_sub = old.get(name) if has_old and isinstance(old, dict) else None
                errors += cel_errors(
                    sub,
                    value[name],
                    f"{path}.{name}",
                    old_sub,
                    has_old and isinstance(old, dict) and name in old,
                )
    return errors


def schema_errors(
    schema: dict[str, Any], resource: dict[str, Any], old: dict[str, Any] | None = None
) -> list[str]:
    validator = jsonschema.Draft7Validator(strict(schema))
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(resource)]
    if not errors:  # the API server runs CEL only on a value that passed the OpenAPI checks
        errors = cel_errors(schema, resource, "", old, old is not None)
    return errors
