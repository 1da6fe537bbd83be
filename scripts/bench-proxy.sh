#!/usr/bin/env bash
# Requests through a real nginx to an upstream, with and without
# `auth_request` to a Weft node (issue #24): the `proxy_bench` test of
# tests/tests/proxy.rs in release, at 1 and 16 connections, each setting
# WEFT_BENCH_ROUNDS times (default 2) for WEFT_BENCH_SECS seconds (default
# 10), alternating. Prints one PROXY line per connection count: wrk's p50
# and p99 with and without, what Weft adds, the throughput ratio, and the
# node's own server-side p50 and p99 of /v1/forward-auth.
#
# Needs nginx and wrk (apt-get install nginx wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q --release -p weft-tests --test proxy proxy_bench -- --ignored --nocapture 2>&1 \
  | grep -E "^PROXY|panicked|Error"
