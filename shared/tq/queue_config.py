"""The shape of a queue's config, stated once: the models, their bounds, and the ``tq:{q}:config``
hash encoding derived from them.

- ``RetryPolicy`` and ``RateLimit``: the nested parts;
- ``QueueDefaults``: what a queue runs with (the registry's per-queue values);
- ``QueueOverride``: the defaults' fields, all optional (``TQ_QUEUES``; ``retry`` is replaced whole);
- ``RuntimeConfig``: the defaults plus what only a live config has (generation, paused, rate limit);
- ``ConfigOverride``: its fields, all optional, ``retry`` field by field: what the config hash holds.

``apply`` merges an override over a config; ``tq.config`` reads and writes the hash and resolves
registry defaults + settings overrides + the hash in one place. This module imports nothing of
tq (``tq.settings`` builds on it).

The hash is flat: a nested model's fields are named with a prefix (default: the field's name and
``_``), a field's own name otherwise; ``HashName`` gives either where the wire name differs. The
names are the ones operators and CLIs have always written (``backoff_initial_s``, ``rate_jobs``).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, create_model
from pydantic.fields import FieldInfo

# --- bounds, each stated once (the operator's QueueConfig spec uses them too) -------------------

Concurrency = Annotated[int, Field(ge=1, le=1000)]
Attempts = Annotated[int, Field(ge=1, le=100)]
Jitter = Annotated[float, Field(ge=0.0, le=1.0)]
Retention = Annotated[int, Field(ge=0)]
DlqMaxLen = Annotated[int, Field(ge=1, le=10_000_000)]
Generation = Annotated[int, Field(ge=0)]
TimeLimit = Annotated[float, Field(ge=0.0, le=86400.0)]  # seconds; 0: no limit


@dataclass(frozen=True)
class HashName:
    """A field's name in the config hash; on a field holding a nested model, the prefix of its
    fields' names. Only where the rule (own name; ``<field>_`` prefix) does not give it."""

    name: str


_FROZEN = ConfigDict(extra="forbid", frozen=True)


# --- the models ---------------------------------------------------------------------------------


class RetryPolicy(BaseModel):
    """Exponential backoff: ``initial * 2**(attempt-1)`` capped at ``max``, +/- ``jitter``."""

    model_config = _FROZEN

    attempts: Attempts = Field(5, description="runs in all, the first included")
    initial_s: Annotated[PositiveFloat, HashName("backoff_initial_s")] = 2.0
    max_s: Annotated[PositiveFloat, HashName("backoff_max_s")] = 120.0
    jitter: Jitter = Field(0.2, description="fraction of the delay, drawn uniformly +/-")


class RateLimit(BaseModel):
    """At most ``jobs`` job starts per ``per_s`` seconds."""

    model_config = _FROZEN

    jobs: PositiveInt
    per_s: PositiveFloat = 1.0


class QueueDefaults(BaseModel):
    """What a queue runs with when no QueueConfig says otherwise."""

    model_config = _FROZEN

    concurrency: Concurrency = Field(16, description="in-flight jobs per replica")
    retry: Annotated[RetryPolicy, HashName("")] = RetryPolicy()
    retention_completed: Retention = 1000
    retention_failed: Retention = 5000
    dlq_max_len: DlqMaxLen = Field(
        50_000,
        description="most entries the dead-letter queue keeps: at the cap each new dead job trims "
        "the oldest entry (counted: dlq_trimmed)",
    )
    idempotency_ttl_s: PositiveInt = 24 * 3600
    visibility_timeout_s: PositiveFloat = Field(
        60.0, description="a pending entry idle this long belongs to a dead consumer and is reclaimed"
    )
    timeout_s: TimeLimit = Field(
        0.0,
        description="a job's time limit per attempt (s): past it the job is cancelled and the attempt "
        "fails with JobTimeout, retried per the policy; 0: no limit",
    )


class RuntimeConfig(QueueDefaults):
    """The config a queue's consumers run with: its defaults and the live-only fields."""

    generation: Generation = Field(0, description="the QueueConfig generation this came from; 0: defaults")
    paused: bool = False
    rate_limit: Annotated[RateLimit | None, HashName("rate_")] = None


# --- all-optional variants, derived from the fields above -------------------------------------


def _nested_model(info: FieldInfo) -> type[BaseModel] | None:
    """The model a field holds (``X`` or ``X | None``), if any."""
    annotation = info.annotation
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
    return models[0] if models else None


