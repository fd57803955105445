"""The README's operator flows with a real ``kubectl`` against the emulated API server.

kubectl reads the kubeconfig the ``cluster`` fixture writes (KUBECONFIG); the operator runs as in
tests/operator/py. CI installs kubectl (Debian's ``kubernetes-client``, see .ci/run); without
it these tests are skipped.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from support import fast_settings, running, wait_for
from support.kubectl import KUBECTL, kubectl, readme_block, shell, table
from support.operator import NS, SCHEDULES_BASE, condition, create, get, js, operator, ready, wait_obj
from tq import keys
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.producer import Producer
from tq_operator.crd import REPO_ROOT, example_path
from tq_operator.main import FINALIZER
from tq_operator.spec import GROUP, KIND, VERSION

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        KUBECTL is None, reason="kubectl is not installed (apt-get install kubernetes-client)"
    ),
]

EXAMPLE = REPO_ROOT / example_path("ai:content")
NAME = "ai-content"


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
        # -o wide adds the Applied state and the generations (spec's, and last reconciled)
        wide = table(await kubectl("get", "qc", "-o", "wide"))
        assert list(wide[0]) == [
            "NAME",
            "QUEUE",
            "CONCURRENCY",
            "PAUSED",
            "WAITING",
            "DLQ",
            "READY",
            "APPLIED",
            "GENERATION",
            "OBSERVED",
            "AGE",
        ]
        assert (wide[0]["APPLIED"], wide[0]["GENERATION"], wide[0]["OBSERVED"]) == ("Unknown", "2", "2")
        assert "APPLIED" not in table(await kubectl("get", "qc"))[0]
        explained = await kubectl("explain", "queueconfig.spec.retry.backoff")
        assert "Exponential backoff between attempts" in explained and "jitter" in explained

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


def chart_uninstall_args() -> list[str]:
    """The kubectl arguments of the chart's pre-delete hook Job, rendered for release tq in NS."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")
    with helm.Chart.load(REPO_ROOT / "charts" / "tq") as chart:
        manifests = chart.render({}, name="tq", namespace=NS, is_install=True)
    docs = [
        d for path, text in manifests.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d
    ]
    (job,) = [
        d
        for d in docs
        if d["kind"] == "Job" and d["metadata"]["annotations"].get("helm.sh/hook") == "pre-delete"
    ]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def chart_qc(name: str, queue: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/instance": "tq", "app.kubernetes.io/part-of": "tq"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"queue": queue, "concurrency": 2},
    }


