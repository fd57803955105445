"""Scale runs for ``make bench``: throughput over worker processes and cluster masters, the memory of
a family process, and a 1-million-job backlog. One JSON line per run on stdout.

    python bench/scale_bench.py processes --procs 4 --n 100000      # PEERBENCH_REDIS_URL (flushed)
    python bench/scale_bench.py cluster --masters 3 --procs 2 --n 100000   # its own cluster
    python bench/scale_bench.py memory --n 100000                   # RSS of `tq serve`, idle and busy
    python bench/scale_bench.py backlog --n 1000000                 # Redis bytes per waiting job, drain time
    python bench/scale_bench.py worker URL ID --queues a,b [--cluster]   (internal)

Throughput runs pause the bench queues, start the worker processes, enqueue every job, then
resume and time from the resume to the last completion (Redis counters, polled every 10 ms), so
process start-up and enqueueing are not counted. No-op jobs, concurrency 50 per process and
queue, every guarantee on (events, audit stream), as in ``tq_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import bench_procs
import redis
from tq import config, keys
from tq.payloads import Payload
from tq.queue_config import QueueDefaults
from tq.registry import QueueSpec, register_queue
from tq.settings import Settings

HERE = Path(__file__).resolve()
REDIS_URL = os.environ.get("PEERBENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
FAMILY = "scalebench"
CONCURRENCY = 50


class Noop(Payload):
    n: int


def queue_names(count: int) -> list[str]:
    return [f"scale{i}" for i in range(count)]


def register(names: list[str]) -> list[QueueSpec]:
    return [
        register_queue(
            QueueSpec(q, FAMILY, {"noop": Noop}, defaults=QueueDefaults(concurrency=CONCURRENCY)),
        )
        for q in names
    ]


def bench_settings(url: str, cluster: bool = False) -> Settings:
    return Settings(redis_url=url, redis_cluster=cluster, events=True, audit_enabled=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def emit(res: dict[str, Any]) -> None:
    print(json.dumps({"system": "tq", "bench": "scale", **res}), flush=True)


# ---- worker process -------------------------------------------------------------------------------
async def worker_main(args: argparse.Namespace) -> None:
    from tq.connection import async_client
    from tq.handlers import HandlerRegistry
    from tq.worker import Worker

    specs = register(args.queues.split(","))
    settings = bench_settings(args.url, args.cluster)
    handlers = HandlerRegistry()

    async def noop(ctx: Any, payload: Noop) -> None:
        return None

    for spec in specs:
        handlers.add(spec.name, "noop", noop)
    worker = Worker(async_client(settings), specs, handlers, settings, consumer_id=args.consumer_id)
    await bench_procs.serve_until_sigterm(worker)


def spawn_worker(url: str, consumer_id: str, names: list[str], cluster: bool) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(HERE), "worker", url, consumer_id, "--queues", ",".join(names)]
    if cluster:
        cmd.append("--cluster")
    return bench_procs.start(cmd)


def stop_workers(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# ---- throughput over processes ---------------------------------------------------------------------
def client_for(url: str, cluster: bool) -> Any:
    from tq.connection import sync_client

    return sync_client(bench_settings(url, cluster))


def completed(client: Any, names: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for q in names:
        pipe.hget(keys.counters(q), "completed")
    return sum(int(v or 0) for v in pipe.execute())


def timed_drain(url: str, n: int, procs_n: int, names: list[str], cluster: bool) -> dict[str, Any]:
    """Pause, start workers, enqueue n (spread over the queues), resume; time to the last completion."""
    from tq.producer import JobRequest, SyncProducer

    client = client_for(url, cluster)
    settings = bench_settings(url, cluster)

    async def pause_all(paused: bool) -> None:
        from tq.connection import async_client

        c = async_client(settings)
        try:
            for q in names:
                await config.set_paused(c, q, paused)
        finally:
            await c.aclose()

    asyncio.run(pause_all(True))
    procs = [spawn_worker(url, f"w{i}", names, cluster) for i in range(procs_n)]
    try:
        bench_procs.wait_ready(procs)
        producer = SyncProducer(client, settings)
        per_queue = n // len(names)
        t_enq = time.perf_counter()
        for q in names:
            for start in range(0, per_queue, 1000):
                producer.enqueue_many(q, [JobRequest("noop", {"n": i}) for i in range(start, start + 1000)])
        enqueue_s = time.perf_counter() - t_enq
        total = per_queue * len(names)
        time.sleep(0.5)  # every worker has read its paused config
        t0 = time.perf_counter()
        asyncio.run(pause_all(False))
        deadline = t0 + 600
        while completed(client, names) < total:
            if time.perf_counter() > deadline:
                raise RuntimeError("drain timed out")
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
    finally:
        stop_workers(procs)
        client.close()
    return {
        "n": total,
        "queues": len(names),
        "procs": procs_n,
        "enqueue_rate": round(total / enqueue_s, 1),
        "process_s": round(elapsed, 3),
        "process_rate": round(total / elapsed, 1),
    }


def processes(args: argparse.Namespace) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    r.close()
    names = queue_names(args.queues)
    register(names)
    res = timed_drain(REDIS_URL, args.n, args.procs, names, cluster=False)
    emit({"mode": "processes", "masters": 0, **res})


# ---- throughput over cluster masters ---------------------------------------------------------------
def start_cluster(masters: int, workdir: str, procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """A cluster of ``masters`` nodes (no replicas); its processes are appended to ``procs`` as they
    start, so the caller stops them whatever happens here."""
    ports = []
    for _ in range(masters):
        while True:
            port = free_port()
            if port + 10000 < 65536:
                try:
                    with socket.socket() as s:
                        s.bind(("127.0.0.1", port + 10000))
                    break
                except OSError:
                    continue
        d = Path(workdir) / str(port)
        d.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--dir",
                    str(d),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        ports.append(port)
    for port in ports:
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
    if masters == 1:  # redis-cli --cluster create wants three masters: one node takes every slot itself
        redis.Redis(port=ports[0]).execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
    else:
        create = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        subprocess.run([*create, "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while not all(redis.Redis(port=p).cluster("info").get("cluster_state") == "ok" for p in ports):
        if time.monotonic() > deadline:
            raise RuntimeError("cluster did not become ok")
        time.sleep(0.1)
    return ports


def cluster(args: argparse.Namespace) -> None:
    workdir = tempfile.mkdtemp(prefix="tq-scale-cluster-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = start_cluster(args.masters, workdir, procs)
        url = f"redis://127.0.0.1:{ports[0]}/0"
        names = queue_names(args.queues)
        register(names)
        res = timed_drain(url, args.n, args.procs, names, cluster=True)
        emit({"mode": "cluster", "masters": args.masters, **res})
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


# ---- memory of a family process ------------------------------------------------------------------
SERVICE = """
import sys
from tq.handlers import HandlerRegistry
from tq.payloads import Payload
from tq.queue_config import QueueDefaults
from tq.registry import QueueSpec, register_queue
from tq.settings import Settings
from tq_services.family_service import serve

