#!/usr/bin/env bash
# Run the whole platform on one machine, no cluster: Redis + SQLite + every queue family's
# consumers in one foreground `tq worker`. Called by `make dev` (which installs .venv first).
#
#   TQ_REDIS_URL       unset: start a private redis-server on 127.0.0.1:$TQ_DEV_REDIS_PORT
#                      (default 6390; no persistence; data, log and pid under .dev/), unless
#                      one already answers there. Set: use that Redis as it is.
#   TQ_DATABASE_URL    default: SQLite file .dev/tq.db
#   TQ_DEV_REDIS_PORT  port of the private redis-server (default 6390)
#   TQ_DEV_ADMIN_PORT  port of the admin API and web page (default 8080; skipped when taken)
#   TQ_ADMIN_JWT_KEY   default: a random key kept in .dev/admin-jwt.key; an owner token is printed
#   TQ_SMTP_HOST       unset: a local SMTP server (aiosmtpd) on 127.0.0.1:$TQ_DEV_SMTP_PORT keeps
#                      every message the email and OTP jobs send in the Maildir .dev/mail
#   TQ_DEV_SMTP_PORT   its port (default 8025; skipped when taken)
#
# Arguments are passed to `tq worker` (e.g. `scripts/dev.sh --family ai`).
# Ctrl-C or SIGTERM stops the worker gracefully, then shuts down the redis-server this script
# started. This script never flushes, writes to or stops a Redis it did not start.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEV_DIR="$ROOT/.dev"
cd "$ROOT"

say() { printf 'dev: %s\n' "$*"; }
die() { printf 'dev: error: %s\n' "$*" >&2; exit 1; }

if ! command -v tq >/dev/null 2>&1 && [ -x "$ROOT/.venv/bin/tq" ]; then
    PATH="$ROOT/.venv/bin:$PATH"
fi
command -v tq >/dev/null 2>&1 || die "the tq command is not installed: run 'make install' (or 'make dev')"

mkdir -p "$DEV_DIR"

# ---- Redis -------------------------------------------------------------------------------
REDIS_PORT=""      # set only when this script owns the redis-server on that port
REDIS_PIDFILE="$DEV_DIR/redis.pid"

redis_answers() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

# The pid of the redis-server answering on the port (from INFO), empty if none answers.
redis_server_pid() {
    redis-cli -h 127.0.0.1 -p "$1" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p'
}

# True when the redis-server on the port is the one recorded in our pid file, i.e. one this
# script started (now or in an earlier run that did not get to clean up).
redis_is_ours() {
    [ -s "$REDIS_PIDFILE" ] || return 1
    local recorded answering
    recorded="$(cat "$REDIS_PIDFILE")"
    answering="$(redis_server_pid "$1")"
    [ -n "$answering" ] && [ "$answering" = "$recorded" ]
}

stop_redis() {
    [ -n "$REDIS_PORT" ] || return 0
    local port="$REDIS_PORT"
    REDIS_PORT=""
    if redis_is_ours "$port"; then
        say "shutting down the redis-server on port $port"
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
        rm -f "$REDIS_PIDFILE"
    fi
}
trap stop_redis EXIT

# Ctrl-C / SIGTERM. Before the worker runs: just exit (the EXIT trap stops our Redis). The
# worker runs in its own process group (set -m), so a Ctrl-C reaches only this script, which
# sends the worker one SIGTERM (graceful: in-flight jobs finish) and waits for it. A second
# Ctrl-C kills the worker outright; its pending jobs are reclaimed on the next run.
worker_pid=""
signals=0
# shellcheck disable=SC2329 # invoked by the trap below
on_signal() {
    if [ -z "$worker_pid" ]; then exit 130; fi
    signals=$((signals + 1))
    if [ "$signals" -eq 1 ]; then
        say "stopping the workers (in-flight jobs finish; Ctrl-C again to kill)"
        kill -TERM "$worker_pid" 2>/dev/null || true
    else
        say "killing the workers"
        kill -KILL "$worker_pid" 2>/dev/null || true
    fi
}
trap on_signal INT TERM

if [ -z "${TQ_REDIS_URL:-}" ]; then
    port="${TQ_DEV_REDIS_PORT:-6390}"
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
        || die "TQ_DEV_REDIS_PORT must be a port number, got '$port'"
    command -v redis-cli >/dev/null 2>&1 \
        || die "redis-cli is not installed: sudo apt-get install redis-server redis-tools"
    if redis_answers "$port"; then
        if redis_is_ours "$port"; then
            say "reusing the redis-server left by an earlier 'make dev' on port $port"
            REDIS_PORT="$port"
        else
            say "a Redis already answers on port $port and was not started here: using it, leaving it running"
        fi
    else
        command -v redis-server >/dev/null 2>&1 \
            || die "redis-server is not installed: sudo apt-get install redis-server (or set TQ_REDIS_URL)"
        rm -f "$REDIS_PIDFILE"
        say "starting redis-server on 127.0.0.1:$port (log: .dev/redis.log)"
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$DEV_DIR" --logfile "$DEV_DIR/redis.log" --pidfile "$REDIS_PIDFILE" \
            --daemonize yes >/dev/null \
            || die "redis-server failed to start on port $port (see above and .dev/redis.log)"
        REDIS_PORT="$port"
        for _ in $(seq 100); do
            redis_is_ours "$port" && break
            sleep 0.05
        done
        redis_is_ours "$port" || {
            tail -n 20 "$DEV_DIR/redis.log" >&2 2>/dev/null || true
            die "redis-server did not start on port $port (is the port taken? set TQ_DEV_REDIS_PORT)"
        }
    fi
    export TQ_REDIS_URL="redis://127.0.0.1:$port/0"
