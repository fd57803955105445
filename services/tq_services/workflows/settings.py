"""The workflows family's settings: run-workflow, trigger-workflow (``TQ_WORKFLOW_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, PositiveFloat
from tq.settings import TqSettings


class WorkflowSettings(TqSettings):
    workflow_inline_wait_s: float = Field(
        2.0,
        ge=0.0,
        le=60.0,
        description="waits (delays, backoff, polling a child job) up to this per run are slept in the "
        "handler; a longer wait ends the run and schedules a delayed continuation job",
    )
    workflow_poll_interval_s: PositiveFloat = Field(
        5.0, description="how soon a continuation checks again on a child job that has not finished"
    )
    workflow_http_timeout_s: PositiveFloat = Field(10.0, description="default timeout of an `http` step")
    workflow_lease_s: PositiveFloat = Field(
        30.0,
        description="an instance's run lease in Redis, renewed while the run lives: a crashed run frees "
        "it after this",
    )
    workflow_max_output_bytes: int = Field(
        65_536, ge=1, le=10_000_000, description="most bytes of an `http` step's answer kept as its output"
    )


@lru_cache(maxsize=1)
def get_workflow_settings() -> WorkflowSettings:
    return WorkflowSettings()
