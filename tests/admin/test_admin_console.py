"""The console's API (the page's overview, workers, queue config, job lookup, DLQ groups, dry-run
counts, bulk actions and schedules) over HTTP: the app under uvicorn, the suite's real
redis-server, a migrated database, real workers writing heartbeats and filling the DLQ. Every
endpoint's answer, its 4xx with a message on bad input, and the audit rows of its changes."""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from support import running
from support.admin import (
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
from tq import config, keys, schedules
from tq.handlers import HandlerRegistry
from tq.producer import Producer

BASE = "/api/owner"
QUEUES = BASE + "/queues"


async def audit(database_url: str, prefix: str) -> list[tuple[str, str, Any]]:
    rows = await audit_rows(database_url)
    return [(r.action, r.outcome, r.details.get("result")) for r in rows if r.action.startswith(prefix)]


# ---- workers and a queue's config ------------------------------------------------------------------


async def test_workers_and_queue_consumers_come_from_the_heartbeats(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    assert (await http.get(f"{BASE}/workers", headers=owner)).json() == []
    async with running(redis_client, served.settings, HandlerRegistry(), queue=Q, consumer_id="c-one"):
        workers = (await http.get(f"{BASE}/workers", headers=owner)).json()
        assert [w["id"] for w in workers] == ["c-one"]
        [w] = workers
        assert w["host"] == socket.gethostname() and w["pid"] == os.getpid()
        assert w["queues"] == [Q] and w["concurrency"] == {Q: 16} and w["in_flight"] == {Q: 0}
        assert w["started_at"] <= time.time() and w["draining"] is False
        assert w["last_heartbeat_at"] <= time.time() + 0.5 < w["expires_at"]
        mine = (await http.get(f"{QUEUES}/{Q_ENCODED}/consumers", headers=owner)).json()
        assert [c["id"] for c in mine] == ["c-one"]
        assert (await http.get(f"{QUEUES}/ai:content/consumers", headers=owner)).json() == []
    # a stopped worker removes its heartbeat: it is gone at once
    assert (await http.get(f"{BASE}/workers", headers=owner)).json() == []
    err = assert_error(await http.get(f"{QUEUES}/no:such/consumers", headers=owner), 404, "not_found")
    assert "no:such" in err["message"]


async def test_queue_config_shows_the_retry_policy_and_who_manages_it(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any
) -> None:
    cfg = (await http.get(f"{QUEUES}/{Q}/config", headers=owner)).json()
    assert cfg["queue"] == Q and cfg["concurrency"] == 16 and cfg["paused"] is False
    assert cfg["retry"]["attempts"] == 1 and cfg["retry"]["max_s"] == 0.02  # the test's TQ_QUEUES
    assert cfg["managed"] is False and cfg["generation"] == 0 and cfg["rate_limit_jobs"] is None
    # what the operator writes for a QueueConfig: a generation, and its values
    await config.write(redis_client, Q, config.override(generation=4, concurrency=3, paused=True))
    cfg = (await http.get(f"{QUEUES}/{Q}/config", headers=owner)).json()
    assert (cfg["managed"], cfg["generation"], cfg["concurrency"], cfg["paused"]) == (True, 4, 3, True)
    assert_error(await http.get(f"{QUEUES}/no:such/config", headers=owner), 404, "not_found")


# ---- jobs ---------------------------------------------------------------------------------------------


async def test_find_a_job_by_id_in_any_queue(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    producer = Producer(redis_client, served.settings)
    job_id = await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": 7})
    r = await http.get(f"{BASE}/jobs/{job_id}", headers=owner)
    assert r.status_code == 200
    found = r.json()
    assert found["queue"] == Q and found["job"]["id"] == job_id and found["job"]["payload"] == {"limit": 7}
    assert found["job"]["timeline"][0]["event"] == "enqueued"
    err = assert_error(await http.get(f"{BASE}/jobs/nope-123", headers=owner), 404, "not_found")
    assert "no job nope-123 in any queue" in err["message"]
    assert_error(await http.get(f"{BASE}/jobs/has%20space", headers=owner), 422, "invalid_input")
    assert [(a, o) for a, o, _ in await audit(served.settings.database_url, "admin.job.find")] == [
        ("admin.job.find", "ok"),
        ("admin.job.find", "not_found"),
        ("admin.job.find", "invalid_input"),
    ]


async def test_bulk_retry_and_remove_jobs_report_each_outcome(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    dead = await dead_letters(redis_client, served.settings, 2)
    waiting = await Producer(redis_client, served.settings).enqueue(Q, NO_HANDLER_JOB, {"limit": 1})
    r = await http.post(
        f"{QUEUES}/{Q}/jobs/bulk",
        headers=owner,
        json={"action": "retry", "job_ids": [*dead, waiting, "gone"]},
    )
    assert r.status_code == 200
    body = r.json()
    assert (body["action"], body["done"], body["failed"]) == ("retry", 2, 2)
    by_id = {o["id"]: o for o in body["outcomes"]}
    assert all(by_id[d]["ok"] and by_id[d]["job_id"] for d in dead)
    assert not by_id[waiting]["ok"] and "waiting" in by_id[waiting]["error"]
    assert not by_id["gone"]["ok"] and "gone" in by_id["gone"]["error"]
    assert int(await redis_client.xlen(keys.dlq(Q))) == 0
    replayed = [by_id[d]["job_id"] for d in dead]
    r = await http.post(
        f"{QUEUES}/{Q}/jobs/bulk", headers=owner, json={"action": "remove", "job_ids": replayed}
    )
    assert r.json()["done"] == 2
    assert await redis_client.exists(keys.job(Q, replayed[0])) == 0
    for bad in (
        {"action": "retry", "job_ids": []},
        {"action": "explode", "job_ids": ["a"]},
        {"action": "retry", "job_ids": ["a b"]},
        {"action": "retry", "job_ids": [f"j{i}" for i in range(501)]},
        {"action": "retry", "job_ids": ["a"], "extra": 1},
    ):
        err = assert_error(
            await http.post(f"{QUEUES}/{Q}/jobs/bulk", headers=owner, json=bad), 422, "invalid_input"
        )
        assert err["fields"]
    assert_error(
        await http.post(
            f"{QUEUES}/no:such/jobs/bulk", headers=owner, json={"action": "retry", "job_ids": ["a"]}
        ),
        404,
        "not_found",
    )
    rows = await audit(served.settings.database_url, "admin.jobs.bulk")
    assert [(o, (d or {}).get("done")) for _, o, d in rows][:2] == [("ok", 2), ("ok", 2)]
    assert {o for _, o, _ in rows[2:]} == {"invalid_input", "not_found"}


# ---- DLQ ----------------------------------------------------------------------------------------------


async def _forge_dead_letter(client: Any, error_type: str, error: str) -> str:
    """A DLQ entry of another error type (the fields the engine writes)."""
    eid = await client.xadd(
        keys.dlq(Q),
        {
            "id": f"forged-{error_type}",
            "n": NO_HANDLER_JOB,
            "et": error_type,
            "em": error,
            "es": "",
            "a": "3",
            "f": str(int(time.time() * 1000)),
            "e": "{}",
        },
    )
    return eid.decode() if isinstance(eid, bytes) else str(eid)


async def test_dlq_groups_counts_and_bulk_actions(
    http: httpx.AsyncClient, owner: dict[str, str], redis_client: Any, served: Served
) -> None:
    empty = (await http.get(f"{QUEUES}/{Q}/dlq/groups", headers=owner)).json()
    assert empty == {"groups": [], "total": 0, "complete": True}
    await dead_letters(redis_client, served.settings, 3)
    await _forge_dead_letter(redis_client, "TimeoutError", "took too long")
    groups = (await http.get(f"{QUEUES}/{Q_ENCODED}/dlq/groups", headers=owner)).json()
    assert [(g["error_type"], g["count"]) for g in groups["groups"]] == [
        ("NoHandler", 3),
        ("TimeoutError", 1),
    ]
    assert groups["total"] == 4 and groups["complete"] is True
    assert groups["groups"][1]["example"] == "took too long"
    narrowed = (await http.get(f"{QUEUES}/{Q}/dlq/groups", params={"text": "too long"}, headers=owner)).json()
    assert [g["error_type"] for g in narrowed["groups"]] == ["TimeoutError"]
    future = (
        await http.get(f"{QUEUES}/{Q}/dlq/groups", params={"since": time.time() + 60}, headers=owner)
    ).json()
    assert future["total"] == 0

    # the dry run says what "replay all matching" would touch, and touches nothing
    count = await http.get(f"{QUEUES}/{Q}/dlq/count", params={"error_type": "NoHandler"}, headers=owner)
    assert count.json() == {"matching": 3, "complete": True}
    assert (await http.get(f"{QUEUES}/{Q}/dlq/count", headers=owner)).json()["matching"] == 4
    assert int(await redis_client.xlen(keys.dlq(Q))) == 4
    replay = await http.post(
        f"{QUEUES}/{Q}/dlq/replay", headers=owner, json={"all": True, "error_type": "NoHandler"}
    )
    assert replay.json()["replayed"] == 3
    assert (
        await http.get(f"{QUEUES}/{Q}/dlq/count", params={"error_type": "NoHandler"}, headers=owner)
    ).json()["matching"] == 0

    # bulk: each entry on its own, a missing one reported, not fatal
    await dead_letters(redis_client, served.settings, 2, tag="y")
    ids = [d["dlq_id"] for d in (await http.get(f"{QUEUES}/{Q}/dlq", headers=owner)).json()["items"]]
    assert len(ids) == 6  # the forged one, the 3 replayed (dead again under the worker), 2 new
    r = await http.post(
        f"{QUEUES}/{Q}/dlq/bulk", headers=owner, json={"action": "replay", "dlq_ids": [ids[0], "1-1"]}
    )
    assert (r.json()["done"], r.json()["failed"]) == (1, 1)
    assert r.json()["outcomes"][0]["job_id"] and "1-1" in r.json()["outcomes"][1]["error"]
    r = await http.post(
        f"{QUEUES}/{Q}/dlq/bulk", headers=owner, json={"action": "delete", "dlq_ids": ids[1:]}
    )
    assert r.json()["done"] == 5
    assert int(await redis_client.xlen(keys.dlq(Q))) == 0
    for bad in (
        {"action": "delete", "dlq_ids": []},
        {"action": "delete", "dlq_ids": ["x"]},
        {"dlq_ids": ["1-1"]},
    ):
        assert_error(await http.post(f"{QUEUES}/{Q}/dlq/bulk", headers=owner, json=bad), 422, "invalid_input")
    assert_error(
        await http.get(f"{QUEUES}/{Q}/dlq/count", params={"since": -1}, headers=owner), 422, "invalid_input"
    )
    assert_error(
        await http.get(f"{QUEUES}/{Q}/dlq/groups", params={"text": "x" * 201}, headers=owner),
        422,
        "invalid_input",
    )
    assert_error(await http.get(f"{QUEUES}/no:such/dlq/count", headers=owner), 404, "not_found")
    rows = await audit(served.settings.database_url, "admin.dlq.bulk")
    assert [(o, (d or {}).get("action")) for _, o, d in rows][:2] == [("ok", "replay"), ("ok", "delete")]


# ---- overview -----------------------------------------------------------------------------------------


async def test_overview_adds_up_every_queues_aggregates(
    http: httpx.AsyncClient, owner: dict[str, str], served: Served
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    bucket = now - timedelta(minutes=now.minute % 5 + 5)

    await insert_metric_aggregates(
        served.settings.database_url,
        [
            metric_aggregate(Q, bucket, completed=7, failed=2, dead=1, enqueued=9),
            metric_aggregate("ai:content", bucket, completed=100, enqueued=100),
            metric_aggregate(Q, bucket - timedelta(minutes=5), completed=3),
            metric_aggregate(Q, now - timedelta(hours=5), completed=11),
            metric_aggregate(Q, now - timedelta(days=3), completed=13),
            metric_aggregate(Q, now - timedelta(days=30), completed=1000),
        ],
    )
    hour = (await http.get(f"{BASE}/overview/metrics", headers=owner)).json()
    assert hour["range"] == "hour" and hour["bucket_s"] == 300
    assert [(p["completed"], p["failed"], p["dead"]) for p in hour["points"]] == [(3, 0, 0), (107, 2, 1)]
    assert hour["points"][1]["at"] == bucket.timestamp()
    busiest = hour["queues"][:2]
    assert [(t["queue"], t["completed"]) for t in busiest] == [("ai:content", 100), (Q, 10)]
    assert len(hour["queues"]) >= 5  # every registered queue, idle ones with zeros
    day = (await http.get(f"{BASE}/overview/metrics", params={"range": "day"}, headers=owner)).json()
    assert sum(p["completed"] for p in day["points"]) == 121
    week = (await http.get(f"{BASE}/overview/metrics", params={"range": "week"}, headers=owner)).json()
    assert week["bucket_s"] == 3600 and sum(p["completed"] for p in week["points"]) == 134
    assert all(p["at"] % 3600 == 0 for p in week["points"])
    err = assert_error(
        await http.get(f"{BASE}/overview/metrics", params={"range": "year"}, headers=owner),
        422,
        "invalid_input",
    )
    assert "hour" in err["message"]


# ---- schedules ----------------------------------------------------------------------------------------


async def test_schedules_list_run_now_suspend_resume(
    redis_url: str, tmp_path: Path, redis_client: Any
) -> None:
    db = sqlite_database(tmp_path)
    await schedules.add(
        redis_client,
        schedules.ScheduleSpec(
            name="nightly", queue=Q, job=NO_HANDLER_JOB, payload={"limit": 2}, cron="0 2 * * *"
        ),
    )
    with serving(admin_settings(redis_url, db, admin_viewer_enabled=True)) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            owner = auth(token(served, "owner", subject="alice"))
            viewer = auth(token(served, "viewer", subject="val"))
            [s] = (await http.get(f"{BASE}/schedules", headers=owner)).json()
            assert (s["name"], s["queue"], s["job"], s["suspend"]) == ("nightly", Q, NO_HANDLER_JOB, False)
            assert s["every"] == "cron '0 2 * * *' UTC" and s["payload"] == {"limit": 2}
            assert time.time() < s["next_run_at"] <= time.time() + 86400
            assert s["last_job_id"] is None and s["fired"] == 0

            r = await http.post(f"{BASE}/schedules/nightly/run-now", headers=owner)
            assert r.status_code == 200
            job_id = r.json()["job_id"]
            assert await redis_client.exists(keys.job(Q, job_id))
            [s] = (await http.get(f"{BASE}/schedules", headers=viewer)).json()
            assert s["last_job_id"] == job_id and s["last_outcome"] == "waiting"

            r = await http.post(f"{BASE}/schedules/nightly/suspend", headers=owner)
            assert r.json()["suspend"] is True and r.json()["next_run_at"] is None
            assert (await schedules.get(redis_client, "nightly")).suspend is True
            r = await http.post(f"{BASE}/schedules/nightly/resume", headers=owner)
            assert r.json()["suspend"] is False and r.json()["next_run_at"] > time.time()

            err = assert_error(
                await http.post(f"{BASE}/schedules/nope/run-now", headers=owner), 404, "not_found"
            )
            assert "no schedule 'nope'" in err["message"]
            assert_error(await http.post(f"{BASE}/schedules/nope/suspend", headers=owner), 404, "not_found")
            assert_error(
                await http.post(f"{BASE}/schedules/Bad_Name/resume", headers=owner), 422, "invalid_input"
            )
            err = assert_error(
                await http.post(f"{BASE}/schedules/nightly/run-now", headers=viewer), 403, "forbidden"
            )
            assert "owner" in err["message"]
    rows = await audit(db, "admin.schedule.")
    assert [(a, o) for a, o, _ in rows] == [
        ("admin.schedule.run_now", "ok"),
        ("admin.schedule.suspend", "ok"),
        ("admin.schedule.resume", "ok"),
        ("admin.schedule.run_now", "not_found"),
        ("admin.schedule.suspend", "not_found"),
        ("admin.schedule.resume", "invalid_input"),
        ("admin.schedule.run_now", "forbidden"),
    ]
    assert rows[0][2] == {"job_id": job_id}


# ---- the page's files ---------------------------------------------------------------------------


async def test_the_page_serves_its_chart_library_itself(http: httpx.AsyncClient) -> None:
    index = await http.get("/")
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert '<script src="/static/uplot.min.js"' in index.text  # no CDN: the page works offline
    js = await http.get("/static/uplot.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.text.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert (await http.get("/static/uplot.min.css")).headers["content-type"].startswith("text/css")
    assert "MIT License" in (await http.get("/static/uplot.LICENSE")).text
    err = assert_error(await http.get("/static/evil.js"), 404, "not_found")
    assert "evil.js" in err["message"]
