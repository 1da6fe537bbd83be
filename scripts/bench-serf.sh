#!/usr/bin/env bash
# Serf baseline for the propagation benchmark: N serf agents on loopback, one
# user event at a time sent with `serf event`, and the time until every agent
# has run its event handler. Prints one JSON line per node count:
#   {"system":"serf","nodes":N,"events":E,"p50_ms":..,"p99_ms":..,"max_ms":..}
#
# Usage: scripts/bench-serf.sh [NODES...]   (default: 10 50 100)
# Needs Debian's `serf` package (apt-get install serf). EVENTS=20 by default.
set -euo pipefail

command -v serf >/dev/null || { echo "error: serf is not installed (apt-get install serf)" >&2; exit 1; }
EVENTS=${EVENTS:-20}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

handler="$work/handler.sh"
cat >"$handler" <<'EOF'
#!/bin/sh
# Runs on every agent for every user event: record when it arrived.
read -r payload
echo "$SERF_SELF_NAME $payload $(date +%s%N)" >>"$SERF_BENCH_OUT"
EOF
chmod +x "$handler"

percentile() { # percentile P < sorted numbers
  awk -v p="$1" '{a[NR]=$1} END {i=int((NR-1)*p/100)+1; print a[i]}'
}

run() {
  local n=$1 base_bind=17946 base_rpc=17373 out="$work/recv-$1"
  : >"$out"
  pids=()
  for i in $(seq 0 $((n - 1))); do
    local join=()
    [[ $i -gt 0 ]] && join=(-join "127.0.0.1:$base_bind")
    SERF_BENCH_OUT="$out" serf agent -node "n$i" -bind "127.0.0.1:$((base_bind + i))" \
      -rpc-addr "127.0.0.1:$((base_rpc + i * 2 + 1000))" -event-handler "user:bench=$handler" \
      -log-level err "${join[@]}" >"$work/agent-$i.log" 2>&1 &
    pids+=($!)
    sleep 0.05
  done
  local rpc="127.0.0.1:$((base_rpc + 1000))"
  # Wait until every agent is a member.
  for _ in $(seq 1 300); do
    local alive
    alive=$(serf members -rpc-addr "$rpc" -status alive 2>/dev/null | wc -l || true)
    [[ "$alive" -ge "$n" ]] && break
    sleep 0.1
  done
  sleep 2
  local lat="$work/lat-$n"
  : >"$lat"
  for e in $(seq 1 "$EVENTS"); do
    local t0
    t0=$(date +%s%N)
    serf event -rpc-addr "$rpc" -coalesce=false bench "e$e" >/dev/null
    for _ in $(seq 1 200); do
      [[ $(grep -c " e$e " "$out" || true) -ge "$n" ]] && break
      sleep 0.02
    done
    local last
    last=$(grep " e$e " "$out" | awk '{print $3}' | sort -n | tail -1)
    echo $(((last - t0) / 1000)) >>"$lat" # microseconds
    sleep 0.3
  done
  sort -n "$lat" -o "$lat"
  local p50 p99 max
  p50=$(percentile 50 <"$lat"); p99=$(percentile 99 <"$lat"); max=$(tail -1 "$lat")
  printf '{"system":"serf","nodes":%d,"events":%d,"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f}\n' \
    "$n" "$EVENTS" "$(echo "$p50/1000" | bc -l)" "$(echo "$p99/1000" | bc -l)" "$(echo "$max/1000" | bc -l)"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

for n in "${@:-10 50 100}"; do
  for m in $n; do run "$m"; done
done
