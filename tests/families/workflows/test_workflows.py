"""The workflows family through the real engine: the suite's Redis, SQLite and PostgreSQL, a local
HTTP server for http steps, and a stand-in handler on ``search:index`` for the child jobs that
enqueue steps wait for (the tests' own handler registry, so no other family is involved).

run-workflow runs a definition's steps in order (http, enqueue-and-wait, condition, delay) with
per-step retries and backoff, records every attempt, publishes ``workflow.step`` events, turns a
long wait into a delayed continuation job, dead-letters a failed instance naming the failing step,
resumes a replayed or crashed instance at its first unfinished step, and trigger-workflow starts
every definition subscribed to a trigger.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, http_server, settled_job, tiny_retry, wait_for
from support.settings import clear_settings_caches
from tq import dlq, jobs, keys
from tq.db import make_sessionmaker
from tq.envelope import JobState
from tq.errors import NonRetryableError
from tq.handlers import HandlerRegistry, JobContext
from tq.models import Base
from tq.payloads import IndexArticle
from tq.producer import Producer
from tq.registry import get_queue
from tq.settings import Settings
from tq.worker import Worker
from tq_services import load_handlers
from tq_services.store import dispose_engines
from tq_services.workflows.errors import InvalidWorkflow
from tq_services.workflows.handlers import run_workflow, trigger_workflow
from tq_services.workflows.models import WorkflowDefinition, WorkflowInstance, WorkflowStepExecution
from tq_services.workflows.seed import seed
from tq_services.workflows.steps import ConditionStep, holds, parse_steps

WQ = "workflows:run"
CHILD_Q = "search:index"  # the child jobs' queue; its handler here is the test's stand-in
MY_TABLES = {
    "workflow_definition",
    "workflow_instance",
    "workflow_step_execution",
    "plugin",
    "plugin_execution_log",
}


# ---- a local HTTP peer --------------------------------------------------------------------------
@dataclass
class Peer:
    """Answers ``/<name>`` with the next status of ``plans[name]`` (the last repeats) and a JSON
    body; ``/hold`` blocks until ``release`` is set. Counts every request per path."""

    plans: dict[str, list[int]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    bodies: list[Any] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            name = self.path.strip("/")
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length) if length else b""
            with p.lock:
                p.hits[name] += 1
                p.bodies.append(json.loads(body) if body else None)
                plan = p.plans.setdefault(name, [200])
                status = plan.pop(0) if len(plan) > 1 else plan[0]
                count = p.hits[name]
            if name == "hold":
                p.release.wait(30)
            reply = json.dumps({"path": name, "count": count, "ok": status < 400}).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:  # the client went away (a killed worker)
                pass

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as base:
        p.url = base
        yield p


# ---- the engine ---------------------------------------------------------------------------------
@pytest.fixture
async def env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Settings]:
    monkeypatch.setenv("TQ_WORKFLOW_INLINE_WAIT_S", "1.0")
    monkeypatch.setenv("TQ_WORKFLOW_POLL_INTERVAL_S", "0.3")
    monkeypatch.setenv("TQ_WORKFLOW_HTTP_TIMEOUT_S", "5")
    # shorter than the queue's visibility timeout (1 s below), as the defaults are (30 s against
    # 120 s): a crashed run's lease is gone before its job is reclaimed. Equal, the two timers'
    # phases decided whether the reclaimed run found the lease still held and spent its attempts
    monkeypatch.setenv("TQ_WORKFLOW_LEASE_S", "0.5")
    clear_settings_caches()
    yield fast_settings(
        redis_url,
        queues={WQ: {**tiny_retry(attempts=5), "visibility_timeout_s": 1.0}, CHILD_Q: tiny_retry(attempts=1)},
    )
    clear_settings_caches()
    await dispose_engines()


def registry() -> HandlerRegistry:
    """run-workflow and trigger-workflow, and a child handler on ``search:index`` that answers
    ``{"indexed": article_id}`` and dead-letters article 999."""
    reg = HandlerRegistry()
    reg.add(WQ, "run-workflow", run_workflow)
    reg.add(WQ, "trigger-workflow", trigger_workflow)

    async def index_article(ctx: JobContext, payload: IndexArticle) -> dict[str, Any]:
        if payload.article_id == 999:
            raise NonRetryableError("article 999 cannot be indexed")
        await asyncio.sleep(0.05)
        return {"indexed": payload.article_id, "action": payload.action}

    reg.add(CHILD_Q, "index-article", index_article)
    return reg


@asynccontextmanager
async def engine_running(client: Any, settings: Settings) -> AsyncIterator[Worker]:
    worker = Worker(client, [get_queue(WQ), get_queue(CHILD_Q)], registry(), settings)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def _definition(db: AsyncEngine, steps: list[dict[str, Any]], **kw: Any) -> int:
    kw.setdefault("name", f"wf-{os.urandom(4).hex()}")
    async with make_sessionmaker(db)() as session, session.begin():
        row = WorkflowDefinition(steps=steps, **kw)
        session.add(row)
    return row.id


async def _settled(
    client: Any, job_id: str, queue: str = WQ, timeout: float = 20, follow: bool = True
) -> jobs.JobRecord:
    """The settled record of ``job_id``; with ``follow``, of the run that ends its workflow: a run
    that outlived its inline wait (a slow machine) ends "waiting" with a continuation job."""
    record = await settled_job(client, queue, job_id, timeout)
    while follow and isinstance(record.result, dict) and record.result.get("status") == "waiting":
        record = await settled_job(client, queue, record.result["continuation"], timeout)
    return record


async def _instances(db: AsyncEngine, workflow_id: int) -> list[WorkflowInstance]:
    async with make_sessionmaker(db)() as session:
        rows = await session.execute(
            select(WorkflowInstance)
            .where(WorkflowInstance.workflow_id == workflow_id)
            .order_by(WorkflowInstance.id)
        )
        return list(rows.scalars())


async def _executions(db: AsyncEngine, instance_id: int) -> list[WorkflowStepExecution]:
    async with make_sessionmaker(db)() as session:
        rows = await session.execute(
            select(WorkflowStepExecution)
            .where(WorkflowStepExecution.instance_id == instance_id)
            .order_by(WorkflowStepExecution.step_index, WorkflowStepExecution.attempt)
        )
        return list(rows.scalars())


def _summary(rows: list[WorkflowStepExecution]) -> list[tuple[int, int, str]]:
    return [(r.step_index, r.attempt, r.status) for r in rows]


@asynccontextmanager
async def step_events(client: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """Collect the ``workflow.step`` events published on ``tq:events`` meanwhile."""
    seen: list[dict[str, Any]] = []
    pubsub = client.pubsub()
    await pubsub.subscribe(keys.EVENTS_CHANNEL)

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                event = json.loads(message["data"])
                if event["type"] == "workflow.step":
                    seen.append(event)

    task = asyncio.create_task(listen())
    try:
        yield seen
    finally:
        await asyncio.sleep(0.1)
        task.cancel()
        await pubsub.aclose()


# ---- without the engine -------------------------------------------------------------------------
def test_parse_steps_names_every_problem() -> None:
    steps = parse_steps(
        [
            {"type": "http", "url": "http://x/y", "retry": {"attempts": 2}},
            {"type": "enqueue", "queue": CHILD_Q, "job": "index-article", "payload": {"article_id": 1}},
            {"type": "delay", "seconds": 3},
            {"type": "condition", "path": "body.ok", "op": "eq", "value": True},
        ]
    )
    assert [s.type for s in steps] == ["http", "enqueue", "delay", "condition"]
    assert steps[0].retry.attempts == 2 and steps[0].retry.backoff_s(3) == 4.0
    with pytest.raises(InvalidWorkflow, match="unknown queue 'nope:q'"):
        parse_steps([{"type": "enqueue", "queue": "nope:q", "job": "x"}])
    with pytest.raises(InvalidWorkflow, match=r"steps\.0"):
        parse_steps([{"type": "teleport"}])
    with pytest.raises(InvalidWorkflow, match="no steps"):
        parse_steps([])


def test_condition_operators() -> None:
    output = {"status": 200, "body": {"items": [{"score": 0.7}], "tag": "ai"}}

    def check(path: str, op: str, value: Any = None) -> bool:
        return holds(
            ConditionStep.model_validate({"type": "condition", "path": path, "op": op, "value": value}),
            output,
        )

    assert check("status", "eq", 200) and not check("status", "ne", 200)
    assert check("body.items.0.score", "gt", 0.5) and not check("body.items.0.score", "ge", 0.8)
    assert check("body.tag", "in", ["ai", "seo"]) and check("body.tag", "exists")
    assert not check("body.missing", "exists") and not check("body.missing", "eq", None)
    assert not check("body.tag", "lt", 3)  # a string against a number is false, not an error
    assert check("", "truthy")


def test_load_handlers_finds_the_workflows_family() -> None:
    from tq.handlers import default_handlers

    assert load_handlers(["workflows"]) == ["tq_services.workflows.handlers"]
    assert (WQ, "run-workflow") in default_handlers and (WQ, "trigger-workflow") in default_handlers


async def test_models_match_the_migration(db_engine: AsyncEngine) -> None:
    def diff(conn: Any) -> list[Any]:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)

    async with db_engine.connect() as conn:
        found = await conn.run_sync(diff)
    assert [d for d in found if any(t in repr(d) for t in MY_TABLES)] == []


async def test_seed_is_idempotent(db_engine: AsyncEngine) -> None:
    maker = make_sessionmaker(db_engine)
    for _ in range(2):
        async with maker() as session, session.begin():
            await seed(session)
    async with maker() as session:
        rows = list((await session.execute(select(WorkflowDefinition))).scalars())
    assert len(rows) == 1 and rows[0].trigger == "article.published"
    assert [s.type for s in parse_steps(rows[0].steps)] == ["enqueue", "condition", "delay"]


# ---- run-workflow -------------------------------------------------------------------------------
async def test_steps_run_in_order_and_record_every_attempt(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, peer: Peer
) -> None:
    workflow_id = await _definition(
        db_engine,
        [
            {"type": "http", "name": "fetch", "url": peer.url + "/fetch", "method": "POST", "body": {"a": 1}},
            {
                "type": "enqueue",
                "name": "index",
                "queue": CHILD_Q,
                "job": "index-article",
                "payload": {"article_id": 7},
            },
            {"type": "condition", "path": "indexed", "op": "eq", "value": 7},
            {"type": "delay", "seconds": 0.2},
        ],
    )
    async with step_events(redis_client) as events, engine_running(redis_client, env):
        job_id = await Producer(redis_client, env).enqueue(
            WQ, "run-workflow", {"workflow_id": workflow_id, "input": {"who": "test"}}
        )
        record = await _settled(redis_client, job_id)
    assert record.state is JobState.COMPLETED, record.stack
    assert record.result["status"] == "completed" and record.result["output"] == {"waited_s": 0.2}
    assert (record.progress, record.progress_message) == (1.0, "step 4 of 4 (step-3) completed")
    [instance] = await _instances(db_engine, workflow_id)
    assert instance.status == "completed" and instance.job_id == job_id and instance.input == {"who": "test"}
    assert instance.started_at is not None and instance.finished_at is not None
    assert instance.started_at <= instance.finished_at
    assert instance.outputs[0]["body"]["path"] == "fetch" and instance.outputs[1] == {
        "indexed": 7,
        "action": "upsert",
    }
    assert instance.outputs[2] == {"result": True}
    rows = await _executions(db_engine, instance.id)
    assert _summary(rows) == [
        (0, 1, "completed"),
        (1, 1, "completed"),
        (2, 1, "completed"),
        (3, 1, "completed"),
    ]
    assert all(r.finished_at is not None and r.started_at <= r.finished_at for r in rows)
    child = await jobs.get_job(redis_client, CHILD_Q, rows[1].child_job_id or "")
    assert child.state is JobState.COMPLETED and child.payload["article_id"] == 7
    assert (rows[3].finished_at - rows[3].started_at).total_seconds() >= 0.2  # type: ignore[operator]
    assert peer.hits["fetch"] == 1 and peer.bodies == [{"a": 1}]
    transitions = [(e["data"]["step"], e["data"]["status"]) for e in events]
    assert transitions == [(i, s) for i in range(4) for s in ("running", "completed")]
    assert all(e["data"]["instance_id"] == instance.id and e["job_id"] == job_id for e in events)


async def test_a_step_retries_with_backoff_then_succeeds(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, peer: Peer
) -> None:
    peer.plans["flaky"] = [503, 503, 200]
    workflow_id = await _definition(
        db_engine,
        [
            {
                "type": "http",
                "url": peer.url + "/flaky",
                "retry": {"attempts": 3, "initial_s": 0.1, "max_s": 1},
            }
        ],
    )
    async with step_events(redis_client) as events, engine_running(redis_client, env):
        job_id = await Producer(redis_client, env).enqueue(WQ, "run-workflow", {"workflow_id": workflow_id})
        record = await _settled(redis_client, job_id)
    assert record.state is JobState.COMPLETED and record.attempts == 1  # the step retried, not the job
    [instance] = await _instances(db_engine, workflow_id)
    rows = await _executions(db_engine, instance.id)
    assert _summary(rows) == [(0, 1, "failed"), (0, 2, "failed"), (0, 3, "completed")]
    assert rows[0].error_message is not None and "answered 503" in rows[0].error_message
    # backoff: 0.1 s, then 0.2 s between attempts
    assert (rows[1].started_at - rows[0].finished_at).total_seconds() >= 0.09  # type: ignore[operator]
    assert (rows[2].started_at - rows[1].finished_at).total_seconds() >= 0.19  # type: ignore[operator]
    assert [e["data"]["status"] for e in events] == [
        "running",
        "retrying",
        "running",
        "retrying",
        "running",
        "completed",
    ]
    assert peer.hits["flaky"] == 3


async def test_failed_workflow_dead_letters_naming_the_step_and_a_replay_resumes_there(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, peer: Peer
) -> None:
    peer.plans["notify"] = [500]
    workflow_id = await _definition(
        db_engine,
        [
            {"type": "http", "name": "first", "url": peer.url + "/first"},
            {
                "type": "http",
                "name": "notify",
                "url": peer.url + "/notify",
                "retry": {"attempts": 2, "initial_s": 0.05},
            },
        ],
        name="publish-flow",
    )
    async with engine_running(redis_client, env):
        job_id = await Producer(redis_client, env).enqueue(WQ, "run-workflow", {"workflow_id": workflow_id})
        record = await _settled(redis_client, job_id)
        assert record.state is JobState.DEAD and record.attempts == 1  # dead-lettered without job retries
        [dead] = (await dlq.list_dead(redis_client, WQ)).items
        assert dead.job_id == job_id and dead.error_type == "WorkflowFailed"
        assert f"workflow 'publish-flow' (id {workflow_id})" in dead.error
        assert (
            "failed at step 1 'notify' (http) after 2 attempts" in dead.error and "answered 500" in dead.error
        )
        [instance] = await _instances(db_engine, workflow_id)
        assert instance.status == "failed" and instance.failed_step == 1 and instance.finished_at is not None
        assert _summary(await _executions(db_engine, instance.id)) == [
            (0, 1, "completed"),
            (1, 1, "failed"),
            (1, 2, "failed"),
        ]

        peer.plans["notify"] = [200]  # the receiver is fixed; replay the dead instance
        replay_id = await dlq.replay_one(redis_client, WQ, dead.dlq_id)
        replayed = await _settled(redis_client, replay_id)
    assert replayed.state is JobState.COMPLETED, replayed.error
    [instance] = await _instances(db_engine, workflow_id)  # the same instance, resumed
    assert instance.status == "completed" and instance.job_id == replay_id and instance.failed_step is None
    assert _summary(await _executions(db_engine, instance.id)) == [
        (0, 1, "completed"),
        (1, 1, "failed"),
        (1, 2, "failed"),
        (1, 3, "completed"),
    ]
    assert peer.hits["first"] == 1  # the completed step did not run again
    assert peer.hits["notify"] == 3


async def test_a_dead_child_job_fails_its_step(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    workflow_id = await _definition(
        db_engine,
        [
            {
                "type": "enqueue",
                "name": "index",
                "queue": CHILD_Q,
                "job": "index-article",
                "payload": {"article_id": 999},
                "retry": {"attempts": 2, "initial_s": 0.05},
            }
        ],
    )
    async with engine_running(redis_client, env):
        job_id = await Producer(redis_client, env).enqueue(WQ, "run-workflow", {"workflow_id": workflow_id})
        record = await _settled(redis_client, job_id)
    assert record.state is JobState.DEAD and "step 0 'index' (enqueue) after 2 attempts" in (
        record.error or ""
    )
    assert "article 999 cannot be indexed" in (record.error or "")
    [instance] = await _instances(db_engine, workflow_id)
    rows = await _executions(db_engine, instance.id)
    assert _summary(rows) == [(0, 1, "failed"), (0, 2, "failed")]
    assert rows[0].child_job_id != rows[1].child_job_id  # each attempt enqueued its own child
    assert len((await dlq.list_dead(redis_client, CHILD_Q)).items) == 2


async def test_a_long_delay_becomes_a_continuation_job(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TQ_WORKFLOW_INLINE_WAIT_S", "0.2")
    clear_settings_caches()
    workflow_id = await _definition(
        db_engine, [{"type": "delay", "seconds": 1.5}, {"type": "http", "url": peer.url + "/after"}]
    )
    async with engine_running(redis_client, env):
        job_id = await Producer(redis_client, env).enqueue(WQ, "run-workflow", {"workflow_id": workflow_id})
        first = await _settled(redis_client, job_id, follow=False)
        # The first run did not hold its slot for the delay: it ended, leaving a delayed continuation.
        assert first.state is JobState.COMPLETED and first.result["status"] == "waiting"
        assert first.duration_ms is not None and first.duration_ms < 1000
        [instance] = await _instances(db_engine, workflow_id)
        assert instance.status == "running" and instance.current_step == 0 and peer.hits["after"] == 0
        continuation = first.result["continuation"]
        assert (await jobs.get_job(redis_client, WQ, continuation)).state is JobState.DELAYED
        done = await _settled(redis_client, continuation)
    assert done.state is JobState.COMPLETED and done.result["status"] == "completed"
    [instance] = await _instances(db_engine, workflow_id)
    assert instance.status == "completed" and instance.wakeups == 1 and peer.hits["after"] == 1
    rows = await _executions(db_engine, instance.id)
    assert _summary(rows) == [(0, 1, "completed"), (1, 1, "completed")]
    assert (rows[0].finished_at - rows[0].started_at).total_seconds() >= 1.5  # type: ignore[operator]


async def test_a_false_condition_stops_or_fails(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, peer: Peer
) -> None:
    stop_id = await _definition(
        db_engine,
        [
            {"type": "http", "url": peer.url + "/check"},
            {"type": "condition", "path": "body.count", "op": "gt", "value": 5},
            {"type": "http", "url": peer.url + "/never"},
        ],
    )
    fail_id = await _definition(
        db_engine,
        [
            {
                "type": "condition",
                "name": "has-article",
                "path": "article_id",
                "op": "exists",
                "on_false": "fail",
            }
        ],
    )
    async with engine_running(redis_client, env):
        producer = Producer(redis_client, env)
        stopped = await _settled(
            redis_client, await producer.enqueue(WQ, "run-workflow", {"workflow_id": stop_id})
        )
        failed = await _settled(
            redis_client,
            await producer.enqueue(WQ, "run-workflow", {"workflow_id": fail_id, "input": {"x": 1}}),
        )
    assert stopped.state is JobState.COMPLETED and stopped.result["skipped"] == 1
    [instance] = await _instances(db_engine, stop_id)
    assert instance.status == "completed"
    assert _summary(await _executions(db_engine, instance.id)) == [
        (0, 1, "completed"),
        (1, 1, "completed"),
        (2, 1, "skipped"),
    ]
    assert peer.hits["never"] == 0
    assert failed.state is JobState.DEAD and "step 0 'has-article' (condition) after 1 attempt:" in (
        failed.error or ""
    )
    [instance] = await _instances(db_engine, fail_id)
    assert instance.status == "failed" and instance.failed_step == 0


async def test_bad_definitions_dead_letter_with_a_reason(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    broken = await _definition(db_engine, [{"type": "enqueue", "queue": CHILD_Q, "job": "no-such-job"}])
    disabled = await _definition(db_engine, [{"type": "delay", "seconds": 0}], enabled=False)
    dangling = await _definition(
        db_engine,
        [
            {
                "type": "enqueue",
                "queue": CHILD_Q,
                "job": "index-article",
                "payload": {"article_id": "$input.nope"},
            }
        ],
    )
    async with engine_running(redis_client, env):
        producer = Producer(redis_client, env)
        ids = [
            await producer.enqueue(WQ, "run-workflow", {"workflow_id": broken}),
            await producer.enqueue(WQ, "run-workflow", {"workflow_id": disabled}),
            await producer.enqueue(WQ, "run-workflow", {"workflow_id": 424242}),
            await producer.enqueue(WQ, "run-workflow", {"workflow_id": dangling, "input": {"article_id": 5}}),
        ]
        records = [await _settled(redis_client, i) for i in ids]
    assert [r.state for r in records] == [JobState.DEAD] * 4
    assert records[0].error_type == "InvalidWorkflow" and "unknown job 'no-such-job'" in (
        records[0].error or ""
    )
    assert records[1].error_type == "WorkflowUnavailable" and "is disabled" in (records[1].error or "")
    assert records[2].error_type == "WorkflowUnavailable" and "424242 does not exist" in (
        records[2].error or ""
    )
    assert await _instances(db_engine, broken) == []
    assert records[3].error_type == "WorkflowFailed" and "'$input.nope' refers to nothing" in (
        records[3].error or ""
    )
    assert records[3].attempts == 1 and "after 1 attempt:" in (records[3].error or "")  # no step retries


# ---- trigger-workflow ---------------------------------------------------------------------------
async def test_trigger_starts_every_subscribed_definition(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, peer: Peer
) -> None:
    step = [
        {
            "type": "enqueue",
            "queue": CHILD_Q,
            "job": "index-article",
            "payload": {"article_id": "$input.article_id"},
        },
        {"type": "http", "url": peer.url + "/hook", "body": {"indexed": "$previous.indexed", "by": "$input"}},
    ]
    subscribed = [await _definition(db_engine, step, trigger="article.published") for _ in range(2)]
    other = await _definition(db_engine, step, trigger="article.deleted")
    off = await _definition(db_engine, step, trigger="article.published", enabled=False)
    async with engine_running(redis_client, env):
        job_id = await Producer(redis_client, env).enqueue(
            WQ, "trigger-workflow", {"trigger": "article.published", "context": {"article_id": 3}}
        )
        record = await _settled(redis_client, job_id)
        assert record.state is JobState.COMPLETED and len(record.result["jobs"]) == 2
        runs = [await _settled(redis_client, run) for run in record.result["jobs"]]
    assert all(r.state is JobState.COMPLETED for r in runs)
    for workflow_id in subscribed:
        [instance] = await _instances(db_engine, workflow_id)
        assert instance.status == "completed" and instance.trigger == "article.published"
        assert instance.input == {"article_id": 3}
    assert await _instances(db_engine, other) == [] and await _instances(db_engine, off) == []
    assert peer.hits["hook"] == 2
    # references carried the trigger's context into the child job, and the child's result onward
    assert peer.bodies == [{"indexed": 3, "by": {"article_id": 3}}] * 2


# ---- a crash mid-step ---------------------------------------------------------------------------
DOOMED_WORKER = """
import asyncio, sys
import redis.asyncio as aioredis
from tq.handlers import HandlerRegistry
from tq.registry import get_queue
from tq.settings import Settings
from tq.worker import Worker
from tq_services.workflows.handlers import run_workflow

