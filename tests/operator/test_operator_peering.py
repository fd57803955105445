"""Leader election: two operator replicas on one ClusterKopfPeering, and only one of them acts.

The leader runs in-process (kopf's KopfRunner), the other replica is a real ``kopf run`` subprocess
with its own log, both against the emulated API server and the suite's real Redis.
"""

from __future__ import annotations

import re
import subprocess
import sys
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import pytest
from support import wait_for
from support.operator import KOPF_ARGS, Q, create, merge_patch, operator, process, qc, ready, wait_obj
from tq import keys
from tq_operator.crd import DEFAULT_PEERING, PEERING_GROUP, PEERING_PLURAL, PEERING_VERSION
from tq_operator.main import configure_peering, seniority_priority
from tq_operator.settings import OperatorSettings

pytestmark = pytest.mark.timeout(90)

PEERING = f"/apis/{PEERING_GROUP}/{PEERING_VERSION}/{PEERING_PLURAL}/{DEFAULT_PEERING}"
HANDLED = re.compile(r"Handler '[^']*(reconcile|refresh)[^']*' succeeded")


def replica(log: Path, pod: str, **env: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """A second operator process (``kopf run``), logging to ``log``."""
    return process([sys.executable, "-m", "kopf", *KOPF_ARGS], log, POD_ID=pod, **env)


async def peers(api: aiohttp.ClientSession) -> dict[str, Any]:
    async with api.get(PEERING) as r:
        assert r.status == 200, await r.text()
        return dict((await r.json()).get("status") or {})


def tail(log: Path) -> str:
    return log.read_text()[-6000:]


async def wait_log(log: Path, pattern: str, what: str) -> None:
    try:
        await wait_for(
            lambda: re.search(pattern, log.read_text()) is not None, timeout=20, interval=0.1, what=what
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the log:\n{tail(log)}") from None


async def concurrency(client: Any) -> bytes | None:
    """The concurrency the runtime config in Redis holds (what the acting replica wrote)."""
    return await client.hget(keys.config(Q), "concurrency")


async def test_only_the_senior_replica_acts_and_the_next_takes_over(
    api: aiohttp.ClientSession,
    redis_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "follower.log"
    monkeypatch.setenv("POD_ID", "leader")
    with ExitStack() as stack:
        leader = ExitStack()
        stack.callback(leader.close)
        leader.enter_context(operator())
        await create(api, qc("email", concurrency=3))
        await wait_obj(api, "email", ready, "the leader reconciles")

        follower = stack.enter_context(replica(log, "follower"))
        await wait_for(
            lambda: _both(api), timeout=20, interval=0.1, what="both replicas in the peering object"
        )
        status = await peers(api)
        # The replica started later has the lower seniority priority.
        assert status["leader"]["priority"] > status["follower"]["priority"]
        # It starts paused and stays so: it does not even watch QueueConfigs.
        await wait_log(log, r"Pausing the watch-stream for queueconfigs", "the follower is paused")

        for generation, value in ((2, 4), (3, 5)):
            await merge_patch(api, "email", {"spec": {"concurrency": value}})
            await wait_obj(api, "email", lambda o, g=generation: ready(o, g), f"generation {generation}")
            assert await concurrency(redis_client) == str(value).encode()
        assert follower.poll() is None, log.read_text()
        text = log.read_text()
        assert "Resuming the watch-stream for queueconfigs" not in text, text
        assert not HANDLED.search(text), text  # the follower never acted

        # The leader stops and leaves the peering object: the follower resumes and acts.
        leader.close()
        await wait_for(lambda: _only_follower(api), timeout=20, interval=0.1, what="the leader deregistered")
        await wait_log(log, r"Resuming the watch-stream for queueconfigs", "the follower resumes")
        await merge_patch(api, "email", {"spec": {"concurrency": 6}})
        await wait_obj(api, "email", lambda o: ready(o, 4), "the follower reconciles generation 4")
        assert await concurrency(redis_client) == b"6"
        await wait_log(log, HANDLED.pattern, "a handler ran in the follower")


async def _both(api: aiohttp.ClientSession) -> bool:
    return {"leader", "follower"} <= set(await peers(api))


async def _only_follower(api: aiohttp.ClientSession) -> bool:
    return set(await peers(api)) == {"follower"}


async def test_a_pinned_priority_outranks_the_running_replicas(
    api: aiohttp.ClientSession, redis_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A debugging session with TQ_OPERATOR_PRIORITY pauses the cluster's replica and does the work."""
    log = tmp_path / "debug.log"
    monkeypatch.setenv("POD_ID", "in-cluster")
    with operator() as runner:
        await create(api, qc("email", concurrency=3))
        await wait_obj(api, "email", ready, "the in-cluster replica reconciles")
        with replica(log, "debug", TQ_OPERATOR_PRIORITY="100"):
            await wait_log(log, HANDLED.pattern, "the debugging replica acts at once")
            await merge_patch(api, "email", {"spec": {"concurrency": 7}})
            await wait_obj(api, "email", lambda o: ready(o, 2), "generation 2")
            assert await concurrency(redis_client) == b"7"
            assert (await peers(api))["debug"]["priority"] == 100
    assert "Pausing operations in favour of" in runner.output


def test_seniority_orders_replicas_by_start_time() -> None:
    older = seniority_priority(1_800_000_000.000, tiebreak=999)
    newer = seniority_priority(1_800_000_000.001, tiebreak=0)
    assert older > newer
    # Same millisecond: the tiebreak decides, and the values stay exact as JSON (float64) numbers.
    same = {seniority_priority(1_800_000_000.5, tiebreak=t) for t in range(1000)}
    assert len(same) == 1000
    assert all(abs(p) < 2**53 for p in same)


def test_peering_settings() -> None:
    settings = kopf.OperatorSettings()
    configure_peering(settings, OperatorSettings(operator_peering=""), 0.0)
    assert settings.peering.standalone and not settings.peering.mandatory

    settings = kopf.OperatorSettings()
    configure_peering(settings, OperatorSettings(operator_priority=7), 0.0)
    peering = settings.peering
    assert (peering.standalone, peering.mandatory, peering.clusterwide) == (False, True, True)
    assert (peering.name, peering.priority) == (DEFAULT_PEERING, 7)
