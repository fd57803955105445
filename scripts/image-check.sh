#!/usr/bin/env bash
# Build the project's image from the Dockerfile as it is, with podman, and (unless --build-only)
# run it the ways the chart does. Called by `make image` (--build-only) and `make image-check`,
# and by CI after `make test`. Prints ONE summary line at the end: "IMAGE-CHECK PASS ..." or
# "IMAGE-CHECK FAIL ..." (exit 1).
#
#   scripts/image-check.sh [--build-only] [--tag TAG]
#
#   1. the base image python:3.11-slim: used as it is when it is already in podman's store (e.g.
#      after `podman pull docker.io/library/python:3.11-slim`); else a local stand-in is made, with
#      no registry: `debootstrap bookworm` (Python 3.11) + a venv at /usr/local (python and pip on
#      PATH as in the official image), imported under that name and kept for the next run
#   2. `podman build --pull=never` of the Dockerfile, unchanged
#   3. runs the image (skipped with --build-only):
#      a. `tq --help` as uid 10001 with a read-only root
#      b. `tq worker --family messaging` (read-only root, tmpfs /tmp holding a SQLite database)
#         against a private redis-server on the host: migrated in the container, a job enqueued
#         from the host completes (an SMTP sink on the host receives its mail), the processes run
#         as uid 10001, SIGTERM ends it with exit code 0
#      c. `tq serve messaging` (read-only root): /healthz 200; /readyz 503 naming the schema while
#         its database is not migrated (the schema gate), 200 once `tq migrate` ran; /metrics
#      d. `podman diff` of a writable-root worker that ran a job: no writes outside /tmp
#
# Needs: root (rootful podman), podman, buildah's runtime pieces, debootstrap (only to make the
# stand-in), redis-server, curl, and the project's .venv (`make install`) for the host side.
# Debian: apt-get install podman buildah debootstrap uidmap slirp4netns crun redis-server curl
#
# The Debian mirror (for debootstrap) and the pip index and CA bundle (for `pip wheel` inside
# the build) are read from this machine's configuration at run time. Nothing of them is written
# into an image: the CA bundle and a pip.conf are bind-mounted into the RUN steps only, and the
# stand-in's apt sources are Debian's public ones.
#
# Host quirks it works around:
#   - crun refuses a cgroup v1 "hybrid" host (a cgroup2 mount with controllers at
#     /sys/fs/cgroup/unified): the script re-runs itself in a private mount namespace where that
#     mount is hidden (the host's mounts stay as they are); --cgroup-manager=cgroupfs (no systemd)
#   - inside a container without CAP_SYS_RESOURCE, podman's default RLIMIT_NPROC/NOFILE for root
#     cannot be set: the highest limits that start a container are probed and passed
#   - no container network setup is needed: every container runs with --network=host
#
# Knobs (environment): REBUILD_BASE=1 makes the stand-in again; NO_CACHE=1 builds with --no-cache;
# KEEP_WORK=1 keeps the work directory (logs) even on PASS; TQ_BIN=PATH is the host `tq` that
# enqueues (default: .venv/bin/tq of this checkout).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=docker.io/library/python:3.11-slim
STANDIN_LABEL=tq.image-check.standin
SUITE=bookworm
BUILD_ONLY=""
TAG=""

die() { echo "image-check: $*" >&2; echo "IMAGE-CHECK FAIL: $*"; exit 1; }

ARGS=("$@")
while [ $# -gt 0 ]; do
    case $1 in
        --build-only) BUILD_ONLY=1 ;;
        --tag) TAG=${2:?--tag needs a value}; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--build-only] [--tag TAG]" >&2; exit 2 ;;
    esac
    shift
done

[ "$(id -u)" = 0 ] || die "must run as root (rootful podman; debootstrap for the stand-in base)"
for c in podman redis-server redis-cli curl unshare; do
    command -v "$c" >/dev/null || die "missing command: $c (apt-get install podman buildah debootstrap uidmap slirp4netns crun redis-server curl)"
