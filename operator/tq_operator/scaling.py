"""spec.replicas -> the family's Deployment, through its ``scale`` subresource.

Rules (README, Operator):
- the Deployment is ``TQ_OPERATOR_DEPLOYMENT`` with ``{family}`` filled in (``tq-messaging``), in
  the QueueConfig's namespace;
- the queues of one family share that Deployment, so it runs the highest ``spec.replicas`` of the
  family's QueueConfigs in the namespace (only those that own their queue and are valid);
- with ``TQ_OPERATOR_KEDA`` or a KEDA ScaledObject targeting the Deployment, the operator never
  scales: KEDA does, and the ``Scaled`` condition says so;
- no QueueConfig of the family setting replicas: the Deployment is left as it is;
- above ``TQ_OPERATOR_MAX_REPLICAS`` (the CRD caps ``spec.replicas`` at 100): not scaled, the
  ``Scaled`` condition says ``AboveMaximum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError
from tq.registry import get_queue

from tq_operator import kube
from tq_operator.settings import get_operator_settings
from tq_operator.spec import QueueConfigSpec


@dataclass(frozen=True)
class FamilyMember:
    """Index entry of ``by_family``: one valid QueueConfig of a family in a namespace."""

    uid: str
    queue: str
    replicas: int | None


@dataclass(frozen=True)
class ScaleResult:
    """The ``Scaled`` condition to report."""

    status: str
    reason: str
    message: str


def deployment_name(family: str) -> str:
    return get_operator_settings().operator_deployment.format(family=family)


def family_key(namespace: str, queue: str) -> str:
    # Index keys must be hashable and printable; "namespace/family" is both.
    return f"{namespace}/{get_queue(queue).family}"


def index_entry(spec: Any, meta: Any, namespace: str | None) -> dict[str, FamilyMember] | None:
    try:
        parsed = QueueConfigSpec.model_validate(dict(spec))
    except ValidationError:
        return None  # an invalid QueueConfig scales nothing
    member = FamilyMember(uid=str(meta.get("uid") or ""), queue=parsed.queue, replicas=parsed.replicas)
    return {family_key(namespace or "", parsed.queue): member}


def desired_replicas(members: list[FamilyMember], owners: dict[str, str]) -> int | None:
    """The highest replicas among the members that own their queue (``owners``: queue -> owner uid)."""
    values = [m.replicas for m in members if m.replicas is not None and owners.get(m.queue) == m.uid]
    return max(values) if values else None


async def scale_family(
    *,
    settings: kopf.OperatorSettings,
    logger: Any,
    body: kopf.Body,
    namespace: str,
    queue: str,
    desired: int,
) -> ScaleResult:
    family = get_queue(queue).family
    deployment = deployment_name(family)
    most = get_operator_settings().operator_max_replicas
    if desired > most:
        return ScaleResult(
            "False",
            "AboveMaximum",
            f"spec.replicas {desired} for deployment {deployment} is above the operator's maximum {most} "
            "(TQ_OPERATOR_MAX_REPLICAS): not scaled",
        )
    if get_operator_settings().operator_keda:
        return ScaleResult(
            "False",
            "ScaledByKEDA",
            f"KEDA scales deployment {deployment} (TQ_OPERATOR_KEDA): spec.replicas is not applied",
        )
    scaled_object = await kube.scaled_object_for(settings, logger, namespace, deployment)
    if scaled_object:
        return ScaleResult(
            "False",
            "ScaledByKEDA",
            f"KEDA ScaledObject {scaled_object} scales deployment {deployment}: spec.replicas is not applied",
        )
    try:
        scale = await kube.get_scale(settings, logger, namespace, deployment)
    except kube.NotFound:
        return ScaleResult("False", "DeploymentNotFound", f"no Deployment {namespace}/{deployment} to scale")
    current = (scale.get("spec") or {}).get("replicas")
    if current != desired:
        await kube.patch_scale(settings, logger, namespace, deployment, desired)
        message = f"scaled deployment {deployment} of family {family} from {current} to {desired} replicas"
        logger.info(message)
        kopf.event(body, type="Normal", reason="Scaled", message=message)
    return ScaleResult(
        "True",
        "Scaled",
        f"deployment {deployment} runs {desired} replicas, the highest spec.replicas of family {family}",
    )
