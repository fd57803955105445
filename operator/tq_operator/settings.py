"""The operator's settings (``TQ_OPERATOR_*``); its Redis comes from the engine's ``tq.settings``.
Not to be confused with ``kopf.OperatorSettings``, kopf's own per-run configuration."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, PositiveFloat
from tq.settings import TqSettings


class OperatorSettings(TqSettings):
    operator_refresh_s: PositiveFloat = Field(
        10.0, description="how often the operator refreshes QueueConfig status (depth, consumers, Applied)"
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
        description="the ClusterKopfPeering the operator replicas elect their leader in; empty: standalone "
        "(one replica)",
    )
    operator_priority: int | None = Field(
        None,
        description="peering priority; unset: seniority (the oldest live replica leads); any value >= 0 "
        "outranks them",
    )


@lru_cache(maxsize=1)
def get_operator_settings() -> OperatorSettings:
    return OperatorSettings()
