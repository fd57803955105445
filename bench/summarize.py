"""Markdown summary of a bench/run.sh results.jsonl: medians over repetitions, the figures, and tq's
targets as ratios against BullMQ and redis-benchmark from the same run.

usage: python bench/summarize.py RESULTS.jsonl        (stdlib only)
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any

# the targets
TARGET_PROCESS = 2.5  # tq process_rate / BullMQ process_rate, worker concurrency 50
TARGET_BULK = 2.5  # tq enqueue_many rate / BullMQ addBulk rate, chunks of 1000
TARGET_SINGLE = 0.80  # tq SyncProducer.enqueue rate / redis-benchmark -c 1 running tq's enqueue script
TARGET_P50_MS = 1.0  # tq enqueue->done p50 at the latency rate
TARGET_P99_MS = 2.0
HIGH_RATE = 10000  # jobs/s of the open-loop latency run (Producer, each job by its own task)
TARGET_HIGH_RATE_P99_MS = 3.0
TARGET_OBSERVE_COST = 0.10  # process-rate loss with metrics + stats on, vs the same run without
TARGET_MEMORY = 1.0  # tq Redis bytes per job / BullMQ's (waiting, and retained completed), at most
TARGET_CPU = 0.4  # tq Redis CPU per job / BullMQ's (bulk enqueue + processing), at most
TARGET_CONCURRENT = 3.0  # 100 concurrent callers: tq Producer.enqueue jobs/s / BullMQ queue.add
PING_REF = "PING_MBULK"  # the RESP encoding real clients (and EVALSHA) use; PING_INLINE shown beside


def med(xs: list[float | None]) -> float | None:
    ys = [x for x in xs if x is not None]
    return statistics.median(ys) if ys else None


def rng(xs: list[float | None], d: int = 0) -> str:
    ys = [x for x in xs if x is not None]
    if len(ys) < 2:
        return ""
    return f" ({min(ys):,.{d}f}-{max(ys):,.{d}f})"


def f(x: float | None, d: int = 0) -> str:
    return "-" if x is None else f"{x:,.{d}f}"


def tokens(variant: str | None) -> set[str]:
    return {t for t in (variant or "").replace(",", "+").split("+") if t}


def load(path: str) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip().startswith("{")]


def main(path: str) -> None:
    rows = load(path)
    errors = [r for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    reps = sorted({r.get("rep") for r in rows if r.get("rep") is not None}, key=str)
    rates = [r.get("rate") for r in rows if r.get("mode") == "latency"]
    main_rate = max(set(rates), key=rates.count) if rates else None

    out: list[str] = []
    p = out.append
    p(f"## tq beside BullMQ: medians over {len(reps)} repetition(s), one run, one scratch Redis\n")
    p("Ranges in parentheses are min-max over repetitions. No-op jobs, one worker process.\n")

    # ---- redis-benchmark -------------------------------------------------------------------------
    ping: dict[str, list[dict[str, Any]]] = defaultdict(list)
    base: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("system") != "redis-benchmark":
            continue
        if r.get("mode") == "ping-c1":
            ping[r.get("test", "PING")].append(r)
        elif r.get("mode") == "redis":
            base[(r["test"], int(r["pipeline"]))].append(r)
    if ping or base:
        p("### redis-benchmark (the physical limits)\n")
        p("| command | clients | -P | ops/s | p50 ms | p99 ms | reps |")
        p("|---|---|---|---|---|---|---|")
        for test, rs in sorted(ping.items()):
            rps = [x["rps"] for x in rs]
            p(
                f"| {test} | 1 | 1 | {f(med(rps))}{rng(rps)} | {f(med([x.get('p50_ms') for x in rs]), 3)} | "
                f"{f(med([x.get('p99_ms') for x in rs]), 3)} | {len(rs)} |"
            )
        for (test, pl), rs in sorted(base.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            rps = [x["rps"] for x in rs]
            p(
                f"| {test} | 50 | {pl} | {f(med(rps))}{rng(rps)} | {f(med([x['p50_ms'] for x in rs]), 3)} | "
                f"{f(med([x['p99_ms'] for x in rs]), 3)} | {len(rs)} |"
            )
        p("")

    # ---- job queues: throughput and latency --------------------------------------------------------
    def qkey(r: dict[str, Any]) -> tuple[str, Any, str, str]:
        v = tokens(r.get("variant"))
        if r.get("mode") == "latency":
            v.discard("sync")  # the default single-job producer: same row as the throughput run
        tag = "" if r.get("mode") != "latency" or r.get("rate") in (None, main_rate) else f"@{r['rate']:g}/s"
        return (r["system"], r.get("concurrency"), "+".join(sorted(v)), tag)

    tp: dict[tuple[str, Any, str, str], list[dict[str, Any]]] = defaultdict(list)
    lat: dict[tuple[str, Any, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("mode") == "throughput":
            tp[qkey(r)].append(r)
        elif r.get("mode") == "latency":
            lat[qkey(r)].append(r)
    if tp or lat:
        p(f"### Job queues (latency at {f(main_rate)} jobs/s unless noted)\n")
        p(
            "| system | version | config | N | enqueue jobs/s | process jobs/s (first start -> last done) | "
            "process jobs/s (incl. worker start-up) | worker start-up s | "
            "e2e p50 / p99 / max ms (enqueue->done) | "
            "pickup p50 / p99 ms (enqueue->handler) | worker CPU µs per job (tp / latency) | "
            "producer CPU µs per job (latency) | reps tp/lat |"
        )
        p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k in sorted(set(tp) | set(lat), key=lambda k: (k[0] != "tq", k[0], k[2], k[1] or 0, k[3])):
            t, la = tp.get(k, []), lat.get(k, [])
            any_r = (t or la)[0]
            cfg = any_r.get("worker", "")
            apis = [x["enqueue_api"] for x in (t[:1] + la[:1]) if x.get("enqueue_api")]
            if apis:
                cfg += "; enqueue: " + " / ".join(dict.fromkeys(apis))
            if k[2]:
                cfg += f"; variant {k[2]}"
            if k[3]:
                cfg += f"; latency at {k[3][1:]}"
            er = [x["enqueue_rate"] for x in t]
            pr = [x["process_rate"] for x in t]
            pw = [x.get("process_rate_from_worker_start") for x in t]
            ws = [x.get("worker_startup_s") for x in t]
            if la:
                d50 = [x["lat_done_p50_ms"] for x in la]
                d99 = [x["lat_done_p99_ms"] for x in la]
                dmax = [x.get("lat_done_max_ms") for x in la]
                latcols = (
                    f"{f(med(d50), 2)} / {f(med(d99), 2)} / {f(med(dmax), 1)} | "
                    f"{f(med([x['lat_start_p50_ms'] for x in la]), 2)} / "
                    f"{f(med([x['lat_start_p99_ms'] for x in la]), 2)}"
                )
            else:
                latcols = "- | -"
            cpu_tp = med([x.get("worker_cpu_us_per_job") for x in t])  # tq's worker process only
            cpu_lat = med([x.get("worker_cpu_us_per_job") for x in la])
            cpu_prod = med([x.get("producer_cpu_us_per_job") for x in la])
            p(
                f"| {k[0]} | {any_r.get('version', '')} | {cfg} | {t[0]['n'] if t else '-'} | "
                f"{f(med(er))}{rng(er)} | {f(med(pr))}{rng(pr)} | {f(med(pw))} | {f(med(ws), 3)} | "
                f"{latcols} | {f(cpu_tp, 1)} / {f(cpu_lat, 1)} | {f(cpu_prod, 1)} | {len(t)}/{len(la)} |"
            )
        p("")

    # ---- scale runs (bench/scale_bench.py) --------------------------------------------------------
    scale = [r for r in rows if r.get("bench") == "scale"]
    drains = [r for r in scale if r.get("mode") in ("processes", "cluster")]
    if drains:
        p("### tq scale-out (jobs paused while enqueued; resume -> last completion)\n")
        p("| run | worker processes | Redis | queues | N | process jobs/s | vs 1 process |")
        p("|---|---|---|---|---|---|---|")
        one = next((r["process_rate"] for r in drains if r["mode"] == "processes" and r["procs"] == 1), None)
        for r in sorted(drains, key=lambda r: (r["mode"] != "processes", r.get("masters", 0), r["procs"])):
            where = "one server" if r["mode"] == "processes" else f"cluster, {r['masters']} master(s)"
            rel = f"{r['process_rate'] / one:.2f}x" if one and r["mode"] == "processes" else "-"
            rate = f(r["process_rate"])
            p(f"| {r['mode']} | {r['procs']} | {where} | {r['queues']} | {r['n']} | {rate} | {rel} |")
        p("")
    for r in scale:
        if r.get("mode") == "memory":
            p(
                f"Family process (`tq serve`, metrics on) RSS: idle {r['idle_rss_mib']} MiB, "
                f"peak while draining {r['n']:,} jobs {r['busy_peak_rss_mib']} MiB.\n"
            )
        elif r.get("mode") == "backlog":
            per_job, kept = r["redis_bytes_per_waiting_job"], r["redis_bytes_per_completed_job_after_drain"]
            p(
                f"Backlog of {r['n']:,} waiting jobs: {per_job:,.0f} bytes of Redis memory per waiting job "
                f"(enqueued at {f(r['enqueue_rate'])} jobs/s); drained by {r['procs']} worker processes in "
                f"{r['drain_s']} s ({f(r['drain_rate'])} jobs/s); {kept:,.0f} bytes per job remain after "
                "(retained records, counters)"
                + (
                    f", and {r['redis_bytes_per_unwritten_audit_record']:,.0f} bytes per audit record "
                    "waiting for an AuditWriter (none runs here).\n"
                    if "redis_bytes_per_unwritten_audit_record" in r
                    else ", audit stream).\n"
                )
            )

    # ---- the rate limit across worker processes (bench/ratelimit_bench.py) ---------------------------
    limited = [r for r in rows if r.get("bench") == "ratelimit"]
    if limited:
        p("### tq rate limit across worker processes (one QueueConfig rateLimit, a backlog)\n")
        p(
            "| worker processes | limit | measured s | declared jobs/s | achieved jobs/s | "
            "achieved / declared | busiest window (0.99 x per) | starts per worker |"
        )
        p("|---|---|---|---|---|---|---|---|")
        for r in limited:
            spread = ", ".join(map(str, r["started_per_worker"]))
            p(
                f"| {r['procs']} | {r['limit_jobs']} per {r['limit_per_s']:g} s | {r['seconds']:g} | "
                f"{f(r['declared_rate'], 1)} | {f(r['achieved_rate'], 1)} | {r['accuracy']:.3f} | "
                f"{r['busiest_window']} (limit {r['limit_jobs']}) | {spread} |"
            )
        p("")

    # ---- Redis memory and CPU per job ---------------------------------------------------------------
    mem: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    cpu: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("mode") == "memory":
            if r.get("bytes_per_dead_letter") is not None:  # tq's dead job in all: summary + letter
                r["bytes_per_dead_in_all"] = r["bytes_per_dead_job"] + r["bytes_per_dead_letter"]
            mem[(r["system"], r.get("payload", "small"))].append(r)
        elif r.get("redis_cpu_us_per_job") is not None and (r["system"] == "bullmq" or not r.get("variant")):
            cpu[r["system"]].append(r)
    if mem or cpu:
        p("### Redis memory and CPU per job (the same scratch Redis, one after the other)\n")
        p(
            "| system | payload | N | bytes / waiting job | bytes / retained completed job | "
            "bytes / retained dead (tq) or failed (BullMQ) job | bytes / dead letter (tq) | reps |"
        )
        p("|---|---|---|---|---|---|---|---|")
        for (system, payload), rs in sorted(mem.items()):
            w = [x["bytes_per_waiting_job"] for x in rs]
            c = [x["bytes_per_completed_job"] for x in rs]
            d = [x.get("bytes_per_dead_job", x.get("bytes_per_failed_job")) for x in rs]
            dl = [x.get("bytes_per_dead_letter") for x in rs]
            label = '{"n": i}' if payload == "small" else "~300 bytes of JSON"
            p(
                f"| {system} | {label} | {rs[0]['n']} | {f(med(w))}{rng(w)} | "
                f"{f(med(c))}{rng(c)} | {f(med(d))}{rng(d)} | {f(med(dl))}{rng(dl)} | {len(rs)} |"
            )
        for system, rs in sorted(cpu.items()):
            us = [x["redis_cpu_us_per_job"] for x in rs]
            p(
                f"\nRedis CPU per job, {system} (bulk enqueue + processing of {rs[0]['n']} no-op jobs, "
                f"INFO cpu sys+user): {f(med(us), 1)} µs{rng(us, 1)}."
            )
        p("")

    # ---- tq single enqueues --------------------------------------------------------------------------
    single: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("system") == "tq" and r.get("mode") == "single":
            single[r.get("variant") or "sync"].append(r)
    if single:
        p("### tq single enqueues (one producer, sequential, no worker running)\n")
        p(
            "| variant | API | N | enqueue jobs/s | Redis round trips / job (commandstats) | "
            "requests sent / job (client) | commands inside the script / job | reps |"
        )
        p("|---|---|---|---|---|---|---|---|")
        for v, rs in sorted(single.items()):
            er = [x["enqueue_rate"] for x in rs]
            rt = [x["round_trips_per_job"] for x in rs]
            cs = [x.get("client_requests_per_job") for x in rs]
            inner = rs[-1].get("in_script_commands_per_job", {})
            client_cmds = rs[-1].get("client_commands", {})
            p(
                f"| {v} | {rs[0].get('enqueue_api', '')} | {rs[0]['n']} | {f(med(er))}{rng(er)} | "
                f"{f(max(rt), 4)} ({', '.join(f'{c} {n:g}' for c, n in client_cmds.items())}) | "
                f"{f(max(x for x in cs if x is not None), 4) if any(x is not None for x in cs) else '-'} | "
                f"{', '.join(f'{c} {n:g}' for c, n in inner.items())} | {len(rs)} |"
            )
        p("")

    # ---- targets --------------------------------------------------------------------------------------
    def by_rep(rs: list[dict[str, Any]], field: str) -> dict[Any, float]:
        """Per repetition, the mean of its runs (one, except the metrics + stats runs: A B B A)."""
        runs: dict[Any, list[float]] = {}
        for x in rs:
            if x.get(field) is not None:
                runs.setdefault(x.get("rep"), []).append(x[field])
        return {rep: statistics.fmean(v) for rep, v in runs.items()}

    def ratio_line(
        name: str,
        num: list[dict[str, Any]],
        den: list[dict[str, Any]],
        nf: str,
        df: str,
        target: float,
        what: str = "",
        at_most: bool = False,  # the goal is a ceiling (memory, CPU), else a floor (rates)
    ) -> None:
        goal = f"{'≤' if at_most else '≥'} {target:g}x"
        mn, md = med([x.get(nf) for x in num]), med([x.get(df) for x in den])
        if mn is None or md is None or md == 0:
            missing = "tq" if mn is None else ("BullMQ" if nf == df else "redis-benchmark")
            p(f"| {name} | {goal} | n/a ({missing} missing in this run) | - | n/a |")
            return
        r = mn / md
        a, b = by_rep(num, nf), by_rep(den, df)
        paired = [a[k] / b[k] for k in a if b.get(k)]
        per_rep = f"{min(paired):.2f}-{max(paired):.2f}" if len(paired) > 1 else "-"
        values = f"{f(mn, 1)} / {f(md, 1)}" if at_most else f"{f(mn)} / {f(md)} {what}"
        passed = r <= target if at_most else r >= target
        p(f"| {name} | {goal} | **{r:.2f}x** ({values}) | {per_rep} | {'PASS' if passed else 'FAIL'} |")

    def slice_range(rs: list[dict[str, Any]]) -> str:
        ratios = [x for r in rs for x in r.get("slice_ratios", [])]
        return f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"

    tq_tp = [r for r in tp.get(("tq", 50, "", ""), [])]
    bq_tp = [r for r in tp.get(("bullmq", 50, "", ""), [])]
    tq_lat = lat.get(("tq", 50, "", ""), [])
    tq_single_sync = single.get("sync", [])
    p("### Targets (ratios of medians from this run; per-rep: the same ratio within each repetition)\n")
    p("| target | goal | this run | per-rep range | verdict |")
    p("|---|---|---|---|---|")
    ratio_line(
        "process jobs/s: tq / BullMQ (one worker, concurrency 50)",
        tq_tp,
        bq_tp,
        "process_rate",
        "process_rate",
        TARGET_PROCESS,
        "jobs/s",
    )
    ratio_line(
        "bulk enqueue jobs/s: tq enqueue_many / BullMQ addBulk (chunks of 1000)",
        tq_tp,
        bq_tp,
        "enqueue_rate",
        "enqueue_rate",
        TARGET_BULK,
        "jobs/s",
    )
    ratio_line(
        "single enqueue: tq SyncProducer.enqueue jobs/s / redis-benchmark -c 1 running tq's enqueue script "
        f"(alternating slices; per slice {slice_range(tq_single_sync)})",
        tq_single_sync,
        tq_single_sync,
        "enqueue_rate",
        "c_client_rate",
        TARGET_SINGLE,
        "/s",
    )
    observed = tp.get(("tq", 50, "long+metrics+stats", ""), [])
    baseline = tp.get(("tq", 50, "long", ""), [])
    name = "metrics + stats cost (scrape + stats every 1 s): 1 - tq process jobs/s with them / without"
    m_on, m_off = med([x["process_rate"] for x in observed]), med([x["process_rate"] for x in baseline])
    if m_on is None or not m_off:
        p(f"| {name} | < {TARGET_OBSERVE_COST:.0%} | n/a (no metrics+stats run) | - | n/a |")
    else:
        on, off = by_rep(observed, "process_rate"), by_rep(baseline, "process_rate")
        paired = [1 - on[k] / off[k] for k in on if off.get(k)]
        per_rep = f"{min(paired):.1%} to {max(paired):.1%}" if len(paired) > 1 else "-"
        cost = 1 - m_on / m_off
        p(
            f"| {name} | < {TARGET_OBSERVE_COST:.0%} | **{cost:.1%}** ({f(m_on)} / {f(m_off)} jobs/s) | "
            f"{per_rep} | {'PASS' if cost < TARGET_OBSERVE_COST else 'FAIL'} |"
        )

    for payload, label in (("small", '{"n": i}'), ("300", "a ~300-byte payload")):
        tq_mem, bq_mem = mem.get(("tq", payload), []), mem.get(("bullmq", payload), [])
        if tq_mem or bq_mem:
            for nf, df, what in (
                ("bytes_per_waiting_job", "bytes_per_waiting_job", "waiting job: tq / BullMQ"),
                ("bytes_per_completed_job", "bytes_per_completed_job", "retained completed job: tq / BullMQ"),
                # the bound for dead jobs: a retained record costs no more than BullMQ's
                # completed job; the dead letter (payload, stack) is what BullMQ's failed job holds
                ("bytes_per_dead_job", "bytes_per_completed_job", "retained dead job: tq / BullMQ completed"),
                ("bytes_per_dead_in_all", "bytes_per_failed_job", "dead job and letter: tq / BullMQ failed"),
            ):
                ratio_line(
                    f"Redis bytes per {what.replace(':', f', {label}:')}",
                    tq_mem,
                    bq_mem,
                    nf,
                    df,
                    TARGET_MEMORY,
                    at_most=True,
                )
    ratio_line(
        "Redis CPU per job (bulk enqueue + processing): tq / BullMQ",
        cpu.get("tq", []),
        cpu.get("bullmq", []),
        "redis_cpu_us_per_job",
        "redis_cpu_us_per_job",
        TARGET_CPU,
        at_most=True,
    )
    conc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("mode") == "concurrent":
            conc[r["system"]].append(r)
    ratio_line(
        "concurrent single enqueues (100 callers, one job at a time each): tq Producer.enqueue / BullMQ add",
        conc.get("tq", []),
        conc.get("bullmq", []),
        "enqueue_rate",
        "enqueue_rate",
        TARGET_CONCURRENT,
        "jobs/s",
    )
    all_single = [x for rs in single.values() for x in rs]
    if all_single:
        worst = max(x["round_trips_per_job"] for x in all_single)
        # the client's own count must agree in every run: a request it missed would read as fewer
        clients = [c for x in all_single if (c := x.get("client_requests_per_job")) is not None]
        ok = all(x["round_trips_per_job"] == 1.0 for x in all_single) and all(c == 1.0 for c in clients)
        counted = f"{min(clients):g}-{max(clients):g}" if clients else "n/a"
        p(
            f"| Redis round trips per single enqueue (sync and async, every rep) | = 1 | **{worst:g}** "
            f"(client-side count: {counted}) | - | {'PASS' if ok else 'FAIL'} |"
        )
    else:
        p("| Redis round trips per single enqueue | = 1 | n/a (no single runs) | - | n/a |")
    tq_high = lat.get(("tq", 50, "async+open", f"@{HIGH_RATE:g}/s"), [])
    achieved = [x.get("achieved_rate") for x in tq_high]
    bq_lat = lat.get(("bullmq", 50, "", ""), [])
    bq_high = lat.get(("bullmq", 50, "open", f"@{HIGH_RATE:g}/s"), [])
    lat_targets = (  # label, tq's runs, field, goal, where, BullMQ's runs of the same protocol
        ("p50", tq_lat, "lat_done_p50_ms", TARGET_P50_MS, f"{f(main_rate)} jobs/s (SyncProducer)", bq_lat),
        ("p99", tq_lat, "lat_done_p99_ms", TARGET_P99_MS, f"{f(main_rate)} jobs/s (SyncProducer)", bq_lat),
        (
            "p99",
            tq_high,
            "lat_done_p99_ms",
            TARGET_HIGH_RATE_P99_MS,
            f"{f(HIGH_RATE)} jobs/s (Producer, open loop; achieved {f(med(achieved))}/s)",
            bq_high,
        ),
    )
    for label, lat_rows, field, goal, where, bq_rows in lat_targets:
        vals = [x[field] for x in lat_rows]
        m = med(vals)
        name = f"tq latency enqueue->done {label} at {where}"
        if bq_rows:  # beside it, BullMQ's figure from the same run
            bq_rate = med([x.get("achieved_rate") for x in bq_rows])
            name += f"; BullMQ {f(med([x[field] for x in bq_rows]), 2)} ms (achieved {f(bq_rate)}/s)"
        steal = [x.get("host_steal_pct") for x in lat_rows]
        if any(v is not None for v in steal):  # a virtual machine's CPUs taken by its host meanwhile
            name += f"; host steal {f(med(steal), 2)}%{rng(steal, 2)}"
        if m is None:
            p(f"| {name} | ≤ {goal:g} ms | n/a | - | n/a |")
        else:
            p(
                f"| {name} | ≤ {goal:g} ms | **{m:.3f} ms** | {rng(vals, 3).strip(' ()') or '-'} | "
                f"{'PASS' if m <= goal else 'FAIL'} |"
            )
    ms = med([x["enqueue_rate"] for x in tq_single_sync])
    pings = [(name, med([x["rps"] for x in ping.get(name, [])])) for name in (PING_REF, "PING_INLINE")]
    if ms and all(rps for _name, rps in pings):
        against = ", ".join(f"{ms / rps:.2f}x {name} ({f(rps)} ops/s)" for name, rps in pings)
        p(f"\n(For information: the single enqueue against one round trip of PING: {against}.)")
    if not bq_tp:
        p("\nBullMQ did not run in this results file: its ratios are n/a (no cross-run comparison).")

    if errors:
        p("\n### Errors / timeouts\n")
        for e in errors:
            p(f"- `{json.dumps(e)}`")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
