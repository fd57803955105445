"""The kopf operator end to end: kopf's KopfRunner against kmock's emulated API server
(tests/support/kube_emulator.py) and the suite's real Redis; consumers are real ``tq.worker.Worker``s."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml
from support.operator import (
    BASE,
    NO_HANDLER_JOB,
    Cluster,
    Q,
    annotate,
    condition,
    config_hash,
    create,
    merge_patch,
    operator,
    qc,
    ready,
    wait_event,
    wait_obj,
)

# The refresh timer's period is read when the handlers are imported: make it test-sized.
os.environ.setdefault("TQ_OPERATOR_REFRESH_S", "0.5")

from support import fast_settings, running, wait_for
from tq import keys
from tq.handlers import HandlerRegistry
from tq.producer import Producer
from tq_operator.crd import CRD_PATH, REPO_ROOT
from tq_operator.spec import GROUP

pytestmark = pytest.mark.timeout(60)


async def test_create_apply_patch_and_delete(
    api: aiohttp.ClientSession, redis_client: Any, redis_url: str
) -> None:
    started = time.monotonic()
    with operator():
        await create(api, qc("email", concurrency=3))
        obj = await wait_obj(api, "email", ready, "Ready=True for generation 1")
        cfg = await config_hash(redis_client)
        assert (cfg["concurrency"], cfg["generation"], cfg["paused"]) == ("3", "1", "0")
        assert set(cfg) == {"concurrency", "generation", "paused"}  # only what the spec overrides
        assert condition(obj, "Paused")["status"] == "False"
        assert condition(obj, "Applied")["reason"] == "NoConsumers"
        ready_since = condition(obj, "Ready")["lastTransitionTime"]

        async with running(redis_client, fast_settings(redis_url), HandlerRegistry(), queue=Q) as worker:
            runner = worker.runners[Q]
            assert (runner.cfg.generation, runner.cfg.concurrency) == (1, 3)
            obj = await wait_obj(
                api, "email", lambda o: condition(o, "Applied").get("status") == "True", "Applied=True"
            )
            assert obj["status"]["consumers"] == 1
            assert obj["status"]["depth"] == {"waiting": 0, "active": 0, "delayed": 0, "dlq": 0}

            await merge_patch(api, "email", {"spec": {"concurrency": 5, "paused": True}})
            await wait_for(
                lambda: runner.cfg.generation == 2, timeout=10, what="the worker runs generation 2"
            )
            assert (runner.cfg.concurrency, runner.cfg.paused) == (5, True)
            obj = await wait_obj(
                api,
                "email",
                lambda o: (
                    ready(o, 2)
                    and condition(o, "Applied").get("status") == "True"
                    and condition(o, "Applied").get("observedGeneration") == 2
                ),
                "generation 2 applied",
            )
            assert condition(obj, "Paused")["status"] == "True"
            # Ready stayed True across the change: no transition, same time.
            assert condition(obj, "Ready")["lastTransitionTime"] == ready_since
            await wait_event(api, "Paused")

            await merge_patch(api, "email", {"spec": {"paused": False}})
            await wait_for(lambda: not runner.cfg.paused, timeout=10, what="the worker resumes")
            await wait_event(api, "Resumed")

            async with api.delete(f"{BASE}/email") as r:
                assert r.status < 300, await r.text()
            await wait_obj(api, "email", lambda o: o is None, "the finalizer released the object")
            assert await config_hash(redis_client) == {}
            await wait_for(lambda: runner.cfg.generation == 0, timeout=10, what="the worker back on defaults")
            assert (runner.cfg.concurrency, runner.cfg.paused) == (16, False)
    assert time.monotonic() - started < 40


async def fill_dlq(client: Any, redis_url: str, n: int, expect: int) -> None:
    """Run a worker with no handler until the DLQ holds ``expect`` entries (after ``n`` new jobs)."""
    producer = Producer(client, fast_settings(redis_url))
    for i in range(n):
        await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1})

    async def full() -> bool:
        return await dlq_len(client) >= expect

    async with running(client, fast_settings(redis_url), HandlerRegistry(), queue=Q):
        await wait_for(full, timeout=15, what=f"{expect} DLQ entries")


async def dlq_len(client: Any) -> int:
    return int(await client.xlen(keys.dlq(Q)))


async def handled(api: aiohttp.ClientSession, name: str, what: str) -> None:
    """Post a refused purge and wait until the operator dropped it: every earlier change is handled."""
    await annotate(api, name, **{f"{GROUP}/purge-dlq": "not-the-queue"})
    await wait_obj(
        api,
        name,
        lambda o: f"{GROUP}/purge-dlq" not in (o["metadata"].get("annotations") or {}),
        f"{what}: the refused purge request handled",
    )


async def test_replay_once_and_purge_only_with_the_queue_name(
    api: aiohttp.ClientSession, redis_client: Any, redis_url: str
) -> None:
    replay = f"{GROUP}/replay"
    with operator():
        # attempts 1: jobs without a handler dead-letter at once under the operator's config too
        await create(api, qc("email", retry={"attempts": 1}))
        await wait_obj(api, "email", ready, "Ready=True")
        await fill_dlq(redis_client, redis_url, 3, expect=3)
        assert await dlq_len(redis_client) == 3
        await wait_obj(api, "email", lambda o: o["status"].get("depth", {}).get("dlq") == 3, "depth.dlq=3")

        await annotate(api, "email", **{replay: "t1"})
        obj = await wait_obj(
            api, "email", lambda o: (o["status"].get("lastReplay") or {}).get("token") == "t1", "replay t1"
        )
        assert (obj["status"]["lastReplay"]["replayed"], obj["status"]["lastReplay"]["skipped"]) == (3, 0)
        assert await dlq_len(redis_client) == 0
        await wait_event(api, "Replayed")

        # The replayed jobs dead-letter again; the same token must not replay them a second time.
        await fill_dlq(redis_client, redis_url, 0, expect=3)
        assert await dlq_len(redis_client) == 3
        await annotate(api, "email", **{replay: "t1", f"{GROUP}/replay-limit": "2"})
        await handled(api, "email", "same token re-applied")
        assert await dlq_len(redis_client) == 3
        await wait_event(api, "PurgeRefused")

    with operator():  # a restart resumes the resource: still no second replay
        await handled(api, "email", "after a restart")
        assert await dlq_len(redis_client) == 3

        await annotate(api, "email", **{replay: "t2"})  # limit 2 still set
        await wait_obj(
            api, "email", lambda o: (o["status"].get("lastReplay") or {}).get("token") == "t2", "replay t2"
        )
        assert await dlq_len(redis_client) == 1

        await annotate(api, "email", **{f"{GROUP}/purge-dlq": Q})
        await wait_for(lambda: _zero(redis_client), timeout=10, what="DLQ purged")
        await wait_event(api, "Purged")


async def _zero(client: Any) -> bool:
    return await dlq_len(client) == 0


def annotations_of(obj: dict[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


async def test_one_shot_annotations_are_removed_and_a_recreated_token_replays_nothing(
    api: aiohttp.ClientSession, redis_client: Any, redis_url: str
) -> None:
    """After acting the operator removes the annotation and records the result in status; a
    QueueConfig re-created (a restore, a GitOps re-sync) still carrying a handled token does nothing."""
    replay, purge = f"{GROUP}/replay", f"{GROUP}/purge-dlq"
    with operator():
        await create(api, qc("email", retry={"attempts": 1}))
        await wait_obj(api, "email", ready, "Ready=True")
        await fill_dlq(redis_client, redis_url, 2, expect=2)
        await annotate(api, "email", **{replay: "restore-me"})
        obj = await wait_obj(
            api,
            "email",
            lambda o: (
                (o["status"].get("lastReplay") or {}).get("token") == "restore-me"
                and replay not in annotations_of(o)
            ),
            "replayed once, annotation removed",
        )
        last = obj["status"]["lastReplay"]
        assert (last["result"], last["replayed"], last["skipped"]) == ("Replayed", 2, 0)
        assert "replayed 2 DLQ entries" in last["message"]

        await fill_dlq(redis_client, redis_url, 0, expect=2)  # the replayed jobs dead-letter again
        await annotate(api, "email", **{purge: "not-the-queue"})
        obj = await wait_obj(
            api, "email", lambda o: purge not in annotations_of(o) and o["status"].get("lastPurge"), "purge"
        )
        assert (obj["status"]["lastPurge"]["result"], obj["status"]["lastPurge"]["purged"]) == ("Refused", 0)
        assert await dlq_len(redis_client) == 2

        async with api.delete(f"{BASE}/email") as r:
            assert r.status < 300, await r.text()
        await wait_obj(api, "email", lambda o: o is None, "deleted")
        restored = qc("email", retry={"attempts": 1})  # as a backup or a Git repository holds it
        restored["metadata"]["annotations"] = {replay: "restore-me", purge: Q}
        await create(api, restored)
        obj = await wait_obj(
            api,
            "email",
            lambda o: ready(o) and not {replay, purge} & set(annotations_of(o)),
            "the handled token and the old purge request dropped",
        )
        assert await dlq_len(redis_client) == 2  # nothing replayed a second time, nothing purged
        assert "lastReplay" not in obj["status"]
        assert obj["status"]["lastPurge"]["result"] == "Refused"
        assert "not yet reconciled" in obj["status"]["lastPurge"]["message"]

        await annotate(api, "email", **{replay: "new-token"})  # a new token still replays
        await wait_obj(
            api, "email", lambda o: (o["status"].get("lastReplay") or {}).get("token") == "new-token", "new"
        )
        assert await dlq_len(redis_client) == 0


async def test_invalid_spec_is_reported_and_writes_nothing(
    api: aiohttp.ClientSession, redis_client: Any, cluster: Cluster
) -> None:
    crd = yaml.safe_load((REPO_ROOT / CRD_PATH).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    body = qc("bad", concurrency=5000)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)  # what the API server would refuse; the emulator does not
    with operator():
        await create(api, body)
        obj = await wait_obj(
            api,
            "bad",
            lambda o: condition(o, "Ready").get("reason") == "InvalidSpec",
            "Ready=False InvalidSpec",
        )
        assert condition(obj, "Ready")["status"] == "False"
        assert "concurrency" in condition(obj, "Ready")["message"]
        assert obj["status"]["observedGeneration"] == 1
        await wait_event(api, "InvalidSpec")
        assert await config_hash(redis_client) == {}


async def test_the_older_queueconfig_wins_a_conflict(api: aiohttp.ClientSession, redis_client: Any) -> None:
    with operator():
        await create(api, qc("first", concurrency=2))
        await wait_obj(api, "first", ready, "first Ready")
        await asyncio.sleep(1.1)  # creationTimestamp has second resolution
        await create(api, qc("second", concurrency=9))
        obj = await wait_obj(
            api, "second", lambda o: condition(o, "Conflict").get("status") == "True", "Conflict on second"
        )
        assert condition(obj, "Ready")["status"] == "False"
        assert "tq/first" in condition(obj, "Conflict")["message"]
        assert (await config_hash(redis_client))["concurrency"] == "2"


async def test_redis_unreachable_is_a_temporary_error_with_ready_false(
    api: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.redis_server import free_port
    from support.settings import clear_settings_caches

    monkeypatch.setenv("TQ_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    clear_settings_caches()
    try:
        with operator():
            await create(api, qc("email", concurrency=3))
            obj = await wait_obj(
                api,
                "email",
                lambda o: condition(o, "Ready").get("reason") == "RedisUnavailable",
                "Ready=False RedisUnavailable",
            )
            assert condition(obj, "Ready")["status"] == "False"
            assert obj["status"]["observedGeneration"] == 1
    finally:
        clear_settings_caches()
