"""tq benchmark, same protocol and output shape as the peer harness (PEERS_BENCH_DIR).

    python bench/tq_bench.py throughput --n 20000 --concurrency 50 --chunk 1000
    python bench/tq_bench.py latency --n 2000 --rate 200 --concurrency 50 [--variant sync|async]
    python bench/tq_bench.py single --n 20000 [--variant sync|async]
    python bench/tq_bench.py worker ...   (internal: the worker process)

``--variant`` takes ``+``-joined tokens: ``sync`` / ``async`` (producer for latency and single),
``open`` (latency with ``async``: an open loop, each job enqueued by its own task at its scheduled
time, as requests arrive at a web app; a sequential caller can't reach 10 000 jobs/s) and
``trace`` (OpenTelemetry on in the producer and the worker: ``start_tracing``),
``idem`` (every job carries a unique idempotency key; off otherwise), ``metrics`` (the worker
feeds the same Prometheus observer as ``tq serve``: ``tq_services.metrics.JobMetrics``, and renders
a full scrape, depth gauges read from Redis included, every ``OBSERVE_INTERVAL_S``) and ``stats``
(the worker runs the stats leader, ``tq.stats.StatsLeader``, every ``OBSERVE_INTERVAL_S``).
``OBSERVE_INTERVAL_S`` (1 s) is 10-15 times production's (10 s stats, a 15 s scrape), so the
overhead measured is an upper bound; ``long`` marks a run meant to last several seconds (more jobs)
so that the periodic work is paid several times.

* throughput: flush the DB; enqueue N no-op jobs with ``Producer.enqueue_many`` (chunks of
  ``--chunk``) -> enqueue jobs/s; then ONE worker process drains them -> process jobs/s =
  N / (last job done - first handler start), measured inside the worker.
* latency: flush the DB; start ONE worker process, wait until ready + 1 s; enqueue N jobs one at a
  time at ``--rate`` jobs/s (single-job API), each carrying ``t0 = time.time()`` taken right before
  its enqueue call. The worker records handler start (pickup) and done.
* both also report the worker process's CPU time per job (``worker_cpu_us_per_job``: user + system,
  from its first settled batch to its last job).
* single: flush the DB; N sequential single enqueues, no worker -> enqueue jobs/s and Redis round
  trips per job (INFO commandstats deltas; cross-checked by counting the requests the client sends
  for 2 000 more, in an untimed pass: the counter wraps the send path). The sync run alternates
  ``SLICES`` slices with redis-benchmark's single client sending the same script call
  (``c_client_rate``, ``slice_ratios``): both measured in the same seconds of the machine.
* memory: flush the DB; N waiting jobs with payload ``{"n": i}`` (``--payload small``) or about 300
  bytes of JSON (``--payload 300``) by ``Producer.enqueue_many`` -> Redis bytes per waiting job
  (INFO used_memory before/after); then a worker in this process runs them all -> bytes per
  retained completed job (MEMORY USAGE of the retained records, 1000, plus their share of the
  completed index). Same protocol as ``bench/bullmq_extra.js memory``.

* concurrent: flush the DB; ``--concurrency`` coroutines each enqueue one job at a time with
  ``Producer.enqueue`` (an ASGI app under load) until N jobs, no worker -> enqueue jobs/s (same
  protocol as ``bench/bullmq_extra.js concurrent`` with ``queue.add``).

The throughput run also reports Redis CPU per job (``INFO cpu`` used_cpu_sys + used_cpu_user before
the enqueue and after the last job is done; ``bench/bullmq_extra.js cpu`` does the same for BullMQ).

"done" = the worker's ``on_settled`` callback reported the job: its outcome is committed to Redis
(acked and recorded in one settle script call). All guarantees stay on: events, audit,
settle-before-done. Redis: ``PEERBENCH_REDIS_URL``; THAT DB IS FLUSHED before every run.
Output: one JSON line on stdout per run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as pkg_version
from typing import Any

import redis
from tq.connection import evalsha_args
from tq.payloads import Payload
from tq.queue_config import QueueDefaults, RetryPolicy
from tq.registry import QueueSpec, get_queue, register_queue
from tq.scripts import called_commands
from tq.settings import Settings

REDIS_URL = os.environ.get("PEERBENCH_REDIS_URL", "redis://127.0.0.1:6391/0")
QUEUE = "bench"
FAMILY = "bench"
JOB = "noop"
READY = "PEERBENCH_READY"
OBSERVE_INTERVAL_S = 1.0  # scrape and stats period of the metrics/stats variants (see the docstring)


class Noop(Payload):
    t0: float


class MemSmall(Payload):  # the memory benchmark's payload {"n": i}
    n: int


class Mem300(Payload):  # a realistic payload: about 300 bytes of JSON
    n: int
    s: str


MEM_JOBS = {"small": "mem", "300": "mem300"}
PAD = "x" * 280
DEAD_QUEUE = "bench-dead"  # the memory mode's jobs that die at their first failure
DEAD_N = 1000  # ... as many as the retained completed records measured


def register_dead_queue() -> QueueSpec:
    return register_queue(
        QueueSpec(
            DEAD_QUEUE,
            FAMILY,
            jobs={MEM_JOBS["small"]: MemSmall, MEM_JOBS["300"]: Mem300},
            description="benchmark jobs that fail",
            defaults=QueueDefaults(concurrency=50, retry=RetryPolicy(attempts=1)),
        )
    )


def _check_amount(n: int) -> None:
    if n >= 0:
        raise ValueError(f"record {n} refused: the amount must be negative for a refund")


def _refund(payload: Any) -> None:  # a stack two calls deep under the handler, as in real code
    _check_amount(payload.n)


def register(concurrency: int) -> QueueSpec:
    """The bench queue with the worker concurrency as its registry default (not a settings override:
    an override makes every enqueue merge it into the defaults, a cost queues without one do not pay)."""
    return register_queue(
        QueueSpec(
            QUEUE,
            FAMILY,
            jobs={JOB: Noop, MEM_JOBS["small"]: MemSmall, MEM_JOBS["300"]: Mem300},
            description="benchmark no-op jobs",
            defaults=QueueDefaults(concurrency=concurrency),
        )
    )


def _version() -> str:
    try:
        tq_v = pkg_version("tq")
    except PackageNotFoundError:
        tq_v = "?"
    return f"tq {tq_v} (redis-py {redis.__version__})"


VERSION = _version()


def settings_for(args: argparse.Namespace) -> Settings:
    """Product defaults with every guarantee on (the bench queue's concurrency is its registry default)."""
    return Settings(redis_url=REDIS_URL, events=True, audit_enabled=True)


def run_loop(settings: Settings, coro: Any) -> Any:
    if settings.uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def variant_tokens(args: argparse.Namespace) -> set[str]:
    return {t for t in re.split(r"[+,]", args.variant or "") if t}


def idem_on(args: argparse.Namespace) -> bool:
    return "idem" in variant_tokens(args)


def metrics_on(args: argparse.Namespace) -> bool:
    return "metrics" in variant_tokens(args)


def stats_on(args: argparse.Namespace) -> bool:
    return "stats" in variant_tokens(args)


def trace_on(args: argparse.Namespace) -> bool:
    return "trace" in variant_tokens(args)


def start_tracing() -> None:
    """The ``trace`` variant: the SDK tracer provider with the production batch processor and an
    exporter that encodes each batch to OTLP protobuf (what the OTLP/HTTP exporter sends) and drops
    it: the cost in this process of every span, without a collector's network round trips."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class EncodeAndDrop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(EncodeAndDrop()))
    trace.set_tracer_provider(provider)


def use_async(args: argparse.Namespace) -> bool:
    return "async" in variant_tokens(args)


def open_loop(args: argparse.Namespace) -> bool:
    """``open`` (latency, with ``async``): each job enqueued by its own task at its scheduled time,
    whether or not the ones before it have returned (the requests of a web app under load): the
    rate holds past one caller's round trip, and a slow enqueue delays no later job's t0."""
    return "open" in variant_tokens(args)


def worker_desc(args: argparse.Namespace, s: Settings) -> str:
    return (
        f"tq Worker, 1 process, concurrency={args.concurrency}, read_batch={s.read_batch}, "
        f"events={'on' if s.events else 'off'}, audit={'on' if s.audit_enabled else 'off'}, "
        f"idempotency={'on' if idem_on(args) else 'off'}, uvloop={'on' if s.uvloop else 'off'}, "
        f"metrics={'on' if metrics_on(args) else 'off'}, stats={'on' if stats_on(args) else 'off'}, "
        f"tracing={'on' if trace_on(args) else 'off'}"
        + (f" (every {OBSERVE_INTERVAL_S}s)" if metrics_on(args) or stats_on(args) else "")
    )


def flushdb() -> None:
    """The bench owns the DB it is pointed at: flushed before every run."""
    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.flushdb()
    finally:
        r.close()


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p% of the values <= it."""
    if not sorted_vals:
        return math.nan
    n = len(sorted_vals)
    k = min(n - 1, max(0, math.ceil(p * n / 100.0) - 1))
    return sorted_vals[k]


# ---- worker process ---------------------------------------------------------------------------
def host_steal() -> tuple[int, int] | None:
    """(steal, all) CPU ticks of this machine so far (/proc/stat; None elsewhere): the time a
    virtual machine's CPUs were ready to run and the host ran something else."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])


def steal_pct(before: tuple[int, int] | None) -> float | None:
    after = host_steal()
    if before is None or after is None or after[1] == before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 2)


def cpu_s() -> float:
    """This process's CPU time (user + system), in seconds."""
    t = os.times()
    return t.user + t.system


class Recorder:
    """Per-job timestamps in the worker: (t0, handler start, done). Cheap: a dict and a list."""

    def __init__(self, n: int, out: str) -> None:
        self.n = n
        self.out = out
        self.t_worker_start = time.time()
        self.pending: dict[str, tuple[float, float]] = {}
        self.rows: list[tuple[float, float, float]] = []
        self.cpu_at_first = 0.0  # the process's CPU seconds when its first batch settled
        self.jobs_at_first = 0  # ... and the jobs in that batch (not in the CPU per job)

    def settled(self, _queue: str, job_ids: list[str]) -> None:
        t = time.time()  # one settle call commits the whole batch: one done time for all of it
        first = not self.rows
        pop, append = self.pending.pop, self.rows.append
        for jid in job_ids:
            v = pop(jid, None)
            if v is not None:
                append((v[0], v[1], t))
        if first:
            self.cpu_at_first, self.jobs_at_first = cpu_s(), len(self.rows)
        if len(self.rows) >= self.n:
            tmp = self.out + ".tmp"
            with open(tmp, "w") as f:
                jobs = len(self.rows) - self.jobs_at_first  # every job but the first batch's
                cpu_us = (cpu_s() - self.cpu_at_first) * 1e6 / max(1, jobs)
                json.dump({"t_worker_start": self.t_worker_start, "rows": self.rows, "cpu_us": cpu_us}, f)
            os.replace(tmp, self.out)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)  # the benchmark is over: shutdown is not measured


