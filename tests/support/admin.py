"""Helpers of the admin service tests: the app under uvicorn on a free port (in a thread of its
own, with its own event loop, so sync clients such as schemathesis can call it too), a migrated
SQLite database, tokens, and dead letters made by a real worker."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select
from tq import keys
from tq.db import make_engine
from tq.handlers import HandlerRegistry
from tq.models import AuditLog, QueueMetricAggregate
from tq.producer import Producer
from tq.settings import Settings
from tq_services.admin import create_app
from tq_services.admin.auth import mint_token
from tq_services.admin.settings import AdminSettings
from tq_services.schema import migrate

from support import fast_settings, running, tiny_retry, wait_for

ADMIN_KEY = "test-admin-signing-key-0123456789abcdef"
Q = "email:send"
Q_ENCODED = "email%3Asend"
NO_HANDLER_JOB = "process-email-queue"  # a real job of the queue that these tests never give a handler


@dataclass(frozen=True)
class AdminConfig:
    """What the admin app runs with: the engine's settings and the admin service's own."""

    settings: Settings
    admin: AdminSettings


def admin_settings(redis_url: str, database_url: str, **overrides: Any) -> AdminConfig:
    """Fast engine settings and the admin service's; ``overrides`` go to the class that has the field."""
    base: dict[str, Any] = {
        "database_url": database_url,
        "admin_jwt_key": ADMIN_KEY,
        "admin_heartbeat_s": 0.3,
        "queues": {Q: tiny_retry(attempts=1, max_s=0.02)},
    }
    base.update(overrides)
    admin = {name: base.pop(name) for name in list(base) if name in AdminSettings.model_fields}
    return AdminConfig(fast_settings(redis_url, **base), AdminSettings(**admin))


def token(
    config: AdminConfig | Served, role: str = "owner", subject: str = "alice", ttl_s: float = 600
) -> str:
    return mint_token(config.admin, subject=subject, role=role, ttl_s=ttl_s)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


_template: dict[str, Path] = {}


def sqlite_database(tmp_path: Path) -> str:
    """A migrated SQLite database for one test (copied from one migrated once per session)."""
    if "db" not in _template:
        tmpl = tmp_path.parent / "admin-template.db"
        migrate(f"sqlite+aiosqlite:///{tmpl}")
        _template["db"] = tmpl
    target = tmp_path / "admin.db"
    shutil.copy(_template["db"], target)
    return f"sqlite+aiosqlite:///{target}"


@dataclass
class Served:
    url: str
    app: Any
    settings: Settings
    admin: AdminSettings

    @property
    def hub(self) -> Any:
        return self.app.state.admin.hub


@contextmanager
def serving(configured: AdminConfig, *, wait_ready: bool = True) -> Iterator[Served]:
    """The admin app under uvicorn on 127.0.0.1:<free port> until the block ends."""
    app = create_app(configured.settings, configured.admin)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_level="warning",
        loop="asyncio",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="admin-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the admin service did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    while wait_ready and httpx.get(f"{url}/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the admin service did not get ready")
        time.sleep(0.02)
    try:
        yield Served(url, app, configured.settings, configured.admin)
    finally:
        server.should_exit = True
        thread.join(15)


async def dead_letters(client: Any, settings: Settings, n: int, *, tag: str = "x") -> list[str]:
    """Dead-letter ``n`` jobs of ``Q`` through a real worker with no handler for them; their job ids."""
    before = int(await client.xlen(keys.dlq(Q)))
    producer = Producer(client, settings)
    ids = [
        await producer.enqueue(Q, NO_HANDLER_JOB, {"limit": i + 1}, trace_id=f"{tag}-{i}") for i in range(n)
    ]

    async def full() -> bool:
        return int(await client.xlen(keys.dlq(Q))) >= before + n

    async with running(client, settings, HandlerRegistry(), queue=Q):
        await wait_for(full, what=f"{n} DLQ entries")
    return ids


# ---- server-sent events ---------------------------------------------------------------------
@dataclass
class Frame:
    id: str | None
    event: str
    data: Any


def metric_aggregate(queue: str, bucket_start: datetime, **counts: Any) -> dict[str, Any]:
    """A row of the queues' 5-minute aggregates: every count zero but ``counts``."""
    zero = dict.fromkeys(("enqueued", "completed", "failed", "retried", "dead", "max_waiting", "max_dlq"), 0)
    return {
        "queue": queue,
        "bucket_start": bucket_start,
        "avg_duration_ms": None,
        "p95_duration_ms": None,
        **zero,
        **counts,
    }


async def insert_metric_aggregates(database_url: str, rows: list[dict[str, Any]]) -> None:
    """Write aggregate rows (``metric_aggregate``) as the stats leader would have."""
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(QueueMetricAggregate.__table__.insert(), rows)
    finally:
        await engine.dispose()


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The server-sent events of a streaming response, parsed by the text/event-stream rules."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Frame(fields.get("id"), fields.get("event", "message"), json.loads(fields["data"]))
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


async def next_frame(it: AsyncIterator[Frame], event: str, timeout: float = 10) -> Frame:
    """The next frame named ``event`` (heartbeats and other events in between are skipped)."""

    async def find() -> Frame:
        async for f in it:
            if f.event == event:
                return f
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), timeout)


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    return err


async def audit_rows(database_url: str, action: str | None = None) -> list[AuditLog]:
    """The audit log's rows, oldest first (only ``action``'s, when given)."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            stmt = select(AuditLog).order_by(AuditLog.id)
            if action:
                stmt = stmt.where(AuditLog.action == action)
            return list((await conn.execute(stmt)).all())  # type: ignore[arg-type]
    finally:
        await engine.dispose()