def _optional_fields(model: type[BaseModel], *, per_field: bool) -> dict[str, Any]:
    """``model``'s fields as annotations with the same bounds, each optional (absent: None).

    ``per_field``: a nested model that always has a value (``retry``) becomes all-optional too, so
    it can be overridden field by field; otherwise it is given whole. A nested model that may be
    absent (``rate_limit``) is always given whole."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation: Any = info.annotation
        nested = _nested_model(info)
        if per_field and nested is not None and info.default is not None:
            annotation = _partial(nested)
        elif info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[name] = Annotated[cast(Any, annotation) | None, Field(None, description=info.description)]
    return fields


_partials: dict[type[BaseModel], type[BaseModel]] = {}


def _partial(model: type[BaseModel]) -> type[BaseModel]:
    if model not in _partials:
        _partials[model] = create_model(
            f"{model.__name__}Override",
            __config__=_FROZEN,
            __doc__=f"``{model.__name__}`` with every field optional.",
            __module__=__name__,
            **_optional_fields(model, per_field=True),
        )
    return _partials[model]


class QueueOverride(BaseModel):
    """Per-queue overrides of ``QueueDefaults`` given through settings (``TQ_QUEUES``): the same
    fields and bounds, each optional; a ``retry`` given replaces the queue's whole policy."""

    model_config = _FROZEN
    __annotations__ = _optional_fields(QueueDefaults, per_field=False)


class ConfigOverride(BaseModel):
    """What a live config overrides (the ``tq:{q}:config`` hash): ``RuntimeConfig``'s fields and
    bounds, each optional, ``retry`` field by field. The operator writes one of these."""

    model_config = _FROZEN
    __annotations__ = _optional_fields(RuntimeConfig, per_field=True)


M = TypeVar("M", bound=BaseModel)


def apply(base: M, override: BaseModel | None) -> M:
    """``base`` with every field ``override`` gives (not None); nested models merge field by field."""
    changes = override.model_dump(exclude_none=True) if override is not None else {}
    if not changes:
        return base
    return type(base).model_validate(_merge(base.model_dump(), changes))


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = _merge(out[name], value)
        else:
            out[name] = value
    return out


# --- the hash encoding --------------------------------------------------------------------------


def _hash_name(info: FieldInfo) -> str | None:
    return next((m.name for m in info.metadata if isinstance(m, HashName)), None)


def _layout(
    model: type[BaseModel], prefix: str = "", path: tuple[str, ...] = ()
) -> dict[str, tuple[str, ...]]:
    """Hash field -> path of every (nested) field of ``model``."""
    out: dict[str, tuple[str, ...]] = {}
    for name, info in model.model_fields.items():
        given = _hash_name(info)
        nested = _nested_model(info)
        if nested is not None:
            inner = _layout(nested, prefix + (f"{name}_" if given is None else given), (*path, name))
        else:
            inner = {prefix + (name if given is None else given): (*path, name)}
        clash = set(inner) & set(out)
        if clash:
            raise TypeError(f"config hash fields named twice: {sorted(clash)}")
        out.update(inner)
    return out


# hash field -> path in RuntimeConfig, e.g. "backoff_initial_s" -> ("retry", "initial_s")
HASH_FIELDS: Mapping[str, tuple[str, ...]] = types.MappingProxyType(_layout(RuntimeConfig))


def _text(value: Any) -> str:
    return ("1" if value else "0") if isinstance(value, bool) else str(value)


def to_hash(cfg: RuntimeConfig | ConfigOverride) -> dict[str, str]:
    """The hash fields of every field ``cfg`` gives (a ``ConfigOverride``: only those it overrides)."""
    data = cfg.model_dump(exclude_none=True)
    out: dict[str, str] = {}
    for field, path in HASH_FIELDS.items():
        value: Any = data
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            out[field] = _text(value)
    return out


def parse_hash(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> ConfigOverride:
    """A config hash (as HGETALL returns it) as the override it holds, validated by the model.

    Unknown fields are ignored, and so is a part of a model that may be absent without its
    required fields (``rate_per_s`` without ``rate_jobs``)."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        path = HASH_FIELDS.get(key.decode() if isinstance(key, bytes) else key)
        if path is None:
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value.decode() if isinstance(value, bytes) else value
    for name, info in RuntimeConfig.model_fields.items():
        nested = _nested_model(info)
        if nested is not None and info.default is None and name in data:
            required = {n for n, f in nested.model_fields.items() if f.is_required()}
            if not required <= set(data[name]):
                del data[name]
    return ConfigOverride.model_validate(data)
