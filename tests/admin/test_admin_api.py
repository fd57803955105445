"""The admin API over HTTP: the app under uvicorn on a free port, the suite's real redis-server, a
real (migrated) database for the audit rows, real workers filling the DLQ. Every endpoint, its
401/403/404/422/429 answers, and the AuditLog row of every change and payload read."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from support import fast_settings
from support.admin import (
    ADMIN_KEY,
    NO_HANDLER_JOB,
    Q_ENCODED,
    Q,
    Served,
    admin_settings,
    assert_error,
    audit_rows,
    auth,
    dead_letters,
    insert_metric_aggregates,
    metric_aggregate,
    serving,
    sqlite_database,
    token,
)
from support.redis_server import free_port
from tq import keys
from tq.cancel import wait_settled
from tq.config import read as read_config
from tq.connection import async_client
from tq.envelope import JobState
from tq.handlers import HandlerRegistry, JobContext
from tq.producer import Producer
from tq.registry import all_queues, get_queue
from tq.stats import StatsLeader
from tq.worker import Worker

BASE = "/api/owner/queues"


# ---- OpenAPI, headers, CORS -----------------------------------------------------------------------


async def test_openapi_publishes_every_endpoint_with_bearer_auth(http: httpx.AsyncClient) -> None:
    r = await http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    ops = {(path, method) for path, item in doc["paths"].items() for method in item}
    ops = {op for op in ops if not op[0].startswith("/api/jobs/")}  # one per job: test_admin_produce
    q = BASE + "/{queue}"
    assert ops == {
        (BASE, "get"),
        (q + "/stats", "get"),
        (q + "/metrics", "get"),
        (q + "/jobs", "get"),
        (q + "/jobs/{job_id}", "get"),
        (q + "/jobs/{job_id}/retry", "post"),
        (q + "/jobs/{job_id}/cancel", "post"),
        (q + "/jobs/{job_id}", "delete"),
        (q + "/pause", "post"),
        (q + "/resume", "post"),
        (q + "/dlq", "get"),
        (q + "/dlq/{dlq_id}", "get"),
        (q + "/dlq/replay", "post"),
        (q + "/dlq/{dlq_id}/replay", "post"),
        (q + "/dlq/{dlq_id}", "delete"),
        (q + "/dlq/purge", "post"),
        (q + "/config", "get"),
        (q + "/consumers", "get"),
        (q + "/jobs/bulk", "post"),
        (q + "/dlq/groups", "get"),
        (q + "/dlq/count", "get"),
        (q + "/dlq/bulk", "post"),
        ("/api/owner/overview/metrics", "get"),
        ("/api/owner/workers", "get"),
        ("/api/owner/jobs/{job_id}", "get"),
        ("/api/owner/schedules", "get"),
        ("/api/owner/schedules/{name}/run-now", "post"),
        ("/api/owner/schedules/{name}/suspend", "post"),
        ("/api/owner/schedules/{name}/resume", "post"),
        ("/api/realtime/queue-events", "get"),
    }
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert all(op.get("security") for item in doc["paths"].values() for op in item.values())


async def test_security_headers_and_request_ids(http: httpx.AsyncClient, owner: dict[str, str]) -> None:
    r = await http.get(BASE, headers={**owner, "X-Request-ID": "trace-me.1"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-me.1"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    bad = await http.get(BASE, headers={**owner, "X-Request-ID": "no spaces\tor tabs"})
    assert bad.headers["x-request-id"] != "no spaces\tor tabs" and len(bad.headers["x-request-id"]) == 32
    assert (await http.get("/docs")).status_code == 404  # the CDN-loading docs page is off


async def test_cors_is_closed_by_default(http: httpx.AsyncClient, owner: dict[str, str]) -> None:
    origin = {"Origin": "https://evil.example"}
    r = await http.get(BASE, headers={**owner, **origin})
    assert "access-control-allow-origin" not in r.headers
    pre = await http.options(
        BASE,
        headers={
            **origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert "access-control-allow-origin" not in pre.headers
    assert pre.status_code in (401, 405)


async def test_cors_allows_only_the_configured_origins(redis_url: str, tmp_path: Path) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), admin_cors_origins=["https://ops.example"])
    with serving(s) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            ok = await http.options(
                BASE, headers={"Origin": "https://ops.example", "Access-Control-Request-Method": "GET"}
            )
            assert ok.headers["access-control-allow-origin"] == "https://ops.example"
            other = await http.options(
                BASE, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
            )
            assert "access-control-allow-origin" not in other.headers


# ---- 401 / 403 ----------------------------------------------------------------------------------


def _forge(claims: dict[str, Any], key: str = ADMIN_KEY) -> str:
    now = int(time.time())
    base = {"iss": "tq", "aud": "tq-admin", "sub": "mallory", "role": "owner", "iat": now, "exp": now + 600}
    return jwt.encode({**base, **claims}, key, algorithm="HS256")


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "required"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "required"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid token"),
        ({"Authorization": f"Bearer {_forge({}, key='another-key-of-32-bytes-or-more!!')}"}, "signature"),
        ({"Authorization": f"Bearer {_forge({'exp': int(time.time()) - 5})}"}, "expired"),
        ({"Authorization": f"Bearer {_forge({'aud': 'someone-else'})}"}, "audience"),
        ({"Authorization": f"Bearer {_forge({'iss': 'elsewhere'})}"}, "issuer"),
        ({"Authorization": f"Bearer {_forge({'role': None})}"}, "invalid token"),
    ],
    ids=["none", "basic", "garbage", "bad-signature", "expired", "wrong-audience", "wrong-issuer", "no-role"],
)
async def test_bad_tokens_get_401_json(
    http: httpx.AsyncClient, served: Served, headers: dict[str, str], why: str
) -> None:
    for method, path in [("GET", BASE), ("POST", f"{BASE}/{Q}/pause"), ("GET", "/api/realtime/queue-events")]:
        r = await http.request(method, path, headers=headers)
        err = assert_error(r, 401, "unauthorized")
        assert why in err["message"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert await audit_rows(served.settings.database_url) == []  # no actor: no row


async def test_roles_owner_viewer_and_unknown(redis_url: str, tmp_path: Path, redis_client: Any) -> None:
    db = sqlite_database(tmp_path)
    with serving(admin_settings(redis_url, db)) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            viewer = auth(token(served, "viewer", subject="val"))
            err = assert_error(await http.get(BASE, headers=viewer), 403, "forbidden")
            assert "viewer role is not enabled" in err["message"]
            assert_error(await http.get(BASE, headers=auth(_forge({"role": "root"}))), 403, "forbidden")
    with serving(admin_settings(redis_url, db, admin_viewer_enabled=True)) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            viewer = auth(token(served, "viewer", subject="val"))
            assert (await http.get(BASE, headers=viewer)).status_code == 200
            assert (await http.get(f"{BASE}/{Q}/dlq", headers=viewer)).status_code == 200
            err = assert_error(await http.post(f"{BASE}/{Q}/pause", headers=viewer), 403, "forbidden")
            assert "owner" in err["message"]
            assert not (await read_config(redis_client, Q)).paused
            sse = await http.get("/api/realtime/queue-events", headers=viewer)
            assert_error(sse, 403, "forbidden")
    rows = await audit_rows(db, "admin.queue.pause")
    assert [(r.actor, r.outcome, r.target) for r in rows] == [("val", "forbidden", Q)]


# ---- queues -------------------------------------------------------------------------------------


async def test_queue_list_and_stats_raw_and_encoded(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    producer = Producer(redis_client, served.settings)
    for i in range(3):
        await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1})
    r = await http.get(BASE, headers=owner)
    assert r.status_code == 200
    listed = {q["queue"]: q for q in r.json()}
    assert list(listed) == [spec.name for spec in all_queues()]
    assert listed[Q]["counts"]["waiting"] == 3 and listed[Q]["family"] == "messaging"
    assert listed[Q]["stats"] is None  # no stats leader has run yet
    await StatsLeader(redis_client, settings=served.settings).tick()
    raw = (await http.get(f"{BASE}/{Q}/stats", headers=owner)).json()
    encoded = (await http.get(f"{BASE}/{Q_ENCODED}/stats", headers=owner)).json()
    assert raw["queue"] == encoded["queue"] == Q
    assert raw["counts"]["waiting"] == 3 and raw["stats"]["waiting"] == 3
    assert encoded["stats"]["enqueued"] == 3
    assert (await http.get(f"{BASE}/ai:content/stats", headers=owner)).json()["counts"]["waiting"] == 0


async def test_pause_and_resume_change_the_live_config(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    r = await http.post(f"{BASE}/{Q_ENCODED}/pause", headers=owner)
    assert r.status_code == 200 and r.json() == {"queue": Q, "paused": True}
    assert (await read_config(redis_client, Q)).paused
    assert (await http.get(f"{BASE}/{Q}/stats", headers=owner)).json()["counts"]["paused"] is True
    r = await http.post(f"{BASE}/{Q}/resume", headers=owner)
    assert r.json() == {"queue": Q, "paused": False}
    assert not (await read_config(redis_client, Q)).paused
    rows = await audit_rows(served.settings.database_url)
    assert [(r.action, r.target, r.outcome, r.actor) for r in rows] == [
        ("admin.queue.pause", Q, "ok", "alice"),
        ("admin.queue.resume", Q, "ok", "alice"),
    ]


# ---- jobs ---------------------------------------------------------------------------------------


async def test_jobs_paging_search_and_detail(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    producer = Producer(redis_client, served.settings)
    ids = [await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": 100 + i}) for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"state": "waiting", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get(f"{BASE}/{Q_ENCODED}/jobs", params=params, headers=owner)).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    found = (await http.get(f"{BASE}/{Q}/jobs", params={"search": "103"}, headers=owner)).json()
    # the search matches ids too: a random id that happens to hold "103" is found as well
    assert [j["id"] for j in found["items"]] == [i for i in ids if i == ids[3] or "103" in i]
    detail = (await http.get(f"{BASE}/{Q}/jobs/{ids[0]}", headers=owner)).json()
    assert detail["payload"] == {"limit": 100} and detail["state"] == "waiting"
    assert detail["timeline"][0]["event"] == "enqueued"
    rows = await audit_rows(served.settings.database_url)
    assert {r.action for r in rows} == {"admin.jobs.list", "admin.job.read"}  # payload reads: data access
    read = next(r for r in rows if r.action == "admin.job.read")
    assert read.target == f"{Q}/{ids[0]}" and read.details["kind"] == "data_access"


async def test_dead_job_detail_retry_and_remove(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    [dead] = await dead_letters(redis_client, served.settings, 1)
    detail = (await http.get(f"{BASE}/{Q}/jobs/{dead}", headers=owner)).json()
    assert detail["state"] == "dead" and detail["error_type"] == "NoHandler" and detail["error"]
    r = await http.post(f"{BASE}/{Q}/jobs/{dead}/retry", headers=owner)
    assert r.status_code == 200 and r.json()["replayed"] is True
    new_id = r.json()["job_id"]
    assert (await http.get(f"{BASE}/{Q}/jobs/{new_id}", headers=owner)).json()["replay_of"] == dead
    assert int(await redis_client.xlen(keys.dlq(Q))) == 0
    # a waiting job cannot be retried (409) but can be removed, once
    err = assert_error(await http.post(f"{BASE}/{Q}/jobs/{new_id}/retry", headers=owner), 409, "conflict")
    assert "waiting" in err["message"]
    r = await http.delete(f"{BASE}/{Q}/jobs/{new_id}", headers=owner)
    assert r.status_code == 200 and r.json()["removed_from"] == "waiting"
    assert_error(await http.delete(f"{BASE}/{Q}/jobs/{new_id}", headers=owner), 404, "not_found")
    delayed = await Producer(redis_client, served.settings).enqueue(
        Q, NO_HANDLER_JOB, {"limit": 1}, delay=3600
    )
    r = await http.post(f"{BASE}/{Q}/jobs/{delayed}/retry", headers=owner)
    assert r.json() == {"queue": Q, "job_id": delayed, "replayed": False}
    assert float(await redis_client.zscore(keys.delayed(Q), delayed)) <= time.time() * 1000
    rows = await audit_rows(served.settings.database_url)
    changes = [(r.action, r.outcome) for r in rows if r.details["kind"] == "change"]
    assert changes == [
        ("admin.job.retry", "ok"),
        ("admin.job.retry", "conflict"),
        ("admin.job.remove", "ok"),
        ("admin.job.remove", "not_found"),
        ("admin.job.retry", "ok"),
    ]
    assert rows[1].details["result"] == {"job_id": new_id}


async def test_cancel_waiting_delayed_running_and_finished_jobs(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    producer = Producer(redis_client, served.settings)
    waiting = await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": 1})
    delayed = await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": 2}, delay=3600)
    r = await http.post(f"{BASE}/{Q}/jobs/{waiting}/cancel", headers=owner)
    assert r.status_code == 200
    assert r.json() == {"queue": Q, "job_id": waiting, "outcome": "removed", "was": "waiting"}
    r = await http.post(f"{BASE}/{Q_ENCODED}/jobs/{delayed}/cancel", headers=owner)
    assert r.json()["outcome"] == "removed" and r.json()["was"] == "delayed"
    assert_error(await http.post(f"{BASE}/{Q}/jobs/{waiting}/cancel", headers=owner), 404, "not_found")

    # running on a worker (in this process): requested, then the job ends cancelled
    handlers = HandlerRegistry()
    began, cleaned = asyncio.Event(), asyncio.Event()

    @handlers.register(Q, "send-email")
    async def send(ctx: JobContext, payload: Any) -> None:
        await ctx.progress(0.25, "sending")
        began.set()
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.set()

    worker = Worker(redis_client, [get_queue(Q)], handlers, fast_settings(served.settings.redis_url))
    await worker.start()
    try:
        running = await producer.enqueue(Q, "send-email", {"to": "a@example.com", "template": "w"})
        await asyncio.wait_for(began.wait(), 10)
        detail = (await http.get(f"{BASE}/{Q}/jobs/{running}", headers=owner)).json()
        assert (detail["state"], detail["progress"], detail["progress_message"]) == (
            "active",
            0.25,
            "sending",
        )
        r = await http.post(f"{BASE}/{Q}/jobs/{running}/cancel", headers=owner)
        assert r.json() == {"queue": Q, "job_id": running, "outcome": "requested", "was": "active"}
        await asyncio.wait_for(cleaned.wait(), 10)
        assert await wait_settled(redis_client, Q, running, 10) is JobState.CANCELLED
    finally:
        await worker.stop()
    detail = (await http.get(f"{BASE}/{Q}/jobs/{running}", headers=owner)).json()
    assert detail["state"] == "cancelled" and detail["timeline"][-1]["event"] == "cancelled"
    listed = (await http.get(f"{BASE}/{Q}/jobs", params={"state": "cancelled"}, headers=owner)).json()
    assert [j["id"] for j in listed["items"]] == [running]
    err = assert_error(await http.post(f"{BASE}/{Q}/jobs/{running}/cancel", headers=owner), 409, "conflict")
    assert "already cancelled" in err["message"]
    summary = (await http.get(f"{BASE}/{Q}/stats", headers=owner)).json()
    assert summary["counts"]["cancelled"] == 3

    rows = await audit_rows(served.settings.database_url, "admin.job.cancel")
    assert [(r.outcome, r.target) for r in rows] == [
        ("ok", f"{Q}/{waiting}"),
        ("ok", f"{Q}/{delayed}"),
        ("not_found", f"{Q}/{waiting}"),
        ("ok", f"{Q}/{running}"),
        ("conflict", f"{Q}/{running}"),
    ]
    assert rows[3].details["result"] == {"outcome": "requested", "was": "active"}


async def test_bulk_cancel_reports_each_job(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    producer = Producer(redis_client, served.settings)
    ids = [await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": i}) for i in (1, 2)]
    body = {"action": "cancel", "job_ids": [*ids, "never-enqueued"]}
    r = (await http.post(f"{BASE}/{Q}/jobs/bulk", json=body, headers=owner)).json()
    assert (r["action"], r["done"], r["failed"]) == ("cancel", 2, 1)
    assert [o["ok"] for o in r["outcomes"]] == [True, True, False]
    assert "no job never-enqueued" in r["outcomes"][2]["error"]
    assert int(await redis_client.xlen(keys.stream(Q))) == 0


# ---- DLQ ----------------------------------------------------------------------------------------


async def test_dlq_list_filter_page_show_replay_delete_purge(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    await dead_letters(redis_client, served.settings, 5, tag="batch")
    listing = (await http.get(f"{BASE}/{Q_ENCODED}/dlq", params={"limit": 2}, headers=owner)).json()
    assert len(listing["items"]) == 2 and listing["next_cursor"]
    rest = (
        await http.get(
            f"{BASE}/{Q}/dlq", params={"limit": 10, "cursor": listing["next_cursor"]}, headers=owner
        )
    ).json()
    all_ids = [d["dlq_id"] for d in listing["items"] + rest["items"]]
    assert len(set(all_ids)) == 5 and rest["next_cursor"] is None
    by_type = (await http.get(f"{BASE}/{Q}/dlq", params={"error_type": "NoHandler"}, headers=owner)).json()
    assert len(by_type["items"]) == 5
    none = (await http.get(f"{BASE}/{Q}/dlq", params={"error_type": "Timeout"}, headers=owner)).json()
    assert none["items"] == []
    future = (await http.get(f"{BASE}/{Q}/dlq", params={"since": time.time() + 3600}, headers=owner)).json()
    assert future["items"] == []
    one = (await http.get(f"{BASE}/{Q}/dlq/{all_ids[0]}", headers=owner)).json()
    assert one["error_type"] == "NoHandler" and one["payload"]["limit"] >= 1 and one["error"]

    replayed = await http.post(f"{BASE}/{Q}/dlq/{all_ids[0]}/replay", headers=owner)
    assert replayed.status_code == 200 and replayed.json()["job_id"]
    assert_error(await http.post(f"{BASE}/{Q}/dlq/{all_ids[0]}/replay", headers=owner), 404, "not_found")
    assert (await http.delete(f"{BASE}/{Q}/dlq/{all_ids[1]}", headers=owner)).json()["deleted"] is True
    assert_error(await http.get(f"{BASE}/{Q}/dlq/{all_ids[1]}", headers=owner), 404, "not_found")
    many = await http.post(f"{BASE}/{Q}/dlq/replay", json={"limit": 1}, headers=owner)
    assert many.json()["replayed"] == 1
    assert int(await redis_client.xlen(keys.dlq(Q))) == 2

    wrong = await http.post(f"{BASE}/{Q}/dlq/purge", json={"confirm": "ai:content"}, headers=owner)
    err = assert_error(wrong, 422, "invalid_input")
    assert err["fields"][0]["field"] == "body.confirm"
    assert int(await redis_client.xlen(keys.dlq(Q))) == 2  # nothing lost
    purged = await http.post(f"{BASE}/{Q_ENCODED}/dlq/purge", json={"confirm": Q}, headers=owner)
    assert purged.json() == {"queue": Q, "purged": 2}
    assert int(await redis_client.xlen(keys.dlq(Q))) == 0
    again = await http.post(f"{BASE}/{Q}/dlq/replay", json={"all": True}, headers=owner)
    assert again.json() == {"replayed": 0, "skipped": 0, "job_ids": []}

    rows = await audit_rows(served.settings.database_url)
    changes = [(r.action, r.target, r.outcome) for r in rows if r.details["kind"] == "change"]
    assert changes == [
        ("admin.dlq.replay", f"{Q}/{all_ids[0]}", "ok"),
        ("admin.dlq.replay", f"{Q}/{all_ids[0]}", "not_found"),
        ("admin.dlq.delete", f"{Q}/{all_ids[1]}", "ok"),
        ("admin.dlq.replay_many", Q, "ok"),
        ("admin.dlq.purge", Q, "invalid_input"),
        ("admin.dlq.purge", Q, "ok"),
        ("admin.dlq.replay_many", Q, "ok"),
    ]
    purge_row = (
        rows[-2]
        if rows[-2].action == "admin.dlq.purge"
        else next(r for r in rows if r.action == "admin.dlq.purge" and r.outcome == "ok")
    )
    assert purge_row.details["result"] == {"purged": 2}
    reads = {r.action for r in rows if r.details["kind"] == "data_access"}
    assert reads == {"admin.dlq.list", "admin.dlq.read"}


# ---- 404 / 422 ----------------------------------------------------------------------------------


async def test_unknown_queue_job_and_entry_are_404(http: httpx.AsyncClient, owner: dict[str, str]) -> None:
    nq = f"{BASE}/no:such"
    for method, path, body in [
        ("GET", f"{nq}/stats", None),
        ("GET", f"{nq}/jobs", None),
        ("GET", f"{nq}/jobs/abc", None),
        ("POST", f"{nq}/jobs/abc/retry", None),
        ("POST", f"{nq}/jobs/abc/cancel", None),
        ("POST", f"{BASE}/{Q}/jobs/never-enqueued/cancel", None),
        ("DELETE", f"{nq}/jobs/abc", None),
        ("POST", f"{nq}/pause", None),
        ("POST", f"{nq}/resume", None),
        ("GET", f"{nq}/dlq", None),
        ("GET", f"{nq}/dlq/1-0", None),
        ("POST", f"{nq}/dlq/replay", {"all": True}),
        ("POST", f"{nq}/dlq/1-0/replay", None),
        ("DELETE", f"{nq}/dlq/1-0", None),
        ("POST", f"{nq}/dlq/purge", {"confirm": "no:such"}),
        ("GET", f"{BASE}/{Q}/jobs/never-enqueued", None),
        ("GET", f"{BASE}/{Q}/dlq/1-0", None),
        ("DELETE", f"{BASE}/{Q}/dlq/1-0", None),
        ("GET", "/api/owner/nothing-here", None),
    ]:
        r = await http.request(method, path, json=body, headers=owner)
        assert_error(r, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", "/dlq/replay", {"json": {}}, "body"),
        ("POST", "/dlq/replay", {"json": {"limit": 0}}, "body.limit"),
        ("POST", "/dlq/replay", {"json": {"all": True, "surprise": 1}}, "body.surprise"),
        ("POST", "/dlq/replay", {"json": {"all": True, "since": "yesterday"}}, "body.since"),
        (
            "POST",
            "/dlq/replay",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            "body",
        ),
        ("POST", "/dlq/purge", {"json": {}}, "body.confirm"),
        ("POST", "/dlq/purge", {"json": {"confirm": 7}}, "body.confirm"),
        ("GET", "/jobs", {"params": {"state": "sleeping"}}, "query.state"),
        ("GET", "/jobs", {"params": {"limit": 0}}, "query.limit"),
        ("GET", "/jobs", {"params": {"limit": 5000}}, "query.limit"),
        ("GET", "/jobs", {"params": {"cursor": "(((", "state": "waiting"}}, "query.cursor"),
        ("GET", "/jobs", {"params": {"cursor": "job:x", "state": "dead"}}, "cursor"),
        ("GET", "/dlq", {"params": {"since": "inf"}}, "query.since"),
        ("GET", "/dlq", {"params": {"until": "nan"}}, "query.until"),
        ("GET", "/dlq", {"params": {"cursor": "99999999999999999999-0"}}, "query.cursor"),
        ("GET", "/dlq/not-an-id", {}, "path.dlq_id"),
        ("GET", "/jobs/bad%00id", {}, "path.job_id"),
        ("DELETE", "/jobs/" + "x" * 200, {}, "path.job_id"),
    ],
)
async def test_bad_input_is_422_naming_the_field(
    http: httpx.AsyncClient, owner: dict[str, str], method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    headers = {**owner, **kwargs.pop("headers", {})}
    r = await http.request(method, f"{BASE}/{Q}{path}", headers=headers, **kwargs)
    err = assert_error(r, 422, "invalid_input")
    fields = [f["field"] for f in err.get("fields", [])]
    assert any(f.startswith(field) for f in fields) or field in err["message"], err


# ---- 429 ----------------------------------------------------------------------------------------


async def test_rate_limit_per_token_sliding_window(redis_url: str, tmp_path: Path, redis_client: Any) -> None:
    db = sqlite_database(tmp_path)
    s = admin_settings(redis_url, db, admin_rate_limit=3, admin_rate_window_s=2)
    with serving(s) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            alice, bob = auth(token(s, subject="alice")), auth(token(s, subject="bob"))
            for _ in range(3):
                assert (await http.get(BASE, headers=alice)).status_code == 200
            limited = await http.post(f"{BASE}/{Q}/pause", headers=alice)
            assert_error(limited, 429, "rate_limited")
            assert 1 <= int(limited.headers["retry-after"]) <= 2
            assert not (await read_config(redis_client, Q)).paused  # refused: nothing done
            assert (await http.get(BASE, headers=bob)).status_code == 200  # per token
            await asyncio.sleep(float(limited.headers["retry-after"]))
            assert (await http.get(BASE, headers=alice)).status_code == 200  # the window slid
    rows = await audit_rows(db, "admin.queue.pause")
    assert [(r.actor, r.outcome, r.details["status"]) for r in rows] == [("alice", "rate_limited", 429)]


# ---- audit rows on both databases ---------------------------------------------------------------


async def test_audit_rows_record_who_what_outcome_request_and_client(
    redis_url: str, database_url: str, redis_client: Any
) -> None:
    with serving(admin_settings(redis_url, database_url)) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            owner = auth(token(served, subject="ops@example.com"))
            ok = await http.post(f"{BASE}/{Q}/pause", headers={**owner, "X-Request-ID": "req-1"})
            bad = await http.post(f"{BASE}/{Q}/dlq/purge", json={"confirm": "nope"}, headers=owner)
            gone = await http.delete(f"{BASE}/{Q}/jobs/missing", headers=owner)
            unknown = await http.post(f"{BASE}/no:such/pause", headers=owner)
    rows = await audit_rows(database_url)
    assert [(r.actor, r.action, r.target, r.outcome) for r in rows] == [
        ("ops@example.com", "admin.queue.pause", Q, "ok"),
        ("ops@example.com", "admin.dlq.purge", Q, "invalid_input"),
        ("ops@example.com", "admin.job.remove", f"{Q}/missing", "not_found"),
        ("ops@example.com", "admin.queue.pause", "no:such", "not_found"),
    ]
    for row, response in zip(rows, [ok, bad, gone, unknown], strict=True):
        assert row.details["request_id"] == response.headers["x-request-id"]
        assert row.details["client"] == "127.0.0.1"
        assert row.details["status"] == response.status_code
        assert row.details["role"] == "owner"
    assert rows[0].details["request_id"] == "req-1"
    assert "confirmation" in rows[1].details["error"]


# ---- the CLI ------------------------------------------------------------------------------------


def test_tq_serve_admin_and_token_create(redis_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TQ_REDIS_URL": redis_url,
        "TQ_DATABASE_URL": sqlite_database(tmp_path),
        "TQ_ADMIN_JWT_KEY": ADMIN_KEY,
        "TQ_UVLOOP": "false",
    }
    tq = [sys.executable, "-m", "tq_cli"]
    minted = subprocess.run(
        [*tq, "token", "create", "--role", "owner", "--ttl", "1h"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    tok = minted.stdout.strip()
    assert jwt.decode(tok, ADMIN_KEY, algorithms=["HS256"], audience="tq-admin")["role"] == "owner"
    bad = subprocess.run([*tq, "token", "create", "--ttl", "soon"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--ttl" in bad.stderr
    nokey = subprocess.run(
        [*tq, "token", "create"], env={**env, "TQ_ADMIN_JWT_KEY": ""}, capture_output=True, text=True
    )
    assert nokey.returncode == 2 and "TQ_ADMIN_JWT_KEY" in nokey.stderr
    port = free_port()
    proc = subprocess.Popen([*tq, "serve", "admin", "--host", "127.0.0.1", "--port", str(port)], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "tq serve admin did not come up"
            time.sleep(0.1)
        r = httpx.get(f"http://127.0.0.1:{port}{BASE}/{Q_ENCODED}/stats", headers=auth(tok))
        assert r.status_code == 200 and r.json()["queue"] == Q
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def test_the_cli_cancels_through_the_api(redis_url: str, tmp_path: Path) -> None:
    from tq_cli.main import app as cli
    from typer.testing import CliRunner

    runner = CliRunner()
    s = admin_settings(redis_url, sqlite_database(tmp_path))

    async def enqueue() -> list[str]:
        client = async_client(s.settings)
        try:
            producer = Producer(client, s.settings)
            return [await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": 1}, delay=d) for d in (None, 600)]
        finally:
            await client.aclose()

    waiting, delayed = asyncio.run(enqueue())
    with serving(s) as served:
        tok = token(s, subject="cli-user")

        def tq(*args: str) -> Any:
            return runner.invoke(cli, ["--api", served.url, "--token", tok, *args])

        result = tq("job", "cancel", Q, waiting)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"{waiting} cancelled: it was waiting and was removed; it never runs"
        result = tq("job", "cancel", Q, delayed, "--json")
        assert json.loads(result.stdout)["was"] == "delayed"
        result = tq("job", "cancel", Q, waiting)
        assert result.exit_code == 2 and "no job" in result.output
    rows = asyncio.run(audit_rows(s.settings.database_url, "admin.job.cancel"))
    assert [(r.actor, r.outcome) for r in rows] == [
        ("cli-user", "ok"),
        ("cli-user", "ok"),
        ("cli-user", "not_found"),
    ]


def test_the_cli_acts_through_the_api_with_api_and_token(redis_url: str, tmp_path: Path) -> None:
    from tq_cli.main import app as cli
    from typer.testing import CliRunner

    runner = CliRunner()
    s = admin_settings(redis_url, sqlite_database(tmp_path))

    async def fill() -> list[str]:
        client = async_client(s.settings)
        try:
            return await dead_letters(client, s.settings, 3)
        finally:
            await client.aclose()

    dead = asyncio.run(fill())
    with serving(s) as served:
        tok = token(s, subject="cli-user")

        def tq(*args: str) -> Any:
            return runner.invoke(cli, ["--api", served.url, "--token", tok, *args])

        def ok(*args: str) -> str:
            result = tq(*args)
            assert result.exit_code == 0, result.output
            return str(result.stdout)

        rows = {r["queue"]: r for r in json.loads(ok("queues", "--json"))}
        assert rows[Q]["dead"] == 3 and rows[Q]["family"] == "messaging"
        assert ok("pause", Q).strip() == f"{Q} paused"
        assert json.loads(ok("queues", "--json"))[[r["queue"] for r in rows.values()].index(Q)]["paused"]
        ok("resume", Q)
        job = json.loads(ok("job", Q, dead[0], "--json"))
        assert job["state"] == "dead" and job["payload"] == {"limit": 1} and job["timeline"]
        dead_jobs = json.loads(ok("jobs", Q, "--state", "dead", "--json"))
        assert sorted(j["id"] for j in dead_jobs["items"]) == sorted(dead)
        letters = json.loads(ok("dlq", "list", Q, "--json"))["items"]
        assert len(letters) == 3
        shown = json.loads(ok("dlq", "show", Q, letters[0]["dlq_id"], "--json"))
        assert shown["job_id"] == letters[0]["job_id"]
        new_id = ok("dlq", "replay", Q, letters[0]["dlq_id"]).strip()
        assert json.loads(ok("job", Q, new_id, "--json"))["replay_of"] == letters[0]["job_id"]
        assert ok("dlq", "delete", Q, letters[1]["dlq_id"]).strip() == f"deleted {letters[1]['dlq_id']}"
        assert json.loads(ok("dlq", "replay", Q, "--all"))["replayed"] == 1
        assert "purged 0 entries" in ok("dlq", "purge", Q, "--confirm", Q)
        # errors keep the CLI's exit statuses and carry the API's message
        missing = tq("job", Q, "nope")
        assert missing.exit_code == 2 and "no job nope" in missing.output
        unknown = tq("pause", "no:such")
        assert unknown.exit_code == 2 and "unknown queue" in unknown.output
        wrong = tq("dlq", "purge", Q, "--confirm", "ai:content")
        assert wrong.exit_code == 2 and "confirmation" in wrong.output
        local_only = tq("enqueue", Q, NO_HANDLER_JOB)
        assert local_only.exit_code == 2 and "without --api" in local_only.output
        forged = runner.invoke(cli, ["--api", served.url, "--token", tok[:-3] + "abc", "queues"])
        assert forged.exit_code == 2 and "401" in forged.output
        no_token = runner.invoke(cli, ["--api", served.url, "queues"])
        assert no_token.exit_code == 2 and "--token" in no_token.output
        down = runner.invoke(cli, ["--api", f"http://127.0.0.1:{free_port()}", "--token", tok, "queues"])
        assert down.exit_code == 1 and "failed" in down.output
    rows_ = asyncio.run(audit_rows(s.settings.database_url))
    changes = [(r.actor, r.action, r.outcome) for r in rows_ if r.details["kind"] == "change"]
    assert changes == [
        ("cli-user", "admin.queue.pause", "ok"),
        ("cli-user", "admin.queue.resume", "ok"),
        ("cli-user", "admin.dlq.replay", "ok"),
        ("cli-user", "admin.dlq.delete", "ok"),
        ("cli-user", "admin.dlq.replay_many", "ok"),
        ("cli-user", "admin.dlq.purge", "ok"),
        ("cli-user", "admin.queue.pause", "not_found"),
        ("cli-user", "admin.dlq.purge", "invalid_input"),
    ]


async def test_redis_down_is_503_json_and_still_audited(tmp_path: Path) -> None:
    db = sqlite_database(tmp_path)
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    s = admin_settings(dead_redis, db)
    with serving(s, wait_ready=False) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and "redis unreachable" in ready.json()["reason"]
            owner = auth(token(s, subject="alice"))
            r = await http.post(f"{BASE}/{Q}/pause", headers=owner)
            assert_error(r, 503, "unavailable")
            assert r.headers["retry-after"] == "5"
    # the rate limit is in Redis too, so the call failed there: still one row, outcome unavailable
    rows = await audit_rows(db)
    assert [(r.actor, r.action, r.outcome) for r in rows] == [("alice", "admin.queue.pause", "unavailable")]


async def test_metrics_are_the_queues_5_minute_aggregates(
    http: httpx.AsyncClient, owner: dict[str, str], served: Served
) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC).replace(second=0, microsecond=0)

    await insert_metric_aggregates(
        served.settings.database_url,
        [
            metric_aggregate(Q, now - timedelta(minutes=10), completed=7, failed=1),
            metric_aggregate(Q, now - timedelta(minutes=5), completed=9, avg_duration_ms=12.5),
            metric_aggregate(Q, now - timedelta(days=3), completed=1),
            metric_aggregate("ai:content", now - timedelta(minutes=5), completed=100),
        ],
    )
    r = await http.get(f"{BASE}/{Q_ENCODED}/metrics", headers=owner)
    assert r.status_code == 200
    assert [(m["completed"], m["failed"], m["avg_duration_ms"]) for m in r.json()] == [
        (7, 1, None),
        (9, 0, 12.5),
    ]
    week = (await http.get(f"{BASE}/{Q}/metrics", params={"hours": 24 * 7}, headers=owner)).json()
    assert [m["completed"] for m in week] == [1, 7, 9]
    assert_error(
        await http.get(f"{BASE}/{Q}/metrics", params={"hours": 0}, headers=owner), 422, "invalid_input"
    )
    assert_error(await http.get(f"{BASE}/no:such/metrics", headers=owner), 404, "not_found")