done

# crun and cgroup v1 "hybrid" hosts: see the header. The host's mounts are not changed.
if [ -z "${TQ_IMAGE_CHECK_NS:-}" ] && [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] \
    && grep -q . /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; then
    exec unshare -m --propagation private env TQ_IMAGE_CHECK_NS=1 bash "$0" "${ARGS[@]}"
fi
if [ -n "${TQ_IMAGE_CHECK_NS:-}" ]; then
    umount /sys/fs/cgroup/unified || die "cannot hide /sys/fs/cgroup/unified in the private namespace"
fi

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)
KEEP_IMAGE=""
if [ -n "$TAG" ] || [ -n "$BUILD_ONLY" ]; then KEEP_IMAGE=1; fi
TAG=${TAG:-localhost/tq:${VERSION:-dev}}
[ -n "$KEEP_IMAGE" ] || TAG="localhost/tq-image-check:$$"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tq-image-check.XXXXXX")
CN="tq-image-check-$$"
T_START=$(date +%s)
declare -a PIDS=() CONTAINERS=() FAILS=() NOTES=()
RESULT=FAIL

log() { echo "[image-check $(date +%H:%M:%S)] $*" >&2; }
fail() { FAILS+=("$*"); log "FAIL: $*"; }
note() { NOTES+=("$*"); }
secs() { echo $(($(date +%s) - $1)); }
image_ids() { podman images -qa --no-trunc | sed 's/^sha256://' | sort -u; }

cleanup() {
    local id
    for c in "${CONTAINERS[@]}"; do podman rm -f -t 5 "$c" >/dev/null 2>&1; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    # the throwaway tag (a cached build may give an image that existed before this run)
    [ -z "$KEEP_IMAGE" ] && podman untag "$TAG" "$TAG" >/dev/null 2>&1
    if [ -n "${IMAGES_BEFORE+x}" ]; then # what this run made: kept are the base and a --tag'd image
        local keep_id=""
        [ -n "$KEEP_IMAGE" ] && keep_id=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null)
        for id in $(image_ids); do
            grep -qx "$id" <<<"$IMAGES_BEFORE" && continue
            [ "$id" = "${BASE_ID:-}" ] || [ "$id" = "$keep_id" ] && continue
            podman rmi -f "$id" >/dev/null 2>&1
        done
    fi
    rm -rf "$WORK/rootfs"
    if [ "$RESULT" = PASS ] && [ -z "${KEEP_WORK:-}" ]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. the base image
