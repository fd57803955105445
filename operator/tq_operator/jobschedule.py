"""The JobSchedule custom resource: its CRD, generated from the engine's ``tq.schedules.ScheduleSpec``
(the spec; ``name`` is the resource's ``metadata.name``) and the status model here, as QueueConfig's
is from ``tq_operator.spec``; and the chart's values schema for ``jobSchedules``.

``make crd`` (``python -m tq_operator.crd``) writes it with the other generated files.

``concurrencyPolicy`` is ``Allow``, ``Forbid`` or ``Replace`` (the engine's scheduler cancels the
previous unfinished job through ``tq.cancel``, then runs the tick).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from tq.registry import PRODUCT_QUEUE_NAMES, get_queue
from tq.schedules import ScheduleSpec

from tq_operator.schema import custom_resource_definition, printer_column, structural_schema
from tq_operator.spec import GROUP, VERSION, Condition, _CamelModel

KIND = "JobSchedule"
PLURAL = "jobschedules"
SINGULAR = "jobschedule"
SHORT_NAMES = ["js"]
CRD_NAME = f"{PLURAL}.{GROUP}"


# --- status --------------------------------------------------------------------------------------


class ScheduleCondition(Condition):
    """A condition in the Kubernetes shape (metav1.Condition)."""

    type: str = Field(max_length=316, description="Ready, Suspended or Conflict")


class TickCounts(_CamelModel):
    """The schedule's ticks since it was first written, by outcome (the elected scheduler counts)."""

    fired: int = Field(0, ge=0, description="ticks that enqueued a job")
    skipped: int = Field(
        0,
        ge=0,
        description="ticks skipped: Forbid found the previous job unfinished, or it could not be enqueued",
    )
    missed: int = Field(
        0,
        ge=0,
        description="ticks missed: later than startingDeadlineSeconds, or passed while no scheduler ran",
    )


