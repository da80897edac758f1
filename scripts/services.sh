#!/usr/bin/env bash
# Starts the servers the test suite needs when they are not running, and prints the environment
# the tests read. Sourced by scripts/test.sh (a MongoDB-compatible server it starts then stops with
# the run); run directly, it leaves every server running. Safe to run again (idempotent).
set -euo pipefail

: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/outbox_test}"
: "${REDIS_URL:=redis://127.0.0.1:6379}"
: "${REDIS_CLUSTER_PORTS:=7000 7001 7002}"
REDIS_CLUSTER_URLS=""
for port in $REDIS_CLUSTER_PORTS; do REDIS_CLUSTER_URLS="${REDIS_CLUSTER_URLS:+$REDIS_CLUSTER_URLS,}redis://127.0.0.1:$port"; done
export DATABASE_URL REDIS_URL REDIS_CLUSTER_URLS

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

# A Redis Cluster of three masters (no replicas) on loopback, for the partitioned store's tests.
# Its nodes keep only their cluster configuration on disk; a node that is down is started again.
# `cluster-require-full-coverage no`: when a shard is down, the others go on serving their slots.
REDIS_CLUSTER_DIR=/var/lib/redis-cluster
cluster_ok() { redis-cli -p "${REDIS_CLUSTER_PORTS%% *}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }
start_cluster_node() {
  mkdir -p "$REDIS_CLUSTER_DIR/$1" /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$1" --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000 --cluster-require-full-coverage no \
    --save "" --appendonly no \
    --dir "$REDIS_CLUSTER_DIR/$1" --logfile "/var/log/redis/cluster-$1.log"
  for _ in $(seq 1 30); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "Redis Cluster node $1 did not come up"; return 1
}
ensure_redis_cluster() {
  local port nodes=() attempt
  for port in $REDIS_CLUSTER_PORTS; do
    redis-cli -p "$port" ping >/dev/null 2>&1 || start_cluster_node "$port"
    redis-cli -p "$port" config set cluster-require-full-coverage no >/dev/null
    nodes+=("127.0.0.1:$port")
  done
  for _ in $(seq 1 25); do cluster_ok && return 0; sleep 0.2; done
  for attempt in 1 2; do
    # Not a working cluster (first start, or nodes that forgot each other): build it afresh.
    log "creating the Redis Cluster on ports $REDIS_CLUSTER_PORTS"
    for port in $REDIS_CLUSTER_PORTS; do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
    sleep 0.3
    rm -rf "$REDIS_CLUSTER_DIR"
    for port in $REDIS_CLUSTER_PORTS; do start_cluster_node "$port"; done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    for _ in $(seq 1 50); do cluster_ok && return 0; sleep 0.2; done
  done
  log "the Redis Cluster on ports $REDIS_CLUSTER_PORTS did not become ready"; return 1
}

nats_ready() {
  python3 - <<'PY' 2>/dev/null
import socket, sys
with socket.create_connection(("127.0.0.1", 4222), timeout=2) as s:
    s.settimeout(2)
    sys.exit(0 if s.recv(4) == b"INFO" else 1)
PY
}

ensure_nats() {
  if [ -n "${NATS_URL:-}" ]; then return 0; fi
  export NATS_URL=nats://127.0.0.1:4222
  if nats_ready; then return 0; fi
  if ! command -v nats-server >/dev/null 2>&1; then
    log "installing NATS (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
  fi
  log "starting NATS with JetStream"
  mkdir -p /var/lib/nats-server /var/log
  setsid nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server \
    -l /var/log/nats-server.log </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 30); do nats_ready && break; sleep 0.5; done
  nats_ready || { log "NATS did not come up on 127.0.0.1:4222"; return 1; }
}

# MongoDB-compatible test server: SecantusDB (crate secantus-mdb), run as an external process only.
# No MongoDB server package exists in the registries this project can reach. The binary is built
# once into a cache directory (about five minutes) and reused; each run starts one server on a fresh
# storage directory and stops it by pid when the shell that sourced this file exits.
SECANTUS_VERSION=0.5.3-beta.196
SECANTUS_ROOT="${OUTBOX_TOOLS_DIR:-$HOME/.cache/outbox-tools}/secantus-$SECANTUS_VERSION"
SECANTUS_BIN="$SECANTUS_ROOT/bin/secantusd-rs"
: "${MONGO_TEST_PORT:=27018}"

