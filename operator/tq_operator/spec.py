"""The QueueConfig custom resource as pydantic models: spec, status, and the spec as the override it
writes to the queue's config hash (``to_override``).

These models are the single source of the CRD's schema (``tq_operator.crd`` derives it from them),
and they enforce the same rules as the CRD's CEL validations, so a spec that slips past the API
server (CEL disabled, an old cluster, a direct etcd write) is still refused by the operator.
Field names are the camelCase of the YAML (aliases); Python code may use the snake_case names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from tq import config
from tq.queue_config import Attempts, Concurrency, ConfigOverride, DlqMaxLen, Jitter, RuntimeConfig
from tq.registry import PRODUCT_QUEUE_NAMES
from tq.settings import Settings

GROUP = "queues.teknav.io"
VERSION = "v1alpha1"
KIND = "QueueConfig"
MAX_REPLICAS = 100  # the CRD's bound on spec.replicas; the operator's own (TQ_OPERATOR_MAX_REPLICAS) is lower

# Go/CEL-style durations ("500ms", "2s", "2m", "24h", "1h30m"); no days: CEL's duration() has none.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DURATION_MAX_LENGTH = 32  # bounds the API server's CEL cost estimate for rules over these strings
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"2m"`` -> 120.0 seconds; the same strings CEL's ``duration()`` accepts."""
    if len(text) > DURATION_MAX_LENGTH or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 500ms, 2s, 2m, 24h or 1h30m")
    return round(sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)), 6)


def format_duration(seconds: float) -> str:
    """The shortest string ``parse_duration`` maps back to ``seconds`` (millisecond precision)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class CelRule:
    """A CEL rule attached to a schema node as ``x-kubernetes-validations`` (an Annotated marker).

    The pydantic validators next to it enforce the same rule in Python.
    """

    rule: str
    message: str

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.setdefault("x-kubernetes-validations", []).append({"rule": self.rule, "message": self.message})
        return schema


def _positive(text: str) -> str:
    if parse_duration(text) <= 0:
        raise ValueError("must be a positive duration")
    return text


def _at_least_one_second(text: str) -> str:
    if parse_duration(text) < 1:
        raise ValueError("must be at least 1s")
    return text


def _time_limit(text: str) -> str:
    if not 0 < parse_duration(text) <= 86400:
        raise ValueError("must be a positive duration of at most 24h")
    return text


_DurationString = StringConstraints(pattern=DURATION_PATTERN, max_length=DURATION_MAX_LENGTH)
PositiveDuration = Annotated[
    str,
    _DurationString,
    AfterValidator(_positive),
    CelRule("duration(self) > duration('0s')", "must be a positive duration"),
]
TtlDuration = Annotated[
    str,
    _DurationString,
    AfterValidator(_at_least_one_second),
    CelRule("duration(self) >= duration('1s')", "must be at least 1s"),
]

TimeLimitDuration = Annotated[
    str,
    _DurationString,
    AfterValidator(_time_limit),
    CelRule(
        "duration(self) > duration('0s') && duration(self) <= duration('24h')",
        "must be a positive duration of at most 24h",
    ),
]


class _CamelModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


# --- spec ----------------------------------------------------------------------------------------


class Backoff(_CamelModel):
    """Exponential backoff between attempts: initial * 2**(attempt-1), capped at max, +/- jitter."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.initial) || !has(self.max)"
                    " || duration(self.max) >= duration(self.initial)",
                    "message": "backoff.max must be >= backoff.initial",
                    "fieldPath": ".max",
                }
            ]
        }
    )

    initial: PositiveDuration | None = Field(None, description="delay before the second attempt, e.g. 2s")
    max: PositiveDuration | None = Field(None, description="cap on the delay, e.g. 2m; >= initial")
    jitter: Jitter | None = Field(None, description="fraction of the delay drawn uniformly +/-")

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> Backoff:
        initial, cap = self.initial, self.max
        if initial is not None and cap is not None and parse_duration(cap) < parse_duration(initial):
            raise ValueError("backoff.max must be >= backoff.initial")
        return self


