# shellcheck shell=bash
# Shared helpers for scripts/*.sh (sourced, not run).
#
# Connection defaults, one place for the whole project (the Rust code uses the same strings):
#
#   DATABASE_URL  postgres://postgres:postgres@127.0.0.1:5432/careline
#   AMQP_URL      amqp://guest:guest@127.0.0.1:5672/%2f
#
# Why a password: on a fresh Debian install PostgreSQL authenticates 127.0.0.1 connections with
# scram-sha-256 (and the local socket with peer), so `make up` gives the role `postgres` the
# password `postgres`. On machines whose pg_hba.conf says `trust` the password is simply ignored,
# so the same URL works everywhere. Local development only: never reuse it outside loopback.

# shellcheck disable=SC2034 # used by the scripts that source this file
CARELINE_DEFAULT_DATABASE_URL='postgres://postgres:postgres@127.0.0.1:5432/careline'
# shellcheck disable=SC2034
CARELINE_DEFAULT_AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f'

# Daemons' admin tools live in /usr/sbin on Debian, which a non-login PATH may miss.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac
export PATH

log() { printf '%s: %s\n' "${LOG_TAG:-careline}" "$*"; }
die() { printf '%s: error: %s\n' "${LOG_TAG:-careline}" "$*" >&2; exit 1; }

# Milliseconds since the epoch (for "took N s" lines).
now_ms() { date +%s%3N; }
# "1.234" seconds between a now_ms value and now.
elapsed_s() { local d=$(( $(now_ms) - $1 )); printf '%d.%03d' $((d / 1000)) $((d % 1000)); }

# Runs a command as root: directly when we are root, else through passwordless sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    die "this step needs root (or passwordless sudo): $*"
  fi
}

# Runs a command as the postgres OS user (peer authentication on the local socket), from /
# so that psql does not complain about a working directory it cannot read.
as_postgres() {
  (cd / && as_root runuser -u postgres -- "$@")
}

# db_name URL: the database name of a postgres:// URL (path without query string).
db_name() {
  local base=${1%%\?*}
  printf '%s' "${base##*/}"
}

# db_url_with_name URL NAME: the same URL pointing at database NAME (query string kept).
db_url_with_name() {
  local url=$1 name=$2 base query
  base=${url%%\?*}
  query=${url#"$base"}
  printf '%s/%s%s' "${base%/*}" "$name" "$query"
}

# Database names are interpolated into SQL identifiers: allow only the safe ones.
check_db_name() {
  [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_-]*$ ]] || die "unsupported database name '$1' (letters, digits, _ and - only)"
}

# psql that never prompts (no stdin in CI), ignores ~/.psqlrc, and stops on the first error.
psql_batch() { PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql -X -w -q -v ON_ERROR_STOP=1 "$@" </dev/null; }

# wait_until SECONDS COMMAND...: retries COMMAND once a second until it succeeds or time runs out.
wait_until() {
  local limit=$1 i
  shift
  for ((i = 0; i < limit; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  "$@" >/dev/null 2>&1
}
