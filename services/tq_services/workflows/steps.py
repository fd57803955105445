"""Step types of a workflow definition and one attempt of each.

A definition's ``steps`` is a JSON list; each step has a ``type``, its config, an optional
``name`` and its own ``retry`` policy (attempts, exponential backoff from ``initial_s`` capped at
``max_s``):

- ``enqueue``: enqueue ``job`` on ``queue`` with ``payload`` through the engine's producer and wait
  for it (its job record); its output is the child job's result. ``timeout_s`` bounds the wait.
- ``http``: one request with httpx (``method``, ``url``, ``headers``, JSON ``body``,
  ``timeout_s``); a 2xx answer's status and body (JSON if it parses) are the output, anything else
  fails the attempt.
- ``delay``: wait ``seconds``.
- ``condition``: test the previous step's output (``path`` into it, ``op``, ``value``); when false
  the workflow stops there (``on_false: stop``, the rest are skipped) or fails (``on_false: fail``).

Values in an enqueue step's ``payload`` and an http step's ``body`` may refer to the instance's
input or an earlier step's output: a string that is exactly ``$input.<path>``, ``$previous.<path>``
or ``$steps.<n>.<path>`` (the path may be empty) is replaced by that value, any JSON type. A
reference to nothing fails the workflow (no retry makes it appear).

An attempt ends ``Done(output)``, or ``Waiting(due)`` when it is not finished yet (a child job still
running, a delay not over): the runner comes back to it later, in this run or a continuation job.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from tq import jobs
from tq.envelope import JobState
from tq.errors import InvalidPayload, NotFound, TqError
from tq.producer import Producer
from tq.registry import get_queue
from tq.settings import Settings

from tq_services.workflows.errors import InvalidWorkflow, StepError, StepFailedForGood
from tq_services.workflows.models import WorkflowStepExecution
from tq_services.workflows.settings import WorkflowSettings


class StepRetry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(3, ge=1, le=100, description="attempts in all, the first included")
    initial_s: float = Field(1.0, ge=0.0, le=86_400.0)
    max_s: float = Field(300.0, ge=0.0, le=86_400.0)

    def backoff_s(self, failed: int) -> float:
        """Delay before the attempt after the ``failed``-th failed one."""
        return float(min(self.initial_s * 2 ** max(failed - 1, 0), self.max_s))


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, min_length=1, max_length=200)
    retry: StepRetry = StepRetry()


class EnqueueStep(_Step):
    type: Literal["enqueue"]
    queue: str
    job: str
    payload: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0, description="how long to wait for the child job")

    @model_validator(mode="after")
    def _known_job(self) -> EnqueueStep:
        try:
            get_queue(self.queue).payload_model(self.job)
        except TqError as exc:
            raise ValueError(str(exc)) from None
        return self


class HttpStep(_Step):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    timeout_s: float | None = Field(None, gt=0, le=600)


class DelayStep(_Step):
    type: Literal["delay"]
    seconds: float = Field(ge=0, le=30 * 86_400)


class ConditionStep(_Step):
    type: Literal["condition"]
    path: str = Field("", description="dotted path into the previous step's output; empty: all of it")
    op: Literal["eq", "ne", "gt", "ge", "lt", "le", "in", "exists", "truthy"] = "truthy"
    value: Any = None
    on_false: Literal["stop", "fail"] = "stop"


Step = Annotated[EnqueueStep | HttpStep | DelayStep | ConditionStep, Field(discriminator="type")]
_STEPS: TypeAdapter[list[Step]] = TypeAdapter(list[Step])


def parse_steps(raw: Any, where: str = "workflow") -> list[Step]:
    """The definition's steps, validated; ``InvalidWorkflow`` names every problem."""
    try:
        steps = _STEPS.validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"steps.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise InvalidWorkflow(f"{where} has invalid steps: {problems}") from None
    if not steps:
        raise InvalidWorkflow(f"{where} has no steps")
    return steps


def label(index: int, step: Step) -> str:
    """How a step is named in errors and the DLQ: ``step 2 'notify' (http)``."""
    named = f" {step.name!r}" if step.name else ""
    return f"step {index}{named} ({step.type})"


@dataclass(frozen=True)
class Done:
    output: Any


@dataclass(frozen=True)
class Waiting:
    due: float  # epoch seconds when the step is worth looking at again


Outcome = Done | Waiting

_MISSING = object()


def lookup(value: Any, path: str) -> Any:
    """``value`` at dotted ``path`` (dict keys, list indexes); ``_MISSING`` when absent."""
    for part in filter(None, path.split(".")):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def holds(step: ConditionStep, previous: Any) -> bool:
    found = lookup(previous, step.path)
    if step.op == "exists":
        return found is not _MISSING
    if found is _MISSING:
        return False
    if step.op == "truthy":
        return bool(found)
    if step.op == "eq":
        return bool(found == step.value)
    if step.op == "ne":
        return bool(found != step.value)
    if step.op == "in":
        return isinstance(step.value, list | str | dict) and found in step.value
    try:
        if step.op == "gt":
            return bool(found > step.value)
        if step.op == "ge":
            return bool(found >= step.value)
        if step.op == "lt":
            return bool(found < step.value)
        return bool(found <= step.value)
    except TypeError:  # comparing a string with a number: not an error of the workflow, just false
        return False


