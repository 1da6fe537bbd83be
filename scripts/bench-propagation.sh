#!/usr/bin/env bash
# Propagation, Weft next to Serf, in one run (issue #4): runs
#   cargo bench -p weft-tests --bench propagation   (Weft, N nodes in one process)
#   cargo bench -p weft-tests --bench propagation_processes
#                                                   (Weft, N `weft node run` processes)
#   scripts/bench-serf.sh                           (Serf, N agents on loopback)
# with the same node counts, one after the other (never at the same time, so
# they do not share the CPU), collects their JSON lines and prints a table with
# the ratios Serf ÷ Weft for p50 and p99 (goal: ≥ 10×).
#
# What is timed differs a little, and in Serf's favour at neither end:
# - Weft: from just before `POST /v1/updates` (the update is signed before the
#   clock starts) to the moment the last node's in-process policy view holds
#   the revocation. Includes HTTP, signature checks, the origin's sled flush
#   before its 202, and every gossip hop.
# - Serf: from just before the `serf event` CLI call (process start, RPC) to
#   the timestamp the last agent's event handler writes. Includes the CLI's
#   fork/exec and RPC, and the handler's fork/exec of /bin/sh and date(1).
#
# - Weft across processes: from just before `POST /v1/updates` to the
#   latest `in_force_us` (when a node's decisions started seeing the update)
#   in the nodes' audit records, once every node's `/v1/authorize` answers
#   the revoked principal with a deny.
#
# Usage: scripts/bench-propagation.sh [NODES...]   (default: 10 50 100)
# The processes run at every node count up to WEFT_BENCH_PROCESS_MAX
# (default 50; 0 skips them).
# Environment: WEFT_BENCH_UPDATES (default 30; Serf sends as many events),
# WEFT_BENCH_GAP_MS, WEFT_BENCH_SEED. Raw JSON lines go to
# target/bench-propagation.jsonl.
# Needs jq, bc and Debian's `serf` (apt-get install serf jq bc).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in jq bc serf cargo; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done

nodes=("$@")
[[ ${#nodes[@]} -eq 0 ]] && nodes=(10 50 100)
updates=${WEFT_BENCH_UPDATES:-30}
csv=$(IFS=,; echo "${nodes[*]}")
mkdir -p target
results=target/bench-propagation.jsonl
: >"$results"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== Weft: cargo bench -p weft-tests --bench propagation (WEFT_BENCH_NODES=$csv, $updates updates)" >&2
WEFT_BENCH_NODES="$csv" WEFT_BENCH_UPDATES="$updates" \
  cargo bench -p weft-tests --bench propagation | tee "$tmp/weft.out" >&2
grep '^{"system"' "$tmp/weft.out" >>"$results"

for n in "${nodes[@]}"; do
  [[ $n -le ${WEFT_BENCH_PROCESS_MAX:-50} ]] || continue
  echo "== Weft across processes: cargo bench -p weft-tests --bench propagation_processes (WEFT_BENCH_NODES=$n)" >&2
  WEFT_BENCH_NODES="$n" WEFT_BENCH_UPDATES="$updates" \
    cargo bench -p weft-tests --bench propagation_processes | tee -a "$tmp/procs.out" >&2
done
grep '^{"system"' "$tmp/procs.out" >>"$results" 2>/dev/null || true

echo "== Serf: scripts/bench-serf.sh ${nodes[*]} (EVENTS=$updates)" >&2
EVENTS="$updates" scripts/bench-serf.sh "${nodes[@]}" | tee "$tmp/serf.out" >&2
grep '^{"system"' "$tmp/serf.out" >>"$results"

field() { # field SYSTEM NODES KEY
  jq -r --arg s "$1" --argjson n "$2" --arg k "$3" \
    'select(.system == $s and .nodes == $n) | .[$k] // empty' "$results" | tail -1
}
ratio() { # ratio A B -> A / B with one decimal, or "n/a"
  if [[ -n "$1" && -n "$2" ]] && [[ $(echo "$2 > 0" | bc -l) -eq 1 ]]; then
    printf '%.1f×' "$(echo "$1 / $2" | bc -l)"
  else
    echo "n/a"
  fi
}

echo
echo "| nodes | Weft p50 ms | Weft p99 ms | Weft max ms | processes p50 / p99 / max ms | Serf p50 ms | Serf p99 ms | Serf max ms | Serf÷Weft p50 | Serf÷Weft p99 | Weft bytes out/node/update ÷ update size | Weft RSS MiB/node |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for n in "${nodes[@]}"; do
  wp50=$(field weft "$n" p50_ms); wp99=$(field weft "$n" p99_ms); wmax=$(field weft "$n" max_ms)
  sp50=$(field serf "$n" p50_ms); sp99=$(field serf "$n" p99_ms); smax=$(field serf "$n" max_ms)
  amp=$(field weft "$n" amplification); rss=$(field weft "$n" rss_mib_per_node)
  pp50=$(field weft-processes "$n" p50_ms); pp99=$(field weft-processes "$n" p99_ms); pmax=$(field weft-processes "$n" max_ms)
  procs="${pp50:-n/a} / ${pp99:-n/a} / ${pmax:-n/a}"
  [[ -n "$pp99" ]] && procs="$procs (Serf÷: $(ratio "$sp99" "$pp99") at p99)"
  echo "| $n | ${wp50:-n/a} | ${wp99:-n/a} | ${wmax:-n/a} | $procs | ${sp50:-n/a} | ${sp99:-n/a} | ${smax:-n/a} | $(ratio "$sp50" "$wp50") | $(ratio "$sp99" "$wp99") | ${amp:-n/a}× | ${rss:-n/a} |"
done
echo
echo "Serf timings include the \`serf event\` CLI call and the event handler's fork/exec;"
echo "Weft timings include the HTTP POST and the origin's sled flush. Raw lines: $results"
