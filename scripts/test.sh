#!/usr/bin/env bash
# The full test suite: starts the servers the tests need (scripts/services.sh), then runs every test
# of the workspace once. This is the command the README gives and the one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
cargo test --workspace --all-targets --no-fail-fast "$@"
cargo test --workspace --doc "$@"
