"""The operator's settings (``TQ_OPERATOR_*``); its Redis comes from the engine's ``tq.settings``.
Not to be confused with ``kopf.OperatorSettings``, kopf's own per-run configuration."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, PositiveFloat
from tq.settings import TqSettings


class OperatorSettings(TqSettings):
    operator_refresh_s: PositiveFloat = Field(
        10.0,
        description="how often the operator refreshes QueueConfig status (depth, consumers, Applied) and "
        "JobSchedule status (last and next schedule, last job)",
    )
    operator_deployment: str = Field(
        "tq-{family}",
        description="the Deployment (in the QueueConfig's namespace) that `spec.replicas` scales "
        "(`{family}`: the queue's family)",
    )
    operator_keda: bool = Field(
        False, description="KEDA scales the families: the operator never applies `spec.replicas`"
    )
    operator_peering: str = Field(
        "tq-operator",
        description="the ClusterKopfPeering the operator replicas elect their leader in (the chart names one "
        "per release); empty: standalone (one replica)",
    )
    operator_namespaces: str = Field(
        "",
        description="comma-separated namespaces whose QueueConfigs and JobSchedules the operator reconciles "
        "(the chart: the release's namespace plus `operator.watchNamespaces`); empty: every namespace",
    )
    operator_health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of kopf's liveness endpoint `/healthz` (the chart's liveness and readiness probes; "
        "answers once the operator started); 0: none",
    )
    operator_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of the operator's Prometheus `/metrics` (`tq_operator_*`: reconciles, errors, "
        "latency); 0: none",
    )
    operator_max_replicas: int = Field(
        20,
        ge=0,
        le=100,
        description="the most replicas `spec.replicas` may ask for a family's Deployment (the CRD allows "
        "up to 100); a QueueConfig asking more is not scaled (`Scaled` False, `AboveMaximum`)",
    )
    operator_priority: int | None = Field(
        None,
        description="peering priority; unset: seniority (the oldest live replica leads); any value >= 0 "
        "outranks them",
    )


@lru_cache(maxsize=1)
def get_operator_settings() -> OperatorSettings:
    return OperatorSettings()


def watched_namespaces(operator: OperatorSettings) -> list[str]:
    """``operator_namespaces`` as a list; empty: the operator watches every namespace."""
    return sorted({n.strip() for n in operator.operator_namespaces.split(",") if n.strip()})
