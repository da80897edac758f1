#!/usr/bin/env bash
# Runs graphile-worker's side of outbox-bench's held-xmin scenario on the same PostgreSQL and prints
# one JSON line: ./scripts/peer-graphile-latency.sh [RATE] [SECONDS] [HOLD=1] (installation and
# database as in scripts/peer-graphile.sh).
set -euo pipefail
PEER_HARNESS=graphile_latency.mjs exec "$(dirname "$0")/peer-graphile.sh" "${1:-800}" "${2:-600}" "${3:-1}"