fi

# ---- Database ------------------------------------------------------------------------------
export TQ_DATABASE_URL="${TQ_DATABASE_URL:-sqlite+aiosqlite:///$DEV_DIR/tq.db}"

say "migrating the database"
tq migrate
tq seed
tq schedule install-defaults  # the families' periodic jobs (the worker's elected scheduler fires them)

# ---- Admin API and web page -----------------------------------------------------------------
# The helpers started in the background (the admin service, the mailbox): stopped on exit, after
# the workers and before the Redis.
helper_pids=()
stop_helpers() {
    local pid
    for pid in "${helper_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${helper_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    helper_pids=()
}
trap 'stop_helpers; stop_redis' EXIT

ADMIN_PORT="${TQ_DEV_ADMIN_PORT:-8080}"
admin_line="  Admin     not started: port $ADMIN_PORT is taken (set TQ_DEV_ADMIN_PORT)"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$ADMIN_PORT") 2>/dev/null; then
    if [ -z "${TQ_ADMIN_JWT_KEY:-}" ]; then
        [ -s "$DEV_DIR/admin-jwt.key" ] ||
            (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$DEV_DIR/admin-jwt.key")
        TQ_ADMIN_JWT_KEY="$(cat "$DEV_DIR/admin-jwt.key")"
        export TQ_ADMIN_JWT_KEY
    fi
    OWNER_TOKEN="$(tq token create --role owner --ttl 12h --subject dev)"
    set -m
    tq serve admin --host 127.0.0.1 --port "$ADMIN_PORT" >"$DEV_DIR/admin.log" 2>&1 &
    helper_pids+=($!)
    set +m
    admin_line="  Admin     http://127.0.0.1:$ADMIN_PORT/  (log: .dev/admin.log)
  Token     $OWNER_TOKEN
            (an owner token for 12 h: paste it into the page, or tq --api http://127.0.0.1:$ADMIN_PORT --token ...)"
fi

# ---- A local mailbox for the messaging family ----------------------------------------------------
# Without one the email jobs could only retry against port 25: aiosmtpd (a dev dependency)
# accepts every message and files it in a Maildir, so they do their real delivery.
mail_line="  Mail      TQ_SMTP_HOST=${TQ_SMTP_HOST:-}:${TQ_SMTP_PORT:-25} (yours)"
if [ -z "${TQ_SMTP_HOST:-}" ]; then
    SMTP_PORT="${TQ_DEV_SMTP_PORT:-8025}"
    if (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null; then
        mail_line="  Mail      no local mailbox: port $SMTP_PORT is taken (set TQ_DEV_SMTP_PORT or TQ_SMTP_HOST)"
    elif ! python3 -c 'import aiosmtpd' 2>/dev/null; then
        mail_line="  Mail      no local mailbox: aiosmtpd is not installed (make install; or set TQ_SMTP_HOST)"
    else
        set -m
        python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$DEV_DIR/mail" \
            >"$DEV_DIR/smtp.log" 2>&1 &
        helper_pids+=($!)
        set +m
        export TQ_SMTP_HOST=127.0.0.1 TQ_SMTP_PORT="$SMTP_PORT" TQ_SMTP_TLS=none
        mail_line="  Mail      smtp://127.0.0.1:$SMTP_PORT keeps every message sent in .dev/mail/new (a Maildir)"
    fi
fi

# ---- Where to look -------------------------------------------------------------------------
if [ -n "$REDIS_PORT" ]; then
    stop_hint="Ctrl-C here (or kill -TERM $$) stops the workers, then the redis-server on port $REDIS_PORT."
else
    stop_hint="Ctrl-C here (or kill -TERM $$) stops the workers; the Redis is left as it was."
fi
cat <<EOF

  tq dev environment
  ------------------
  Redis     $TQ_REDIS_URL
  Database  $TQ_DATABASE_URL
  Logs      .dev/redis.log (Redis); the workers log here
$admin_line
$mail_line

  In another terminal, point the CLI at the same places:
    export TQ_REDIS_URL='$TQ_REDIS_URL'
    export TQ_DATABASE_URL='$TQ_DATABASE_URL'
    source .venv/bin/activate
  then try:
    tq queues
    tq schema email:send send-email
    tq enqueue email:send send-email --data '{"to": "dev@example.com", "template": "welcome", "variables": {"name": "Dev"}}'
    tq jobs email:send
    tq schedule list
    tq dlq list email:send

  $stop_hint

EOF

# ---- Workers -------------------------------------------------------------------------------
say "starting tq worker $*"
set -m
tq worker "$@" &
worker_pid=$!
set +m

rc=0
while :; do
    if wait "$worker_pid"; then rc=0; else rc=$?; fi
    kill -0 "$worker_pid" 2>/dev/null || break # reaped: done; else a signal interrupted wait
done
worker_pid=""
if [ "$signals" -gt 0 ] && { [ "$rc" -eq 0 ] || [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; }; then
    say "workers stopped"
    rc=0
else
    say "tq worker exited with status $rc"
fi
stop_helpers
stop_redis
exit "$rc"