async def worker_main(args: argparse.Namespace) -> None:
    from tq.connection import async_client
    from tq.handlers import HandlerRegistry
    from tq.worker import Worker

    settings = settings_for(args)
    if trace_on(args):
        start_tracing()
    rec = Recorder(args.n, args.out)  # t_worker_start: after imports, before the worker object
    pending = rec.pending
    handlers = HandlerRegistry()

    @handlers.register(QUEUE, JOB)
    async def noop(ctx: Any, payload: Noop) -> None:
        pending[ctx.job_id] = (payload.t0, time.time())

    client = async_client(settings)
    observer = None
    duties: list[Callable[[], Awaitable[Any]]] = []
    if metrics_on(args):  # the observer the family services use, in its own registry, and scrapes
        from prometheus_client import generate_latest
        from tq_services.metrics import make_registry

        registry, observer, queue_collector = make_registry([get_queue(QUEUE)], client)

        async def scrape() -> None:
            await queue_collector.refresh()
            generate_latest(registry)

        duties.append(scrape)
    if stats_on(args):
        from tq.stats import StatsLeader

        leader = StatsLeader(client, [get_queue(QUEUE)], settings, interval_s=OBSERVE_INTERVAL_S)
        duties.append(leader.tick)
    worker = Worker(
        client,
        [get_queue(QUEUE)],
        handlers,
        settings,
        on_settled=rec.settled,
        observer=observer,
    )
    await worker.start()

    async def every_interval(duty: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await duty()
            await asyncio.sleep(OBSERVE_INTERVAL_S)

    background = [asyncio.create_task(every_interval(duty)) for duty in duties]  # noqa: F841 (kept alive)
    print(READY, flush=True)
    await asyncio.Event().wait()  # Recorder exits the process once N jobs are done


# ---- parent side ------------------------------------------------------------------------------
def spawn_worker(args: argparse.Namespace, n: int, out: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "worker",
        "--n",
        str(n),
        "--concurrency",
        str(args.concurrency),
        "--variant",
        args.variant,
        "--out",
        out,
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    ready = threading.Event()

    def reader() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            if line.strip() == READY:
                ready.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    killer = threading.Timer(args.timeout, p.kill)
    killer.start()
    p.bench = (ready, t, killer)  # type: ignore[attr-defined]
    return p


def wait_ready(p: subprocess.Popen[str], timeout: float = 60.0) -> None:
    ready = p.bench[0]  # type: ignore[attr-defined]
    t_end = time.time() + timeout
    while time.time() < t_end:
        if ready.wait(0.1):
            return
        if p.poll() is not None:
            raise RuntimeError("worker exited before becoming ready")
    raise RuntimeError("worker not ready in time")


def finish(p: subprocess.Popen[str]) -> None:
    p.wait()
    _ready, t, killer = p.bench  # type: ignore[attr-defined]
    killer.cancel()
    t.join(5)


def tmp_out() -> str:
    fd, out = tempfile.mkstemp(prefix="tqbench_", suffix=".json")
    os.close(fd)
    os.unlink(out)
    return out


def load_rows(out: str) -> dict[str, Any] | None:
    if not os.path.exists(out):
        return None
    with open(out) as f:
        d = json.load(f)
    os.unlink(out)
    return d


def base_result(args: argparse.Namespace, mode: str, enqueue_api: str) -> dict[str, Any]:
    return {
        "system": "tq",
        "version": VERSION,
        "mode": mode,
        "n": args.n,
        "concurrency": args.concurrency,
        "variant": args.variant,
        "worker": worker_desc(args, settings_for(args)),
        "enqueue_api": enqueue_api,
    }


def emit(res: dict[str, Any]) -> None:
    print(json.dumps(res), flush=True)


async def _warm_async(producer: Any) -> None:
    """Connect and load the script before timing (like BullMQ's ``waitUntilReady``)."""
    from tq.scripts import source

    await producer.client.ping()
    await producer.client.script_load(source("enqueue"))


def _warm_sync(producer: Any) -> None:
    from tq.scripts import source

    producer.client.ping()
    producer.client.script_load(source("enqueue"))


def throughput(args: argparse.Namespace) -> None:
    from tq.producer import JobRequest, Producer

    settings = settings_for(args)
    flushdb()
    n, chunk, idem = args.n, args.chunk, idem_on(args)
    if trace_on(args):
        start_tracing()

    async def enqueue() -> float:
        producer = Producer(settings=settings)
        try:
            await _warm_async(producer)
            t = time.perf_counter()
            if idem:
                jobs: list[Any] = [
                    JobRequest(JOB, {"t0": time.time()}, idempotency_key=f"k{i}") for i in range(n)
                ]
            else:
                jobs = [(JOB, {"t0": time.time()}) for _ in range(n)]
            res = await producer.enqueue_many(QUEUE, jobs, chunk=chunk)
            dt = time.perf_counter() - t
            if len(res) != n or any(r.duplicate for r in res):
                raise RuntimeError(f"enqueue_many returned {len(res)} results for {n} jobs")
            return dt
        finally:
            await producer.close()

    cpu0 = redis_cpu_s()
    enq_s = run_loop(settings, enqueue())
    out = tmp_out()
    t_spawn = time.time()
    p = spawn_worker(args, n, out)
    finish(p)
    cpu_us = (redis_cpu_s() - cpu0) * 1e6 / n
    res = base_result(args, "throughput", f"Producer.enqueue_many chunks of {chunk}")
    res.update(
        {
            "enqueue_s": round(enq_s, 4),
            "enqueue_rate": round(n / enq_s, 1),
            "redis_cpu_us_per_job": round(cpu_us, 2),
        }
    )
    d = load_rows(out)
    if d is None:
        res["error"] = f"worker did not finish {n} jobs within {args.timeout}s (rc={p.returncode})"
        emit(res)
        return
    rows = d["rows"]
    first_start = min(r[1] for r in rows)
    last_done = max(r[2] for r in rows)
    res.update(
        {
            "process_s": round(last_done - first_start, 4),
            "process_rate": round(len(rows) / (last_done - first_start), 1),
            "process_s_from_worker_start": round(last_done - d["t_worker_start"], 4),
            "process_rate_from_worker_start": round(len(rows) / (last_done - d["t_worker_start"]), 1),
            "worker_startup_s": round(first_start - d["t_worker_start"], 4),
            "process_spawn_to_done_s": round(last_done - t_spawn, 4),
            "worker_cpu_us_per_job": round(d["cpu_us"], 2),
        }
    )
    emit(res)


def redis_cpu_s() -> float:
    """The scratch Redis's CPU time so far (system + user), seconds."""
    r = redis.Redis.from_url(REDIS_URL)
    try:
        cpu = r.info("cpu")
    finally:
        r.close()
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def memory(args: argparse.Namespace) -> None:
    from tq import keys
    from tq.connection import async_client
    from tq.handlers import HandlerRegistry
    from tq.producer import Producer
    from tq.worker import Worker, ensure_group

    settings = settings_for(args)
    flushdb()
    n, job = args.n, MEM_JOBS[args.payload]
    if trace_on(args):
        start_tracing()

    def data(i: int) -> dict[str, Any]:
        return {"n": i, "s": PAD} if args.payload == "300" else {"n": i}

    async def run() -> dict[str, Any]:
        client = async_client(settings)
        producer = Producer(client, settings)
        await _warm_async(producer)
        await ensure_group(client, QUEUE)
        await producer.enqueue(QUEUE, job, data(-1))  # the queue's own keys exist before the measure
        before = int((await client.info("memory"))["used_memory"])
        await producer.enqueue_many(QUEUE, [(job, data(i)) for i in range(n)], chunk=args.chunk)
        after = int((await client.info("memory"))["used_memory"])

        async def noop(ctx: Any, payload: Any) -> None:
            return None

        await drain(client, get_queue(QUEUE), noop, n + 1)
        completed, sampled = await retained_bytes(client, QUEUE, keys.completed_index(QUEUE))
        dead = await dead_job_bytes(client, producer)
        await client.aclose()
        return {
            "bytes_per_waiting_job": round((after - before) / n, 1),
            "bytes_per_completed_job": completed,
            "completed_sampled": sampled,
            **dead,
        }

    async def drain(client: Any, spec: QueueSpec, handler: Callable[..., Awaitable[None]], n: int) -> None:
        """Run one worker with ``handler`` for the memory job of ``spec`` until ``n`` jobs settled."""
        handlers, done, all_done = HandlerRegistry(), 0, asyncio.Event()
        handlers.register(spec.name, job)(handler)

        def settled(_queue: str, job_ids: list[str]) -> None:
            nonlocal done
            done += len(job_ids)
            if done >= n:
                all_done.set()

        worker = Worker(client, [spec], handlers, settings, on_settled=settled)
        await worker.start()
        await all_done.wait()
        await worker.stop()

    async def retained_bytes(client: Any, queue: str, index: str) -> tuple[float, int]:
        """Bytes per record retained in ``index`` (MEMORY USAGE of each, plus its share of the
        index), and how many there are."""
        ids = await client.zrevrange(index, 0, -1)
        used = [await client.memory_usage(keys.job(queue, i.decode()), samples=0) for i in ids]
        share = await client.memory_usage(index, samples=0)
        return round(sum(used) / len(used) + share / len(ids), 1), len(ids)

    async def dead_job_bytes(client: Any, producer: Producer) -> dict[str, Any]:
        """DEAD_N jobs that fail their only attempt (a ValueError two calls under the handler):
        bytes per retained dead record (MEMORY USAGE, plus its share of the dead index) and per
        dead letter (the DLQ stream's MEMORY USAGE over its entries: payload, message, stack)."""
        spec = register_dead_queue()
        await ensure_group(client, DEAD_QUEUE)

        async def refund(ctx: Any, payload: Any) -> None:
            _refund(payload)

        await producer.enqueue_many(DEAD_QUEUE, [(job, data(i)) for i in range(DEAD_N)], chunk=args.chunk)
        await drain(client, spec, refund, DEAD_N)
        dead, sampled = await retained_bytes(client, DEAD_QUEUE, keys.dead_index(DEAD_QUEUE))
        letters = await client.memory_usage(keys.dlq(DEAD_QUEUE), samples=0)
        return {
            "bytes_per_dead_job": dead,
            "bytes_per_dead_letter": round(letters / await client.xlen(keys.dlq(DEAD_QUEUE)), 1),
            "dead_sampled": sampled,
        }

    res = base_result(args, "memory", f"Producer.enqueue_many chunks of {args.chunk}")
    res.update({"payload": args.payload, **run_loop(settings, run())})
    emit(res)


def concurrent(args: argparse.Namespace) -> None:
    from tq.producer import Producer

    settings = settings_for(args)
    flushdb()
    n, callers = args.n, args.concurrency

    async def run() -> float:
        producer = Producer(settings=settings)
        left = n

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await producer.enqueue(QUEUE, JOB, {"t0": time.time()})

        try:
            await _warm_async(producer)
            t = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(callers)))
            return time.perf_counter() - t
        finally:
            await producer.close()

    enq_s = run_loop(settings, run())
    res = base_result(args, "concurrent", f"Producer.enqueue, {callers} coroutines, one job at a time each")
    res.update({"enqueue_s": round(enq_s, 4), "enqueue_rate": round(n / enq_s, 1)})
    emit(res)


