"""The plugins family through the real engine and real wasmtime: the suite's Redis, SQLite and
PostgreSQL, WAT modules compiled with ``wasmtime.wat2wasm``, and a local HTTP server for module
downloads.

execute-plugin runs a module in the sandbox and logs every run; a module that reads an article
through a granted capability returns it, and one that traps, loops forever (fuel, wall clock),
exceeds its memory, calls a capability it was not granted or returns no JSON is stopped, logged
with the reason and dead-lettered without retry. install-plugin / update-plugin verify the
module (sha256, size cap, exports, imports) before storing it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, http_server, running, settled_job, tiny_retry
from support.settings import clear_settings_caches
from tq import dlq, jobs, keys
from tq.db import make_sessionmaker
from tq.envelope import JobState
from tq.handlers import default_handlers
from tq.producer import Producer
from tq.settings import Settings
from tq_services import load_handlers
from tq_services.content.models import Article
from tq_services.plugins.errors import InvalidPlugin
from tq_services.plugins.models import Plugin, PluginExecutionLog
from tq_services.plugins.sandbox import inspect_module
from tq_services.plugins.seed import DEMO_WAT, WAT_PRELUDE, demo_module, seed
from tq_services.store import dispose_engines

PQ = "plugins:execute"
MEMORY_LIMIT = 1024 * 1024  # 16 pages


def wat(body: str, imports: str = "") -> bytes:
    """A module with the ABI's plumbing (memory, alloc) and ``body``."""
    return bytes(wasmtime.wat2wasm(f"(module {imports} {WAT_PRELUDE} {body})"))


RUN = '(func (export "run") (param $ptr i32) (param $len i32) (result i64) {})'
TRAPS = wat(RUN.format("unreachable"))
LOOPS = wat(RUN.format("(loop $forever (br $forever)) (i64.const 0)"))
# grows one page at a time until memory.grow refuses (-1), then gives up
HOGS = wat(
    RUN.format(
        "(block $full (loop $more"
        " (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1))) (br $more)))"
        " unreachable"
    )
)
NOT_JSON = wat('(data (i32.const 16) "not json{")' + RUN.format("(call $pack (i32.const 16) (i32.const 9))"))
SECRET_READER = wat(  # reads article 1 without declaring why: the permission set decides
    RUN.format(
        "(drop (call $article_read (i64.const 1) (i32.const 4096) (i32.const 100)))"
        " (call $pack (i32.const 0) (i32.const 0))"
    ),
    imports='(import "tq" "article_read" (func $article_read (param i64 i32 i32) (result i32)))',
)


@pytest.fixture
async def env(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Settings]:
    monkeypatch.setenv("TQ_PLUGIN_FUEL", str(10**12))  # the wall clock, not fuel, stops a loop by default
    monkeypatch.setenv("TQ_PLUGIN_TIMEOUT_S", "1.5")
    monkeypatch.setenv("TQ_PLUGIN_MAX_MEMORY_BYTES", str(MEMORY_LIMIT))
    monkeypatch.setenv("TQ_PLUGIN_MAX_MODULE_BYTES", "20000")
    monkeypatch.setenv("TQ_PLUGIN_DOWNLOAD_TIMEOUT_S", "2")
    clear_settings_caches()
    load_handlers(["plugins"])
    yield fast_settings(redis_url, queues={PQ: tiny_retry(attempts=3)})
    clear_settings_caches()
    await dispose_engines()


async def _plugin(db: AsyncEngine, module: bytes, permissions: list[str], **kw: Any) -> int:
    kw.setdefault("name", f"p-{hashlib.sha256(module).hexdigest()[:8]}-{len(permissions)}")
    async with make_sessionmaker(db)() as session, session.begin():
        row = Plugin(
            version="1",
            module=module,
            sha256=hashlib.sha256(module).hexdigest(),
            size_bytes=len(module),
            exports=["run"],
            permissions=permissions,
            **kw,
        )
        session.add(row)
    return row.id


async def _article(db: AsyncEngine, title: str) -> int:
    async with make_sessionmaker(db)() as session, session.begin():
        row = Article(title=title, body="Plugins read this body.", tags=["wasm"])
        session.add(row)
    return row.id


