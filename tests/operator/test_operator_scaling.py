"""spec.replicas -> the family's Deployment through its scale subresource, and KEDA taking over.

kopf's KopfRunner against the emulated API server (tests/support/kube_emulator.py serves apps/v1
deployments/scale) and the suite's real Redis, like tests/operator/py.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import kmock
import pytest
from support import wait_for
from support.operator import (
    DEPLOYMENTS,
    NS,
    Cluster,
    condition,
    create_deployment,
    get,
    merge_patch,
    operator,
    post,
    ready,
    wait_event,
    wait_obj,
)
from support.settings import clear_settings_caches
from tq_operator.crd import PLURAL
from tq_operator.kube import KEDA_SCALED_OBJECTS
from tq_operator.spec import GROUP, KIND, VERSION

pytestmark = pytest.mark.timeout(60)

BASE = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"


def queue_config(name: str, queue: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"queue": queue, **spec},
    }


async def replicas_of(api: aiohttp.ClientSession, deployment: str) -> int:
    async with api.get(f"{DEPLOYMENTS}/{deployment}/scale") as r:
        assert r.status == 200, await r.text()
        scale = await r.json()
    assert scale["kind"] == "Scale"
    return int(scale["spec"]["replicas"])


def scaled(status: str, reason: str) -> Any:
    return lambda o: (
        (condition(o, "Scaled").get("status"), condition(o, "Scaled").get("reason"))
        == (
            status,
            reason,
        )
    )


async def wait_replicas(api: aiohttp.ClientSession, deployment: str, expected: int) -> None:
    async def at() -> bool:
        return await replicas_of(api, deployment) == expected

    await wait_for(at, timeout=10, interval=0.05, what=f"{deployment} at {expected} replicas")


async def test_replicas_scale_the_family_deployment_to_the_highest_value(
    api: aiohttp.ClientSession, redis_url: str
) -> None:
    # email:send and otp:send are both of family messaging: one Deployment, tq-messaging.
    await create_deployment(api, "tq-messaging", replicas=1)
    with operator():
        await post(api, BASE, queue_config("email", "email:send", replicas=2))
        obj = await wait_obj(api, "email", scaled("True", "Scaled"), "email Scaled=True")
        assert "tq-messaging runs 2 replicas" in condition(obj, "Scaled")["message"]
        assert await replicas_of(api, "tq-messaging") == 2
        await wait_event(api, "Scaled")

        await post(api, BASE, queue_config("otp", "otp:send", replicas=4))
        await wait_replicas(api, "tq-messaging", 4)
        # The refresh timer brings email's condition to the family's value too.
        await wait_obj(
            api,
            "email",
            lambda o: "runs 4 replicas" in condition(o, "Scaled").get("message", ""),
            "email reports the family's 4 replicas",
        )

        # Lowering the higher one settles on the next highest, never below another QueueConfig.
        await merge_patch(api, "otp", {"spec": {"replicas": 1}})
        await wait_replicas(api, "tq-messaging", 2)

        # A QueueConfig without replicas reports no Scaled condition and scales nothing.
        await merge_patch(api, "email", {"spec": {"replicas": None}})
        await wait_obj(api, "email", lambda o: ready(o, 2) and not condition(o, "Scaled"), "Scaled dropped")
        await wait_replicas(api, "tq-messaging", 1)  # otp (1) is the only one left that sets replicas

        # No Deployment for the family: reported, nothing else written.
        await post(api, BASE, queue_config("ai", "ai:content", replicas=3))
        obj = await wait_obj(api, "ai", scaled("False", "DeploymentNotFound"), "ai DeploymentNotFound")
        assert f"{NS}/tq-ai" in condition(obj, "Scaled")["message"]
        assert condition(obj, "Ready")["status"] == "True"  # the runtime config still applies


async def test_a_scaled_object_leaves_scaling_to_keda(
    api: aiohttp.ClientSession, cluster: Cluster, redis_url: str
) -> None:
    group, version, plural = KEDA_SCALED_OBJECTS
    cluster.emulator.resources[kmock.resource(group=group, version=version, plural=plural)] = (
        kmock.ResourceInfo(
            namespaced=True, kind="ScaledObject", singular="scaledobject", verbs={"get", "list", "create"}
        )
    )
    await create_deployment(api, "tq-webhooks", replicas=1)
    await post(
        api,
        f"/apis/{group}/{version}/namespaces/{NS}/{plural}",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "ScaledObject",
            "metadata": {"name": "webhooks-lag", "namespace": NS},
            "spec": {"scaleTargetRef": {"name": "tq-webhooks"}, "triggers": [{"type": "redis-streams"}]},
        },
    )
    with operator():
        await post(api, BASE, queue_config("hooks", "webhooks:deliver", replicas=5))
        obj = await wait_obj(api, "hooks", scaled("False", "ScaledByKEDA"), "Scaled=False ScaledByKEDA")
        assert "webhooks-lag" in condition(obj, "Scaled")["message"]
        assert condition(obj, "Ready")["status"] == "True"
    assert await replicas_of(api, "tq-webhooks") == 1


async def test_the_keda_setting_leaves_scaling_to_keda(
    api: aiohttp.ClientSession, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TQ_OPERATOR_KEDA", "true")
    clear_settings_caches()
    await create_deployment(api, "tq-media", replicas=2)
    try:
        with operator():
            await post(api, BASE, queue_config("media", "media:optimize", replicas=6))
            obj = await wait_obj(api, "media", scaled("False", "ScaledByKEDA"), "Scaled=False ScaledByKEDA")
            assert "TQ_OPERATOR_KEDA" in condition(obj, "Scaled")["message"]
    finally:
        clear_settings_caches()
    assert await replicas_of(api, "tq-media") == 2
    assert await get(api, "media") is not None


async def test_replicas_above_the_operators_maximum_are_not_applied(
    api: aiohttp.ClientSession, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spec.replicas is capped twice: the CRD's maximum (MAX_REPLICAS) and the operator's
    TQ_OPERATOR_MAX_REPLICAS (the chart's operator.maxReplicas)."""
    monkeypatch.setenv("TQ_OPERATOR_MAX_REPLICAS", "3")
    clear_settings_caches()
    await create_deployment(api, "tq-search", replicas=1)
    try:
        with operator():
            await post(api, BASE, queue_config("search", "search:index", replicas=4))
            obj = await wait_obj(api, "search", scaled("False", "AboveMaximum"), "Scaled=False AboveMaximum")
            assert "maximum 3" in condition(obj, "Scaled")["message"]
            assert condition(obj, "Ready")["status"] == "True"
            await merge_patch(api, "search", {"spec": {"replicas": 3}})
            await wait_replicas(api, "tq-search", 3)
    finally:
        clear_settings_caches()
