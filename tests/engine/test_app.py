"""The FastStream-hosted worker process: SIGTERM drains, the control channel pauses it live,
heartbeats show it as a consumer."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest
import redis
from support import app_worker, fast_settings, helper_command, helper_env
from tq import jobs, keys
from tq.producer import SyncProducer
from tq.registry import unregister_queue

Q = app_worker.QUEUE


@pytest.fixture
def registered() -> Any:
    app_worker.register()
    yield
    unregister_queue(Q)


def _spawn(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        helper_command("app_worker", url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=helper_env(),
    )


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _counter(client: redis.Redis, name: str) -> int:
    return int(client.hget(keys.counters(Q), name) or 0)


def test_sigterm_finishes_in_flight_and_leaves_nothing_stranded(redis_url: str, registered: None) -> None:
    client = redis.Redis.from_url(redis_url)
    producer = SyncProducer(client, fast_settings(redis_url))
    proc = _spawn(redis_url)
    try:
        _wait(lambda: client.zcard(keys.consumers(Q)) == 1, 20, "the worker's heartbeat")
        _wait(lambda: client.exists(keys.stats(Q)), 10, "the stats leader's first snapshot")
        assert client.get(keys.STATS_LEADER)  # the only process: elected
        producer.enqueue_many(Q, [("sleep", {"seconds": 1.0})] * 10)
        _wait(lambda: client.xpending(keys.stream(Q), keys.GROUP)["pending"] >= 3, 10, "jobs in flight")
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _counter(client, "completed") == 3  # concurrency 3: the in-flight ones finished
    assert client.xpending(keys.stream(Q), keys.GROUP)["pending"] == 0  # nothing stranded
    assert client.xlen(keys.stream(Q)) == 7  # the rest wait for the next consumer
    assert client.zcard(keys.consumers(Q)) == 0  # it signed off
    assert not client.exists(keys.STATS_LEADER)  # and gave the stats lock back
    client.close()


def test_pause_through_the_control_channel(redis_url: str, registered: None) -> None:
    import asyncio

    import redis.asyncio as aioredis
    from tq import config

    client = redis.Redis.from_url(redis_url)
    producer = SyncProducer(client, fast_settings(redis_url))
    proc = _spawn(redis_url)
    try:
        _wait(lambda: client.zcard(keys.consumers(Q)) == 1, 20, "the worker's heartbeat")

        async def pause(paused: bool) -> None:
            c = aioredis.Redis.from_url(redis_url)
            await config.set_paused(c, Q, paused)
            await c.aclose()

        asyncio.run(pause(True))
        time.sleep(1.0)  # the worker polls config every 30 s here: only the control message can pause it
        producer.enqueue_many(Q, [("sleep", {"seconds": 0.0})] * 5)
        time.sleep(1.0)
        assert _counter(client, "completed") == 0

        async def counts() -> dict[str, Any]:
            c = aioredis.Redis.from_url(redis_url)
            try:
                return await jobs.counts(c, Q)
            finally:
                await c.aclose()

        got = asyncio.run(counts())
        assert got["paused"] and got["waiting"] == 5 and got["consumers"] == 1
        asyncio.run(pause(False))
        _wait(lambda: _counter(client, "completed") == 5, 5, "resume")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        client.close()
