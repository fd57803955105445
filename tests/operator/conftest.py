"""The emulated Kubernetes API server (kmock) every operator test runs against, and a client of it."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import yaml
from support.kube_emulator import KubeEmulator
from support.operator import NS, Cluster
from tq_operator import rbac
from tq_operator.crd import CRD_PATH, PEERING_CRD_PATH, PEERING_PATH, REPO_ROOT, SCHEDULE_CRD_PATH


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """The emulated API server in a thread of its own (kopf runs in another), and a kubeconfig."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        emulator = KubeEmulator()
        with warnings.catch_warnings():  # kmock 0.8 still calls importlib.resources.read_binary
            warnings.simplefilter("ignore", DeprecationWarning)
            emulator.resources.load_bundled()
        emulator.load_crd(REPO_ROOT / CRD_PATH)
        emulator.load_crd(REPO_ROOT / PEERING_CRD_PATH)
        emulator.load_crd(REPO_ROOT / SCHEDULE_CRD_PATH)
        async with emulator, kmock.Server(emulator) as server:
            state.update(emulator=emulator, url=str(server.url).rstrip("/"), stop=asyncio.Event())
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await state["stop"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(10), "the emulated API server did not start"
    # The chart's peering object, as `helm install` would create it.
    peering = yaml.safe_load((REPO_ROOT / PEERING_PATH).read_text())
    group_version = peering["apiVersion"]
    post = urllib.request.Request(
        f"{state['url']}/apis/{group_version}/clusterkopfpeerings",
        data=json.dumps(peering).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(post, timeout=5) as response:
        assert response.status < 300
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emu", "cluster": {"server": state["url"]}}],
        "users": [{"name": "emu", "user": {"token": "test"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu", "namespace": NS}}],
        "current-context": "emu",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(path))
    try:
        yield Cluster(url=state["url"], emulator=state["emulator"])
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(10)
    # Least privilege, in every operator test: the operator asked only what its ClusterRole grants.
    denied = sorted(
        {
            (c.verb, c.group, c.resource, c.name or "")
            for c in state["emulator"].requests
            if c.agent.startswith("kopf/")
            and c.resource
            and not rbac.allowed(c.verb, c.group, c.resource, c.name)
        }
    )
    assert not denied, f"requests outside tq_operator.rbac: {denied}"


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cluster.url) as session:
        yield session