async def _settled(client: Any, job_id: str, timeout: float = 20) -> jobs.JobRecord:
    return await settled_job(client, PQ, job_id, timeout)


async def _logs(db: AsyncEngine, job_id: str) -> list[PluginExecutionLog]:
    async with make_sessionmaker(db)() as session:
        rows = await session.execute(
            select(PluginExecutionLog)
            .where(PluginExecutionLog.job_id == job_id)
            .order_by(PluginExecutionLog.id)
        )
        return list(rows.scalars())


async def _run(
    env: Settings, client: Any, plugin_id: int, data: dict[str, Any] | None = None
) -> jobs.JobRecord:
    async with running(client, env, default_handlers, PQ):
        job_id = await Producer(client, env).enqueue(
            PQ, "execute-plugin", {"plugin_id": plugin_id, "input": data or {}}
        )
        return await _settled(client, job_id)


# ---- without the engine -------------------------------------------------------------------------
def test_inspect_module_checks_the_abi() -> None:
    assert inspect_module(demo_module(), "run") == ["run"]
    with pytest.raises(InvalidPlugin, match="not a valid WebAssembly module"):
        inspect_module(b"\x00asm\x01\x00\x00\x00garbage")
    with pytest.raises(InvalidPlugin, match="export its linear memory"):
        inspect_module(bytes(wasmtime.wat2wasm('(module (func (export "run")))')))
    with pytest.raises(InvalidPlugin, match="no entrypoint"):
        inspect_module(wat(""))
    with pytest.raises(InvalidPlugin, match="has no entrypoint 'main'"):
        inspect_module(TRAPS, "main")
    sneaky = wat(
        RUN.format("(i64.const 0)"),
        imports='(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))',
    )
    with pytest.raises(
        InvalidPlugin, match=r"imports wasi_snapshot_preview1\.fd_write, which the host does not offer"
    ):
        inspect_module(sneaky)


def test_load_handlers_finds_the_plugins_family() -> None:
    assert load_handlers(["plugins"]) == ["tq_services.plugins.handlers"]
    for job in ("execute-plugin", "install-plugin", "update-plugin"):
        assert (PQ, job) in default_handlers


async def test_seed_is_idempotent(db_engine: AsyncEngine) -> None:
    maker = make_sessionmaker(db_engine)
    for _ in range(2):
        async with maker() as session, session.begin():
            await seed(session)
    async with maker() as session:
        [plugin] = list((await session.execute(select(Plugin))).scalars())
    assert plugin.name == "demo-article-reader" and plugin.permissions == ["article.read", "event.emit"]
    assert hashlib.sha256(plugin.module).hexdigest() == plugin.sha256 and plugin.size_bytes == len(
        plugin.module
    )


# ---- execute-plugin -----------------------------------------------------------------------------
async def test_a_granted_plugin_reads_an_article_and_returns_output(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    article_id = await _article(db_engine, "Wasm in production")
    plugin_id = await _plugin(db_engine, demo_module(), ["article.read", "event.emit"])
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.EVENTS_CHANNEL)
    record = await _run(env, redis_client, plugin_id, {"article_id": article_id})
    assert record.state is JobState.COMPLETED, record.error
    output = record.result["output"]
    assert (
        output["id"] == article_id and output["title"] == "Wasm in production" and output["tags"] == ["wasm"]
    )
    [row] = await _logs(db_engine, record.id)
    assert row.status == "succeeded" and row.output == output and row.error_stack is None
    assert row.duration_ms > 0 and row.fuel_consumed is not None and 0 < row.fuel_consumed < 10_000
    assert row.plugin_version == "1" and row.entrypoint == "run"
    progress = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # get_message answers None for the subscribe notice too
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None and json.loads(message["data"])["type"] == "job.progress":
            progress.append(json.loads(message["data"]))
    await pubsub.aclose()
    assert [e["data"]["event"] for e in progress] == [{"plugin": "demo-article-reader", "read": True}]
    # no such article: the capability answers -1 and the plugin returns null
    missing = await _run(env, redis_client, plugin_id, {"article_id": 424242})
    assert missing.state is JobState.COMPLETED and missing.result["output"] is None


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("trap", "trapped", "the plugin trapped (UNREACHABLE)"),
        ("loop", "timed_out", "ran past its 1.5s wall-clock limit"),
        ("memory", "out_of_memory", f"memory at the {MEMORY_LIMIT}-byte limit"),
        ("ungranted", "permission_denied", "called tq.article_read without the permission 'article.read'"),
        ("not-json", "invalid_output", "the output is not JSON"),
    ],
)
async def test_a_misbehaving_plugin_is_stopped_logged_and_dead_lettered(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, case: str, status: str, message: str
) -> None:
    module, permissions = {
        "trap": (TRAPS, ["article.read"]),
        "loop": (LOOPS, []),
        "memory": (HOGS, []),
        "ungranted": (SECRET_READER, ["event.emit"]),
        "not-json": (NOT_JSON, []),
    }[case]
    await _article(db_engine, "Secret")
    plugin_id = await _plugin(db_engine, module, permissions, name=f"bad-{case}")
    record = await _run(env, redis_client, plugin_id)
    assert record.state is JobState.DEAD and record.attempts == 1  # no retry
    assert record.error_type == "PluginStopped" and f"plugin 'bad-{case}' 1 stopped ({status})" in (
        record.error or ""
    )
    assert message in (record.error or "")
    [dead] = (await dlq.list_dead(redis_client, PQ)).items
    assert dead.job_id == record.id and message in dead.error
    [row] = await _logs(db_engine, record.id)  # one run, logged with the reason
    assert row.status == status and row.output is None and message in (row.error_stack or "")
    if case == "loop":
        assert 1450 <= row.duration_ms < 6000  # stopped by the wall clock, not left spinning


