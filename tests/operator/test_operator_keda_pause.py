"""Pausing every queue of a family pauses its KEDA scaling, with a real ``kubectl`` against the
emulated API server (KEDA's ScaledObject CRD loaded into it) and the operator as in the other tests.

KEDA scales a family on its queues' lag, and a paused queue's lag only grows: while all queues
of the family are paused, the operator freezes the family's ScaledObject at the Deployment's
current replicas (``autoscaling.keda.sh/paused-replicas``) and removes that once a queue runs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import yaml
from support import wait_for
from support.kubectl import KUBECTL, kubectl
from support.operator import NS, Cluster, create_deployment, get, operator, ready, wait_event, wait_obj
from tq.registry import families
from tq_operator.kube import KEDA_SCALED_OBJECTS
from tq_operator.scaling import PAUSED_BY, PAUSED_REPLICAS
from tq_operator.spec import GROUP, KIND, VERSION

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        KUBECTL is None, reason="kubectl is not installed (apt-get install kubernetes-client)"
    ),
]

KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL = KEDA_SCALED_OBJECTS
DEPLOYMENT = "tq-messaging"  # TQ_OPERATOR_DEPLOYMENT's default for family messaging
MESSAGING = [spec.name for spec in families()["messaging"]]


def scaled_object_crd() -> dict[str, object]:
    """KEDA's ScaledObject CRD as far as the API server needs it (the chart tests check the fields)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{KEDA_PLURAL}.{KEDA_GROUP}"},
        "spec": {
            "group": KEDA_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": "ScaledObject",
                "plural": KEDA_PLURAL,
                "singular": "scaledobject",
                "shortNames": ["so"],
            },
            "versions": [
                {
                    "name": KEDA_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


def queue_config(name: str, queue: str, paused: bool) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": NS},
            "spec": {"queue": queue, "paused": paused},
        }
    )


async def so_annotations() -> dict[str, str]:
    out = await kubectl("get", "scaledobject", DEPLOYMENT, "-o", "jsonpath={.metadata.annotations}")
    return json.loads(out) if out.strip() else {}


async def wait_annotations(expected: dict[str, str | None], what: str) -> dict[str, str]:
    seen: dict[str, str] = {}

    async def matches() -> bool:
        nonlocal seen
        seen = await so_annotations()
        return all(seen.get(k) == v for k, v in expected.items())

    await wait_for(matches, timeout=15, interval=0.2, what=what)
    return seen


async def set_paused(name: str, paused: bool) -> None:
    await kubectl("patch", "qc", name, "--type", "merge", "-p", json.dumps({"spec": {"paused": paused}}))


async def test_pausing_every_queue_of_a_family_pauses_its_keda_scaling(
    api: aiohttp.ClientSession,
    cluster: Cluster,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # kubectl's discovery cache goes there
    crd = tmp_path / "scaledobject-crd.yaml"
    crd.write_text(yaml.safe_dump(scaled_object_crd()))
    cluster.emulator.load_crd(crd)  # KEDA is installed in this cluster
    assert MESSAGING == ["email:send", "otp:send"]
    await create_deployment(api, DEPLOYMENT, replicas=3)
    scaled_object = tmp_path / "scaledobject.yaml"
    scaled_object.write_text(
        yaml.safe_dump(
            {
                "apiVersion": f"{KEDA_GROUP}/{KEDA_VERSION}",
                "kind": "ScaledObject",
                "metadata": {"name": DEPLOYMENT, "namespace": NS},
                "spec": {"scaleTargetRef": {"name": DEPLOYMENT}, "triggers": [{"type": "redis-streams"}]},
            }
        )
    )
    await kubectl("apply", "-f", str(scaled_object))
    manifests = tmp_path / "qcs.yaml"
    manifests.write_text(
        queue_config("email", "email:send", True) + "---\n" + queue_config("otp", "otp:send", False)
    )

    with operator():
        await kubectl("apply", "-f", str(manifests))
        await wait_obj(api, "email", ready, "email Ready")
        await wait_obj(api, "otp", ready, "otp Ready")
        # one queue of two paused: KEDA keeps scaling (otp:send's lag is real work)
        await asyncio.sleep(1.5)  # a few refresh rounds (TQ_OPERATOR_REFRESH_S=0.5 in the tests)
        assert PAUSED_REPLICAS not in await so_annotations()

        # every queue of the family paused: frozen at the Deployment's current replicas
        await set_paused("otp", True)
        seen = await wait_annotations({PAUSED_REPLICAS: "3"}, "paused-replicas 3 on the ScaledObject")
        assert "every queue of family messaging is paused" in seen[PAUSED_BY]
        await wait_event(api, "ScalingPaused")
        replicas = await kubectl("get", "deployment", DEPLOYMENT, "-o", "jsonpath={.spec.replicas}")
        assert replicas == "3"  # freezing, not scaling: the pods stay

        # one queue runs again: KEDA scales again
        await set_paused("email", False)
        await wait_annotations({PAUSED_REPLICAS: None, PAUSED_BY: None}, "paused-replicas removed")
        await wait_event(api, "ScalingResumed")

        # someone else's paused-replicas is theirs: neither replaced nor removed by the operator
        await kubectl("annotate", "scaledobject", DEPLOYMENT, f"{PAUSED_REPLICAS}=1")
        await set_paused("email", True)
        await wait_obj(api, "email", lambda o: ready(o, 3), "email Ready at generation 3")
        await set_paused("email", False)
        await wait_obj(api, "email", lambda o: ready(o, 4), "email Ready at generation 4")
        await asyncio.sleep(1.5)
        annotations = await so_annotations()
        assert annotations.get(PAUSED_REPLICAS) == "1" and PAUSED_BY not in annotations
    assert (await get(api, "email") or {}).get("spec", {}).get("paused") is False
