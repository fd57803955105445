"""The operator's RBAC (tq_operator.rbac): the checked-in ClusterRole is current, and every API request
the operator makes is granted by it, and every rule is needed (least privilege)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from support import wait_for
from support.operator import (
    BASE,
    GROUP,
    NO_HANDLER_JOB,
    NS,
    SCHEDULES_BASE,
    Cluster,
    Q,
    annotate,
    condition,
    create,
    create_deployment,
    get,
    js,
    operator,
    qc,
    ready,
    wait_obj,
)
from tq.registry import families
from tq_operator import rbac
from tq_operator.crd import REPO_ROOT
from tq_operator.kube import KEDA_SCALED_OBJECTS
from tq_operator.scaling import PAUSED_REPLICAS

pytestmark = pytest.mark.timeout(60)


def test_the_checked_in_cluster_role_is_current(tmp_path: Path) -> None:
    assert rbac.main(["--check"]) == 0, "charts/tq/files/operator-rbac.yaml is stale: run `make rbac`"
    # The check does fail on a stale file, and the generator repairs it.
    stale = tmp_path / rbac.RBAC_PATH
    stale.parent.mkdir(parents=True)
    stale.write_text((REPO_ROOT / rbac.RBAC_PATH).read_text().replace("- patch\n", "- '*'\n", 1))
    assert rbac.main(["--check", "--root", str(tmp_path)]) == 1
    assert rbac.main(["--root", str(tmp_path)]) == 0
    assert rbac.main(["--check", "--root", str(tmp_path)]) == 0
    docs = [d for d in yaml.safe_load_all(stale.read_text()) if d]
    assert [d["kind"] for d in docs] == ["ClusterRole"]
    assert docs[0]["rules"] == rbac.build_cluster_role()["rules"]


def test_rule_matching() -> None:
    assert rbac.allowed("patch", "apps", "deployments/scale")
    assert not rbac.allowed("patch", "apps", "deployments")  # the scale subresource only
    # only the family Deployments the chart makes (resourceNames)
    assert rbac.allowed("patch", "apps", "deployments/scale", "tq-messaging")
    assert not rbac.allowed("patch", "apps", "deployments/scale", "coredns")
    (scale,) = [r for r in rbac.build_cluster_role()["rules"] if r["resources"] == ["deployments/scale"]]
    assert scale["resourceNames"] == sorted(f"tq-{family}" for family in families())
    assert not rbac.allowed("update", "apps", "deployments/scale")
    assert not rbac.allowed("get", "", "secrets")
    assert not rbac.allowed("delete", GROUP, "queueconfigs")


async def test_every_request_of_the_operator_is_granted_and_every_rule_is_used(
    api: aiohttp.ClientSession, cluster: Cluster, redis_url: str
) -> None:
    await create_deployment(api, "tq-messaging", replicas=1)
    # KEDA scales family webhooks (its one queue): pausing the queue pauses the ScaledObject
    group, version, plural = KEDA_SCALED_OBJECTS
    cluster.emulator.resources[kmock.resource(group=group, version=version, plural=plural)] = (
        kmock.ResourceInfo(
            namespaced=True, kind="ScaledObject", singular="scaledobject", verbs={"list", "patch"}
        )
    )
    await create_deployment(api, "tq-webhooks", replicas=2)
    scaled_objects = f"/apis/{group}/{version}/namespaces/{NS}/{plural}"
    so = {
        "metadata": {"name": "tq-webhooks", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "tq-webhooks"}},
    }
    async with api.post(
        scaled_objects, json={"apiVersion": f"{group}/{version}", "kind": "ScaledObject", **so}
    ) as r:
        assert r.status < 300, await r.text()
    with operator():
        # Every path: create (finalizer, status, Events), scale (ScaledObject lookup, get/patch
        # scale), a paused family's ScaledObject, a replay annotation, the refresh timer, delete
        # (finalizer released), peering.
        await create(api, qc("email", concurrency=2, replicas=3))
        await wait_obj(
            api, "email", lambda o: ready(o) and condition(o, "Scaled").get("status") == "True", "scaled"
        )
        await create(api, qc("hooks", queue="webhooks:deliver", paused=True))

        async def keda_paused() -> bool:
            async with api.get(f"{scaled_objects}/tq-webhooks") as r:
                return PAUSED_REPLICAS in ((await r.json())["metadata"].get("annotations") or {})

        await wait_for(keda_paused, timeout=10, interval=0.1, what="paused-replicas on tq-webhooks")
        await annotate(api, "email", **{f"{GROUP}/replay": "r1"})
        await wait_obj(
            api, "email", lambda o: (o["status"].get("lastReplay") or {}).get("token") == "r1", "r1"
        )
        async with api.delete(f"{BASE}/email") as r:
            assert r.status < 300, await r.text()
        await wait_obj(api, "email", lambda o: o is None, "the finalizer released the object")
        assert await get(api, "email") is None
        # a JobSchedule: create (finalizer, status, Events), the refresh timer, delete
        await create(api, js("mails", queue=Q, job=NO_HANDLER_JOB, intervalSeconds=3600))
        await wait_obj(api, "mails", ready, "JobSchedule Ready", base=SCHEDULES_BASE)
        async with api.delete(f"{SCHEDULES_BASE}/mails") as r:
            assert r.status < 300, await r.text()
        await wait_obj(api, "mails", lambda o: o is None, "JobSchedule released", base=SCHEDULES_BASE)

    operator_calls = [c for c in cluster.emulator.requests if c.agent.startswith("kopf/")]
    # Discovery (/api/v1, /apis/<group>/<version>) is granted to every authenticated user by the
    # cluster's default system:discovery role; everything else must be in the ClusterRole.
    discovery = [c for c in operator_calls if not c.resource]
    assert discovery and all(c.verb == "get" and c.path.startswith(("/api/", "/apis/")) for c in discovery)
    calls = [c for c in operator_calls if c.resource]
    used = {(c.verb, c.group, c.resource) for c in calls}
    denied = sorted(u for u in used if not rbac.allowed(*u))
    assert not denied, f"the operator made requests its ClusterRole does not grant: {denied}"

    granted = {(verb, r.api_group, res) for r in rbac.RULES for res in r.resources for verb in r.verbs}
    unused = sorted(granted - used)
    assert not unused, f"granted but never used by the operator (not least privilege): {unused}"
    assert any(c.namespace == NS for c in calls if c.resource == "deployments/scale")


def _rules(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (verb, group, res)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
        for verb in rule["verbs"]
    ]


def test_the_cluster_role_grants_no_wildcards_nor_secrets() -> None:
    doc = rbac.build_cluster_role()
    for verb, group, resource in _rules(doc):
        assert "*" not in (verb, group, resource)
        assert resource not in ("secrets", "pods", "deployments")