def paced(n: int, rate: float) -> Iterator[int]:
    """Yield i at the scheduled times t_begin + i/rate."""
    t_begin = time.perf_counter()
    for i in range(n):
        d = t_begin + i / rate - time.perf_counter()
        if d > 0:
            time.sleep(d)
        yield i


async def apaced(n: int, rate: float) -> AsyncIterator[int]:
    """Yield i at the scheduled times t_begin + i/rate, as a timer of 1 ms resolution does (an
    event loop's, node's setTimeout in the BullMQ harness's open loop): the jobs due meanwhile go
    at once, one after another. A shorter sleep spins the loop (uvloop rounds it to 0 ms), which
    burnt a core's share at 10 000 jobs/s that no application spends."""
    t_begin = time.perf_counter()
    for i in range(n):
        d = t_begin + i / rate - time.perf_counter()
        if d > 0:
            await asyncio.sleep(max(d, 0.001))
        yield i


def latency(args: argparse.Namespace) -> None:
    from tq.producer import Producer, SyncProducer

    settings = settings_for(args)
    flushdb()
    n, rate, idem = args.n, args.rate, idem_on(args)
    out = tmp_out()
    p = spawn_worker(args, n, out)
    wait_ready(p)
    time.sleep(1.0)  # let the worker settle into its idle loop
    # What a latency-sensitive producer does (docs/engine.md, "Latency"): its start-up objects are
    # moved out of the collector's reach, so a full collection no longer walks them all (20-40 ms
    # here, which put this process's p99 at 10 000 jobs/s near 30 ms)
    gc.freeze()
    cpu0 = cpu_s()  # the producing process's CPU from here: its start-up objects, warm-up, pacing
    steal0 = host_steal()

    if use_async(args) and open_loop(args):
        api = "Producer.enqueue (asyncio), each job by its own task at its time (open loop)"

        async def produce() -> float:
            producer = Producer(settings=settings)
            calls: set[asyncio.Task[str]] = set()
            try:
                await _warm_async(producer)
                t = time.perf_counter()
                async for _i in apaced(n, rate):
                    call = asyncio.create_task(producer.enqueue(QUEUE, JOB, {"t0": time.time()}))
                    calls.add(call)
                    call.add_done_callback(calls.discard)
                await asyncio.gather(*calls)
                return time.perf_counter() - t
            finally:
                await producer.close()

        prod_s = run_loop(settings, produce())
    elif use_async(args):
        api = "Producer.enqueue (asyncio), one job at a time"

        async def produce() -> float:
            producer = Producer(settings=settings)
            try:
                await _warm_async(producer)
                t = time.perf_counter()
                async for i in apaced(n, rate):
                    await producer.enqueue(
                        QUEUE, JOB, {"t0": time.time()}, idempotency_key=f"k{i}" if idem else None
                    )
                return time.perf_counter() - t
            finally:
                await producer.close()

        prod_s = run_loop(settings, produce())
    else:
        api = "SyncProducer.enqueue, one job at a time"
        producer = SyncProducer(settings=settings)
        _warm_sync(producer)
        t = time.perf_counter()
        for i in paced(n, rate):
            producer.enqueue(QUEUE, JOB, {"t0": time.time()}, idempotency_key=f"k{i}" if idem else None)
        prod_s = time.perf_counter() - t
        producer.close()
    finish(p)
    steal = steal_pct(steal0)
    res = base_result(args, "latency", api)
    producer_cpu_us = round((cpu_s() - cpu0) * 1e6 / n, 2)
    res.update(
        {
            "rate": rate,
            "achieved_rate": round(n / prod_s, 1),
            "producer_cpu_us_per_job": producer_cpu_us,
            "host_steal_pct": steal,
        }
    )
    d = load_rows(out)
    if d is None:
        res["error"] = f"worker did not finish {n} jobs within {args.timeout}s (rc={p.returncode})"
        emit(res)
        return
    rows = d["rows"]
    start = sorted((r[1] - r[0]) * 1000.0 for r in rows)
    done = sorted((r[2] - r[0]) * 1000.0 for r in rows)
    res.update(
        {
            "lat_done_p50_ms": round(pct(done, 50), 3),
            "lat_done_p99_ms": round(pct(done, 99), 3),
            "lat_done_max_ms": round(done[-1], 3),
            "lat_start_p50_ms": round(pct(start, 50), 3),
            "lat_start_p99_ms": round(pct(start, 99), 3),
            "worker_cpu_us_per_job": round(d["cpu_us"], 2),
        }
    )
    emit(res)


