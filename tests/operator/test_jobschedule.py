"""JobSchedule end to end: ``kubectl`` against the emulated API server, the operator (kopf), a real
redis-server, and the engine's elected ``Scheduler`` firing what the operator wrote.

The operator only writes the schedule to Redis and reads its state back into status; the scheduler
(here in the test's process, as in every worker) enqueues the jobs. Without kubectl the tests that
need it are skipped (CI installs Debian's ``kubernetes-client``)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import wait_for
from support.crd_check import checked_in_schema, schema_errors
from support.kubectl import KUBECTL, kubectl, readme_block, shell, table
from support.operator import NS, SCHEDULES_BASE, condition, create, events, js, operator, wait_obj
from tq import keys, schedules
from tq.schedules import Scheduler
from tq.settings import Settings
from tq_operator.crd import REPO_ROOT, SCHEDULE_CRD_PATH
from tq_operator.main import FINALIZER
from tq_operator.schedule_handlers import owner_of_resource

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
pytestmark = pytest.mark.timeout(90)

EXAMPLE = REPO_ROOT / "examples" / "jobschedule-email-queue-fast.yaml"
NAME = "email-queue-fast"
OTHER_NS = "other"
OTHER_BASE = SCHEDULES_BASE.replace(f"/namespaces/{NS}/", f"/namespaces/{OTHER_NS}/")
BASE_SPEC = {
    "queue": "email:send",
    "job": "process-email-queue",
    "payload": {"limit": 5},
    "intervalSeconds": 60,
}


def ready(obj: dict[str, Any] | None, generation: int = 1) -> bool:
    status = (obj or {}).get("status") or {}
    return status.get("observedGeneration") == generation and condition(obj, "Ready").get("status") == "True"


def refused(reason: str) -> Any:
    def check(obj: dict[str, Any] | None) -> bool:
        return condition(obj, "Ready").get("reason") == reason

    return check


async def wait_js(
    api: aiohttp.ClientSession, name: str, pred: Any, what: str, base: str = SCHEDULES_BASE
) -> dict[str, Any]:
    return await wait_obj(api, name, pred, what, base=base)


def suspended(reason: str) -> Any:
    def check(obj: dict[str, Any] | None) -> bool:
        return condition(obj, "Suspended").get("reason") == reason

    return check


@pytest.fixture
async def scheduler(redis_url: str, redis_client: Any) -> AsyncIterator[Scheduler]:
    """The engine's scheduler duty, as every worker process runs it (elected; ticks every 0.1 s)."""
    sched = Scheduler(redis_client, Settings(redis_url=redis_url, audit_enabled=False), interval_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run_forever(stop))
    yield sched
    stop.set()
    await asyncio.wait_for(task, 10)


