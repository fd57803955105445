"""The accuracy of the queue rate limit across replicas (``tq.ratelimit``), for ``make bench``.

    python bench/ratelimit_bench.py --procs 4 --jobs 100 --per 1 --seconds 60
    python bench/ratelimit_bench.py worker URL ID        (internal)

Redis: ``PEERBENCH_REDIS_URL``; THAT DB IS FLUSHED before the run.

One queue limited to ``--jobs`` per ``--per`` seconds (a live QueueConfig rateLimit), ``--procs``
worker processes at concurrency 50 each, a backlog larger than the limit lets through in
``--seconds``. Every job start is timed in its worker; from the first start, the achieved rate
over ``--seconds`` is compared with the declared one, and the busiest window of ``--per`` seconds
(less 1%: see ``busiest_window``) with ``--jobs``. One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import bench_procs
import redis
from tq import config
from tq.payloads import Payload
from tq.queue_config import QueueDefaults
from tq.registry import QueueSpec, register_queue
from tq.settings import Settings

HERE = Path(__file__).resolve()
REDIS_URL = os.environ.get("PEERBENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "ratebench"
CONCURRENCY = 50


class Noop(Payload):
    n: int


def register() -> QueueSpec:
    return register_queue(
        QueueSpec(QUEUE, "ratebench", {"noop": Noop}, defaults=QueueDefaults(concurrency=CONCURRENCY))
    )


def bench_settings(url: str) -> Settings:
    return Settings(redis_url=url, events=True, audit_enabled=True)


# ---- worker process -------------------------------------------------------------------------------
async def worker_main(url: str, consumer_id: str) -> None:
    from tq.connection import async_client
    from tq.handlers import HandlerRegistry
    from tq.worker import Worker

    spec = register()
    settings = bench_settings(url)
    handlers = HandlerRegistry()
    starts: list[float] = []

    async def noop(ctx: Any, payload: Noop) -> None:
        starts.append(time.time())

    handlers.add(QUEUE, "noop", noop)
    worker = Worker(async_client(settings), [spec], handlers, settings, consumer_id=consumer_id)
    await bench_procs.serve_until_sigterm(worker)
    print("STARTS " + json.dumps(starts), flush=True)


# ---- the run ----------------------------------------------------------------------------------------
def busiest_window(times: list[float], per_s: float) -> int:
    """The most starts in any window of ``per_s`` less 1%: starts are timed in the handlers, a few
    milliseconds after the limiter admitted them (on Redis's clock), so a window of exactly
    ``per_s`` can catch the first starts of the next window with the last of the previous one."""
    best, lo, span = 0, 0, per_s * 0.99
    for hi, t in enumerate(times):
        while times[lo] <= t - span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tq.connection import async_client
    from tq.producer import JobRequest, SyncProducer

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    register()
    settings = bench_settings(REDIS_URL)

    async def set_limit() -> None:
        c = async_client(settings)
        try:
            await config.write(c, QUEUE, config.override(rate_limit={"jobs": args.jobs, "per_s": args.per}))
        finally:
            await c.aclose()

    asyncio.run(set_limit())
    procs = [
        bench_procs.start([sys.executable, str(HERE), "worker", REDIS_URL, f"rate{i}"])
        for i in range(args.procs)
    ]
    try:
        bench_procs.wait_ready(procs)
        declared = args.jobs / args.per
        backlog = int(declared * args.seconds * 1.25) + args.jobs
        producer = SyncProducer(client, settings)
        for start in range(0, backlog, 1000):
            batch = range(start, min(start + 1000, backlog))
            producer.enqueue_many(QUEUE, [JobRequest("noop", {"n": i}) for i in batch])
        time.sleep(args.seconds + args.per + 1)
    finally:
        starts: list[float] = []
        per_worker = []
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            mine = next((json.loads(line[7:]) for line in out.splitlines() if line.startswith("STARTS ")), [])
            per_worker.append(len(mine))
            starts += mine
        client.close()
    starts.sort()
    if not starts:
        raise RuntimeError("no job started")
    t0 = starts[0]
    measured = [t for t in starts if t < t0 + args.seconds]
    achieved = len(measured) / args.seconds
    return {
        "system": "tq",
        "bench": "ratelimit",
        "mode": "ratelimit",
        "procs": args.procs,
        "concurrency": CONCURRENCY,
        "limit_jobs": args.jobs,
        "limit_per_s": args.per,
        "seconds": args.seconds,
        "declared_rate": round(declared, 3),
        "achieved_rate": round(achieved, 3),
        "accuracy": round(achieved / declared, 4),
        "busiest_window": busiest_window(measured, args.per),
        "started_per_worker": per_worker,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        asyncio.run(worker_main(sys.argv[2], sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=100, help="the limit: jobs per --per seconds")
    parser.add_argument("--per", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the achieved rate is measured")
    print(json.dumps(run(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
