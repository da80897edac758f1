#!/usr/bin/env bash
# Mutation testing of the conformance suite (issue "the conformance suite catches every broken
# rule"): cargo-mutants changes one expression at a time in the code below and runs the suite on
# the memory store; a mutant the suite does not notice is a rule the suite does not check.
#
#   scripts/mutants.sh            # outbox-testkit/src/memory.rs (the reference store), ~130 mutants
#   scripts/mutants.sh runtime    # outbox-core's worker, outcome folding and retry, ~270 mutants
#   scripts/mutants.sh memory --shard 0/4   # any further cargo-mutants arguments
#
# Results land in target/mutants-<target>/mutants.out (caught.txt, missed.txt, timeout.txt,
# unviable.txt). Needs cargo-mutants (installed here when missing). Not run in CI: about 30 s per
# mutant on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-memory}"
[ $# -gt 0 ] && shift

if ! command -v cargo-mutants >/dev/null 2>&1; then
  cargo install --locked cargo-mutants
fi

# The test command: the conformance suite on the memory store; for the runtime also outbox-core's
# unit tests and its builder tests (configuration checks the suite, building valid workers, never
# reaches).
case "$target" in
  memory)
    files=(--file outbox-testkit/src/memory.rs)
    tests=(--test memory_conformance)
    ;;
  runtime)
    files=(--file 'outbox-core/src/worker/*.rs' --file outbox-core/src/outcome.rs --file outbox-core/src/retry.rs)
    tests=(--lib --test memory_conformance --test worker_build)
    ;;
  *)
    echo "usage: $0 [memory|runtime] [cargo-mutants arguments…]" >&2
    exit 2
    ;;
esac

out="target/mutants-$target"
mkdir -p "$out"
cargo mutants "${files[@]}" --cargo-test-arg=--package=outbox-testkit --jobs 2 --timeout 60 \
  --output "$out" "$@" -- "${tests[@]}" || true

dir="$out/mutants.out"
count() { [ -f "$dir/$1" ] && grep -c . "$dir/$1" || echo 0; }
caught=$(count caught.txt); missed=$(count missed.txt); timeout=$(count timeout.txt); unviable=$(count unviable.txt)
viable=$((caught + missed + timeout))
echo "mutants of $target: $caught caught, $timeout timed out (caught), $missed missed, $unviable unviable"
if [ "$viable" -gt 0 ]; then
  echo "caught rate: $(( (caught + timeout) * 100 / viable )) % of $viable viable mutants"
fi
[ "$missed" -eq 0 ] || { echo "missed mutants:"; cat "$dir/missed.txt"; }