@needs_kubectl
async def test_apply_fire_suspend_and_delete_with_kubectl(
    api: aiohttp.ClientSession,
    redis_client: Any,
    scheduler: Scheduler,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # kubectl's discovery cache
    # the example, ticking every second so the test sees it fire
    manifest = tmp_path / "js.yaml"
    manifest.write_text(
        EXAMPLE.read_text()
        .replace("intervalSeconds: 15", "intervalSeconds: 1")
        .replace("startingDeadlineSeconds: 15", "startingDeadlineSeconds: 5")
    )
    with operator():
        out = await kubectl("apply", "-f", str(manifest))
        assert f"jobschedule.queues.teknav.io/{NAME} created" in out
        obj = await wait_js(api, NAME, ready, "Ready=True after kubectl apply")
        assert obj["metadata"]["finalizers"] == [FINALIZER]
        # in Redis, as the operator's
        stored = await schedules.get(redis_client, NAME)
        assert (stored.queue, stored.job, stored.payload, stored.interval_seconds) == (
            "email:send",
            "process-email-queue",
            {"limit": 50},
            1,
        )
        assert await schedules.owner_of(redis_client, NAME) == owner_of_resource(NS, NAME)

        # the scheduler fires it; the operator's timer writes what happened into status
        fired = await wait_js(
            api, NAME, lambda o: (o.get("status") or {}).get("lastJobId"), "a job in status"
        )
        status = fired["status"]
        # what the operator writes fits the CRD
        assert schema_errors(checked_in_schema(SCHEDULE_CRD_PATH), fired) == []
        state = schedules.parse_state(await redis_client.hgetall(keys.schedule_state(NAME)))
        assert state["fired"] >= 1 and state["job"]
        job = await redis_client.hgetall(keys.job("email:send", status["lastJobId"]))
        assert job, "the job in status is a real job of email:send"
        assert status["lastJobOutcome"] == "waiting"  # no worker in this test: it waits (Forbid skips)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["lastScheduleTime"])
        assert status["nextScheduleTime"] > status["lastScheduleTime"]
        assert status["schedule"] == "every 1s" and status["suspended"] is False
        assert status["ticks"]["fired"] >= 1
        assert "Enqueued" in await events(api)

        rows = table(await kubectl("get", "js"))
        assert list(rows[0]) == [
            "NAME",
            "QUEUE",
            "JOB",
            "SCHEDULE",
            "SUSPENDED",
            "LAST",
            "NEXT",
            "OUTCOME",
            "READY",
            "AGE",
        ]
        assert {
            k: rows[0][k] for k in ("NAME", "QUEUE", "JOB", "SCHEDULE", "SUSPENDED", "OUTCOME", "READY")
        } == {
            "NAME": NAME,
            "QUEUE": "email:send",
            "JOB": "process-email-queue",
            "SCHEDULE": "every 1s",
            "SUSPENDED": "false",
            "OUTCOME": "waiting",
            "READY": "True",
        }
        wide = table(await kubectl("get", "jobschedules", "-o", "wide"))
        assert list(wide[0])[-5:] == ["LAST JOB", "POLICY", "FIRED", "MISSED", "AGE"]
        assert wide[0]["POLICY"] == "Forbid" and wide[0]["LAST JOB"]
        explained = " ".join((await kubectl("explain", "jobschedule.spec.concurrencyPolicy")).split())
        assert "Forbid" in explained and "Replace:" in explained

        # suspend: spec.suspend reaches Redis, the ticks pass without jobs
        await kubectl("patch", "js", NAME, "--type", "merge", "-p", '{"spec":{"suspend":true}}')
        obj = await wait_js(
            api,
            NAME,
            lambda o: ready(o, 2) and condition(o, "Suspended").get("status") == "True",
            "suspended",
        )
        assert condition(obj, "Suspended")["reason"] == "SuspendedBySpec"
        assert (await schedules.get(redis_client, NAME)).suspend is True
        before = schedules.parse_state(await redis_client.hgetall(keys.schedule_state(NAME)))
        await asyncio.sleep(2.5)
        after = schedules.parse_state(await redis_client.hgetall(keys.schedule_state(NAME)))
        # the ticks passed silently: not fired, not even skipped (Forbid's count), not missed
        assert after["last"] > before["last"]
        assert [after[n] for n in schedules.TICK_OUTCOMES] == [before[n] for n in schedules.TICK_OUTCOMES]
        assert "Suspended" in await events(api)

        # delete: the finalizer removes it from Redis first
        out = await kubectl("delete", "-f", str(manifest), "--wait=false")
        assert f'jobschedule.queues.teknav.io "{NAME}" deleted' in out
        await wait_js(api, NAME, lambda o: o is None, "the finalizer released the object")
        assert await redis_client.hget(keys.SCHEDULES, NAME) is None
        assert not await redis_client.exists(keys.schedule_state(NAME))


INVALID: dict[str, tuple[dict[str, Any], str, str]] = {
    "payload refused by the job's model": (
        {"payload": {"limit": "lots"}},
        "InvalidPayload",
        "limit",
    ),
    "unknown job": ({"job": "process-the-queue"}, "UnknownJob", "process-the-queue"),
    "unknown queue": ({"queue": "email:sned"}, "UnknownQueue", "email:sned"),
    "bad cron": ({"cron": "every minute", "intervalSeconds": None}, "InvalidSpec", "invalid cron expression"),
    "bad time zone": ({"timeZone": "Mars/Olympus"}, "InvalidSpec", "unknown time zone"),
    "cron and interval": ({"cron": "* * * * *"}, "InvalidSpec", "exactly one of cron and intervalSeconds"),
}


async def test_invalid_specs_are_ready_false_with_the_reason_and_write_nothing(
    api: aiohttp.ClientSession, redis_client: Any
) -> None:
    with operator() as runner:
        for i, (change, _, _) in enumerate(INVALID.values()):
            spec = {k: v for k, v in {**BASE_SPEC, **change}.items() if v is not None}
            await create(api, js(f"bad-{i}", **spec))
        for i, (_, reason, named) in enumerate(INVALID.values()):
            obj = await wait_js(api, f"bad-{i}", refused(reason), f"bad-{i}: Ready=False {reason}")
            ready_condition = condition(obj, "Ready")
            assert ready_condition["status"] == "False" and named in ready_condition["message"]
            assert obj["status"]["observedGeneration"] == 1
        assert await redis_client.hlen(keys.SCHEDULES) == 0
        await asyncio.sleep(1.5)  # refresh timers ran: no retry storm, one Warning per resource
        reasons = await events(api)
        expected = [reason for _, reason, _ in INVALID.values()]
        for reason in set(expected):
            assert reasons.count(reason) == expected.count(reason), (reason, reasons)

        # fixed: Ready, written
        await merge_patch_js(api, "bad-0", {"spec": {"payload": {"limit": 7}}})
        await wait_js(api, "bad-0", lambda o: ready(o, 2), "fixed payload: Ready")
        assert (await schedules.get(redis_client, "bad-0")).payload == {"limit": 7}
        # refused again later: the last valid spec keeps running, and status says so
        await merge_patch_js(api, "bad-0", {"spec": {"payload": {"limit": 0}}})
        obj = await wait_js(api, "bad-0", refused("InvalidPayload"), "refused again")
        assert "keeps its last valid spec" in condition(obj, "Ready")["message"]
        assert (await schedules.get(redis_client, "bad-0")).payload == {"limit": 7}
        for i in range(len(INVALID)):
            async with api.delete(f"{SCHEDULES_BASE}/bad-{i}") as r:
                assert r.status < 300
        for i in range(len(INVALID)):
            await wait_js(api, f"bad-{i}", lambda o: o is None, "deleted")
        assert await redis_client.hlen(keys.SCHEDULES) == 0
    assert "Traceback" not in runner.output


async def merge_patch_js(api: aiohttp.ClientSession, name: str, patch: dict[str, Any]) -> None:
    headers = {"Content-Type": "application/merge-patch+json"}
    async with api.patch(f"{SCHEDULES_BASE}/{name}", data=json.dumps(patch), headers=headers) as r:
        assert r.status < 300, await r.text()


async def test_the_cli_defaults_do_not_fight_with_a_jobschedule(
    api: aiohttp.ClientSession, redis_client: Any
) -> None:
    """The ownership rule: a JobSchedule adopts the CLI's default of its name (state kept);
    `install-defaults` then leaves it; a suspension from the CLI or admin page holds until the
    spec changes; another namespace's JobSchedule of the same name is a Conflict."""
    from tq_services import default_schedules

    defaults = default_schedules(["messaging"])
    await schedules.install_defaults(redis_client, defaults)
    name = "email-process-email-queue"
    created = schedules.parse_state(await redis_client.hgetall(keys.schedule_state(name)))["created"]
    spec = {**BASE_SPEC, "payload": {"limit": 3}}
    with operator():
        await create(api, js(name, **spec))
        await wait_js(api, name, ready, "adopted")
        state = schedules.parse_state(await redis_client.hgetall(keys.schedule_state(name)))
        assert state["owner"] == owner_of_resource(NS, name) and state["created"] == created
        installed, managed = await schedules.install_defaults(redis_client, defaults)
        assert (installed, managed) == ([], [name])
        assert (await schedules.get(redis_client, name)).payload == {"limit": 3}  # the resource's

        # an operational switch: suspended outside Kubernetes, kept by the operator's timer...
        await schedules.set_suspended(redis_client, name, True)
        obj = await wait_js(api, name, suspended("SuspendedOutsideKubernetes"), "seen")
        assert obj["status"]["suspended"] is True
        await asyncio.sleep(1.5)
        assert (await schedules.get(redis_client, name)).suspend is True
        # ...until the spec changes
        await merge_patch_js(api, name, {"spec": {"payload": {"limit": 4}}})
        await wait_js(api, name, lambda o: ready(o, 2) and o["status"]["suspended"] is False, "spec applied")
        assert (await schedules.get(redis_client, name)).suspend is False

        # the same name in another namespace (same Redis): a Conflict, nothing overwritten
        other = js(name, **spec)
        other["metadata"]["namespace"] = OTHER_NS
        async with api.post(OTHER_BASE, json=other) as r:
            assert r.status < 300, await r.text()
        obj = await wait_js(api, name, refused("Conflict"), "conflict", base=OTHER_BASE)
        assert f"JobSchedule {NS}/{name}" in condition(obj, "Ready")["message"]
        assert (await schedules.get(redis_client, name)).payload == {"limit": 4}
        async with api.delete(f"{OTHER_BASE}/{name}") as r:
            assert r.status < 300
        await wait_js(api, name, lambda o: o is None, "other deleted", base=OTHER_BASE)
        assert await schedules.owner_of(redis_client, name) == owner_of_resource(NS, name)  # untouched


@needs_kubectl
async def test_the_readme_flow_runs_as_written(
    api: aiohttp.ClientSession, redis_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    lines = [
        line.split("#", 1)[0].strip()
        for line in readme_block("jobschedule-flow").splitlines()
        if line.strip()
    ]
    assert all(f"-n {NS}" in line or "examples/" in line for line in lines if "explain" not in line)
    apply, get, get_wide, explain, suspend, delete = lines
    with operator():
        assert f"jobschedule.queues.teknav.io/{NAME} created" in await shell(apply)
        await wait_js(api, NAME, ready, "Ready")
        assert (await schedules.get(redis_client, NAME)).interval_seconds == 15
        # not fired yet (no scheduler here): the row has empty cells, so read the header and the name
        header, row = (await shell(get)).splitlines()
        assert header.split()[:4] == ["NAME", "QUEUE", "JOB", "SCHEDULE"] and row.split()[0] == NAME
        assert "POLICY" in (await shell(get_wide)).splitlines()[0]
        assert "validated against the job's model" in " ".join((await shell(explain)).split())
        await shell(suspend)
        await wait_js(api, NAME, suspended("SuspendedBySpec"), "suspended")
        assert (await schedules.get(redis_client, NAME)).suspend is True
        await shell(delete)
        await wait_js(api, NAME, lambda o: o is None, "deleted")
        assert await redis_client.hget(keys.SCHEDULES, NAME) is None


async def test_a_schedule_redis_lost_or_garbled_is_written_again_by_the_timer(
    api: aiohttp.ClientSession, redis_client: Any
) -> None:
    with operator():
        await create(api, js("mails", **BASE_SPEC))
        await wait_js(api, "mails", ready, "Ready")
        await redis_client.delete(keys.SCHEDULES, keys.schedule_state("mails"))  # a Redis without its data

        async def back() -> bool:
            return await redis_client.hexists(keys.SCHEDULES, "mails")

        await wait_for(back, timeout=10, interval=0.1, what="the schedule written again")
        assert await schedules.owner_of(redis_client, "mails") == owner_of_resource(NS, "mails")

        await redis_client.hset(keys.SCHEDULES, "mails", "{not a spec")  # a hand edit gone wrong

        async def readable() -> bool:
            try:
                return (await schedules.get(redis_client, "mails")).interval_seconds == 60
            except ValueError:
                return False

        await wait_for(readable, timeout=10, interval=0.1, what="the spec written again")