debian_mirror() { # this machine's Debian mirror (deb822 or one-line sources)
    local f m
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        m=$(awk '/^URIs:/{for(i=2;i<=NF;i++) if($i ~ /\/debian\/?$/){print $i; exit}}' "$f")
        [ -n "$m" ] && { echo "$m"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        m=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\// && $i ~ /\/debian\/?$/){print $i; exit}}' "$f")
        [ -n "$m" ] && { echo "$m"; return; }
    done
    echo http://deb.debian.org/debian
}

make_standin() {
    local R="$WORK/rootfs" mirror host proxy pyv t
    command -v debootstrap >/dev/null || { fail "no $BASE and no debootstrap to make a stand-in"; return 1; }
    mirror=$(debian_mirror)
    host=$(sed -E 's#^[a-z]+://##; s#/.*##; s#.*@##' <<<"$mirror")
    proxy=$(apt-config shell P Acquire::http::Proxy 2>/dev/null | sed -n "s/^P='\(.*\)'$/\1/p")
    t=$(date +%s)
    log "1. no $BASE here: debootstrap $SUITE (minbase + python3-venv, ca-certificates, netbase) as a stand-in"
    if ! env ${proxy:+http_proxy=$proxy} debootstrap --variant=minbase \
        --include=python3-venv,ca-certificates,netbase "$SUITE" "$R" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
        fail "debootstrap failed (see $WORK/debootstrap.log)"
        return 1
    fi
    note "debootstrap=$(secs "$t")s"
    # python and pip on PATH like the official image: a venv at /usr/local (no EXTERNALLY-MANAGED)
    chroot "$R" /usr/bin/python3 -m venv /usr/local >"$WORK/venv-standin.log" 2>&1 \
        || { fail "python3 -m venv /usr/local in the stand-in failed"; return 1; }
    rm -f "$R"/usr/local/bin/activate* "$R"/usr/local/bin/Activate.ps1 "$R"/usr/lib/python3*/EXTERNALLY-MANAGED
    # nothing of this machine in the image: public sources, no apt lists, logs or resolv.conf
    printf 'deb http://deb.debian.org/debian %s main\ndeb http://deb.debian.org/debian %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
        "$SUITE" "$SUITE" "$SUITE" >"$R/etc/apt/sources.list"
    rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/archives/*.deb "$R"/var/cache/apt/*.bin "$R"/var/log/*
    : >"$R/etc/resolv.conf"
    echo localhost >"$R/etc/hostname"
    : >"$R/etc/machine-id"
    if [ "$host" != deb.debian.org ] && grep -rIlqF "$host" "$R" 2>/dev/null; then
        fail "the mirror's host name is still in the stand-in's files: not importing it"
        return 1
    fi
    pyv=$(chroot "$R" /usr/bin/python3 -c 'import platform; print(platform.python_version())')
    case $pyv in 3.11.*) ;; *) fail "the stand-in has Python $pyv, not 3.11"; return 1 ;; esac
    tar --numeric-owner -C "$R" -cf - . | podman import \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change "ENV PYTHON_VERSION=$pyv" \
        --change "LABEL $STANDIN_LABEL=debootstrap-$SUITE-python-$pyv" \
        --change 'CMD ["python3"]' \
        --message "local stand-in for python:3.11-slim (debootstrap $SUITE, venv at /usr/local)" \
        - "$BASE" >"$WORK/import.log" 2>&1 || { fail "podman import failed (see $WORK/import.log)"; return 1; }
    rm -rf "$R"
}

IMAGES_BEFORE=$(image_ids)
T1=$(date +%s)
OLD_BASE_ID=$(podman image inspect --format '{{.Id}}' "$BASE" 2>/dev/null)
OLD_STANDIN=$(podman image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$BASE" 2>/dev/null)
if [ -n "$OLD_BASE_ID" ] && [ -z "${REBUILD_BASE:-}" ]; then
    log "1. $BASE is here (${OLD_STANDIN:-the real image}): using it"
    note "base=${OLD_STANDIN:+stand-in,}reused"
else
    make_standin || die "step 1 (base image): ${FAILS[*]}"
    if [ -n "$OLD_BASE_ID" ] && [ -n "$OLD_STANDIN" ]; then podman rmi "$OLD_BASE_ID" >/dev/null 2>&1; fi
    note "base=stand-in,new"
fi
BASE_ID=$(podman image inspect --format '{{.Id}}' "$BASE") || die "no $BASE after step 1"
S1=$(secs "$T1")

# Resource limits a container may set here (see the header).
NOFILE=$(ulimit -Hn)
ULIMITS=()
for np in "$(ulimit -Hu)" 32768 4096 1024; do
    if podman run --rm --pull=never --network=none --cgroup-manager=cgroupfs --ulimit "nofile=$NOFILE:$NOFILE" \
        --ulimit "nproc=$np:$np" "$BASE" true >/dev/null 2>"$WORK/probe.log"; then
        ULIMITS=(--ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$np:$np")
        break
    fi
done
[ ${#ULIMITS[@]} -gt 0 ] || die "no container starts from $BASE: $(tail -1 "$WORK/probe.log")"

# ---------------------------------------------------------------- 2. podman build, Dockerfile unchanged
# pip inside the build reaches the index this machine is configured with: its CA bundle (a
# TLS-inspecting egress needs it) and index URLs, mounted into the RUN steps only.
PIP_PY=$(command -v python3 || true)
pip_get() { [ -n "$PIP_PY" ] && "$PIP_PY" -m pip config get "$1" 2>/dev/null; }
CA=${PIP_CERT:-$(pip_get global.cert)}
for c in "$CA" /etc/ssl/certs/ca-certificates.crt; do [ -n "$c" ] && [ -f "$c" ] && { CA=$c; break; }; done
BUILD_MOUNTS=()
[ -f "$CA" ] && BUILD_MOUNTS+=(-v "$CA:/etc/ssl/certs/ca-certificates.crt:ro")
IDX=${PIP_INDEX_URL:-$(pip_get global.index-url)}
EXTRA=$(echo "${PIP_EXTRA_INDEX_URL:-$(pip_get global.extra-index-url)}" | tr ' ' '\n' | grep -E '^https?://' | tr '\n' ' ')
[[ $IDX =~ ^https?:// ]] || IDX="" # a local file:// index is not reachable inside the build
if [ -n "$IDX" ] || [ -n "${EXTRA// /}" ]; then
    (umask 077; {
        echo '[global]'
        [ -n "$IDX" ] && echo "index-url = $IDX"
        [ -n "${EXTRA// /}" ] && echo "extra-index-url = $EXTRA"
    } >"$WORK/pip.conf")
    BUILD_MOUNTS+=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
fi

T2=$(date +%s)
log "2. podman build $ROOT -> $TAG (pull=never, network=host)"
BUILD_ARGS=(--pull=never --network=host --cgroup-manager=cgroupfs --force-rm "${ULIMITS[@]}" "${BUILD_MOUNTS[@]}")
[ -n "${NO_CACHE:-}" ] && BUILD_ARGS+=(--no-cache)
if ! podman build "${BUILD_ARGS[@]}" -t "$TAG" -f "$ROOT/Dockerfile" "$ROOT" >"$WORK/build.log" 2>&1; then
    fail "podman build failed after $(secs "$T2")s: $(grep -E '^(Error|error):' "$WORK/build.log" | tail -1 | cut -c1-300)"
    die "step 2 (build): ${FAILS[*]}"
fi
S2=$(secs "$T2")
SIZE_MB=$(($(podman image inspect --format '{{.Size}}' "$TAG") / 1000000))
CFG=$(podman image inspect --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}}' "$TAG")
log "   built $TAG: ${SIZE_MB} MB, $CFG"

if [ -n "$BUILD_ONLY" ]; then
    RESULT=PASS
    echo "IMAGE-CHECK PASS: built $TAG size=${SIZE_MB}MB $CFG base=${S1}s build=${S2}s ${NOTES[*]} total=$(secs "$T_START")s"
    exit 0
fi

# ---------------------------------------------------------------- 3. run it
T3=$(date +%s)
RUN=(podman run "${ULIMITS[@]}" --cgroup-manager=cgroupfs --network=host)

# 3a. --help as 10001 with a read-only root
HELP=fail
if "${RUN[@]}" --rm --user 10001 --read-only "$TAG" --help >"$WORK/help.log" 2>&1 \
    && grep -q worker "$WORK/help.log" && grep -q serve "$WORK/help.log"; then
    HELP=ok
else
    fail "tq --help (user 10001, read-only root): $(tail -1 "$WORK/help.log")"
fi

# the host side: free ports (never 6379), a private redis-server, an SMTP sink, the host's tq
TQ=${TQ_BIN:-$ROOT/.venv/bin/tq}
[ -x "$TQ" ] || die "no host tq at $TQ: run 'make install' first (or set TQ_BIN)"
HOST_PY=$(dirname "$TQ")/python
read -r RP SP HP < <("$HOST_PY" - <<'EOF'
import socket
socks, ports = [], []
while len(ports) < 3:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    socks.append(s)
    if p != 6379: ports.append(p)
print(*ports)
EOF
)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
# aiosmtpd (a dev extra) prints every message it receives: the worker's mail lands there
"$HOST_PY" -u -m aiosmtpd -n -l "127.0.0.1:$SP" >"$WORK/smtp.log" 2>&1 &
PIDS+=($!)
REDIS_URL="redis://127.0.0.1:$RP/0"
for _ in $(seq 50); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done

tq_host() { (cd "$WORK" && TQ_REDIS_URL=$REDIS_URL "$TQ" "$@"); }
job_state() {
    tq_host job email:send "$1" --json 2>/dev/null \
        | "$HOST_PY" -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null
}
wait_job() { # JOB_ID -> the final state (completed/dead), or the last one seen after 30 s
    local st=""
    for _ in $(seq 60); do
        st=$(job_state "$1")
        case $st in completed | dead) break ;; esac
        sleep 0.5
    done
    echo "${st:-unknown}"
}
enqueue_mail() { # TO NAME -> job id
    tq_host enqueue email:send send-email --data "{\"to\": \"$1\", \"template\": \"welcome\", \"variables\": {\"name\": \"$2\"}}"
}
http_code() { curl -s -o "$WORK/body" -w '%{http_code}' "$1"; }
wait_code() { # URL CODE TRIES -> CODE once the URL answers it, else the last code seen (every 0.5 s)
    local code=""
    for _ in $(seq "$3"); do
        code=$(http_code "$1")
        [ "$code" = "$2" ] && break
        sleep 0.5
    done
    echo "$code"
}
stop_exit() { # CONTAINER -> its exit code after SIGTERM (podman stop, 40 s before SIGKILL)
    podman stop -t 40 "$1" >/dev/null 2>&1
    podman inspect --format '{{.State.ExitCode}}' "$1"
}
ENVS=(-e "TQ_REDIS_URL=$REDIS_URL" -e TQ_DATABASE_URL=sqlite+aiosqlite:////tmp/tq.db
    -e TQ_SMTP_HOST=127.0.0.1 -e "TQ_SMTP_PORT=$SP" -e TQ_SMTP_TLS=none)

# 3b. a worker: read-only root, tmpfs /tmp (its SQLite database is there, migrated in the container)
W="$CN-worker"
CONTAINERS+=("$W")
UIDS=- JOB=- WEXIT=-
if "${RUN[@]}" -d --name "$W" --read-only "${ENVS[@]}" --tmpfs /tmp "$TAG" worker --family messaging \
    >/dev/null 2>"$WORK/worker-start.log"; then
    podman exec "$W" tq migrate >"$WORK/migrate.log" 2>&1 || fail "tq migrate in the worker container: $(tail -1 "$WORK/migrate.log")"
    UIDS=$(podman top "$W" huser 2>/dev/null | tail -n +2 | sort -u | tr '\n' ' ' | sed 's/ $//')
    [ "$UIDS" = 10001 ] || fail "worker processes run as uid(s) '$UIDS', not 10001"
    JID=$(enqueue_mail a@example.com Ann) || fail "enqueue from the host failed"
    JOB=$(wait_job "$JID")
    [ "$JOB" = completed ] || fail "job $JID ended '$JOB' in the read-only worker"
    grep -q 'Subject: Welcome to Teknav, Ann' "$WORK/smtp.log" || fail "the SMTP sink got no mail from the worker"
    T_STOP=$(date +%s)
    WEXIT=$(stop_exit "$W")
    [ "$WEXIT" = 0 ] || fail "the worker exited $WEXIT on SIGTERM"
    note "worker-stop=$(secs "$T_STOP")s"
    podman logs "$W" >"$WORK/worker.log" 2>&1
    grep -qiE 'read-only file system|permission denied' "$WORK/worker.log" \
        && fail "the worker's log mentions a read-only/permission error"
else
    fail "the worker did not start: $(tail -1 "$WORK/worker-start.log")"
fi

# 3c. tq serve: read-only root; the probes the chart uses, the schema gate, /metrics
S="$CN-serve"
CONTAINERS+=("$S")
HEALTH=- GATE=- READY=- METRICS=-
if "${RUN[@]}" -d --name "$S" --read-only "${ENVS[@]}" --tmpfs /tmp "$TAG" serve messaging --port "$HP" \
    >/dev/null 2>"$WORK/serve-start.log"; then
    HEALTH=$(wait_code "http://127.0.0.1:$HP/healthz" 200 60)
    [ "$HEALTH" = 200 ] || fail "/healthz answered '$HEALTH'"
    # its database (in its own /tmp) is empty: not ready, and it says why
    GATE=$(http_code "http://127.0.0.1:$HP/readyz")
    [ "$GATE" = 503 ] && grep -qi schema "$WORK/body" \
        || fail "/readyz of an unmigrated service answered $GATE: $(head -c 300 "$WORK/body")"
    podman exec "$S" tq migrate >"$WORK/migrate-serve.log" 2>&1 || fail "tq migrate in the serve container failed"
    READY=$(wait_code "http://127.0.0.1:$HP/readyz" 200 40)
    [ "$READY" = 200 ] || fail "/readyz after tq migrate answered '$READY': $(head -c 300 "$WORK/body")"
    METRICS=$(curl -s "http://127.0.0.1:$HP/metrics" | grep -c '^tq_')
    [ "${METRICS:-0}" -gt 0 ] || fail "/metrics has no tq_ series"
    [ "$(stop_exit "$S")" = 0 ] || fail "serve did not exit 0 on SIGTERM"
else
    fail "serve did not start: $(tail -1 "$WORK/serve-start.log")"
fi

# 3d. what a run writes: writable root, database in /tmp; `podman diff` outside /tmp, /var/tmp,
#     /run (and the /etc entries of podman's own resolv.conf/hosts/hostname mounts)
D="$CN-diff"
CONTAINERS+=("$D")
WRITES=-
if "${RUN[@]}" -d --name "$D" "${ENVS[@]}" "$TAG" worker --family messaging >/dev/null 2>"$WORK/diff-start.log"; then
    podman exec "$D" tq migrate >/dev/null 2>&1
    podman exec "$D" tq queues >/dev/null 2>&1
    JID2=$(enqueue_mail b@example.com Bo)
    J2=$(wait_job "$JID2")
    [ "$J2" = completed ] || fail "job $JID2 ended '$J2' in the writable-root worker"
    podman stop -t 40 "$D" >/dev/null 2>&1
    podman diff "$D" >"$WORK/diff.log" 2>&1
    WRITES=$(awk '{print $2}' "$WORK/diff.log" \
        | grep -vE '^/(tmp|var/tmp|run)(/|$)|^/etc(/resolv\.conf|/hosts|/hostname)?$' | tr '\n' ' ' | sed 's/ $//')
    [ -z "$WRITES" ] || fail "writes outside /tmp: $WRITES"
    WRITES=${WRITES:-none}
else
    fail "the writable-root worker did not start: $(tail -1 "$WORK/diff-start.log")"
fi
S3=$(secs "$T3")

[ ${#FAILS[@]} -eq 0 ] && RESULT=PASS
SUMMARY="base=${S1}s build=${S2}s size=${SIZE_MB}MB run=${S3}s help=$HELP uid=$UIDS job=$JOB worker-exit=$WEXIT healthz=$HEALTH readyz-unmigrated=$GATE readyz=$READY tq-series=$METRICS writes-outside-tmp=$WRITES ${NOTES[*]} total=$(secs "$T_START")s"
if [ "$RESULT" = PASS ]; then
    echo "IMAGE-CHECK PASS: $SUMMARY"
else
    echo "IMAGE-CHECK FAIL: ${FAILS[*]} | $SUMMARY"
    exit 1
fi