class Retry(_CamelModel):
    """Retry policy; fields not given keep the queue's registry defaults."""

    attempts: Attempts | None = Field(None, description="runs in all, the first included")
    backoff: Backoff | None = None


class RateLimitSpec(_CamelModel):
    """At most ``jobs`` job starts per ``per`` for the whole queue."""

    jobs: int = Field(ge=1, le=1_000_000, description="job starts allowed per window")
    per: PositiveDuration = Field("1s", description="the window, e.g. 1s or 1m; 1s when not given")


class Retention(_CamelModel):
    """How many finished jobs of each kind the queue keeps for inspection."""

    completed: int | None = Field(None, ge=0, le=1_000_000, description="completed jobs kept")
    failed: int | None = Field(None, ge=0, le=1_000_000, description="failed jobs kept")


class QueueConfigSpec(_CamelModel):
    """Desired runtime config of one queue; fields not given keep the queue's registry defaults."""

    queue: str = Field(
        description="the queue this configures (one of the registry's queues)",
        json_schema_extra={
            "enum": list(PRODUCT_QUEUE_NAMES),
            # A QueueConfig that switched queues would leave the old one configured: recreate instead.
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "queue is immutable"}],
        },
    )
    concurrency: Concurrency | None = Field(None, description="in-flight jobs per replica")
    replicas: int | None = Field(
        None,
        ge=0,
        le=MAX_REPLICAS,
        description="optional: scales the family's Deployment (at most the operator's "
        "TQ_OPERATOR_MAX_REPLICAS, the chart's operator.maxReplicas)",
    )
    paused: bool | None = Field(None, description="true: consumers take no new jobs; false when not given")
    retry: Retry | None = None
    rate_limit: RateLimitSpec | None = Field(None, description="optional; no rate limit when not given")
    retention: Retention | None = None
    dlq_max_len: DlqMaxLen | None = Field(
        None,
        description="most entries the dead-letter queue keeps; at the cap each new dead job trims the "
        "oldest entry (counted in tq_dlq_trimmed_total); not given: the registry's cap",
    )
    idempotency_ttl: TtlDuration | None = Field(
        None, alias="idempotencyTTL", description="how long a job id dedupes re-submissions, e.g. 24h"
    )
    timeout: TimeLimitDuration | None = Field(
        None,
        description="a job's time limit per attempt, e.g. 10m, for every job of the queue: past it the "
        "job is cancelled and the attempt fails (JobTimeout, retried per the policy); not given: "
        "the registry's limits",
    )

    @field_validator("queue")
    @classmethod
    def _known_queue(cls, value: str) -> str:
        # Product queues only, like the CRD's enum: queues registered at run time have no resource.
        if value not in PRODUCT_QUEUE_NAMES:
            raise ValueError(f"queue {value!r} is not one of {', '.join(PRODUCT_QUEUE_NAMES)}")
        return value


class SpecError(ValueError):
    """A spec that is valid on its own but not once merged over the queue's defaults."""


def to_override(spec: QueueConfigSpec, generation: int) -> ConfigOverride:
    """What the operator writes to the queue's config hash: the fields the spec gives, in the
    engine's units, plus ``generation`` and ``paused`` (false when not given) always."""
    fields: dict[str, Any] = {"generation": generation, "paused": bool(spec.paused)}
    if spec.concurrency is not None:
        fields["concurrency"] = spec.concurrency
    if spec.retry is not None:
        backoff = spec.retry.backoff or Backoff()
        retry = {
            "attempts": spec.retry.attempts,
            "initial_s": None if backoff.initial is None else parse_duration(backoff.initial),
            "max_s": None if backoff.max is None else parse_duration(backoff.max),
            "jitter": backoff.jitter,
        }
        if given := {k: v for k, v in retry.items() if v is not None}:
            fields["retry"] = given
    if spec.rate_limit is not None:
        fields["rate_limit"] = {"jobs": spec.rate_limit.jobs, "per_s": parse_duration(spec.rate_limit.per)}
    if spec.retention is not None:
        fields["retention_completed"] = spec.retention.completed
        fields["retention_failed"] = spec.retention.failed
    if spec.dlq_max_len is not None:
        fields["dlq_max_len"] = spec.dlq_max_len
    if spec.idempotency_ttl is not None:
        # The engine keeps whole seconds; round up so a TTL is never shorter than asked.
        fields["idempotency_ttl_s"] = math.ceil(parse_duration(spec.idempotency_ttl))
    if spec.timeout is not None:
        fields["timeout_s"] = parse_duration(spec.timeout)
    return ConfigOverride.model_validate(fields)