class JobScheduleStatus(_CamelModel):
    """What the operator observed in Redis; written by the operator only."""

    observed_generation: int | None = Field(None, ge=0, description="the generation last reconciled")
    conditions: list[ScheduleCondition] = Field(
        default_factory=list,
        description="Ready (written to Redis, or why not), Suspended, and Conflict (the name is another's)",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    schedule: str | None = Field(
        None, max_length=256, description="the schedule in words: cron '15 0 * * *' UTC, or every 60s"
    )
    suspended: bool | None = Field(
        None,
        description="whether the schedule in Redis is suspended: spec.suspend, or `tq schedule suspend` and "
        "the admin page, which hold until the spec changes",
    )
    last_schedule_time: datetime | None = Field(
        None, description="the last tick the scheduler handled (fired, skipped or missed)"
    )
    next_schedule_time: datetime | None = Field(None, description="the next tick")
    last_job_id: str | None = Field(
        None, max_length=256, description="the id of the job the last run enqueued"
    )
    last_job_outcome: str | None = Field(
        None,
        max_length=64,
        description="that job's state: waiting, active, delayed, completed, failed, dead, or expired "
        "(its record trimmed)",
    )
    last_error: str | None = Field(
        None, max_length=4096, description="why the last due tick could not be enqueued (empty: it could)"
    )
    ticks: TickCounts | None = None


# --- the CRD -------------------------------------------------------------------------------------


def jobs_by_queue() -> dict[str, list[str]]:
    return {q: list(get_queue(q).jobs) for q in PRODUCT_QUEUE_NAMES}


def _cel_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def spec_schema() -> dict[str, Any]:
    """The CRD's spec: ``ScheduleSpec`` without ``name``, the registry's queues and jobs as enums,
    a CEL rule per pair (a job of that queue) and one for exactly one of cron and intervalSeconds.
    The payload is kept as given (the operator validates it against the job's model)."""
    schema = structural_schema(ScheduleSpec)
    props = schema["properties"]
    del props["name"]
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    schema["description"] = (
        "What the schedule declares; its name in Redis is the resource's metadata.name. The payload is "
        "validated by the operator against the job's model (Ready=False with the reason when it is refused)."
    )
    jobs = jobs_by_queue()
    props["queue"]["enum"] = list(PRODUCT_QUEUE_NAMES)
    props["job"]["enum"] = sorted({j for js in jobs.values() for j in js})
    props["payload"]["x-kubernetes-preserve-unknown-fields"] = True
    pairs = ", ".join(f"{_cel_string(q)}: [{', '.join(map(_cel_string, js))}]" for q, js in jobs.items())
    schema["x-kubernetes-validations"] = [
        {
            "rule": "has(self.cron) != has(self.intervalSeconds)",
            "message": "give exactly one of cron and intervalSeconds",
        },
        {
            "rule": f"self.job in {{{pairs}}}[self.queue]",
            "message": "job is not one of the queue's jobs",
            "fieldPath": ".job",
        },
    ]
    return schema


def printer_columns() -> list[dict[str, Any]]:
    return [
        printer_column("Queue", "string", ".spec.queue", "the queue the job is enqueued on"),
        printer_column("Job", "string", ".spec.job", "the job's name"),
        printer_column("Schedule", "string", ".status.schedule", "cron and time zone, or the interval"),
        printer_column("Suspended", "boolean", ".status.suspended", "the schedule in Redis is suspended"),
        printer_column("Last", "string", ".status.lastScheduleTime", "the last tick handled"),
        printer_column("Next", "string", ".status.nextScheduleTime", "the next tick"),
        printer_column("Outcome", "string", ".status.lastJobOutcome", "state of the last job enqueued"),
        printer_column("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Ready condition"),
        printer_column("Last Job", "string", ".status.lastJobId", "the last job's id", priority=1),
        printer_column("Policy", "string", ".spec.concurrencyPolicy", "Allow, Forbid or Replace", priority=1),
        printer_column("Fired", "integer", ".status.ticks.fired", "ticks that enqueued a job", priority=1),
        printer_column("Missed", "integer", ".status.ticks.missed", "ticks missed", priority=1),
        printer_column("Age", "date", ".metadata.creationTimestamp", "age of the resource"),
    ]


def build_crd() -> dict[str, Any]:
    return custom_resource_definition(
        group=GROUP,
        version=VERSION,
        kind=KIND,
        plural=PLURAL,
        singular=SINGULAR,
        short_names=SHORT_NAMES,
        description="A recurring job: the operator writes it to Redis, where the elected scheduler of "
        "the worker processes enqueues it at each tick, exactly once.",
        printer_columns=printer_columns(),
        spec_schema=spec_schema(),
        status_schema=structural_schema(JobScheduleStatus),
    )


# --- the chart's values --------------------------------------------------------------------------

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"  # a Kubernetes object name, as tq.schedules wants it
_NOT_JSON_SCHEMA = ("x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys")


def values_spec_schema(partial: bool = False) -> dict[str, Any]:
    """The CRD's spec schema as JSON Schema for the chart's values (``jobSchedules.schedules``
    entries; ``partial``: ``jobSchedules.defaults.overrides``, no field required). Unknown fields
    refused except inside the payload; the CEL rules become ``oneOf`` (cron or intervalSeconds)."""

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in node.items() if k not in _NOT_JSON_SCHEMA}
        if out.pop("x-kubernetes-preserve-unknown-fields", False):
            return out  # the payload: any object
        if "properties" in out:
            out["properties"] = {name: convert(sub) for name, sub in out["properties"].items()}
            out["additionalProperties"] = False
        if "items" in out:
            out["items"] = convert(out["items"])
        return out

    schema = convert(spec_schema())
    if partial:
        schema.pop("required", None)
        schema["description"] = "fields that replace those of the default schedule of this name"
    else:
        schema["oneOf"] = [{"required": ["cron"]}, {"required": ["intervalSeconds"]}]
        schema["description"] = (
            "a JobSchedule's spec, checked as the CRD checks it (generated from it by `make crd`); give "
            "exactly one of cron and intervalSeconds"
        )
    return schema
