#!/usr/bin/env bash
# Runs graphile-worker (Node.js, from npm) on the same PostgreSQL as the benchmark and prints one
# JSON line with its drain rate: ./scripts/peer-graphile.sh [N] [CONCURRENCY] [LOCAL_QUEUE].
# PEER_HARNESS names another harness of outbox-bench/peers/ to run with the arguments given
# (scripts/peer-graphile-latency.sh runs graphile_latency.mjs this way).
# graphile-worker is installed once into ~/.cache/outbox-tools/graphile (npm registry); it uses its
# own database, `<DATABASE_URL's database>_peers`, created when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
harness="${PEER_HARNESS:-graphile_drain.mjs}"
if [ "$harness" = graphile_drain.mjs ]; then set -- "${1:-100000}" "${2:-24}" "${3:-500}"; fi
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/outbox_test}"
dir="${OUTBOX_TOOLS_DIR:-$HOME/.cache/outbox-tools}/graphile"
command -v node >/dev/null || { echo "node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -d "$dir/node_modules/graphile-worker" ]; then
  mkdir -p "$dir"
  (cd "$dir" && npm init -y >/dev/null && npm install --silent graphile-worker@0.17 pg >/dev/null)
fi
cp "outbox-bench/peers/$harness" "$dir/"
db="${DATABASE_URL##*/}"; db="${db%%\?*}_peers"
admin="${DATABASE_URL%/*}/postgres"
psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
  || psql "$admin" -qc "CREATE DATABASE \"$db\""
cd "$dir" && PGURL="${DATABASE_URL%/*}/$db" node "$harness" "$@" 2>/dev/null | tail -n 1