async def test_uninstall_hook_deletes_the_queueconfigs_while_the_operator_runs(
    api: aiohttp.ClientSession, redis_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`helm uninstall`'s pre-delete hook, its exact kubectl command: the operator releases every
    QueueConfig (queue back to defaults, finalizer removed) and JobSchedule (schedule removed from
    Redis) before Helm deletes the operator."""
    monkeypatch.setenv("HOME", str(tmp_path))
    args = chart_uninstall_args()
    queues = {"email-send": "email:send", "ai-content": "ai:content"}
    with operator():
        for name, queue in queues.items():
            await create(api, chart_qc(name, queue))
        for name, queue in queues.items():
            await wait_obj(api, name, ready, f"{name} Ready")
            assert (await config(redis_client, queue))["concurrency"] == "2"
        schedule = js(
            "email-process-email-queue", queue="email:send", job="process-email-queue", intervalSeconds=60
        )
        schedule["metadata"]["labels"] = chart_qc("x", "email:send")["metadata"]["labels"]
        await create(api, schedule)
        await wait_obj(api, "email-process-email-queue", ready, "JobSchedule Ready", base=SCHEDULES_BASE)
        assert await redis_client.hexists(keys.SCHEDULES, "email-process-email-queue")
        mine = chart_qc("hand-made", "otp:send")  # not the release's: the hook leaves it alone
        del mine["metadata"]["labels"]
        await create(api, mine)
        await wait_obj(api, "hand-made", ready, "hand-made Ready")
        out = await kubectl(*args)
        for name in queues:
            assert f'queueconfig.queues.teknav.io "{name}" deleted' in out
        assert 'jobschedule.queues.teknav.io "email-process-email-queue" deleted' in out
        assert await get(api, "email-process-email-queue", SCHEDULES_BASE) is None
        assert not await redis_client.hexists(keys.SCHEDULES, "email-process-email-queue")
        for name, queue in queues.items():
            assert await get(api, name) is None  # --wait: gone when kubectl returns
            assert await config(redis_client, queue) == {}  # back to the registry defaults
        assert await get(api, "hand-made") is not None
        await kubectl("delete", "qc", "hand-made", "-n", NS)


async def test_readme_removes_the_finalizer_when_the_operator_is_gone(
    api: aiohttp.ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    command = readme_block("remove-finalizers")
    assert f"-n {NS} " in command  # the README's example namespace is the emulator's
    with operator():
        await create(api, chart_qc("email-send", "email:send"))
        obj = await wait_obj(api, "email-send", ready, "Ready")
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    await kubectl("delete", "qc", "email-send", "-n", NS, "--wait=false")  # no operator: stuck
    stuck = await get(api, "email-send")
    assert stuck is not None and stuck["metadata"].get("deletionTimestamp")

    out = await shell(command)
    assert "queueconfig.queues.teknav.io/email-send patched" in out
    await wait_obj(api, "email-send", lambda o: o is None, "gone once the finalizer is removed")


def readme_lines(marker: str) -> list[str]:
    """The commands of the README block after ``<!-- marker -->``, each line as written."""
    return [line for line in readme_block(marker).splitlines() if line.strip()]


async def test_the_readme_queueconfig_flow_runs_as_written(
    api: aiohttp.ClientSession, redis_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's `kubectl apply/get/explain/annotate` block for ai-content, line by line with bash
    (the replay token is the reader's `$(date +%s)`)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    apply, get_qc, get_wide, explain, annotate = readme_lines("queueconfig-flow")
    with operator():
        before = time.time()
        assert f"queueconfig.queues.teknav.io/{NAME} created" in await shell(apply)
        await wait_obj(api, NAME, ready, "Ready=True after the README's kubectl apply")
        assert (await config(redis_client, "ai:content"))["concurrency"] == "8"
        row = table(await shell(get_qc))[0]
        assert list(row) == ["NAME", "QUEUE", "CONCURRENCY", "PAUSED", "WAITING", "DLQ", "READY", "AGE"]
        assert (row["NAME"], row["QUEUE"], row["READY"]) == (NAME, "ai:content", "True")
        wide = table(await shell(get_wide))[0]
        assert list(wide)[-5:] == ["READY", "APPLIED", "GENERATION", "OBSERVED", "AGE"]
        explained = " ".join((await shell(explain)).split())
        assert "FIELD: retry" in explained or "RESOURCE: retry" in explained, explained
        for field in ("attempts", "backoff"):
            assert field in explained  # "every field is described"
        assert f"queueconfig.queues.teknav.io/{NAME} annotated" in await shell(annotate)
        obj = await wait_obj(api, NAME, lambda o: o["status"].get("lastReplay"), "the replay handled")
        last = obj["status"]["lastReplay"]
        assert last["result"] == "Replayed" and before - 1 <= int(last["token"]) <= time.time() + 1
        assert "queues.teknav.io/replay" not in (obj["metadata"].get("annotations") or {})
        await kubectl("delete", "-f", str(EXAMPLE), "--wait=false")
        await wait_obj(api, NAME, lambda o: o is None, "released")


async def email_dead_letters(client: Any, redis_url: str, timeouts: int, others: int) -> None:
    """Dead-letter ``timeouts`` email:send jobs failing for good with a message naming a timeout
    and ``others`` with NoHandler (a job no handler serves), through a real worker. Neither is
    retried, whatever retry the QueueConfig gives the queue."""
    settings = fast_settings(redis_url)
    producer = Producer(client, settings)
    handlers = HandlerRegistry()

    async def slow_smtp(ctx: JobContext, payload: Any) -> None:
        raise NonRetryableError("SMTP timeout: the server did not answer in 10 s")

    handlers.add("email:send", "send-email", slow_smtp)
    before = int(await client.xlen(keys.dlq("email:send")))
    for i in range(timeouts):
        await producer.enqueue("email:send", "send-email", {"to": f"u{i}@example.com", "template": "welcome"})
    for i in range(others):
        await producer.enqueue("email:send", "process-email-queue", {"limit": i + 1})

    async def full() -> bool:
        return int(await client.xlen(keys.dlq("email:send"))) == before + timeouts + others

    async with running(client, settings, handlers, queue="email:send"):
        await wait_for(full, timeout=15, what="the DLQ filled")


async def test_the_readme_replay_and_purge_annotations_run_as_written(
    api: aiohttp.ClientSession,
    redis_client: Any,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README's three `kubectl annotate qc email-send ...` lines with bash, as written: the replay
    re-enqueues the DLQ once per `$(date +%s)` value; replay-limit/-filter stay and narrow the next
    replay to the entries whose text matches `timeout`; purge-dlq=email:send empties the DLQ."""
    monkeypatch.setenv("HOME", str(tmp_path))
    replay, settings, purge = readme_lines("queueconfig-annotations")
    dlq, stream = keys.dlq("email:send"), keys.stream("email:send")
    await email_dead_letters(redis_client, redis_url, timeouts=2, others=1)

    def last(o: dict[str, Any], what: str) -> dict[str, Any]:
        return dict((o or {}).get("status", {}).get(what) or {})

    with operator():
        await kubectl("apply", "-f", str(REPO_ROOT / example_path("email:send")))
        await wait_obj(api, "email-send", ready, "email-send Ready")

        assert "queueconfig.queues.teknav.io/email-send annotated" in await shell(replay)
        obj = await wait_obj(api, "email-send", lambda o: last(o, "lastReplay"), "the first replay")
        first = last(obj, "lastReplay")
        assert (first["result"], first["replayed"]) == ("Replayed", 3)
        assert await redis_client.xlen(dlq) == 0 and await redis_client.xlen(stream) == 3

        await redis_client.delete(stream)  # those jobs ran elsewhere; three new dead letters
        await email_dead_letters(redis_client, redis_url, timeouts=2, others=1)
        await shell(settings)
        # the settings are no request: they stay, and nothing is replayed until the next token
        await shell(replay.replace("$(date +%s)", first["token"]))  # the same value: replays nothing
        obj = await wait_obj(
            api, "email-send",
            lambda o: "queues.teknav.io/replay" not in (o["metadata"].get("annotations") or {}),
            "the handled token dropped",
        )  # fmt: skip
        annotations = obj["metadata"]["annotations"]
        assert annotations["queues.teknav.io/replay-limit"] == "100"
        assert annotations["queues.teknav.io/replay-filter"] == "timeout"
        assert await redis_client.xlen(dlq) == 3

        await asyncio.sleep(max(0.0, int(first["token"]) + 1.05 - time.time()))  # a new `$(date +%s)`
        await shell(replay)
        obj = await wait_obj(
            api, "email-send", lambda o: last(o, "lastReplay").get("token") != first["token"], "the second"
        )
        second = last(obj, "lastReplay")
        assert (second["result"], second["replayed"]) == ("Replayed", 2)  # only the timeouts
        assert await redis_client.xlen(dlq) == 1 and await redis_client.xlen(stream) == 2

        assert "queueconfig.queues.teknav.io/email-send annotated" in await shell(purge)
        obj = await wait_obj(api, "email-send", lambda o: last(o, "lastPurge"), "the purge")
        assert (last(obj, "lastPurge")["result"], last(obj, "lastPurge")["purged"]) == ("Purged", 1)
        assert await redis_client.xlen(dlq) == 0
        await kubectl("delete", "qc", "email-send", "--wait=false")
        await wait_obj(api, "email-send", lambda o: o is None, "released")
