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

Paused families and KEDA: KEDA scales on the consumer group's lag, and a paused queue's lag only
grows, so KEDA would push a family whose queues are all paused toward maxReplicas. While every
queue of a family is paused (by the QueueConfigs owning them in the namespace), the operator
freezes the family's ScaledObject at the Deployment's current replicas with KEDA's
``autoscaling.keda.sh/paused-replicas`` annotation, marked as its own (``PAUSED_BY``); once any
queue runs again it removes both. Freezing, not scaling to zero: pausing stops taking jobs, it
does not stop the pods (in-flight jobs finish, /metrics and the consumers stay visible, resuming
needs no cold start). A paused-replicas annotation set by someone else is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError
from tq.registry import families, get_queue

from tq_operator import kube
from tq_operator.settings import get_operator_settings
from tq_operator.spec import GROUP, QueueConfigSpec

PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
PAUSED_BY = f"{GROUP}/paused-scaling"  # the operator set PAUSED_REPLICAS (so it may remove it)


@dataclass(frozen=True)
class FamilyMember:
    """Index entry of ``by_family``: one valid QueueConfig of a family in a namespace."""

    uid: str
    queue: str
    replicas: int | None
    paused: bool = False


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
    member = FamilyMember(
        uid=str(meta.get("uid") or ""),
        queue=parsed.queue,
        replicas=parsed.replicas,
        paused=bool(parsed.paused),
    )
    return {family_key(namespace or "", parsed.queue): member}


def desired_replicas(members: list[FamilyMember], owners: dict[str, str]) -> int | None:
    """The highest replicas among the members that own their queue (``owners``: queue -> owner uid)."""
    values = [m.replicas for m in members if m.replicas is not None and owners.get(m.queue) == m.uid]
    return max(values) if values else None


def family_paused(family: str, members: list[FamilyMember], owners: dict[str, str]) -> bool:
    """Every queue of the family (the registry's) is paused by the QueueConfig that owns it."""
    paused = {m.queue for m in members if m.paused and owners.get(m.queue) == m.uid}
    return all(spec.name in paused for spec in families()[family])


async def pause_keda_scaling(
    *,
    settings: kopf.OperatorSettings,
    logger: Any,
    body: kopf.Body,
    namespace: str,
    family: str,
    paused: bool,
) -> None:
    """Set (``paused``) or remove the operator's paused-replicas on the family's ScaledObject."""
    deployment = deployment_name(family)
    scaled_object = await kube.scaled_object_targeting(settings, logger, namespace, deployment)
    if scaled_object is None:
        return
    name = str(scaled_object["metadata"]["name"])
    annotations = scaled_object["metadata"].get("annotations") or {}
    if paused and PAUSED_REPLICAS not in annotations:
        try:
            scale = await kube.get_scale(settings, logger, namespace, deployment)
        except kube.NotFound:
            return  # no Deployment: nothing runs, nothing to freeze
        replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        why = f"every queue of family {family} is paused"
        await kube.annotate_scaled_object(
            settings, logger, namespace, name, {PAUSED_REPLICAS: str(replicas), PAUSED_BY: why}
        )
        message = f"KEDA scaling of {deployment} paused at {replicas} replicas (ScaledObject {name}): {why}"
        logger.info(message)
        kopf.event(body, type="Normal", reason="ScalingPaused", message=message)
    elif not paused and PAUSED_BY in annotations:
        await kube.annotate_scaled_object(
            settings, logger, namespace, name, {PAUSED_REPLICAS: None, PAUSED_BY: None}
        )
        message = (
            f"KEDA scaling of {deployment} resumed (ScaledObject {name}): a queue of family {family} runs"
        )
        logger.info(message)
        kopf.event(body, type="Normal", reason="ScalingResumed", message=message)


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
    scaled_object = await kube.scaled_object_targeting(settings, logger, namespace, deployment)
    if scaled_object:
        name = scaled_object.get("metadata", {}).get("name", "")
        return ScaleResult(
            "False",
            "ScaledByKEDA",
            f"KEDA ScaledObject {name} scales deployment {deployment}: spec.replicas is not applied",
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
