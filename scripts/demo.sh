#!/usr/bin/env bash
# make demo: runs the whole fleet on this machine against the WhatsApp simulator and lets the demo
# driver (careline-demo) walk through the story. `make demo` builds the release binaries first and
# runs `make up`; this script only runs them.
#
# What it does: writes the run's network configuration (`careline-demo prepare`: a copy of
# deploy/demo/careline.toml whose quiet hours start 6 h from now, so the demo never depends on the
# wall clock), recreates the database careline_demo, migrates it, creates an ingest API token,
# starts wa-sandbox (with the templates and numbers of deploy/demo/sandbox-templates.toml), webhook-consumer, scheduler, sender and ingest in the background (logs in
# .demo/<name>.log), waits until each one is ready, runs `careline-demo run`, then stops every
# process with SIGTERM and exits with the driver's status. A trap stops the processes on any exit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
LOG_TAG=demo

# ==== Configuration: every name and value the processes get, in one block =====================
BIN=${BIN:-target/release}              # where the release binaries are
DEMO_DIR=${DEMO_DIR:-.demo}             # logs
DEMO_DB=careline_demo                   # dropped and recreated on every run

DEMO_DATABASE_URL=$(db_url_with_name "${DATABASE_URL:-$CARELINE_DEFAULT_DATABASE_URL}" "$DEMO_DB")
DEMO_AMQP_URL=${AMQP_URL:-$CARELINE_DEFAULT_AMQP_URL}
DEMO_AMQP_PREFIX=careline-demo-$(date +%Y%m%d-%H%M%S)   # fresh names: nothing left from a crashed run
# Facilities and templates as written; the fleet runs with the prepared copy (quiet hours moved).
DEMO_CONFIG_TEMPLATE=${CARELINE_CONFIG:-$PWD/deploy/demo/careline.toml}
DEMO_CONFIG=$PWD/$DEMO_DIR/careline.toml
[[ $DEMO_DIR == /* ]] && DEMO_CONFIG=$DEMO_DIR/careline.toml
# What the simulated WhatsApp account has approved: must match the network configuration.
DEMO_SANDBOX_TEMPLATES=${DEMO_SANDBOX_TEMPLATES:-$PWD/deploy/demo/sandbox-templates.toml}

WA_API_VERSION=v23.0
WA_ACCESS_TOKEN=demo-access-token       # sender -> sandbox (Bearer; both read WHATSAPP_ACCESS_TOKEN)
WA_APP_SECRET=demo-app-secret           # sandbox signs webhooks, webhook-consumer verifies them
WA_VERIFY_TOKEN=demo-verify-token       # GET /webhook subscription handshake

SANDBOX_ADDR=127.0.0.1:8090             # wa-sandbox: Graph API and /healthz
INGEST_ADDR=127.0.0.1:8080              # ingest public API
INGEST_ADMIN=127.0.0.1:9080             # ingest /healthz /readyz /metrics
WEBHOOK_ADDR=127.0.0.1:8081             # webhook-consumer public (Meta posts to /webhook)
WEBHOOK_ADMIN=127.0.0.1:9081
SCHEDULER_ADMIN=127.0.0.1:9082
SENDER_ADMIN=127.0.0.1:9083
# Simulated patients answering by themselves, e.g. `confirm:0.5,reschedule:0.1,stop:0.05` (see
# wa-sandbox's settings); empty: no automatic replies (the driver answers as the patient).
SANDBOX_AUTO_REPLY_VALUE=${SANDBOX_AUTO_REPLY:-}

# Shared by every process.
export DATABASE_URL=$DEMO_DATABASE_URL
export AMQP_URL=$DEMO_AMQP_URL
export AMQP_PREFIX=$DEMO_AMQP_PREFIX
export CARELINE_CONFIG=$DEMO_CONFIG
export WHATSAPP_API_BASE_URL=http://$SANDBOX_ADDR
export WHATSAPP_API_VERSION=$WA_API_VERSION
export WHATSAPP_ACCESS_TOKEN=$WA_ACCESS_TOKEN
export WHATSAPP_APP_SECRET=$WA_APP_SECRET
export WHATSAPP_VERIFY_TOKEN=$WA_VERIFY_TOKEN
export RUST_LOG=${RUST_LOG:-info}

# Per process: name, then its own variables.
SANDBOX_ENV=(
  SANDBOX_LISTEN_ADDR="$SANDBOX_ADDR"
  SANDBOX_WEBHOOK_URL="http://$WEBHOOK_ADDR/webhook"
  SANDBOX_APP_SECRET="$WA_APP_SECRET"
  SANDBOX_TEMPLATES="$DEMO_SANDBOX_TEMPLATES"
  # A facility number missing from the templates file is a configuration error: answer 400/100.
  SANDBOX_AUTO_REGISTER_NUMBERS=false
)
[ -z "$SANDBOX_AUTO_REPLY_VALUE" ] || SANDBOX_ENV+=(SANDBOX_AUTO_REPLY="$SANDBOX_AUTO_REPLY_VALUE")
WEBHOOK_ENV=(WEBHOOK_LISTEN_ADDR="$WEBHOOK_ADDR" ADMIN_LISTEN_ADDR="$WEBHOOK_ADMIN")
SCHEDULER_ENV=(ADMIN_LISTEN_ADDR="$SCHEDULER_ADMIN")
SENDER_ENV=(ADMIN_LISTEN_ADDR="$SENDER_ADMIN")
INGEST_ENV=(INGEST_LISTEN_ADDR="$INGEST_ADDR" ADMIN_LISTEN_ADDR="$INGEST_ADMIN")
# Driver: INGEST_URL, INGEST_TOKEN (created below), DATABASE_URL, SANDBOX_URL, CARELINE_CONFIG.
DRIVER_ENV=(INGEST_URL="http://$INGEST_ADDR" SANDBOX_URL="http://$SANDBOX_ADDR")
READY_TIMEOUT_S=60                      # per process
STOP_TIMEOUT_S=30                       # SIGTERM grace period, then SIGKILL
# ================================================================================================

declare -A pids=()
started_order=()
driver_pid=

# http_ok HOST:PORT PATH: true when GET answers 2xx (curl when present, else bash's /dev/tcp, so a
# bare Debian machine needs nothing more).
http_ok() (
  if command -v curl >/dev/null 2>&1; then
    exec curl -fsS -o /dev/null --max-time 2 "http://$1$2"
  fi
  exec 3<>"/dev/tcp/${1%:*}/${1##*:}"
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
  IFS= read -r -t 2 status <&3
  [[ $status =~ ^HTTP/1\.[01]\ 2[0-9][0-9] ]]
)

port_busy() ( exec 3<>"/dev/tcp/${1%:*}/${1##*:}" ) 2>/dev/null

# start NAME VAR=VALUE...: runs $BIN/NAME in the background with extra variables.
start() {
  local name=$1
  shift
  env "$@" "$BIN/$name" >"$DEMO_DIR/$name.log" 2>&1 </dev/null &
  pids[$name]=$!
  started_order+=("$name")
  log "started $name (pid ${pids[$name]}, log $DEMO_DIR/$name.log)"
}

# wait_ready NAME HOST:PORT PATH
wait_ready() {
  local name=$1 i
  for ((i = 0; i < READY_TIMEOUT_S * 4; i++)); do
    if http_ok "$2" "$3" 2>/dev/null; then
      log "$name is ready"
      return 0
    fi
    if ! kill -0 "${pids[$name]}" 2>/dev/null; then
      tail -n 20 "$DEMO_DIR/$name.log" >&2 || true
      die "$name exited before it was ready (log: $DEMO_DIR/$name.log)"
    fi
    sleep 0.25
  done
  tail -n 20 "$DEMO_DIR/$name.log" >&2 || true
  die "$name was not ready at http://$2$3 within ${READY_TIMEOUT_S} s (log: $DEMO_DIR/$name.log)"
}

# Stops the processes newest first (the front door closes before what is behind it), SIGKILL after
# the grace period.
stop_all() {
  local i name pid deadline status
  for ((i = ${#started_order[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[${started_order[i]}]}" 2>/dev/null || true
  done
  deadline=$((SECONDS + STOP_TIMEOUT_S))
  for ((i = ${#started_order[@]} - 1; i >= 0; i--)); do
    name=${started_order[i]}
    pid=${pids[$name]}
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop within ${STOP_TIMEOUT_S} s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    status=0
    wait "$pid" 2>/dev/null || status=$?
    log "stopped $name (exit $status)"
  done
  started_order=()
}

# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$driver_pid" ]; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    wait "$driver_pid" 2>/dev/null || true
  fi
  ((${#started_order[@]})) && stop_all
  # Quorum queues outlive the run: remove this run's (its logs and database stay for a look).
  if command -v rabbitmqctl >/dev/null 2>&1; then
    rabbitmqctl -q list_queues name --no-table-headers 2>/dev/null | grep -F "$AMQP_PREFIX." |
      while IFS= read -r q; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done || true
  fi
  log "logs: $DEMO_DIR/*.log; database: $DEMO_DB"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- checks ------------------------------------------------------------------------------------
for b in wa-sandbox webhook-consumer scheduler sender ingest careline-demo; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run 'make demo' (it builds the release binaries)"
done
[ -f "$DEMO_CONFIG_TEMPLATE" ] || die "CARELINE_CONFIG=$DEMO_CONFIG_TEMPLATE does not exist"
[ -f "$DEMO_SANDBOX_TEMPLATES" ] || die "DEMO_SANDBOX_TEMPLATES=$DEMO_SANDBOX_TEMPLATES does not exist"
for a in "$SANDBOX_ADDR" "$INGEST_ADDR" "$INGEST_ADMIN" "$WEBHOOK_ADDR" "$WEBHOOK_ADMIN" "$SCHEDULER_ADMIN" "$SENDER_ADMIN"; do
  if port_busy "$a"; then die "$a is already in use (an earlier demo still running?)"; fi
done
mkdir -p "$DEMO_DIR"
rm -f "$DEMO_DIR"/*.log

# ---- the run's network configuration (before anything reads CARELINE_CONFIG) -------------------
"$BIN/careline-demo" prepare --template "$DEMO_CONFIG_TEMPLATE" --out "$DEMO_CONFIG" </dev/null ||
  die "careline-demo prepare failed"

# ---- database, migrations, token ---------------------------------------------------------------
check_db_name "$DEMO_DB"
admin_url=$(db_url_with_name "$DATABASE_URL" postgres)
psql_batch "$admin_url" -c "DROP DATABASE IF EXISTS \"$DEMO_DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DEMO_DB\""
log "database $DEMO_DB recreated; AMQP prefix $AMQP_PREFIX"
"$BIN/scheduler" migrate >"$DEMO_DIR/migrate.log" 2>&1 </dev/null ||
  { tail -n 20 "$DEMO_DIR/migrate.log" >&2; die "migrations failed (log: $DEMO_DIR/migrate.log)"; }
log "migrations applied"
INGEST_TOKEN=$("$BIN/ingest" token create --source demo --facilities '*' 2>"$DEMO_DIR/token.log" </dev/null | tail -n 1) ||
  { cat "$DEMO_DIR/token.log" >&2; die "could not create an ingest token (log: $DEMO_DIR/token.log)"; }
[ -n "$INGEST_TOKEN" ] || die "ingest token create printed no token (log: $DEMO_DIR/token.log)"
log "ingest token created (source demo, all facilities)"

# ---- fleet -------------------------------------------------------------------------------------
start wa-sandbox "${SANDBOX_ENV[@]}"
wait_ready wa-sandbox "$SANDBOX_ADDR" /healthz
start webhook-consumer "${WEBHOOK_ENV[@]}"
start scheduler "${SCHEDULER_ENV[@]}"
start sender "${SENDER_ENV[@]}"
start ingest "${INGEST_ENV[@]}"
wait_ready webhook-consumer "$WEBHOOK_ADMIN" /readyz
wait_ready scheduler "$SCHEDULER_ADMIN" /readyz
wait_ready sender "$SENDER_ADMIN" /readyz
wait_ready ingest "$INGEST_ADMIN" /readyz

# ---- the story ---------------------------------------------------------------------------------
log "running careline-demo"
# In the background and waited for, so that a SIGTERM/SIGINT to this script is handled at once
# (bash runs traps only between foreground commands).
env "${DRIVER_ENV[@]}" INGEST_TOKEN="$INGEST_TOKEN" "$BIN/careline-demo" run </dev/null \
  > >(tee "$DEMO_DIR/careline-demo.log") 2>&1 &
driver_pid=$!
driver_status=0
wait "$driver_pid" || driver_status=$?
driver_pid=
log "careline-demo exited with status $driver_status"
stop_all
exit "$driver_status"
