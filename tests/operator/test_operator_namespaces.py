"""Two environments in one cluster: two releases' operators (``tq operator``, each watching only its
own namespace as the chart sets ``TQ_OPERATOR_NAMESPACES``, each on its release's peering object),
each with its own redis-server, against one emulated API server. A ``paused: true`` QueueConfig in
one namespace never touches the other's Redis or status, and the same queue configured in both
namespaces is no conflict (ownership is decided per namespace)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from support import wait_for
from support.operator import Cluster, Q, condition, post, process
from support.redis_server import start_redis_server
from tq import keys
from tq_operator.crd import PEERING_GROUP, PEERING_PLURAL, PEERING_VERSION, PLURAL
from tq_operator.spec import GROUP, KIND, VERSION

pytestmark = pytest.mark.timeout(90)

ENVS = ("dev", "staging")


def base(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


@contextmanager
def private_redis() -> Iterator[redis.Redis]:
    server, port, workdir = start_redis_server()  # each environment's own; never the suite's
    client = redis.Redis(port=port)
    try:
        yield client
    finally:
        client.close()
        server.kill()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def release_operator(
    namespace: str, redis_port: int, log: Path
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """``tq operator`` as the chart runs it in ``namespace`` (the KUBECONFIG of the ``cluster`` fixture)."""
    return process(
        [sys.executable, "-m", "tq_cli", "operator"],
        log,
        TQ_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        TQ_OPERATOR_NAMESPACES=namespace,
        TQ_OPERATOR_PEERING=f"tq-operator-{namespace}",
        POD_ID=f"operator-{namespace}",
    )


async def get_in(api: aiohttp.ClientSession, namespace: str, name: str) -> dict[str, Any]:
    async with api.get(f"{base(namespace)}/{name}") as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def test_two_releases_in_two_namespaces_never_touch_each_other(
    cluster: Cluster, api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        clients = {ns: stack.enter_context(private_redis()) for ns in ENVS}
        for ns in ENVS:  # each release's peering object, as its `helm install` makes it
            await post(
                api,
                f"/apis/{PEERING_GROUP}/{PEERING_VERSION}/{PEERING_PLURAL}",
                {
                    "apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}",
                    "kind": "ClusterKopfPeering",
                    "metadata": {"name": f"tq-operator-{ns}"},
                },
            )
            port = clients[ns].connection_pool.connection_kwargs["port"]
            stack.enter_context(release_operator(ns, port, tmp_path / f"operator-{ns}.log"))

        # the same queue in both environments: dev runs, staging is paused
        for ns, paused in (("dev", False), ("staging", True)):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "metadata": {"name": "email-send", "namespace": ns},
                "spec": {"queue": Q, "concurrency": 3 if ns == "dev" else 5, "paused": paused},
            }
            await post(api, base(ns), body)

        async def both_ready() -> bool:
            objs = [await get_in(api, ns, "email-send") for ns in ENVS]
            return all(condition(o, "Ready").get("status") == "True" for o in objs)

        try:
            await wait_for(both_ready, timeout=45, interval=0.1, what="both QueueConfigs Ready")
        except AssertionError as exc:
            logs = "".join((tmp_path / f"operator-{ns}.log").read_text(errors="replace") for ns in ENVS)
            raise AssertionError(f"{exc}\n{logs[-4000:]}") from None

        dev, staging = [await get_in(api, ns, "email-send") for ns in ENVS]
        assert condition(dev, "Paused")["status"] == "False"
        assert condition(staging, "Paused")["status"] == "True"
        for obj in (dev, staging):  # no "older QueueConfig" across namespaces
            assert condition(obj, "Conflict") == {}

        def config(ns: str) -> dict[str, str]:
            raw = clients[ns].hgetall(keys.config(Q))
            return {k.decode(): v.decode() for k, v in raw.items()}

        assert (config("dev")["paused"], config("dev")["concurrency"]) == ("0", "3")
        assert (config("staging")["paused"], config("staging")["concurrency"]) == ("1", "5")

        # a change in staging is reconciled by staging's operator only
        async with api.patch(
            f"{base('staging')}/email-send",
            json={"spec": {"concurrency": 7}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as r:
            assert r.status < 300, await r.text()

        async def staging_applied() -> bool:
            return config("staging").get("concurrency") == "7"

        await wait_for(staging_applied, timeout=20, interval=0.1, what="staging's change in staging's Redis")
        assert (config("dev")["paused"], config("dev")["concurrency"]) == ("0", "3")
        dev_again = await get_in(api, "dev", "email-send")
        assert dev_again["metadata"]["generation"] == 1
        assert condition(dev_again, "Paused")["status"] == "False"

    # Namespaced operators: QueueConfigs were only ever read or written within a namespace (no
    # cluster-wide list or watch), and namespaces were never listed (kopf's scanning is off).
    calls = [c for c in cluster.emulator.requests if c.agent.startswith("kopf/")]
    qc_calls = [c for c in calls if c.resource.split("/")[0] == PLURAL]
    assert qc_calls and all(c.namespace in ENVS for c in qc_calls), {c.path for c in qc_calls}
    assert not [c for c in calls if c.resource == "namespaces"]
