#!/usr/bin/env bash
# Runs every test in the workspace: unit, integration, CLI, property tests,
# and the benches compiled and run once as tests. Extra arguments go to
# `cargo test` (e.g. ./scripts/test.sh -- --nocapture).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
