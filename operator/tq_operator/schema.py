"""Pydantic models as Kubernetes structural schemas (a CRD's ``openAPIV3Schema``): no ``$ref``, no
``anyOf``, every node typed, pydantic's extras dropped. Used for QueueConfig (``tq_operator.crd``) and
JobSchedule (``tq_operator.jobschedule``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Keys a structural schema may carry, in the order they are written. Anything else pydantic emits
# (title, default, additionalProperties: false, $ref/anyOf once resolved) is dropped or resolved.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "properties",
    "required",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
)
# Dropped on purpose: titles are noise; defaults would make the API server fill in values that
# must stay absent (absent = the registry's default); unknown fields are refused by the API
# server's strict field validation and pruned otherwise, and structural schemas forbid
# `additionalProperties` next to `properties`.
_DROPPED = {"title", "default", "additionalProperties"}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as a Kubernetes structural schema: no $ref, no anyOf, every node typed."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}))


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    node.pop("$defs", None)
    if "$ref" in node:
        target = defs[node.pop("$ref").removeprefix("#/$defs/")]
        node = {**target, **node}  # the field's own description wins over the model's docstring
    if "anyOf" in node:
        # Optional[X] is the only union the models use: absent means "keep the default".
        variants = [v for v in node.pop("anyOf") if v != {"type": "null"}]
        if len(variants) != 1:
            raise ValueError(f"unsupported union in schema: {variants}")
        node = {**_structural(variants[0], defs), **node}
    if node.get("type") == "integer" and "exclusiveMinimum" in node:  # PositiveInt: > 0 is >= 1
        node["minimum"] = node.pop("exclusiveMinimum") + 1
    unknown = set(node) - set(_KEY_ORDER) - _DROPPED
    if unknown:
        raise ValueError(f"schema keys with no structural equivalent: {sorted(unknown)}")
    if "type" not in node:
        raise ValueError(f"schema node without a type: {node}")
    out: dict[str, Any] = {}
    for key in _KEY_ORDER:
        if key not in node:
            continue
        value = node[key]
        if key == "properties":
            value = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            value = _structural(value, defs)
        elif key == "x-kubernetes-validations":
            # pydantic sorts keys; rule first reads better.
            value = [{k: rule[k] for k in ("rule", "message", "fieldPath") if k in rule} for rule in value]
        out[key] = value
    return out


def printer_column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    """One of a CRD's ``additionalPrinterColumns`` (what ``kubectl get`` shows)."""
    out: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path, "description": description}
    if priority:
        out["priority"] = priority  # shown by `kubectl get -o wide`
    return out


def custom_resource_definition(
    *,
    group: str,
    version: str,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    description: str,
    printer_columns: list[dict[str, Any]],
    spec_schema: dict[str, Any],
    status_schema: dict[str, Any],
) -> dict[str, Any]:
    """A namespaced tq CRD with one served version, a status subresource and a required spec: the
    shape QueueConfig (``tq_operator.crd``) and JobSchedule (``tq_operator.jobschedule``) share."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            "labels": {"app.kubernetes.io/part-of": "tq", "app.kubernetes.io/component": "operator"},
        },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["tq"],
            },
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": description,
                            "type": "object",
                            "properties": {
                                "apiVersion": {
                                    "description": f"the API version: {group}/{version}",
                                    "type": "string",
                                },
                                "kind": {"description": f"the kind: {kind}", "type": "string"},
                                "metadata": {"description": "the object's metadata", "type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }
