#!/usr/bin/env bash
# make clean-test-dbs: drops the databases `careline_test_<random>` that test runs create (see
# careline_store::testing) and leave behind when they crash, and deletes the broker queues whose
# names start with `test-` (the per-test AMQP prefix). Do not run it while tests are running.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
LOG_TAG=clean-test-dbs

DATABASE_URL=${DATABASE_URL:-$CARELINE_DEFAULT_DATABASE_URL}
admin_url=$(db_url_with_name "$DATABASE_URL" postgres)

# `_` is a LIKE wildcard: escape it so only careline_test_* matches.
mapfile -t dbs < <(psql_batch "$admin_url" -tAc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'careline\\_test\\_%' ORDER BY datname")
for db in "${dbs[@]}"; do
  check_db_name "$db"
  psql_batch "$admin_url" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
done
log "dropped ${#dbs[@]} test database(s)"

if command -v rabbitmqctl >/dev/null 2>&1 && rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  mapfile -t queues < <(rabbitmqctl -q list_queues name --no-table-headers 2>/dev/null | grep '^test-' || true)
  for q in "${queues[@]}"; do
    rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true  # may have expired meanwhile
  done
  log "deleted ${#queues[@]} test queue(s)"
fi
