"""Enqueue over HTTP (``tq_services.admin.produce``): the admin app under uvicorn, the suite's real
redis-server, a real worker running what was enqueued, the audit summaries in a real (migrated)
database. Roles, validation (422 naming the field), 404, 413, idempotency keys, the enqueue rate
limit, all-or-nothing batches and the OpenAPI document's one schema per registry job."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select
from support import running, wait_for
from support.admin import (
    ADMIN_KEY,
    Q_ENCODED,
    Q,
    Served,
    admin_settings,
    assert_error,
    auth,
    serving,
    sqlite_database,
    token,
)
from tq import jobs
from tq.connection import async_client
from tq.db import make_engine
from tq.envelope import JobState
from tq.handlers import HandlerRegistry, JobContext
from tq.models import AuditLog
from tq.payloads import SendEmail
from tq.registry import all_queues
from tq_services.admin import produce_audit
from tq_services.admin.auth import Principal, Role
from tq_services.admin.state import AdminState

REPO = Path(__file__).resolve().parents[2]
# the heading of each doc's HTTP producing section: its bash blocks run as written
SECTIONS = {"README.md": "### Over HTTP", "admin.md": "## Producing from other languages over HTTP"}
BASH_BLOCK = re.compile(r"^( *)```bash\n(.*?)^ *```", re.S | re.M)
SHOWN = re.compile(r"^ *# (\d{3}) (\{.*)$", re.M)  # "# 201 {...}": the status and answer the docs show
JOB = "send-email"
URL = f"/api/jobs/{Q}/{JOB}"
EMAIL = {"to": "ada@example.com", "template": "welcome", "variables": {"name": "Ada"}}


@pytest.fixture
def served(redis_url: str, tmp_path: Path) -> Iterator[Served]:
    s = admin_settings(
        redis_url, sqlite_database(tmp_path), admin_viewer_enabled=True, admin_produce_audit_window_s=0.5
    )
    with serving(s) as served:
        yield served


@pytest.fixture
def producer(served: Served) -> dict[str, str]:
    return auth(token(served, "producer", subject="web-backend"))


@pytest.fixture
async def client(served: Served) -> AsyncIterator[Any]:
    c = async_client(served.settings)
    yield c
    await c.aclose()


async def waiting_ids(client: Any) -> set[str]:
    page = await jobs.list_jobs(client, Q, JobState.WAITING, limit=1000)
    return {j.id for j in page.items}


# ---- enqueue, and a real worker runs it ------------------------------------------------------------


async def enqueued_created(http: httpx.AsyncClient) -> float:
    """``tq_admin_enqueued_total{queue=Q, outcome="created"}`` (one registry per process: a delta)."""
    found = re.search(
        rf'tq_admin_enqueued_total{{outcome="created",queue="{Q}"}} (\S+)', (await http.get("/metrics")).text
    )
    return float(found.group(1)) if found else 0.0


async def test_a_producer_token_enqueues_and_a_worker_runs_the_job(
    http: httpx.AsyncClient, producer: dict[str, str], served: Served, client: Any
) -> None:
    created_before = await enqueued_created(http)
    r = await http.post(URL, json=EMAIL, headers=producer)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["queue"] == Q and body["job"] == JOB and body["duplicate"] is False
    record = await jobs.get_job(client, Q, body["id"])  # the engine's own reading API
    assert record.name == JOB and record.payload["to"] == "ada@example.com"
    encoded = await http.post(f"/api/jobs/{Q_ENCODED}/{JOB}", json=EMAIL, headers=producer)
    assert encoded.status_code == 201, encoded.text

    ran: dict[str, SendEmail] = {}
    handlers = HandlerRegistry()

    async def send(ctx: JobContext, payload: SendEmail) -> None:
        ran[ctx.job_id] = payload

    handlers.add(Q, JOB, send)
    async with running(client, served.settings, handlers, queue=Q):
        await wait_for(lambda: len(ran) == 2, what="both jobs run")
    assert set(ran) == {body["id"], encoded.json()["id"]}
    assert await enqueued_created(http) == created_before + 2
    assert ran[body["id"]].variables == {"name": "Ada"}
    assert (await jobs.get_job(client, Q, body["id"])).state is JobState.COMPLETED


async def test_delay_s_makes_a_delayed_job(
    http: httpx.AsyncClient, producer: dict[str, str], client: Any
) -> None:
    r = await http.post(URL, params={"delay_s": 3600}, json=EMAIL, headers=producer)
    assert r.status_code == 201, r.text
    record = await jobs.get_job(client, Q, r.json()["id"])
    assert record.state is JobState.DELAYED
    assert record.due_at is not None and record.due_at > time.time() + 3500
    bad = await http.post(URL, params={"delay_s": -1}, json=EMAIL, headers=producer)
    assert [f["field"] for f in assert_error(bad, 422, "invalid_input")["fields"]] == ["query.delay_s"]


# ---- validation, 404, 413 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**EMAIL, "to": "not-an-address"}, "body.to"),
        ({"template": "welcome"}, "body.to"),
        ({**EMAIL, "colour": "red"}, "body.colour"),
        ({**EMAIL, "locale": 7}, "body.locale"),
    ],
)
async def test_an_invalid_payload_is_a_422_naming_the_field(
    http: httpx.AsyncClient, producer: dict[str, str], client: Any, payload: dict[str, Any], field: str
) -> None:
    r = await http.post(URL, json=payload, headers=producer)
    err = assert_error(r, 422, "invalid_input")
    assert field in [f["field"] for f in err["fields"]]
    assert field in err["message"]
    assert await waiting_ids(client) == set()


async def test_a_body_that_is_not_an_object_is_a_422(
    http: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    for content in (b"[1, 2]", b"not json", b'"text"'):
        r = await http.post(URL, content=content, headers={**producer, "Content-Type": "application/json"})
        assert_error(r, 422, "invalid_input")
    assert_error(await http.post(URL, headers=producer), 422, "invalid_input")  # no body at all


async def test_an_unknown_queue_or_job_is_a_404_naming_the_known_ones(
    http: httpx.AsyncClient, producer: dict[str, str]
) -> None:
    queue = assert_error(
        await http.post(f"/api/jobs/no:such/{JOB}", json=EMAIL, headers=producer), 404, "not_found"
    )
    assert "unknown queue 'no:such'" in queue["message"] and Q in queue["message"]
    job = assert_error(
        await http.post(f"/api/jobs/{Q}/no-such", json=EMAIL, headers=producer), 404, "not_found"
    )
    assert "unknown job 'no-such'" in job["message"] and JOB in job["message"]
    batch = await http.post(
        f"/api/jobs/{Q}/no-such/batch", json={"jobs": [{"payload": EMAIL}]}, headers=producer
    )
    assert "unknown job" in assert_error(batch, 404, "not_found")["message"]


async def test_a_body_over_the_cap_is_a_413(redis_url: str, tmp_path: Path) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), admin_max_body_bytes=1024)
    with serving(s) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            big = {**EMAIL, "variables": {"text": "x" * 2000}}
            r = await http.post(URL, json=big, headers=auth(token(served, "producer")))
            assert "TQ_ADMIN_MAX_BODY_BYTES" in assert_error(r, 413, "payload_too_large")["message"]


async def test_a_payload_over_the_engines_limit_is_a_413_naming_the_batch_item(
    redis_url: str, tmp_path: Path
) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), max_payload_bytes=200)
    with serving(s) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            headers = auth(token(served, "producer"))
            big = {**EMAIL, "variables": {"text": "x" * 300}}
            one = await http.post(URL, json=big, headers=headers)
            assert "TQ_MAX_PAYLOAD_BYTES" in assert_error(one, 413, "payload_too_large")["message"]
            items = [{"payload": EMAIL}, {"payload": big}]
            many = await http.post(URL + "/batch", json={"jobs": items}, headers=headers)
            assert assert_error(many, 413, "payload_too_large")["message"].startswith("body.jobs.1.payload")


# ---- roles -----------------------------------------------------------------------------------------


async def test_the_producer_role_may_only_enqueue(
    http: httpx.AsyncClient, producer: dict[str, str], served: Served
) -> None:
    owner_routes = [
        ("GET", "/api/owner/queues", None),
        ("GET", f"/api/owner/queues/{Q_ENCODED}/stats", None),
        ("GET", f"/api/owner/queues/{Q_ENCODED}/jobs", None),
        ("POST", f"/api/owner/queues/{Q_ENCODED}/pause", None),
        ("POST", f"/api/owner/queues/{Q_ENCODED}/dlq/purge", {"confirm": Q}),
        ("GET", "/api/realtime/queue-events", None),
    ]
    for method, path, body in owner_routes:
        r = await http.request(method, path, json=body, headers=producer)
        assert "only enqueue" in assert_error(r, 403, "forbidden")["message"], path
    owner = auth(token(served, "owner"))
    assert (await http.post(URL, json=EMAIL, headers=owner)).status_code == 201  # owners may enqueue
    viewer = await http.post(URL, json=EMAIL, headers=auth(token(served, "viewer")))
    assert "viewer role may not enqueue" in assert_error(viewer, 403, "forbidden")["message"]
    assert_error(await http.post(URL, json=EMAIL), 401, "unauthorized")
    stranger = jwt.encode(
        {"iss": "tq", "aud": "tq-admin", "sub": "x", "role": "producer", "iat": 0, "exp": 2**40},
        "another-key-0123456789abcdef0123456789",
        algorithm="HS256",
    )
    assert_error(await http.post(URL, json=EMAIL, headers=auth(stranger)), 401, "unauthorized")


def test_tq_token_create_mints_a_producer_token(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cli.main import app as cli
    from tq_services.admin.settings import get_admin_settings
    from typer.testing import CliRunner

    monkeypatch.setenv("TQ_ADMIN_JWT_KEY", ADMIN_KEY)
    get_admin_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["token", "create", "--role", "producer", "--subject", "nest"])
        refused = CliRunner().invoke(cli, ["token", "create", "--role", "enqueuer"])
    finally:
        get_admin_settings.cache_clear()
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), ADMIN_KEY, algorithms=["HS256"], audience="tq-admin")
    assert claims["role"] == "producer" and claims["sub"] == "nest"
    assert refused.exit_code != 0


# ---- idempotency, rate limit -----------------------------------------------------------------------


async def test_the_idempotency_key_gives_back_the_first_jobs_id(
    http: httpx.AsyncClient, producer: dict[str, str], client: Any
) -> None:
    key = {"Idempotency-Key": "signup-42"}
    first = await http.post(URL, json=EMAIL, headers={**producer, **key})
    again = await http.post(URL, json={**EMAIL, "template": "other"}, headers={**producer, **key})
    assert first.status_code == 201 and again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    other = await http.post(URL, json=EMAIL, headers={**producer, "Idempotency-Key": "signup-43"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert await waiting_ids(client) == {first.json()["id"], other.json()["id"]}
    too_long = await http.post(URL, json=EMAIL, headers={**producer, "Idempotency-Key": "k" * 241})
    assert "header.Idempotency-Key" in [
        f["field"] for f in assert_error(too_long, 422, "invalid_input")["fields"]
    ]


async def test_the_enqueue_rate_limit_is_per_token_and_apart_from_the_owner_budget(
    redis_url: str, tmp_path: Path
) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), admin_produce_rate_limit=3, admin_rate_limit=100)
    with serving(s) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            owner = auth(token(served, "owner"))
            for _ in range(3):
                assert (await http.post(URL, json=EMAIL, headers=owner)).status_code == 201
            over = await http.post(URL, json=EMAIL, headers=owner)
            assert "TQ_ADMIN_PRODUCE_RATE_LIMIT" in assert_error(over, 429, "rate_limited")["message"]
            assert int(over.headers["retry-after"]) >= 1
            batch = await http.post(URL + "/batch", json={"jobs": [{"payload": EMAIL}]}, headers=owner)
            assert_error(batch, 429, "rate_limited")
            assert (await http.get("/api/owner/queues", headers=owner)).status_code == 200  # its own budget
            other = auth(token(served, "producer"))  # another token: a budget of its own
            assert (await http.post(URL, json=EMAIL, headers=other)).status_code == 201


# ---- batches ---------------------------------------------------------------------------------------


async def test_a_batch_enqueues_every_item_in_order(
    http: httpx.AsyncClient, producer: dict[str, str], client: Any
) -> None:
    items = [{"payload": {**EMAIL, "to": f"u{i}@example.com"}} for i in range(5)]
    items[4]["delay_s"] = 3600
    r = await http.post(URL + "/batch", json={"jobs": items}, headers=producer)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 5 and body["duplicates"] == 0
    ids = [j["id"] for j in body["jobs"]]
    for i, job_id in enumerate(ids):
        record = await jobs.get_job(client, Q, job_id)
        assert record.payload["to"] == f"u{i}@example.com"
    assert await waiting_ids(client) == set(ids[:4])
    assert (await jobs.get_job(client, Q, ids[4])).state is JobState.DELAYED


async def test_a_batch_with_one_invalid_item_enqueues_nothing_and_names_the_index(
    http: httpx.AsyncClient, producer: dict[str, str], client: Any
) -> None:
    items = [{"payload": EMAIL}, {"payload": EMAIL}, {"payload": {**EMAIL, "to": "nobody"}}]
    r = await http.post(URL + "/batch", json={"jobs": items}, headers=producer)
    err = assert_error(r, 422, "invalid_input")
    assert [f["field"] for f in err["fields"]] == ["body.jobs.2.payload.to"]
    assert await waiting_ids(client) == set()
    empty = await http.post(URL + "/batch", json={"jobs": []}, headers=producer)
    assert "body.jobs" in [f["field"] for f in assert_error(empty, 422, "invalid_input")["fields"]]
    bare = await http.post(URL + "/batch", json=[EMAIL], headers=producer)  # not the batch shape
    assert_error(bare, 422, "invalid_input")


async def test_a_batch_over_the_maximum_is_a_422(redis_url: str, tmp_path: Path) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), admin_produce_batch_max=3)
    with serving(s) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as http:
            items = [{"payload": EMAIL}] * 4
            r = await http.post(URL + "/batch", json={"jobs": items}, headers=auth(token(served, "producer")))
            assert "body.jobs" in [f["field"] for f in assert_error(r, 422, "invalid_input")["fields"]]


async def test_a_retried_batch_with_an_idempotency_key_enqueues_nothing_twice(
    http: httpx.AsyncClient, producer: dict[str, str], client: Any
) -> None:
    items: list[dict[str, Any]] = [{"payload": EMAIL}, {"payload": EMAIL, "idempotency_key": "own"}]
    headers = {**producer, "Idempotency-Key": "import-7"}
    first = await http.post(URL + "/batch", json={"jobs": items}, headers=headers)
    assert first.status_code == 201, first.text
    again = await http.post(URL + "/batch", json={"jobs": [*items, {"payload": EMAIL}]}, headers=headers)
    assert again.status_code == 201, again.text  # one item is new
    assert [j["duplicate"] for j in again.json()["jobs"]] == [True, True, False]
    assert [j["id"] for j in again.json()["jobs"][:2]] == [j["id"] for j in first.json()["jobs"]]
    assert again.json()["duplicates"] == 2 and again.json()["created"] == 1
    same = await http.post(URL + "/batch", json={"jobs": items}, headers=headers)
    assert same.status_code == 200 and same.json()["created"] == 0
    single = await http.post(URL, json=EMAIL, headers={**producer, "Idempotency-Key": "import-7:0"})
    assert single.status_code == 200 and single.json()["id"] == first.json()["jobs"][0]["id"]
    assert len(await waiting_ids(client)) == 3


# ---- audit -----------------------------------------------------------------------------------------


async def test_enqueues_are_audited_as_counted_summaries(
    http: httpx.AsyncClient, producer: dict[str, str], served: Served
) -> None:
    key = {"Idempotency-Key": "once"}
    for _ in range(2):
        await http.post(URL, json=EMAIL, headers={**producer, **key})
    await http.post(URL, json=EMAIL, headers=producer)
    await http.post(URL + "/batch", json={"jobs": [{"payload": EMAIL}] * 3}, headers=producer)
    await http.post(URL, json={**EMAIL, "to": "x"}, headers=producer)
    viewer = auth(token(served, "viewer", subject="eve"))
    await http.post(URL, json=EMAIL, headers=viewer)

    engine = make_engine(served.settings.database_url)

    async def rows() -> list[Any]:
        async with engine.connect() as conn:
            stmt = select(AuditLog).where(AuditLog.action == produce_audit.ACTION).order_by(AuditLog.id)
            return list((await conn.execute(stmt)).all())

    expected = {
        ("web-backend", "ok"): {"calls": 4, "created": 5, "duplicates": 1},  # a batch is one call
        ("web-backend", "invalid_input"): {"calls": 1},
    }

    async def totals() -> dict[tuple[str, str], Counter[str]]:
        summed: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for r in await rows():  # the calls may straddle two windows: two rows, summed
            if r.details.get("summary"):
                summed[(r.actor, r.outcome)].update(r.details["counts"])
        return summed

    try:
        await wait_for(lambda: _reached(totals, expected), timeout=15, what="the summary rows")
        found = await rows()
    finally:
        await engine.dispose()
    summaries = [r for r in found if r.actor == "web-backend"]
    assert all(r.target == f"{Q}/{JOB}" and r.details["role"] == "producer" for r in summaries)
    assert all(r.details["kind"] == "change" and r.details["window_s"] == 0.5 for r in summaries)
    assert len(summaries) <= 4  # 6 calls, at most two windows of two outcomes
    refusal = [r for r in found if r.actor == "eve"]  # a refusal: the admin's usual row
    assert [r.outcome for r in refusal] == ["forbidden"] and "summary" not in refusal[0].details


async def _reached(totals: Any, expected: dict[tuple[str, str], dict[str, int]]) -> bool:
    return {k: dict(v) for k, v in (await totals()).items()} == expected


async def test_replicas_flushing_at_once_write_each_summary_once(redis_url: str, tmp_path: Path) -> None:
    configured = admin_settings(redis_url, sqlite_database(tmp_path), admin_produce_audit_window_s=60)
    client = async_client(configured.settings)
    engine = make_engine(configured.settings.database_url)
    state = AdminState(  # only what the audit summaries use: Redis, the database, the settings
        settings=configured.settings,
        admin_settings=configured.admin,
        redis=client,
        engine=engine,
        limiter=None,  # type: ignore[arg-type]
        hub=None,  # type: ignore[arg-type]
        produce_limiter=None,  # type: ignore[arg-type]
        producer=None,  # type: ignore[arg-type]
    )
    web = Principal(subject="web", role=Role.PRODUCER, token_id="t1")
    try:
        for _ in range(5):
            await produce_audit.count(state, web, Q, JOB, "ok", created=2)
        await produce_audit.count(state, web, Q, JOB, "ok", duplicates=1)
        assert await produce_audit.flush(state) == 0  # the window is still open
        later = time.time() + 61
        written = await asyncio.gather(*(produce_audit.flush(state, now=later) for _ in range(4)))
        assert sum(written) == 1
        async with engine.connect() as conn:
            rows = (await conn.execute(select(AuditLog))).all()
        assert [(r.actor, r.target, r.outcome) for r in rows] == [("web", f"{Q}/{JOB}", "ok")]
        assert rows[0].details["counts"] == {"calls": 6, "created": 10, "duplicates": 1}
        assert await client.keys("tq:admin:produce:*") == []  # the window and its hash are gone
    finally:
        await engine.dispose()
        await client.aclose()


# ---- OpenAPI ---------------------------------------------------------------------------------------


async def test_openapi_describes_every_registry_jobs_payload(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]

    def resolve(ref: dict[str, Any]) -> dict[str, Any]:
        name: str = ref["$ref"].rsplit("/", 1)[1]
        return schemas[name]  # type: ignore[no-any-return]

    jobs_seen = 0
    for spec in all_queues():
        for job, model in spec.jobs.items():
            jobs_seen += 1
            one = doc["paths"][f"/api/jobs/{spec.name}/{job}"]["post"]
            body = resolve(one["requestBody"]["content"]["application/json"]["schema"])
            assert set(body["properties"]) == set(model.model_fields), (spec.name, job)
            required = {n for n, f in model.model_fields.items() if f.is_required()}
            assert set(body.get("required", [])) == required, (spec.name, job)
            assert one["security"] == [{"HTTPBearer": []}]
            assert {"201", "200"} <= set(one["responses"])
            batch = doc["paths"][f"/api/jobs/{spec.name}/{job}/batch"]["post"]
            batch_body = resolve(batch["requestBody"]["content"]["application/json"]["schema"])
            item = resolve(batch_body["properties"]["jobs"]["items"])
            assert resolve(item["properties"]["payload"]) == body
    produce_paths = [p for p in doc["paths"] if p.startswith("/api/jobs/")]
    assert len(produce_paths) == 2 * jobs_seen and jobs_seen >= 12
    assert json.dumps(doc).count("{queue}/{job}") == 0  # the catch-all for unknown jobs is not published


# ---- the docs' examples --------------------------------------------------------------------------


def _until_next_heading(text: str, level: int) -> str:
    """``text`` up to the next Markdown heading of ``level`` or higher (fenced code skipped: its
    ``#`` lines are shell comments)."""
    fenced = False
    kept: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        kept.append(line)
    return "".join(kept)


def curl_blocks() -> list[tuple[str, str]]:
    """(file, shell block) of each bash block of the "Producing from other languages" sections."""
    found = []
    for path in (REPO / "README.md", REPO / "docs" / "admin.md"):
        text = path.read_text()
        heading = SECTIONS[path.name]
        section = text[text.index(heading) + len(heading) :]
        section = _until_next_heading(section, level=heading.index(" "))
        found += [(path.name, textwrap.dedent(indent + body)) for indent, body in BASH_BLOCK.findall(section)]
    return found


@pytest.mark.parametrize(("doc", "block"), curl_blocks(), ids=lambda v: v if v.endswith(".md") else "")
def test_the_docs_curl_examples_answer_what_they_show(served: Served, doc: str, block: str) -> None:
    shown = SHOWN.findall(block)
    assert shown and "curl" in block, f"{doc}: a block without a curl and its answer"
    script = "curl() { command curl -sS -w ' %{http_code}\\n' \"$@\"; }\n"
    if "TOKEN=" not in block:
        script += f"TOKEN={token(served, 'producer')}\n"
    script += block.replace("http://localhost:8080", served.url)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TQ_ADMIN_JWT_KEY": ADMIN_KEY,
    }
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    answers = [line.rsplit(" ", 1) for line in out.stdout.strip().splitlines()]
    assert len(answers) == len(shown), out.stdout
    for (body, status), (shown_status, shown_body) in zip(answers, shown, strict=True):
        assert status == shown_status, (doc, body)
        names = set(re.findall(r'"(\w+)":', shown_body))
        assert names <= set(re.findall(r'"(\w+)":', body)), (doc, body)
        if '"code":' in shown_body:
            assert json.loads(body)["error"]["code"] in shown_body
