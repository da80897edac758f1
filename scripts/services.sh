#!/usr/bin/env bash
# Starts the servers the test suite needs when they are not running, and prints the environment
# the tests read. Sourced by scripts/test.sh; safe to run again (idempotent).
set -euo pipefail

: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/outbox_test}"
: "${REDIS_URL:=redis://127.0.0.1:6379}"
export DATABASE_URL REDIS_URL

log() { echo "[services] $*" >&2; }

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_postgres() {
  if ! command -v pg_isready >/dev/null 2>&1; then
    log "installing PostgreSQL (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_ready; then
    log "starting PostgreSQL"
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$version" ]; then
      log "no PostgreSQL cluster found under /etc/postgresql"; return 1
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
    pg_ready || { log "PostgreSQL did not come up on 127.0.0.1:5432"; return 1; }
  fi
  # Create the test database named in DATABASE_URL if it is missing.
  local db="${DATABASE_URL##*/}"; db="${db%%\?*}"
  local admin="${DATABASE_URL%/*}/postgres"
  if ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>/dev/null | grep -q 1; then
    log "creating database $db"
    psql "$admin" -qc "CREATE DATABASE \"$db\"" || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE \"$db\""
  fi
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing Redis (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/outbox-tests.log
    for _ in $(seq 1 30); do redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && break; sleep 0.5; done
    redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 || { log "Redis did not come up at $REDIS_URL"; return 1; }
  fi
}

ensure_postgres
ensure_redis
log "Redis ready: REDIS_URL=$REDIS_URL"
log "PostgreSQL ready: DATABASE_URL=${DATABASE_URL%%@*}@…"
