"""The operator tests' shared parts: the emulated cluster's constants and the calls the tests make to it.

The fixtures ``cluster`` and ``api`` are in tests/operator/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

# The refresh timer's period is read when the handlers are imported: make it test-sized.
os.environ.setdefault("TQ_OPERATOR_REFRESH_S", "0.5")

from kopf.testing import KopfRunner
from tq import keys
from tq_operator import main as operator_main
from tq_operator.crd import PLURAL
from tq_operator.jobschedule import KIND as SCHEDULE_KIND
from tq_operator.jobschedule import PLURAL as SCHEDULE_PLURAL
from tq_operator.spec import GROUP, KIND, VERSION

from support import wait_for
from support.kube_emulator import KubeEmulator

Q = "email:send"
NS = "tq"
NO_HANDLER_JOB = "process-email-queue"  # a real job of the queue that these tests never give a handler
BASE = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
SCHEDULES_BASE = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{SCHEDULE_PLURAL}"
# No --standalone: the startup handler joins the chart's ClusterKopfPeering (leader election).
KOPF_ARGS = ["run", "--all-namespaces", "--verbose", "-m", operator_main.__name__]


@dataclass
class Cluster:
    url: str
    emulator: KubeEmulator


@contextmanager
def operator() -> Iterator[KopfRunner]:
    with KopfRunner(KOPF_ARGS, timeout=20) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output


def qc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": {"queue": Q, **spec},
    }


def js(name: str, **spec: Any) -> dict[str, Any]:
    """A JobSchedule in NS (spec fields in the resource's camelCase)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": SCHEDULE_KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


async def create(api: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
    base = SCHEDULES_BASE if body.get("kind") == SCHEDULE_KIND else BASE
    async with api.post(base, json=body) as r:
        assert r.status < 300, await r.text()
        return dict(await r.json())


async def get(api: aiohttp.ClientSession, name: str, base: str = BASE) -> dict[str, Any] | None:
    async with api.get(f"{base}/{name}") as r:
        if r.status == 404:
            return None
        assert r.status < 300, await r.text()
        return dict(await r.json())


async def merge_patch(api: aiohttp.ClientSession, name: str, patch: dict[str, Any], base: str = BASE) -> None:
    headers = {"Content-Type": "application/merge-patch+json"}
    async with api.patch(f"{base}/{name}", json=patch, headers=headers) as r:
        assert r.status < 300, await r.text()


async def annotate(api: aiohttp.ClientSession, name: str, **annotations: str | None) -> None:
    await merge_patch(api, name, {"metadata": {"annotations": annotations}})


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


async def wait_obj(
    api: aiohttp.ClientSession, name: str, pred: Any, what: str, timeout: float = 15, base: str = BASE
) -> dict:
    seen: dict[str, Any] = {}

    async def check() -> bool:
        seen["obj"] = await get(api, name, base)
        return bool(pred(seen["obj"]))

    try:
        await wait_for(check, timeout=timeout, interval=0.05, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen.get('obj')}") from None
    return seen["obj"]  # type: ignore[no-any-return]


async def events(api: aiohttp.ClientSession) -> list[str]:
    async with api.get(f"/api/v1/namespaces/{NS}/events") as r:
        assert r.status < 300, await r.text()
        return [e.get("reason", "") for e in (await r.json())["items"]]


async def wait_event(api: aiohttp.ClientSession, reason: str) -> None:
    async def posted() -> bool:
        return reason in await events(api)

    await wait_for(posted, timeout=10, interval=0.05, what=f"event {reason}")


async def config_hash(client: Any) -> dict[str, str]:
    raw = await client.hgetall(keys.config(Q))
    return {k.decode(): v.decode() for k, v in raw.items()}


def ready(obj: dict[str, Any] | None, generation: int = 1) -> bool:
    status = (obj or {}).get("status") or {}
    return status.get("observedGeneration") == generation and condition(obj, "Ready").get("status") == "True"


DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"


async def post(api: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with api.post(url, json=body) as r:
        assert r.status < 300, await r.text()


async def create_deployment(api: aiohttp.ClientSession, name: str, replicas: int) -> None:
    labels = {"app": name}
    await post(
        api,
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "tq"}]},
                },
            },
        },
    )


@contextmanager
def process(command: list[str], log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """An operator process (``command``, this environment plus ``env``) writing to ``log``; stopped
    with SIGTERM on exit (killed if it does not stop in 15 s)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
