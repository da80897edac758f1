#!/usr/bin/env bash
# The full test suite: starts the servers the tests need (scripts/services.sh), then runs every test
# of the workspace once. This is the command the README gives and the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
# Every test makes its own schema; start each run from an empty test database so they do not pile up.
if [ "${KEEP_TEST_DB:-0}" != 1 ]; then
  db="${DATABASE_URL##*/}"; db="${db%%\?*}"
  psql "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\""
fi
cargo test --workspace --all-targets --no-fail-fast "$@"
cargo test --workspace --doc "$@"
