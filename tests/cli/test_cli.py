"""The ``tq`` command line against the test Redis. ``CliRunner`` runs ``asyncio.run`` inside, so these
tests are plain functions; data is set up through the CLI itself, a sync client, or a short
``asyncio.run`` of a real worker (to dead-letter jobs)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
import redis
import redis.asyncio as aioredis
from support import fast_settings, wait_for
from support.cli import ok, ok_json, refused, tq
from tq import keys
from tq.envelope import entry_envelope
from tq.handlers import HandlerRegistry
from tq.producer import Producer
from tq.registry import PRODUCT_QUEUE_NAMES, all_queues, get_queue
from tq.worker import Worker

Q = "email:send"
EMAIL = json.dumps({"to": "a@example.com", "template": "welcome"})


def tq_keys(r: redis.Redis) -> list[bytes]:
    return sorted(r.scan_iter(match="tq:*"))


def dead_letter(redis_url: str, n: int) -> list[str]:
    """Dead-letter ``n`` jobs through a real worker without handlers (NoHandler); their job ids."""

    async def go() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            s = fast_settings(redis_url)
            p = Producer(client, s)
            ids = [await p.enqueue(Q, "process-email-queue", {"limit": 100 + i}) for i in range(n)]
            worker = Worker(client, [get_queue(Q)], HandlerRegistry(), s)
            await worker.start()
            try:

                async def full() -> bool:
                    return int(await client.xlen(keys.dlq(Q))) == n

                await wait_for(full, what=f"{n} DLQ entries")
            finally:
                await worker.stop()
            return ids
        finally:
            await client.aclose()

    return asyncio.run(go())


# ---- registry views ----------------------------------------------------------------------------


def test_queues_json_matches_the_registry(redis_url: str) -> None:
    rows = ok_json("queues")
    by_name = {row["queue"]: row for row in rows}
    assert [row["queue"] for row in rows] == [q.name for q in all_queues()]
    assert set(PRODUCT_QUEUE_NAMES) <= set(by_name) and len(PRODUCT_QUEUE_NAMES) == 12
    for spec in all_queues():
        row = by_name[spec.name]
        assert row["family"] == spec.family
        assert row["jobs"] == list(spec.jobs)
        assert [row[k] for k in ("waiting", "active", "delayed", "dead", "paused")] == [0, 0, 0, 0, False]
    assert tq("queues").exit_code == 0  # the table renders too


def test_schema_is_strict_json_schema() -> None:
    schema = json.loads(ok("schema", Q, "send-email"))
    assert schema["additionalProperties"] is False
    assert schema["type"] == "object" and set(schema["required"]) == {"to", "template"}
    assert set(schema["properties"]) == set(get_queue(Q).payload_model("send-email").model_fields)
    assert "unknown job 'nope'" in refused("schema", Q, "nope")
    assert "unknown queue 'nope:q'" in refused("schema", "nope:q", "send-email")


# ---- enqueue -----------------------------------------------------------------------------------


def test_enqueue_prints_an_id_and_the_job_exists(redis_url: str, r: redis.Redis) -> None:
    job_id = ok("enqueue", Q, "send-email", "--data", EMAIL, "--trace-id", "cli-1").strip()
    assert re.fullmatch(r"[A-Za-z0-9_.]{22}", job_id)
    [(eid, fields)] = r.xrange(keys.stream(Q))
    assert r.hgetall(keys.job(Q, job_id)) == {b"x": eid}  # a waiting job's record: its entry id
    env = entry_envelope(fields, Q, 0).model_dump()
    assert env["name"] == "send-email" and env["id"] == job_id
    assert env["payload"]["to"] == "a@example.com" and env["trace_id"] == "cli-1"

    job = ok_json("job", Q, job_id)  # before any consumer exists
    assert [job[k] for k in ("id", "state", "name", "trace_id")] == [job_id, "waiting", "send-email", "cli-1"]
    assert job["payload"] == env["payload"]
    assert [step["event"] for step in job["timeline"]] == ["enqueued"]
    assert "no job" in refused("job", Q, "0" * 32)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((Q, "send-email", "--data", "{not json"), "--data is not valid JSON"),
        ((Q, "send-email", "--data", '{"to": "nope", "template": "w"}'), "invalid payload for email:send"),
        ((Q, "send-email", "--data", '{"to": "a@b.co"}'), "template: Field required"),
        ((Q, "send-email", "--data", '{"to": "a@b.co", "template": "w", "cc": 1}'), "cc: Extra inputs"),
        ((Q, "send-email", "--data", "[1, 2]"), "(payload): expected an object"),
        (("nope:queue", "send-email", "--data", EMAIL), "unknown queue 'nope:queue'"),
        ((Q, "send-sms", "--data", EMAIL), "unknown job 'send-sms'"),
        ((Q, "send-email", "--data", EMAIL, "--delay", "-5"), "delay must not be negative"),
    ],
)
def test_enqueue_refuses_bad_input(
    redis_url: str, r: redis.Redis, args: tuple[str, ...], reason: str
) -> None:
    out = refused("enqueue", *args)
    assert reason in out
    assert tq_keys(r) == []  # nothing written


def test_enqueue_invalid_field_is_named(redis_url: str) -> None:
    out = refused("enqueue", Q, "send-email", "--data", '{"to": "not-an-address", "template": "w"}')
    assert "to: String should match pattern" in out


def test_enqueue_idempotency_key_returns_the_first_id(redis_url: str, r: redis.Redis) -> None:
    first = ok("enqueue", Q, "send-email", "--data", EMAIL, "--idempotency-key", "order-1").strip()
    again = ok("enqueue", Q, "send-email", "--data", EMAIL, "--idempotency-key", "order-1").strip()
    other = ok("enqueue", Q, "send-email", "--data", EMAIL, "--idempotency-key", "order-2").strip()
    assert first == again != other
    assert r.xlen(keys.stream(Q)) == 2


def test_enqueue_with_delay_is_delayed(redis_url: str, r: redis.Redis) -> None:
    job_id = ok("enqueue", Q, "send-email", "--data", EMAIL, "--delay", "60").strip()
    job = ok_json("job", Q, job_id)
    assert job["state"] == "delayed"
    assert job["due_at"] == pytest.approx(time.time() + 60, abs=5)
    assert r.xlen(keys.stream(Q)) == 0 and r.zscore(keys.delayed(Q), job_id) is not None
    assert [j["id"] for j in ok_json("jobs", Q, "--state", "delayed")["items"]] == [job_id]
    assert ok_json("jobs", Q, "--state", "waiting")["items"] == []


# ---- jobs --------------------------------------------------------------------------------------


def test_jobs_lists_a_state_with_paging_and_search(redis_url: str) -> None:
    payloads = [
        {"to": f"u{i}@example.com", "template": t}
        for i, t in enumerate(["welcome", "reset-password", "welcome"])
    ]
    ids = [ok("enqueue", Q, "send-email", "--data", json.dumps(p)).strip() for p in payloads]
    first = ok_json("jobs", Q, "--state", "waiting", "--limit", "2")
    assert [j["id"] for j in first["items"]] == ids[:2] and first["next_cursor"]
    assert all(j["state"] == "waiting" and j["payload"]["to"] for j in first["items"])
    rest = ok_json("jobs", Q, "--state", "waiting", "--limit", "2", "--cursor", first["next_cursor"])
    assert [j["id"] for j in rest["items"]] == ids[2:] and rest["next_cursor"] is None
    found = ok_json("jobs", Q, "--state", "waiting", "--search", "reset-password")
    assert [j["id"] for j in found["items"]] == [ids[1]]
    assert ok_json("jobs", Q, "--state", "completed")["items"] == []
    assert tq("jobs", Q, "--state", "bogus").exit_code == 2
    assert "unknown queue" in refused("jobs", "nope:queue")
    assert tq("jobs", Q).exit_code == 0  # the table renders too


# ---- pause / resume ----------------------------------------------------------------------------


def test_pause_and_resume_flip_paused(redis_url: str) -> None:
    def paused() -> dict[str, bool]:
        return {row["queue"]: row["paused"] for row in ok_json("queues")}

    assert "email:send paused" in ok("pause", Q)
    flags = paused()
    assert flags[Q] is True and not any(v for q, v in flags.items() if q != Q)
    assert "email:send resumed" in ok("resume", Q)
    assert paused()[Q] is False
    assert "unknown queue" in refused("pause", "nope:queue")


# ---- dlq ---------------------------------------------------------------------------------------


def test_dlq_list_show_replay_delete_purge(redis_url: str, r: redis.Redis) -> None:
    job_ids = dead_letter(redis_url, 5)

    listed = ok_json("dlq", "list", Q)
    items = listed["items"]
    assert listed["next_cursor"] is None and sorted(d["job_id"] for d in items) == sorted(job_ids)
    assert {d["error_type"] for d in items} == {"NoHandler"}
    assert ok_json("dlq", "list", Q, "--error-type", "ValueError")["items"] == []
    found = ok_json("dlq", "list", Q, "--search", '"limit":102')["items"]  # payload text
    assert [d["job_id"] for d in found] == [job_ids[2]]
    page = ok_json("dlq", "list", Q, "--limit", "3")
    assert len(page["items"]) == 3 and page["next_cursor"]
    more = ok_json("dlq", "list", Q, "--limit", "3", "--cursor", page["next_cursor"])
    assert len(more["items"]) == 2 and more["next_cursor"] is None
    assert [d["dlq_id"] for d in page["items"] + more["items"]] == [d["dlq_id"] for d in items]
    assert tq("dlq", "list", Q).exit_code == 0  # the table renders too

    target = items[0]
    shown = ok_json("dlq", "show", Q, target["dlq_id"])
    assert shown == target and shown["payload"] == {"limit": shown["payload"]["limit"]}
    assert "no DLQ entry" in refused("dlq", "show", Q, "1-0")

    new_id = ok("dlq", "replay", Q, target["dlq_id"]).strip()
    assert re.fullmatch(r"[A-Za-z0-9_.]{22}", new_id) and new_id != target["job_id"]
    replayed = ok_json("job", Q, new_id)
    assert replayed["state"] == "waiting" and replayed["replay_of"] == target["job_id"]
    assert replayed["payload"] == target["payload"]
    assert "no DLQ entry" in refused("dlq", "replay", Q, target["dlq_id"])  # never twice
    assert r.xlen(keys.dlq(Q)) == 4

    assert "--limit N or --all" in refused("dlq", "replay", Q)
    summary = json.loads(ok("dlq", "replay", Q, "--limit", "1", "--error-type", "NoHandler"))
    assert (summary["replayed"], summary["skipped"], len(summary["job_ids"])) == (1, 0, 1)
    assert r.xlen(keys.dlq(Q)) == 3 and r.xlen(keys.stream(Q)) == 2

    victim = ok_json("dlq", "list", Q)["items"][0]["dlq_id"]
    assert f"deleted {victim}" in ok("dlq", "delete", Q, victim)
    assert "no DLQ entry" in refused("dlq", "delete", Q, victim)
    assert r.xlen(keys.dlq(Q)) == 2

    assert "confirmation" in refused("dlq", "purge", Q)
    assert r.xlen(keys.dlq(Q)) == 2
    assert "confirmation" in refused("dlq", "purge", Q, "--confirm", "otp:send")
    assert r.xlen(keys.dlq(Q)) == 2
    assert "purged 2 entries from email:send" in ok("dlq", "purge", Q, "--confirm", Q)
    assert r.xlen(keys.dlq(Q)) == 0
    assert ok_json("dlq", "list", Q)["items"] == []


def test_dlq_replay_all(redis_url: str, r: redis.Redis) -> None:
    dead_letter(redis_url, 3)
    summary = json.loads(ok("dlq", "replay", Q, "--all"))
    assert summary["replayed"] == 3 and len(set(summary["job_ids"])) == 3
    assert r.xlen(keys.dlq(Q)) == 0 and r.xlen(keys.stream(Q)) == 3


# ---- worker ------------------------------------------------------------------------------------


def test_worker_refuses_an_unknown_family() -> None:
    out = refused("worker", "--family", "nope")
    assert "unknown family 'nope'" in out and "messaging" in out


def test_unreachable_redis_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from support.redis_server import free_port
    from support.settings import clear_settings_caches

    monkeypatch.setenv("TQ_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    clear_settings_caches()
    try:
        result = tq("queues")
    finally:
        clear_settings_caches()
    assert result.exit_code == 1
    assert "Redis at redis://127.0.0.1:" in result.output and "Traceback" not in result.output


def test_job_with_a_failed_attempt_shows_its_timeline_in_seconds(redis_url: str) -> None:
    """A failed attempt's time is stored in ms: the table must render it (it used to crash with
    ``year 58889 is out of range``) and ``--json`` must give seconds like every other step."""
    [job_id] = dead_letter(redis_url, 1)
    job = ok_json("job", Q, job_id)
    steps = job["timeline"]
    assert [s["event"] for s in steps] == ["enqueued", "attempt failed", "dead"]
    assert steps[1]["type"] == "NoHandler"
    now = time.time()
    for step in steps:  # seconds, all within the last minute
        assert now - 60 < step["at"] <= now + 1, step
    assert steps[0]["at"] <= steps[1]["at"] <= steps[2]["at"]
    table = ok("job", Q, job_id)
    assert "attempt failed" in table and "NoHandler" in table
