#!/usr/bin/env bash
# Convergence after a heal, on real processes in network namespaces (issue
# #25): the `heal_bench` test of tests/tests/netns.rs (six nodes split 3|3,
# WEFT_BENCH_HEALS times, each side revoking during the cut) with this tree's
# `weft`, and, when BASE_BIN names another build of `weft` (e.g. the parent
# commit's), the same with that one, alternately, ROUNDS times each. Prints
# each run's summary line (p50, p99, slowest).
#
# Usage: sudo scripts/bench-heal.sh            (root: namespaces and nftables)
# Environment: WEFT_BENCH_HEALS (default 20), WEFT_BENCH_CUT_SECS (default 6), ROUNDS
# (default 1), BASE_BIN (a `weft` binary to run side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-1}
cargo build -q -p weft-node --bin weft
cargo test -q -p weft-tests --test netns --no-run
target=${CARGO_TARGET_DIR:-target}
this_bin=$(realpath "$target/debug/weft")
run() {
  local label=$1 bin=$2
  WEFT_BIN=$bin cargo test -q -p weft-tests --test netns heal_bench -- --ignored --nocapture 2>&1 \
    | grep -E "^FAULTS heal_bench|^HEAL|panicked|Error" | sed "s/^/$label: /"
}
for ((r = 0; r < rounds; r++)); do
  if [[ -n ${BASE_BIN:-} ]]; then run base "$BASE_BIN"; fi
  run this "$this_bin"
done
