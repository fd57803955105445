"""Helpers shared by every area of the suite, and the helper processes the tests start
(``helper_command('app_worker', ...)`` runs ``support/app_worker.py`` as a module)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tq import keys
from tq.envelope import JobState
from tq.handlers import HandlerRegistry
from tq.jobs import JobRecord, get_job
from tq.observe import Observer
from tq.registry import get_queue
from tq.settings import Settings
from tq.worker import Worker

TESTS_DIR = Path(__file__).resolve().parents[1]


def helper_command(module: str, *args: str) -> list[str]:
    """The command line of helper process ``support.<module>``."""
    return [sys.executable, "-m", f"support.{module}", *args]


def helper_env(**extra: str) -> dict[str, str]:
    """A helper process's environment: this one's, with the suite's folder importable."""
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def fast_settings(redis_url: str, **overrides: Any) -> Settings:
    """Short intervals so tests run in milliseconds, not seconds; audit off unless asked for."""
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "audit_enabled": False,
        "promote_interval_s": 0.05,
        "block_ms": 50,
        "config_poll_s": 0.2,
        "reclaim_interval_s": 0.2,
        "heartbeat_ttl_s": 3.0,
        "shutdown_grace_s": 5.0,
        "uvloop": False,
    }
    base.update(overrides)
    return Settings(**base)


def tiny_retry(attempts: int = 5, initial_s: float = 0.01, max_s: float = 0.05) -> dict[str, Any]:
    return {"retry": {"attempts": attempts, "initial_s": initial_s, "max_s": max_s, "jitter": 0}}


async def wait_for(
    pred: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        ok = pred()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until(pred: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> None:
    """Poll ``pred`` (a plain function) until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


async def settled_job(client: Any, queue: str, job_id: str, timeout: float = 20.0) -> JobRecord:
    """Wait until the job is completed or dead-lettered; its record."""

    async def done() -> bool:
        return (await get_job(client, queue, job_id)).state in (JobState.COMPLETED, JobState.DEAD)

    await wait_for(done, timeout=timeout, what=f"job {job_id} on {queue} settled")
    return await get_job(client, queue, job_id)


@asynccontextmanager
async def running(
    client: Any,
    settings: Settings,
    handlers: HandlerRegistry,
    queue: str = "email:send",
    consumer_id: str | None = None,
    observer: Observer | None = None,
) -> AsyncIterator[Worker]:
    """A started worker on one queue, stopped gracefully at the end."""
    worker = Worker(
        client, [get_queue(queue)], handlers, settings, consumer_id=consumer_id, observer=observer
    )
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def serve_until_sigterm(worker: Worker, client: Any, listen_control: bool = True) -> None:
    """The body of a helper worker process: start the worker, print READY, stop it gracefully on
    SIGTERM, close its client, print STOPPED (the tests read both lines)."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start(listen_control=listen_control)
    print("READY", flush=True)
    await stop.wait()
    await worker.stop()
    await client.aclose()
    print("STOPPED", flush=True)


@asynccontextmanager
async def published_events(client: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """Every event published on ``tq:events`` while the block runs, decoded, in order."""
    seen: list[dict[str, Any]] = []
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(keys.EVENTS_CHANNEL)

    async def pump() -> None:
        async for msg in pubsub.listen():
            seen.append(json.loads(msg["data"]))

    task = asyncio.create_task(pump())
    try:
        yield seen
    finally:
        task.cancel()
        await pubsub.aclose()


def docker_answers() -> bool:
    """Whether a Docker engine answers (then testcontainers can start servers)."""
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server on a free port in a thread, for protocol peers in tests: its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
