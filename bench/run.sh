#!/usr/bin/env bash
# tq beside BullMQ in one run, on a private scratch Redis, following the peer harness protocol
# (PEERS_BENCH_DIR). REPS interleaved repetitions, then a median table with the targets.
#
#   bench/run.sh                     # or: make bench
#   REPS=1 N=5000 bench/run.sh       # quick
#
# Env: REPS (3), N (20000 jobs per throughput / single run), LAT_N (2000), RATE (200 jobs/s),
#      PEERS_BENCH_DIR (<repo>/../shared/peers-bench), BENCH_OUT (bench/results/<UTC stamp>),
#      PEERBENCH_WORK (/tmp/peerbench: where BullMQ's node_modules are installed), PYTHON,
#      ANALYTICS_EVENTS (1000000 raw events for the analytics roll-up, run once; 0 skips it),
#      SCALE (1: the scale runs of bench/scale_bench.py, once; 0 skips them), SCALE_N (100000),
#      MEM_N (100000 waiting jobs for the Redis memory per job, tq and BullMQ; 0 skips it),
#      BACKLOG_N (1000000 waiting jobs), OBSERVE_N (150000: the runs that price metrics + stats),
#      RATELIMIT (1: the rate-limit accuracy run of bench/ratelimit_bench.py, once; 0 skips it),
#      RATELIMIT_S (60 s measured, 4 worker processes, 100 jobs per 1 s).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
PEERS_BENCH_DIR=${PEERS_BENCH_DIR:-$REPO/../shared/peers-bench}
REPS=${REPS:-3}
N=${N:-20000}
LAT_N=${LAT_N:-2000}
RATE=${RATE:-200}
ANALYTICS_EVENTS=${ANALYTICS_EVENTS:-1000000}
SCALE=${SCALE:-1}
OBSERVE_N=${OBSERVE_N:-150000}
SCALE_N=${SCALE_N:-100000}
BACKLOG_N=${BACKLOG_N:-1000000}
RATELIMIT=${RATELIMIT:-1}
RATELIMIT_S=${RATELIMIT_S:-60}
MEM_N=${MEM_N:-100000}
WORK=${PEERBENCH_WORK:-/tmp/peerbench}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"
else PY=python3; fi
export PYTHONDONTWRITEBYTECODE=1

for tool in redis-server redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y redis-server redis-tools)" >&2; exit 1; }
done

# ---- output
RESULTS=${BENCH_OUT:-$REPO/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
RES="$RESULTS/results.jsonl"
LOG="$RESULTS/stderr.log"
: > "$RES"
: > "$LOG"

# ---- a private scratch Redis on a free port (its DB is flushed before every run)
REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tq-bench-redis.XXXXXX")
REDIS_PID=""
cleanup() {
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$REDIS_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$REDIS_DIR" \
  --logfile "$REDIS_DIR/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$PORT" ping >/dev/null || { echo "scratch redis-server did not start" >&2; exit 1; }
export PEERBENCH_REDIS_URL="redis://127.0.0.1:$PORT/0"

# ---- BullMQ: needs node, npm and the peers harness; node_modules are reused when present
BULLMQ=0
BULLMQ_NOTE=""
if [ ! -f "$PEERS_BENCH_DIR/bullmq/bench.js" ]; then
  BULLMQ_NOTE="peer harness not found (PEERS_BENCH_DIR=$PEERS_BENCH_DIR)"
elif ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  BULLMQ_NOTE="node/npm not on PATH"
else
  if [ ! -d "$WORK/bullmq-node/node_modules/bullmq" ]; then
    echo "installing BullMQ into $WORK/bullmq-node" >&2
    mkdir -p "$WORK/bullmq-node"
    cp "$PEERS_BENCH_DIR/bullmq/package.json" "$WORK/bullmq-node/"
    (cd "$WORK/bullmq-node" && npm install --no-audit --no-fund --silent) >>"$LOG" 2>&1 || true
  fi
  if [ -d "$WORK/bullmq-node/node_modules/bullmq" ]; then
    BULLMQ=1
    export NODE_PATH="$WORK/bullmq-node/node_modules"
  else
    BULLMQ_NOTE="npm install of $PEERS_BENCH_DIR/bullmq/package.json failed (see $LOG)"
  fi
fi
if [ "$BULLMQ" = 0 ]; then
  echo "NOTE: BullMQ is not run ($BULLMQ_NOTE): tq alone, the BullMQ ratios are n/a" >&2
fi
BASELINE=0
[ -f "$PEERS_BENCH_DIR/redis_baseline.py" ] && BASELINE=1

{
  echo "# host: $(nproc) cores, $(uname -sr)"
  redis-server --version
  command -v node >/dev/null && echo "node $(node --version)"
  "$PY" --version
  echo "# scratch redis: 127.0.0.1:$PORT (--save '' --appendonly no)"
  echo "# REPS=$REPS N=$N LAT_N=$LAT_N RATE=$RATE"
  echo "# bullmq: $([ "$BULLMQ" = 1 ] && echo run || echo "not run: $BULLMQ_NOTE")"
  echo "# redis_baseline.py: $([ "$BASELINE" = 1 ] && echo run || echo "not run")"
  echo "# tq git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(
    [ -n "$(git --no-optional-locks -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] \
      && echo ' + uncommitted changes')"
} > "$RESULTS/env.txt"
echo "results: $RESULTS" >&2

TQ="$HERE/tq_bench.py"
BJS="$PEERS_BENCH_DIR/bullmq/bench.js"

add_rep() {  # stdin: JSON lines -> results.jsonl with "rep"
  "$PY" -c '
import json, sys
rep = int(sys.argv[1])
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line)
        d["rep"] = rep
        print(json.dumps(d))
' "$REP" >> "$RES"
}

run() {  # run <label> <cmd...>: its last stdout line (one JSON object) goes to results.jsonl
  local label=$1 line
  shift
  echo "[rep $REP] $label" | tee -a "$LOG" >&2
  line=$(timeout 900 "$@" 2>>"$LOG" | tail -n 1) || true
  if [ -z "$line" ] || [ "${line:0:1}" != "{" ]; then
    line="{\"system\": \"$label\", \"error\": \"no result (see stderr.log)\"}"
  fi
  echo "$line" | add_rep
  tail -n 1 "$RES" >&2
}

ping_c1() {  # redis-benchmark, one client, PING: one round trip at a time, the physical limit
  echo "[rep $REP] redis-benchmark -c 1 ping" | tee -a "$LOG" >&2
  redis-benchmark -h 127.0.0.1 -p "$PORT" -c 1 -t ping -n 50000 --csv 2>>"$LOG" | "$PY" -c '
import csv, json, sys
for row in csv.DictReader(sys.stdin):
    print(json.dumps({"system": "redis-benchmark", "mode": "ping-c1", "test": row["test"].split()[0],
                      "clients": 1, "n": 50000, "rps": float(row["rps"]),
                      "p50_ms": float(row["p50_latency_ms"]), "p99_ms": float(row["p99_latency_ms"])}))
' | add_rep
  tail -n 2 "$RES" >&2
}

for REP in $(seq "$REPS"); do
  ping_c1
  if [ "$BASELINE" = 1 ]; then
    echo "[rep $REP] redis_baseline.py" | tee -a "$LOG" >&2
    PEERBENCH_REP=$REP "$PY" "$PEERS_BENCH_DIR/redis_baseline.py" 2>>"$LOG" | add_rep || true
  fi
  run "tq tp c=50" "$PY" "$TQ" throughput --n "$N" --concurrency 50 --chunk 1000
  # metrics + stats cost: longer runs (several seconds each), without (A) and with them (B), in the
  # order A B B A: this machine's speed drifts by more than the cost over a repetition, and the
  # mirrored order cancels a drift that is steady over it
  for variant in long long+metrics+stats long+metrics+stats long; do
    run "tq tp c=50 $variant" "$PY" "$TQ" throughput --n "$OBSERVE_N" --concurrency 50 --chunk 1000 --variant "$variant"
  done
  if [ "$BULLMQ" = 1 ]; then
    run "bullmq tp c=50" node "$BJS" throughput --n "$N" --concurrency 50 --chunk 1000
    # Redis CPU per job for BullMQ, the same protocol as tq's throughput run reports it
    run "bullmq cpu c=50" node "$HERE/bullmq_extra.js" cpu --n "$N" --concurrency 50 --chunk 1000
  fi
  # Redis memory per waiting and per retained completed job, both systems, two payloads
  if [ "$MEM_N" -gt 0 ]; then
    for payload in small 300; do
      run "tq memory $payload" "$PY" "$TQ" memory --n "$MEM_N" --payload "$payload"
      if [ "$BULLMQ" = 1 ]; then
        run "bullmq memory $payload" node "$HERE/bullmq_extra.js" memory --n "$MEM_N" --payload "$payload"
      fi
    done
  fi
  run "tq lat sync" "$PY" "$TQ" latency --n "$LAT_N" --rate "$RATE" --concurrency 50 --variant sync
  if [ "$BULLMQ" = 1 ]; then
    run "bullmq lat" node "$BJS" latency --n "$LAT_N" --rate "$RATE" --concurrency 50
  fi
  # enqueue->done at 10 000 jobs/s: more than one sequential caller reaches, so an open loop (each
  # job enqueued by its own task at its time, as a web app's requests; they share round trips)
  run "tq lat open @10000/s" "$PY" "$TQ" latency --n 30000 --rate 10000 --concurrency 50 --variant async+open
  if [ "$BULLMQ" = 1 ]; then  # the same open loop: Queue.add calls started at their times
    run "bullmq lat open @10000/s" node "$HERE/bullmq_extra.js" latency-open --n 30000 --rate 10000 \
      --concurrency 50 --harness "$BJS"
  fi
  # concurrent single enqueues: 100 callers (an ASGI app under load), no worker
  run "tq concurrent c=100" "$PY" "$TQ" concurrent --n "$N" --concurrency 100
  if [ "$BULLMQ" = 1 ]; then
    run "bullmq concurrent c=100" node "$HERE/bullmq_extra.js" concurrent --n "$N" --concurrency 100
  fi
  run "tq single sync" "$PY" "$TQ" single --n "$N" --variant sync
  run "tq single async" "$PY" "$TQ" single --n "$N" --variant async
done

# ---- scale (bench/scale_bench.py), once: worker processes, cluster masters, latency at higher
# rates, the memory of a family process, a 1-million-job backlog
if [ "$SCALE" = 1 ]; then
  SB="$HERE/scale_bench.py"
  for procs in 1 2 4; do
    REP=1 run "tq scale procs=$procs" "$PY" "$SB" processes --procs "$procs" --n "$SCALE_N"
  done
  for masters in 1 3; do
    REP=1 run "tq scale cluster masters=$masters" "$PY" "$SB" cluster --masters "$masters" --procs 2 --n "$SCALE_N"
  done
  REP=1 run "tq lat sync @2000/s" "$PY" "$TQ" latency --n 10000 --rate 2000 --concurrency 50 --variant sync
  REP=1 run "tq scale memory" "$PY" "$SB" memory --n "$SCALE_N"
  REP=1 run "tq scale backlog" "$PY" "$SB" backlog --n "$BACKLOG_N"
fi

# ---- the queue rate limit across 4 worker processes (bench/ratelimit_bench.py), once: achieved vs
# declared rate over RATELIMIT_S seconds
if [ "$RATELIMIT" = 1 ]; then
  REP=1 run "tq ratelimit procs=4" "$PY" "$HERE/ratelimit_bench.py" --procs 4 --jobs 100 --per 1 \
    --seconds "$RATELIMIT_S"
fi

# ---- analytics roll-up of one day of raw events (bench/analytics_bench.py), once: SQLite, PostgreSQL
if [ "$ANALYTICS_EVENTS" -gt 0 ]; then
  for backend in sqlite postgresql; do
    REP=1 run "tq analytics $backend" "$PY" "$HERE/analytics_bench.py" --backend "$backend" --events "$ANALYTICS_EVENTS"
  done
fi

"$PY" "$HERE/summarize.py" "$RES" | tee "$RESULTS/summary.md"
"$PY" "$HERE/analytics_bench.py" --summary "$RES" | tee -a "$RESULTS/summary.md"
if [ "$BULLMQ" = 0 ]; then
  printf '\nNOTE: BullMQ was not run (%s); tq ran alone.\n' "$BULLMQ_NOTE" | tee -a "$RESULTS/summary.md"
fi
echo "results: $RES  summary: $RESULTS/summary.md" >&2
