"""Throwaway redis-server processes and free ports for the tests and their helper processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    url: str
    owned: bool  # True: the suite started it and may flush it


def start_redis_server(*extra: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], int, str]:
    """A throwaway redis-server (no persistence) on ``port`` or a free one: (process, port, dir)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="tq-redis-")
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError("redis-server did not start")
    client.close()
    return proc, port, workdir