class Noop(Payload):
    n: int

register_queue(QueueSpec("scalemem", "scalemem", {"noop": Noop}, defaults=QueueDefaults(concurrency=50)))
handlers = HandlerRegistry()

@handlers.register("scalemem", "noop")
async def noop(ctx, payload):
    return None

# no schema gate: the bench family has no tables, and no database is migrated for it
serve("scalemem", host="127.0.0.1", port=int(sys.argv[2]), settings=Settings(redis_url=sys.argv[1]),
      handlers=handlers, check_schema=False)
"""


def memory(args: argparse.Namespace) -> None:
    """RSS of a family service (`tq serve` code path, metrics on): idle, and its peak while draining."""
    from tq.producer import JobRequest, SyncProducer

    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE, REDIS_URL, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("service not ready")
            time.sleep(0.1)
        time.sleep(2.0)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        idle = rss_kib(proc.pid)
        register(["scalemem"])  # the producer validates against the same spec
        producer = SyncProducer(r, bench_settings(REDIS_URL))
        for start in range(0, args.n, 1000):
            producer.enqueue_many(
                "scalemem", [JobRequest("noop", {"n": i}) for i in range(start, start + 1000)]
            )
        peak = idle
        while int(r.hget(keys.counters("scalemem"), "completed") or 0) < args.n:
            peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.02)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        after = rss_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        r.close()
    emit(
        {
            "mode": "memory",
            "n": args.n,
            "idle_rss_mib": round(idle / 1024, 1),
            "busy_peak_rss_mib": round(max(peak, after) / 1024, 1),
        }
    )


# ---- a 1-million-job backlog -------------------------------------------------------------------------
def backlog(args: argparse.Namespace) -> None:
    from tq.producer import JobRequest, SyncProducer

    r = redis.Redis.from_url(REDIS_URL)
    r.flushdb()
    names = ["scalebacklog"]
    register(names)
    before = int(r.info("memory")["used_memory"])
    producer = SyncProducer(r, bench_settings(REDIS_URL))
    t0 = time.perf_counter()
    for start in range(0, args.n, 1000):
        producer.enqueue_many(names[0], [JobRequest("noop", {"n": i}) for i in range(start, start + 1000)])
    enqueue_s = time.perf_counter() - t0
    waiting_bytes = int(r.info("memory")["used_memory"]) - before
    r.close()
    register(names)
    procs = [spawn_worker(REDIS_URL, f"b{i}", names, False) for i in range(args.procs)]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        t1 = time.perf_counter()
        while completed(client, names) < args.n:
            time.sleep(0.05)
        drain_s = time.perf_counter() - t1
        # the audit records wait in Redis until an AuditWriter writes them (none runs here): shown
        # apart, since with a writer they are gone
        audit = int(client.memory_usage(keys.audit(names[0]), samples=0) or 0)
        after = int(client.info("memory")["used_memory"]) - before - audit
    finally:
        stop_workers(procs)
        client.close()
    emit(
        {
            "mode": "backlog",
            "n": args.n,
            "procs": args.procs,
            "enqueue_rate": round(args.n / enqueue_s, 1),
            "redis_bytes_per_waiting_job": round(waiting_bytes / args.n, 1),
            "drain_s": round(drain_s, 2),
            "drain_rate": round(args.n / drain_s, 1),
            "redis_bytes_per_completed_job_after_drain": round(after / args.n, 1),
            "redis_bytes_per_unwritten_audit_record": round(audit / args.n, 1),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("processes")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--queues", type=int, default=4)
    c = sub.add_parser("cluster")
    c.add_argument("--masters", type=int, default=3)
    c.add_argument("--procs", type=int, default=2)
    c.add_argument("--n", type=int, default=100_000)
    c.add_argument("--queues", type=int, default=4)
    m = sub.add_parser("memory")
    m.add_argument("--n", type=int, default=100_000)
    b = sub.add_parser("backlog")
    b.add_argument("--n", type=int, default=1_000_000)
    b.add_argument("--procs", type=int, default=2)
    w = sub.add_parser("worker")
    w.add_argument("url")
    w.add_argument("consumer_id")
    w.add_argument("--queues", required=True)
    w.add_argument("--cluster", action="store_true")
    args = ap.parse_args()
    if args.mode == "worker":
        import uvloop

        uvloop.run(worker_main(args))
        return
    {"processes": processes, "cluster": cluster, "memory": memory, "backlog": backlog}[args.mode](args)


if __name__ == "__main__":
    main()