# ---- single: sequential single enqueues and round trips per job --------------------------------
_SCRIPT_CALLS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}


def _commandstats(r: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in r.info("commandstats").items()}


COUNTED = 2000  # single mode: enqueues sent again with the request counter on, after the timed ones


class _SendCounter:
    """Counts requests the producer's connections send (a pipeline is one request): what goes
    through redis-py's connections, the held connections' own requests (``tq.connection.request``)
    and ``SyncProducer``'s own round trips."""

    def __init__(self) -> None:
        self.count = 0
        self._patched: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        import redis.asyncio.connection as aconn
        import redis.connection as sconn
        import tq.connection
        from tq.producer import SyncProducer

        for cls, method in (
            (sconn.AbstractConnection, "send_packed_command"),
            (aconn.AbstractConnection, "send_packed_command"),
            (tq.connection, "request"),
            (SyncProducer, "_round_trip"),
        ):
            orig = getattr(cls, method, None)
            if orig is None:  # an older tq (an A/B run) sends through redis-py
                continue
            self._patched.append((cls, method, orig))
            counter = self
            if asyncio.iscoroutinefunction(orig):

                async def wrapped_async(
                    conn: Any, *a: Any, _orig: Any = orig, _counter: _SendCounter = counter, **kw: Any
                ) -> Any:
                    _counter.count += 1
                    return await _orig(conn, *a, **kw)

                setattr(cls, method, wrapped_async)
            else:

                def wrapped(
                    conn: Any, *a: Any, _orig: Any = orig, _counter: _SendCounter = counter, **kw: Any
                ) -> Any:
                    _counter.count += 1
                    return _orig(conn, *a, **kw)

                setattr(cls, method, wrapped)

    def uninstall(self) -> None:
        for cls, method, orig in self._patched:
            setattr(cls, method, orig)
        self._patched.clear()


