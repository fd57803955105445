"""Process handling shared by the chaos tests: spawn ``chaos_worker.py`` processes, wait, count."""

from __future__ import annotations

import subprocess

import redis
from tq import keys

from support import chaos_worker, helper_command, helper_env

Q = chaos_worker.QUEUE


def spawn(url: str, consumer_id: str, *args: str) -> subprocess.Popen[str]:
    """A chaos worker process, returned once it consumes."""
    proc = subprocess.Popen(
        helper_command("chaos_worker", url, consumer_id, *args),
        stdout=subprocess.PIPE,
        text=True,
        env=helper_env(),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY", (
        f"{consumer_id} did not start"
    )
    return proc


def counter(client: redis.Redis, name: str) -> int:
    return int(client.hget(keys.counters(Q), name) or 0)


def settled(client: redis.Redis) -> int:
    """Jobs that reached a final state: completed, dead-lettered or skipped (idempotent repeat)."""
    return counter(client, "completed") + counter(client, "dead") + counter(client, "skipped")


def held_by(client: redis.Redis, consumer_id: str) -> int:
    """Entries in the consumer group's pending list owned by this consumer."""
    for c in client.xpending(keys.stream(Q), keys.GROUP)["consumers"]:
        name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
        if name == consumer_id:
            return int(c["pending"])
    return 0


def runs(client: redis.Redis) -> dict[int, int]:
    return {int(k): int(v) for k, v in client.hgetall(chaos_worker.RUNS_KEY).items()}


def drained(client: redis.Redis) -> bool:
    """Nothing waiting, in flight or delayed."""
    return (
        client.xlen(keys.stream(Q)) == 0
        and client.xpending(keys.stream(Q), keys.GROUP)["pending"] == 0
        and client.zcard(keys.delayed(Q)) == 0
    )


def stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(10)
        if p.stdout is not None:
            p.stdout.close()
