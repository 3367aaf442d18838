#!/usr/bin/env bash
# make up: make sure PostgreSQL and RabbitMQ are installed, running and ready, and that the
# project's database exists. Idempotent: on a machine where everything already runs it only
# checks (about 2 s). Needs root (or passwordless sudo) only for what it has to install or start.
#
# It does not build anything and does not apply migrations: `make migrate` does that, and every
# binary migrates its database at start-up (sqlx's migrator takes an advisory lock).
#
# Env: DATABASE_URL (default below, see scripts/lib.sh for why it carries a password).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
LOG_TAG=up
started=$(now_ms)

DATABASE_URL=${DATABASE_URL:-$CARELINE_DEFAULT_DATABASE_URL}
AMQP_URL=${AMQP_URL:-$CARELINE_DEFAULT_AMQP_URL}
export DEBIAN_FRONTEND=noninteractive

# --- 1. packages -------------------------------------------------------------------------------
postgres_installed() {
  command -v psql >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1 &&
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}
missing=()
postgres_installed || missing+=(postgresql)
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
if ((${#missing[@]})); then
  apt_log=${TMPDIR:-/tmp}/careline-up-apt.log
  log "installing ${missing[*]} with apt-get (log: $apt_log)"
  t=$(now_ms)
  if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } >"$apt_log" 2>&1 </dev/null; then
    tail -n 30 "$apt_log" >&2
    die "apt-get failed (full log: $apt_log)"
  fi
  log "installed ${missing[*]} in $(elapsed_s "$t") s"
fi

# --- 2. PostgreSQL -----------------------------------------------------------------------------
if pg_isready -q -h 127.0.0.1; then
  log "postgresql: running"
else
  t=$(now_ms)
  if ! compgen -G '/etc/postgresql/*/main' >/dev/null; then
    pg_version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    log "postgresql: creating cluster $pg_version/main"
    as_root pg_createcluster "$pg_version" main >/dev/null
  fi
  # shellcheck disable=SC2012 # plain version directory names
  pg_version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "postgresql: starting cluster $pg_version/main"
  as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
  if ! wait_until 30 pg_isready -q -h 127.0.0.1; then
    pg_lsclusters >&2 || true
    die "postgresql is not accepting connections on 127.0.0.1:5432 after 30 s (is the cluster on another port?)"
  fi
  log "postgresql: ready in $(elapsed_s "$t") s"
fi

admin_url=$(db_url_with_name "$DATABASE_URL" postgres)
if ! psql_batch "$admin_url" -tAc 'SELECT 1' >/dev/null 2>&1; then
  # A fresh install checks passwords on 127.0.0.1 and the role postgres has none: give it the
  # documented development password, through the local socket as the postgres OS user.
  [ "$admin_url" = "$(db_url_with_name "$CARELINE_DEFAULT_DATABASE_URL" postgres)" ] ||
    die "cannot connect to $admin_url (DATABASE_URL is not the default, so up.sh will not change any password)"
  log "postgresql: setting the development password of role postgres"
  as_postgres psql -X -q -v ON_ERROR_STOP=1 -c "ALTER USER postgres PASSWORD 'postgres'" </dev/null
  psql_batch "$admin_url" -tAc 'SELECT 1' >/dev/null || die "still cannot connect to $admin_url"
fi

db=$(db_name "$DATABASE_URL")
check_db_name "$db"
if [ "$(psql_batch "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ]; then
  log "postgresql: database $db exists"
else
  psql_batch "$admin_url" -c "CREATE DATABASE \"$db\""
  log "postgresql: created database $db"
fi

# --- 3. RabbitMQ -------------------------------------------------------------------------------
if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "rabbitmq: running"
else
  rabbit_t=$(now_ms)
  log "rabbitmq: starting"
  as_root rabbitmq-server -detached >/dev/null
  # `rabbitmqctl await_startup` exits at once (69) while the node is not registered yet: wait for
  # the node to answer a ping first, then for the broker application to finish booting.
  wait_until 60 rabbitmq-diagnostics -q ping || die "rabbitmq did not answer a ping within 60 s"
fi
rabbitmqctl -q await_startup --timeout 60 >/dev/null || die "rabbitmq did not finish booting"
if [ -n "${rabbit_t:-}" ]; then log "rabbitmq: ready in $(elapsed_s "$rabbit_t") s"; fi

plugins=(rabbitmq_management rabbitmq_prometheus)
enabled=$(rabbitmq-plugins -q list -e -m 2>/dev/null || true)
to_enable=()
for p in "${plugins[@]}"; do
  grep -qx "$p" <<<"$enabled" || to_enable+=("$p")
done
if ((${#to_enable[@]})); then
  as_root rabbitmq-plugins -q enable "${to_enable[@]}" >/dev/null
  log "rabbitmq: enabled plugins ${to_enable[*]}"
else
  log "rabbitmq: plugins enabled"
fi

log "ready in $(elapsed_s "$started") s"
printf '  DATABASE_URL=%s\n  AMQP_URL=%s\n' "$DATABASE_URL" "$AMQP_URL"
