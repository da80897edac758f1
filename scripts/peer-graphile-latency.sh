#!/usr/bin/env bash
# Runs graphile-worker's side of outbox-bench's held-xmin scenario on the same PostgreSQL and prints
# one JSON line: ./scripts/peer-graphile-latency.sh [RATE] [SECONDS] [HOLD=1].
# graphile-worker is installed once into ~/.cache/outbox-tools/graphile (npm registry); it uses its
# own database, `<DATABASE_URL's database>_peers`, created when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-800}" seconds="${2:-600}" hold="${3:-1}"
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/outbox_test}"
dir="${OUTBOX_TOOLS_DIR:-$HOME/.cache/outbox-tools}/graphile"
command -v node >/dev/null || { echo "node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -d "$dir/node_modules/graphile-worker" ]; then
  mkdir -p "$dir"
  (cd "$dir" && npm init -y >/dev/null && npm install --silent graphile-worker@0.17 pg >/dev/null)
fi
cp outbox-bench/peers/graphile_latency.mjs "$dir/"
db="${DATABASE_URL##*/}"; db="${db%%\?*}_peers"
admin="${DATABASE_URL%/*}/postgres"
psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
  || psql "$admin" -qc "CREATE DATABASE \"$db\""
cd "$dir" && PGURL="${DATABASE_URL%/*}/$db" node graphile_latency.mjs "$rate" "$seconds" "$hold" 2>/dev/null | tail -n 1