def to_runtime_config(
    spec: QueueConfigSpec, generation: int, settings: Settings | None = None
) -> RuntimeConfig:
    """The config consumers will run: the spec's override over the queue's defaults (as this
    process's settings see them), the way ``tq.config.resolve`` merges it."""
    cfg = config.resolve(spec.queue, to_override(spec, generation), settings)
    # Only one of initial/max given can still cross the other's default (initial 5m, default max 2m).
    if cfg.retry.max_s < cfg.retry.initial_s:
        raise SpecError(
            f"retry.backoff: max ({format_duration(cfg.retry.max_s)}) is below initial "
            f"({format_duration(cfg.retry.initial_s)}) once merged with the queue's defaults"
        )
    return cfg


# --- status --------------------------------------------------------------------------------------


class Condition(_CamelModel):
    """A condition in the Kubernetes shape (metav1.Condition)."""

    type: str = Field(max_length=316, description="Ready, Paused, Applied, Conflict or Scaled")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase cause of the last transition",
    )
    message: str = Field(max_length=32768, description="human-readable detail")
    last_transition_time: datetime = Field(description="changes only when status changes")
    observed_generation: int | None = Field(None, ge=0, description="the generation it was set for")


class Depth(_CamelModel):
    """Jobs in the queue by state, refreshed by the operator's timer."""

    waiting: int = Field(0, ge=0, description="jobs waiting for a consumer")
    active: int = Field(0, ge=0, description="jobs running now")
    delayed: int = Field(0, ge=0, description="jobs due later (delayed, or a retry in backoff)")
    dlq: int = Field(0, ge=0, description="jobs in the dead-letter queue")


class LastReplay(_CamelModel):
    """The last handled value of the replay annotation; a token is replayed at most once (the
    operator removes the annotation once it acted, and remembers the token)."""

    token: str = Field(max_length=256, description="the annotation value that was handled")
    result: Literal["Replayed", "Refused"] | None = Field(
        None, description="Replayed, or Refused (a bad replay-limit: nothing replayed)"
    )
    message: str | None = Field(None, max_length=1024, description="what was done, in words")
    replayed: int = Field(ge=0, description="DLQ entries moved back to the queue")
    skipped: int = Field(ge=0, description="DLQ entries left in place (filter, limit)")
    at: datetime = Field(description="when the operator handled it")


class LastPurge(_CamelModel):
    """The last handled purge-dlq annotation (removed once handled)."""

    request: str = Field(max_length=256, description="the annotation value: the queue's name to purge")
    result: Literal["Purged", "Refused"] = Field(
        description="Purged, or Refused (the value did not name the queue: nothing purged)"
    )
    message: str | None = Field(None, max_length=1024, description="what was done, in words")
    purged: int = Field(ge=0, description="DLQ entries deleted")
    at: datetime = Field(description="when the operator handled it")


class QueueConfigStatus(_CamelModel):
    """What the operator observed; written by the operator only."""

    observed_generation: int | None = Field(None, ge=0, description="the generation last reconciled")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Paused, Applied, Conflict and Scaled (with spec.replicas)",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    depth: Depth | None = None
    consumers: int | None = Field(None, ge=0, description="live consumers of the queue")
    last_replay: LastReplay | None = None
    last_purge: LastPurge | None = None