mongo_ready() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, struct, sys
# Send an OP_MSG {hello: 1, $db: "admin"} and expect any reply: the server speaks the wire protocol.
port = int(sys.argv[1])
def bson_doc(items):
    body = b""
    for k, v in items:
        if isinstance(v, int):
            body += b"\x10" + k.encode() + b"\x00" + struct.pack("<i", v)
        else:
            s = v.encode() + b"\x00"
            body += b"\x02" + k.encode() + b"\x00" + struct.pack("<i", len(s)) + s
    return struct.pack("<i", len(body) + 5) + body + b"\x00"
doc = bson_doc([("hello", 1), ("$db", "admin")])
msg = struct.pack("<I", 0) + b"\x00" + doc
header = struct.pack("<iiii", 16 + len(msg), 1, 0, 2013)
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    s.sendall(header + msg)
    s.settimeout(2)
    reply = s.recv(16)
    sys.exit(0 if len(reply) == 16 else 1)
PY
}

install_secantus() {
  if [ -x "$SECANTUS_BIN" ]; then return 0; fi
  log "installing SecantusDB $SECANTUS_VERSION into $SECANTUS_ROOT (one-time build, about five minutes)"
  if ! command -v cmake >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null
  fi
  mkdir -p "$SECANTUS_ROOT"
  cargo install secantus-mdb --version "$SECANTUS_VERSION" --locked --ignore-rust-version \
    --root "$SECANTUS_ROOT" --quiet
}

ensure_mongo() {
  if [ -n "${MONGODB_URI:-}" ]; then
    log "using MongoDB at MONGODB_URI (not starting a server)"
    return 0
  fi
  export MONGODB_URI="mongodb://127.0.0.1:$MONGO_TEST_PORT/?directConnection=true"
  if mongo_ready "$MONGO_TEST_PORT"; then
    log "reusing the MongoDB-compatible server already on 127.0.0.1:$MONGO_TEST_PORT"
    return 0
  fi
  install_secantus
  SECANTUS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/outbox-secantus.XXXXXX")
  log "starting SecantusDB on 127.0.0.1:$MONGO_TEST_PORT (storage $SECANTUS_DIR)"
  "$SECANTUS_BIN" --host 127.0.0.1 --port "$MONGO_TEST_PORT" --storage-path "$SECANTUS_DIR/data" \
    --cache-size 256M >"$SECANTUS_DIR/server.log" 2>&1 &
  SECANTUS_PID=$!
  if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    trap 'stop_mongo' EXIT # sourced by scripts/test.sh: the server lives as long as the test run
  else
    log "leaving SecantusDB running (pid $SECANTUS_PID); export MONGODB_URI=$MONGODB_URI"
  fi
  for _ in $(seq 1 60); do mongo_ready "$MONGO_TEST_PORT" && break; sleep 0.5; done
  if ! mongo_ready "$MONGO_TEST_PORT"; then
    log "SecantusDB did not come up; its log:"; tail -n 30 "$SECANTUS_DIR/server.log" >&2
    return 1
  fi
}

stop_mongo() {
  if [ -n "${SECANTUS_PID:-}" ]; then
    kill "$SECANTUS_PID" 2>/dev/null || true
    wait "$SECANTUS_PID" 2>/dev/null || true
    rm -rf "$SECANTUS_DIR"
    SECANTUS_PID=
  fi
}

# The dashboard's browser test drives Debian's Chromium through ChromeDriver.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    return 0
  fi
  log "installing Chromium and ChromeDriver (Debian packages) for the dashboard's browser test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
}

ensure_postgres
ensure_redis
ensure_redis_cluster
ensure_nats
ensure_mongo
ensure_chromium
log "MongoDB ready: MONGODB_URI=$MONGODB_URI"
log "Redis ready: REDIS_URL=$REDIS_URL"
log "Redis Cluster ready: REDIS_CLUSTER_URLS=$REDIS_CLUSTER_URLS"
log "NATS ready: NATS_URL=$NATS_URL"
log "PostgreSQL ready: DATABASE_URL=${DATABASE_URL%%@*}@…"
log "Chromium ready: $(command -v chromium), $(command -v chromedriver)"
