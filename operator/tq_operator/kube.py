"""The few Kubernetes API calls the handlers make beyond kopf's own (Deployment scale, ScaledObjects).

They go through kopf's authenticated client, so they use the credentials of the login handler,
kopf's retries and timeouts, and no second client library. That client is kopf's internal API
(``kopf._cogs``), pinned with kopf in pyproject.toml; this module is the only place that uses it.
Every call here must stay within the rules of ``tq_operator.rbac``.
"""

from __future__ import annotations

from typing import Any

import kopf
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import errors as kopf_errors

NotFound = kopf_errors.APINotFoundError
APIError = kopf_errors.APIError

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
KEDA_SCALED_OBJECTS = ("keda.sh", "v1alpha1", "scaledobjects")


def _scale_url(namespace: str, deployment: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}/scale"


async def get_scale(settings: kopf.OperatorSettings, logger: Any, namespace: str, deployment: str) -> Any:
    """The Deployment's autoscaling/v1 Scale; raises ``NotFound`` when there is no such Deployment."""
    return await kopf_api.get(_scale_url(namespace, deployment), settings=settings, logger=logger)


async def patch_scale(
    settings: kopf.OperatorSettings, logger: Any, namespace: str, deployment: str, replicas: int
) -> Any:
    return await kopf_api.patch(
        _scale_url(namespace, deployment),
        settings=settings,
        logger=logger,
        payload={"spec": {"replicas": replicas}},
        headers=MERGE_PATCH,
    )


async def scaled_object_targeting(
    settings: kopf.OperatorSettings, logger: Any, namespace: str, deployment: str
) -> Any | None:
    """The KEDA ScaledObject targeting ``deployment``; None also when KEDA is not installed."""
    group, version, plural = KEDA_SCALED_OBJECTS
    url = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}"
    try:
        listing = await kopf_api.get(url, settings=settings, logger=logger)
    except NotFound:  # the CRD is not installed: no KEDA in this cluster
        return None
    for item in listing.get("items") or []:
        target = (item.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("name") == deployment and target.get("kind", "Deployment") == "Deployment":
            return item
    return None


async def annotate_scaled_object(
    settings: kopf.OperatorSettings,
    logger: Any,
    namespace: str,
    name: str,
    annotations: dict[str, str | None],
) -> Any:
    """Merge-patch the ScaledObject's annotations (None removes one)."""
    group, version, plural = KEDA_SCALED_OBJECTS
    return await kopf_api.patch(
        f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
        settings=settings,
        logger=logger,
        payload={"metadata": {"annotations": annotations}},
        headers=MERGE_PATCH,
    )