async def main(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    settings = Settings(redis_url=url, audit_enabled=False, block_ms=50, uvloop=False)
    reg = HandlerRegistry()
    reg.add("workflows:run", "run-workflow", run_workflow)
    worker = Worker(client, [get_queue("workflows:run")], reg, settings, consumer_id="doomed")
    await worker.start()
    print("READY", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.serial
async def test_resume_after_a_crash_does_not_repeat_a_completed_step(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, peer: Peer, redis_url: str
) -> None:
    workflow_id = await _definition(
        db_engine,
        [
            {"type": "http", "name": "charge", "url": peer.url + "/charge"},
            {
                "type": "http",
                "name": "slow",
                "url": peer.url + "/hold",
                "retry": {"attempts": 3, "initial_s": 0.05},
            },
            {"type": "http", "name": "done", "url": peer.url + "/done"},
        ],
    )
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DOOMED_WORKER, redis_url, stdout=asyncio.subprocess.PIPE, env=dict(os.environ)
    )
    try:
        assert doomed.stdout is not None
        line = await asyncio.wait_for(doomed.stdout.readline(), 30)
        assert line.strip() == b"READY"
        job_id = await Producer(redis_client, env).enqueue(WQ, "run-workflow", {"workflow_id": workflow_id})
        await wait_for(lambda: peer.hits["hold"] == 1, timeout=20, what="the doomed worker in step 1")
        doomed.send_signal(signal.SIGKILL)  # dies mid-request, step 0 done, step 1 open
        await asyncio.wait_for(doomed.wait(), 10)
    finally:
        if doomed.returncode is None:
            doomed.kill()
            await doomed.wait()
    peer.release.set()
    [instance] = await _instances(db_engine, workflow_id)
    assert instance.status == "running" and instance.current_step == 1
    # A live worker reclaims the entry after the visibility timeout and runs the job again.
    async with engine_running(redis_client, env):
        record = await _settled(redis_client, job_id, timeout=30)
    assert record.state is JobState.COMPLETED, record.error
    assert record.attempts >= 2  # the reclaim counted the crashed attempt
    [instance] = await _instances(db_engine, workflow_id)
    assert instance.status == "completed"
    rows = await _executions(db_engine, instance.id)
    assert _summary(rows) == [(0, 1, "completed"), (1, 1, "failed"), (1, 2, "completed"), (2, 1, "completed")]
    assert rows[1].error_message is not None and rows[1].error_message.startswith("interrupted")
    assert peer.hits["charge"] == 1  # never repeated
    assert peer.hits["hold"] == 2 and peer.hits["done"] == 1