SLICES = 10  # the sync single enqueue alternates with the C client this many times


class _CClient:
    """redis-benchmark's single client (``-c 1``) sending the enqueue script call that ``producer``
    sends for one job, each with its own id: the ceiling of any client for a single enqueue.
    ``run`` sends a slice of them and returns its time, by redis-benchmark's own rate; ``seconds``
    is the total."""

    def __init__(self, producer: Any) -> None:
        enc = producer._enc
        prepared = enc.prepare(get_queue(QUEUE), JOB, {"t0": time.time()})
        *head, job = enc.args(get_queue(QUEUE), [prepared])
        job_id = job.split("\x1f", 1)[0]
        keys_ = enc.keys(QUEUE)
        args = [*head, job.replace(job_id, "id__rand_int__", 1)]
        self.command = [str(word) for word in evalsha_args(producer._scripts.enqueue, keys_, args)]
        self.seconds = 0.0

    def run(self, n: int) -> float:
        out = subprocess.run(
            ["redis-benchmark", "-u", REDIS_URL, "-c", "1", "-n", str(n), "-r", "100000000", "--csv",
             *self.command],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        rps = float(out.stdout.strip().splitlines()[-1].rstrip('"').split('","')[-7])
        self.seconds += n / rps
        return n / rps


def single(args: argparse.Namespace) -> None:
    """Times ``n`` sequential enqueues, with the server's command counts around them; then counts
    the requests the client sends for ``COUNTED`` more, in a pass of their own (the counter wraps
    the send path: it would add its own cost to the timed loop)."""
    from tq.producer import Producer, SyncProducer

    settings = settings_for(args)
    flushdb()
    n, idem = args.n, idem_on(args)
    if trace_on(args):
        start_tracing()
    stats_client = redis.Redis.from_url(REDIS_URL)
    counter = _SendCounter()
    counted = min(n, COUNTED)

    def key(i: int) -> str | None:
        return f"k{i}" if idem else None

    delta: dict[str, int] = {}  # the server's command counts during the timed enqueues
    c_client: _CClient | None = None
    ratios: list[float] = []  # per slice of the sync run: tq's rate / the C client's just before
    if use_async(args):
        api = "Producer.enqueue (asyncio), sequential"

        async def loop() -> tuple[float, dict[str, int], dict[str, int], int]:
            producer = Producer(settings=settings)
            try:
                await _warm_async(producer)
                await producer.enqueue(QUEUE, JOB, {"t0": time.time()})  # steady state: measure from job 2
                before = _commandstats(stats_client)
                t = time.perf_counter()
                for i in range(n):
                    await producer.enqueue(QUEUE, JOB, {"t0": time.time()}, idempotency_key=key(i))
                dt = time.perf_counter() - t
                after = _commandstats(stats_client)
                counter.install()
                for i in range(n, n + counted):
                    await producer.enqueue(QUEUE, JOB, {"t0": time.time()}, idempotency_key=key(i))
                counter.uninstall()
                return dt, before, after, counter.count
            finally:
                await producer.close()

        enq_s, before, after, sends = run_loop(settings, loop())
        delta = {k: v - before.get(k, 0) for k, v in after.items()}
    else:
        api = "SyncProducer.enqueue, sequential"
        producer = SyncProducer(settings=settings)
        _warm_sync(producer)
        producer.enqueue(QUEUE, JOB, {"t0": time.time()})  # steady state: measure from job 2
        if not idem and shutil.which("redis-benchmark"):
            c_client = _CClient(producer)
        enq_s, i = 0.0, 0
        for part in range(SLICES):  # each slice right after the C client's: the same moment's machine
            end = n * (part + 1) // SLICES
            c_s = c_client.run(end - i) if c_client is not None else 0.0
            before = _commandstats(stats_client)
            t = time.perf_counter()
            while i < end:
                producer.enqueue(QUEUE, JOB, {"t0": time.time()}, idempotency_key=key(i))
                i += 1
            slice_s = time.perf_counter() - t
            enq_s += slice_s
            if c_s:
                ratios.append(round(c_s / slice_s, 3))
            for k, v in _commandstats(stats_client).items():
                delta[k] = delta.get(k, 0) + v - before.get(k, 0)
        counter.install()
        for i in range(n, n + counted):
            producer.enqueue(QUEUE, JOB, {"t0": time.time()}, idempotency_key=key(i))
        counter.uninstall()
        sends = counter.count
        producer.close()
    stats_client.close()

    delta = {k: v for k, v in delta.items() if v > 0}
    delta.pop("info", None)  # the measuring client's own INFO calls
    nested = called_commands("enqueue")
    top = {k: v for k, v in delta.items() if k not in nested}  # sent by a client
    inner = {k: v for k, v in delta.items() if k in nested}  # issued by the script
    res = base_result(args, "single", api)
    if c_client is not None:
        res["c_client_rate"] = round(n / c_client.seconds, 1)
        res["slice_ratios"] = ratios
    res.update(
        {
            "concurrency": 1,
            "enqueue_s": round(enq_s, 4),
            "enqueue_rate": round(n / enq_s, 1),
            "round_trips_per_job": round(sum(top.values()) / n, 4),
            "script_calls_per_job": round(sum(v for k, v in top.items() if k in _SCRIPT_CALLS) / n, 4),
            "client_requests_per_job": round(sends / counted, 4),
            "client_commands": {k: round(v / n, 4) for k, v in sorted(top.items())},
            "in_script_commands_per_job": {k: round(v / n, 4) for k, v in sorted(inner.items())},
        }
    )
    emit(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["throughput", "latency", "single", "memory", "concurrent", "worker"])
    ap.add_argument("--n", type=int, default=None, help="jobs (20000; latency 2000)")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--rate", type=float, default=200.0, help="latency mode: jobs/s")
    ap.add_argument("--chunk", type=int, default=1000, help="bulk enqueue chunk size")
    ap.add_argument("--timeout", type=float, default=300.0, help="max seconds for the worker")
    ap.add_argument("--variant", default=None, help="sync|async (latency, single), +open, +idem, +metrics")
    ap.add_argument("--out", default="")
    ap.add_argument("--payload", choices=sorted(MEM_JOBS), default="small", help="memory mode: the payload")
    args = ap.parse_args()
    if args.n is None:
        args.n = 2000 if args.mode == "latency" else 20000
    if args.variant is None:
        args.variant = "sync" if args.mode in ("latency", "single") else ""
    register(args.concurrency)
    if args.mode == "worker":
        run_loop(settings_for(args), worker_main(args))
    else:
        modes = {"throughput": throughput, "latency": latency, "single": single, "memory": memory}
        modes["concurrent"] = concurrent
        modes[args.mode](args)


if __name__ == "__main__":
    main()