async def test_fuel_stops_a_loop_before_the_clock(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TQ_PLUGIN_FUEL", "100000")
    monkeypatch.setenv("TQ_PLUGIN_TIMEOUT_S", "30")
    clear_settings_caches()
    plugin_id = await _plugin(db_engine, LOOPS, [])
    record = await _run(env, redis_client, plugin_id)
    assert record.state is JobState.DEAD and "stopped (out_of_fuel)" in (record.error or "")
    [row] = await _logs(db_engine, record.id)
    assert row.status == "out_of_fuel" and row.duration_ms < 5000


async def test_a_module_needing_too_much_memory_is_refused_at_start(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    big = bytes(
        wasmtime.wat2wasm(
            '(module (memory (export "memory") 64)'  # 4 MiB initial, the limit is 1 MiB
            ' (func (export "alloc") (param i32) (result i32) (i32.const 0))'
            ' (func (export "run") (param i32 i32) (result i64) (i64.const 0)))'
        )
    )
    plugin_id = await _plugin(db_engine, big, [])
    record = await _run(env, redis_client, plugin_id)
    assert record.state is JobState.DEAD and "stopped (out_of_memory)" in (record.error or "")
    [row] = await _logs(db_engine, record.id)
    assert row.status == "out_of_memory"


async def test_a_disabled_or_missing_plugin_dead_letters(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    plugin_id = await _plugin(db_engine, demo_module(), ["article.read"], enabled=False)
    disabled = await _run(env, redis_client, plugin_id)
    assert disabled.state is JobState.DEAD and "stopped (disabled)" in (disabled.error or "")
    assert [r.status for r in await _logs(db_engine, disabled.id)] == ["disabled"]
    missing = await _run(env, redis_client, 999_999)
    assert missing.state is JobState.DEAD and missing.error_type == "PluginUnavailable"


# ---- install-plugin / update-plugin -------------------------------------------------------------
@pytest.fixture
def module_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """Serves ``files[path]`` (bytes, or an int status to answer instead); counts requests."""
    files: dict[str, Any] = {"hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            files["hits"] += 1
            content = files.get(self.path, 404)
            if isinstance(content, int):
                self.send_response(content)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("content-type", "application/wasm")
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as base:
        yield base, files


async def test_install_from_a_file_then_update_over_http_then_execute(
    env: Settings,
    redis_client: Any,
    db_engine: AsyncEngine,
    tmp_path: Path,
    module_server: tuple[str, dict[str, Any]],
) -> None:
    base, files = module_server
    v1 = demo_module()
    path = tmp_path / "reader.wasm"
    path.write_bytes(v1)
    article_id = await _article(db_engine, "Installed")
    v2 = bytes(wasmtime.wat2wasm(DEMO_WAT.replace('"null"', '"[]  "')))  # v2 answers [] for a missing article
    files["/reader-2.wasm"] = v2
    async with running(redis_client, env, default_handlers, PQ):
        producer = Producer(redis_client, env)
        install = {
            "name": "reader",
            "version": "1.0",
            "module_url": path.as_uri(),
            "sha256": hashlib.sha256(v1).hexdigest(),
            "permissions": ["event.emit", "article.read"],
        }
        installed = await _settled(redis_client, await producer.enqueue(PQ, "install-plugin", install))
        assert installed.state is JobState.COMPLETED, installed.error
        plugin_id = installed.result["plugin_id"]
        again = await _settled(redis_client, await producer.enqueue(PQ, "install-plugin", install))
        assert again.result == {"plugin_id": plugin_id, "installed": False, "version": "1.0"}
        ran = await _settled(
            redis_client,
            await producer.enqueue(
                PQ, "execute-plugin", {"plugin_id": plugin_id, "input": {"id": article_id}}
            ),
        )
        assert ran.state is JobState.COMPLETED and ran.result["output"]["title"] == "Installed"
        update = {
            "plugin_id": plugin_id,
            "version": "2.0",
            "module_url": base + "/reader-2.wasm",
            "sha256": hashlib.sha256(v2).hexdigest(),
        }
        updated = await _settled(redis_client, await producer.enqueue(PQ, "update-plugin", update))
        assert updated.state is JobState.COMPLETED and updated.result["previous"] == "1.0"
        ran2 = await _settled(
            redis_client,
            await producer.enqueue(PQ, "execute-plugin", {"plugin_id": plugin_id, "input": {"id": 987654}}),
        )
    assert (
        ran2.state is JobState.COMPLETED and ran2.result["output"] == [] and ran2.result["version"] == "2.0"
    )
    async with make_sessionmaker(db_engine)() as session:
        plugin = await session.get(Plugin, plugin_id)
    assert (
        plugin is not None and plugin.module == v2 and plugin.version == "2.0" and plugin.exports == ["run"]
    )
    assert plugin.permissions == ["article.read", "event.emit"]  # an update keeps the permission set


async def test_install_refuses_bad_modules_and_retries_a_down_server(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, module_server: tuple[str, dict[str, Any]]
) -> None:
    base, files = module_server
    good = demo_module()
    files["/good.wasm"] = good
    files["/huge.wasm"] = good + b"\x00" * 20_000
    files["/no-alloc.wasm"] = bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1))'))
    files["/down.wasm"] = 503

    def install(path: str, sha: str | None = None, permissions: list[str] | None = None) -> dict[str, Any]:
        content = files.get(path)
        digest = sha or hashlib.sha256(content if isinstance(content, bytes) else b"").hexdigest()
        return {
            "name": path.strip("/"),
            "version": "1",
            "module_url": base + path,
            "sha256": digest,
            "permissions": permissions or [],
        }

    cases = [
        (install("/good.wasm", sha="0" * 64), "sha256 mismatch"),
        (install("/huge.wasm"), "larger than 20000 bytes"),
        (install("/no-alloc.wasm"), "must export 'alloc"),
        (install("/good.wasm", permissions=["fs.write"]), "unknown permission(s) fs.write"),
        (install("/missing.wasm"), "answered 404"),
    ]
    async with running(redis_client, env, default_handlers, PQ):
        producer = Producer(redis_client, env)
        for payload, reason in cases:
            record = await _settled(redis_client, await producer.enqueue(PQ, "install-plugin", payload))
            assert record.state is JobState.DEAD and record.attempts == 1, payload
            assert record.error_type == "InvalidPlugin" and reason in (record.error or ""), record.error
        hits = files["hits"]
        down = await _settled(
            redis_client, await producer.enqueue(PQ, "install-plugin", install("/down.wasm"))
        )
    assert down.state is JobState.DEAD and down.attempts == 3  # retried with backoff, then dead
    assert down.error_type == "ModuleFetchFailed" and "answered 503" in (down.error or "")
    assert files["hits"] - hits == 3
    async with make_sessionmaker(db_engine)() as session:
        assert list((await session.execute(select(Plugin))).scalars()) == []  # nothing stored