REFERENCE = re.compile(r"^\$(input|previous|steps\.\d+)(?:\.(.*))?$")


def resolve(value: Any, input_data: Any, outputs: list[Any]) -> Any:
    """``value`` with every reference (``$input.x``, ``$previous.x``, ``$steps.<n>.x``) replaced."""
    if isinstance(value, dict):
        return {k: resolve(v, input_data, outputs) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, input_data, outputs) for v in value]
    if not isinstance(value, str) or (match := REFERENCE.match(value)) is None:
        return value
    root, path = match.group(1), match.group(2) or ""
    if root == "input":
        base = input_data
    elif root == "previous":
        base = outputs[-1] if outputs else _MISSING
    else:
        n = int(root.split(".", 1)[1])
        base = outputs[n] if n < len(outputs) else _MISSING
    found = _MISSING if base is _MISSING else lookup(base, path)
    if found is _MISSING:
        raise StepFailedForGood(f"{value!r} refers to nothing")
    return found


def _now() -> datetime:
    return datetime.now(UTC)


async def run_delay(step: DelayStep, row: WorkflowStepExecution) -> Outcome:
    if row.due_at is None:
        row.due_at = _now() + timedelta(seconds=step.seconds)
    due = row.due_at.timestamp()
    if time.time() >= due:
        return Done({"waited_s": step.seconds})
    return Waiting(due)


async def run_enqueue(
    step: EnqueueStep,
    payload: dict[str, Any],
    row: WorkflowStepExecution,
    redis: Any,
    settings: Settings,
    workflows: WorkflowSettings,
    instance_id: int,
) -> Outcome:
    """Enqueue the child once per attempt (the idempotency key is the attempt's row, so a resumed
    run finds the same child), then look at its job record."""
    if row.child_job_id is None:
        try:
            row.child_job_id = await Producer(redis, settings).enqueue(
                step.queue, step.job, payload, idempotency_key=f"wf-{instance_id}-exec-{row.id}"
            )
        except InvalidPayload as exc:
            raise StepFailedForGood(str(exc)) from None
        row.child_queue = step.queue
    try:
        record = await jobs.get_job(redis, step.queue, row.child_job_id)
    except NotFound:
        raise StepError(
            f"child job {row.child_job_id} on {step.queue} is gone (trimmed by retention)"
        ) from None
    if record.state is JobState.COMPLETED:
        return Done(record.result)
    if record.state is JobState.DEAD:
        raise StepError(
            f"child job {row.child_job_id} ({step.queue} {step.job}) dead-lettered: "
            f"{record.error_type}: {record.error}"
        )
    if step.timeout_s is not None and time.time() - row.started_at.timestamp() > step.timeout_s:
        raise StepError(f"child job {row.child_job_id} did not finish within {step.timeout_s:g}s")
    return Waiting(time.time() + workflows.workflow_poll_interval_s)


async def run_http(step: HttpStep, body: Any, workflows: WorkflowSettings) -> Outcome:
    timeout = step.timeout_s or workflows.workflow_http_timeout_s
    limit = workflows.workflow_max_output_bytes
    kwargs: dict[str, Any] = {"headers": step.headers}
    if body is not None:
        kwargs["json"] = body
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream(step.method, step.url, **kwargs) as answer,
        ):
            kept = bytearray()
            async for chunk in answer.aiter_bytes():
                kept += chunk
                if len(kept) >= limit:
                    break
            status = answer.status_code
    except httpx.TimeoutException as exc:
        raise StepError(
            f"{step.method} {step.url} timed out after {timeout:g}s: {type(exc).__name__}"
        ) from None
    except (httpx.HTTPError, OSError) as exc:
        raise StepError(f"{step.method} {step.url} failed: {type(exc).__name__}: {exc}"[:1000]) from None
    text = bytes(kept[:limit]).decode("utf-8", "replace")
    if not 200 <= status < 300:
        raise StepError(f"{step.method} {step.url} answered {status}: {text[:200]}")
    try:
        answer_body: Any = json.loads(text)
    except ValueError:
        answer_body = text
    return Done({"status": status, "body": answer_body})


def run_condition(step: ConditionStep, previous: Any) -> Outcome:
    result = holds(step, previous)
    if not result and step.on_false == "fail":
        raise StepFailedForGood(f"condition {step.path or '(output)'} {step.op} {step.value!r} is false")
    return Done({"result": result})
