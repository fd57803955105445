"""Worker processes of the bench scripts (``scale_bench.py``, ``ratelimit_bench.py``): the process
serves until SIGTERM and says ``READY`` once consuming; the parent starts it and waits for that."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any


async def serve_until_sigterm(worker: Any) -> None:
    """In the worker process: start ``worker``, print READY, stop it gracefully on SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    print("READY", flush=True)
    await stop.wait()
    await worker.stop()


def start(cmd: list[str]) -> subprocess.Popen[str]:
    """In the parent: a worker process (its stdout piped), without waiting for it."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def wait_ready(procs: list[subprocess.Popen[str]]) -> None:
    """Until every process said READY (start them all first: they start up in parallel)."""
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"a worker process did not start: {proc.args}")
