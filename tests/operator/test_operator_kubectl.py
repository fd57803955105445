"""The README's operator flows with a real ``kubectl`` against the emulated API server.

kubectl reads the kubeconfig the ``cluster`` fixture writes (KUBECONFIG); the operator runs as in
tests/operator/py. CI installs kubectl (Debian's ``kubernetes-client``, see .ci/run); without
it these tests are skipped.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.operator import NS, condition, get, operator, ready, wait_obj
from tq import keys
from tq_operator.crd import REPO_ROOT, example_path

KUBECTL = shutil.which("kubectl")
pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        KUBECTL is None, reason="kubectl is not installed (apt-get install kubernetes-client)"
    ),
]

EXAMPLE = REPO_ROOT / example_path("ai:content")
NAME = "ai-content"


async def kubectl(*args: str) -> str:
    assert KUBECTL is not None
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode()}"
    return out.decode()


def table(text: str) -> list[dict[str, str]]:
    """``kubectl get`` output as rows keyed by the header (columns are separated by 2+ spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines[1:]]


async def config(client: Any, queue: str) -> dict[str, str]:
    raw = await client.hgetall(keys.config(queue))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def test_apply_get_annotate_and_delete_with_kubectl(
    api: aiohttp.ClientSession, redis_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # kubectl's discovery cache goes there
    with operator():
        out = await kubectl("apply", "-f", str(EXAMPLE))
        assert f"queueconfig.queues.teknav.io/{NAME} created" in out
        await wait_obj(api, NAME, ready, "Ready=True after kubectl apply")
        assert (await config(redis_client, "ai:content"))["concurrency"] == "8"

        rows = table(await kubectl("get", "qc"))
        assert list(rows[0]) == ["NAME", "QUEUE", "CONCURRENCY", "PAUSED", "WAITING", "DLQ", "READY", "AGE"]
        assert {
            k: rows[0][k] for k in ("NAME", "QUEUE", "CONCURRENCY", "PAUSED", "WAITING", "DLQ", "READY")
        } == {
            "NAME": NAME,
            "QUEUE": "ai:content",
            "CONCURRENCY": "8",
            "PAUSED": "false",
            "WAITING": "0",
            "DLQ": "0",
            "READY": "True",
        }
        assert re.fullmatch(r"\d+s", rows[0]["AGE"])

        # Edit and re-apply: a new generation reaches Redis.
        edited = tmp_path / "ai-content.yaml"
        edited.write_text(EXAMPLE.read_text().replace("concurrency: 8", "concurrency: 3"))
        out = await kubectl("apply", "-f", str(edited))
        assert f"queueconfig.queues.teknav.io/{NAME} configured" in out
        await wait_obj(api, NAME, lambda o: ready(o, 2), "generation 2 Ready")
        assert (await config(redis_client, "ai:content"))["concurrency"] == "3"

        token = "1764470000"
        out = await kubectl("annotate", "qc", NAME, f"queues.teknav.io/replay={token}")
        assert f"queueconfig.queues.teknav.io/{NAME} annotated" in out
        obj = await wait_obj(
            api, NAME, lambda o: (o["status"].get("lastReplay") or {}).get("token") == token, "replay handled"
        )
        assert obj["status"]["lastReplay"]["replayed"] == 0  # an empty DLQ: nothing to replay

        out = await kubectl("annotate", "qc", NAME, "queues.teknav.io/purge-dlq=wrong")
        await wait_obj(
            api,
            NAME,
            lambda o: "queues.teknav.io/purge-dlq" not in (o["metadata"].get("annotations") or {}),
            "refused purge dropped",
        )
        described = await kubectl(
            "get", "qc", NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].reason}"
        )
        assert described == "Reconciled"
        assert condition(await get(api, NAME), "Paused")["status"] == "False"

        out = await kubectl("delete", "-f", str(EXAMPLE), "--wait=false")
        assert f'queueconfig.queues.teknav.io "{NAME}" deleted' in out
        await wait_obj(api, NAME, lambda o: o is None, "the finalizer released the object")
        assert await config(redis_client, "ai:content") == {}
        assert await kubectl("get", "qc", "-n", NS, "--ignore-not-found") == ""
