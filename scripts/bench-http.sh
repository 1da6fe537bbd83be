#!/usr/bin/env bash
# Decisions over HTTP on loopback: wrk against `POST /v1/authorize` of one node
# of a three-node mesh, while revocations stream in by gossip from another
# node. Prints wrk's latency distribution and throughput, and how many
# revocations arrived during the run.
#
# Usage: scripts/bench-http.sh [SECONDS] [CONNECTIONS]   (default 10 s, 32)
# STREAM=0 runs without the revocation stream, as a baseline.
# PIN=1 pins the measured node (node 1) alone to the last core and everything
# else (nodes 2 and 3, the revoking CLI, wrk with one thread) to core 0, so
# the load generator does not preempt the node under test. Without PIN,
# everything shares every core and wrk runs 2 threads (WRK_THREADS overrides).
# PRIO=1 (as root) also runs node 1 and wrk at nice -10, above the rest of
# the bench and anything else on the machine; PRIO=rt runs them in the
# real-time class (SCHED_FIFO 1), which preempts all ordinary work at once.
# Either way node 1's other threads are not raised (see below). Both show
# how much of the tail is the scheduler running other work in their place.
# PRIO=rt is a diagnostic for light load (1 connection): a saturated wrk or
# API thread hits the kernel's real-time throttling (5% of each second left
# to ordinary work), which stalls them for tens of milliseconds.
# Prints, after wrk, the node's own reading of the run: the server-side p50
# and p99 of `/v1/authorize` from node 1's
# weft_http_request_duration_seconds histogram (scraped before and after,
# interpolated within a bucket as Prometheus' histogram_quantile does),
# which holds however the load generator shares the cores; then the CPU
# time each of node 1's threads used during the run.
# WEFT=PATH runs that `weft` binary instead of building this tree's.
# Needs Debian's `wrk` (and `taskset`, from util-linux, for PIN=1), plus
# `curl` and `python3`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
pin=${PIN:-0}
if [[ "$pin" == 1 ]]; then
  command -v taskset >/dev/null || { echo "error: PIN=1 needs taskset (util-linux)" >&2; exit 1; }
  last=$(($(nproc) - 1))
  [[ $last -ge 1 ]] || { echo "error: PIN=1 needs at least 2 cores" >&2; exit 1; }
  on_node=(taskset -c "$last")
  on_rest=(taskset -c 0)
  wrk_threads=${WRK_THREADS:-1}
else
  on_node=()
  on_rest=()
  wrk_threads=${WRK_THREADS:-2}
fi
on_wrk=("${on_rest[@]}")
case "${PRIO:-0}" in
  0) ;;
  1) on_node=(nice -n -10 "${on_node[@]}"); on_wrk=(nice -n -10 "${on_wrk[@]}") ;;
  rt) on_node=(chrt -f 1 "${on_node[@]}"); on_wrk=(chrt -f 1 "${on_wrk[@]}") ;;
  *) echo "error: PRIO is 0, 1 or rt" >&2; exit 1 ;;
esac
# wrk needs at least one connection per thread.
[[ $wrk_threads -le $conns ]] || wrk_threads=$conns
command -v wrk >/dev/null || { echo "error: wrk is not installed (apt-get install wrk)" >&2; exit 1; }

if [[ -n "${WEFT:-}" ]]; then
  weft="$(realpath "$WEFT")"
else
  cargo build --release -p weft-node >/dev/null 2>&1
  weft="$PWD/target/release/weft"
fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$weft" key gen --out root.key >/dev/null 2>&1
alice=$("$weft" key gen --out alice.key 2>/dev/null | tail -n 1)
"$weft" trust init --root-key root.key --operator "alice=$alice" --out trust.json >/dev/null
declare -a api p2p
for i in 1 2 3; do api[$i]=$(free_port); p2p[$i]=$(free_port); done
for i in 1 2 3; do
  peers=()
  for j in 1 2 3; do [[ $j -lt $i ]] && peers+=(--peer "/ip4/127.0.0.1/tcp/${p2p[$j]}"); done
  "$weft" node init --dir "n$i" --trust trust.json --listen "/ip4/127.0.0.1/tcp/${p2p[$i]}" \
    --api "127.0.0.1:${api[$i]}" "${peers[@]}" >/dev/null
  "$weft" node certify --key alice.key --dir "n$i" >/dev/null
  if [[ $i == 1 ]]; then on=("${on_node[@]}"); else on=("${on_rest[@]}"); fi
  "${on[@]}" "$weft" node run --dir "n$i" >"n$i.log" 2>&1 &
  pids+=($!)
done
url() { echo "http://127.0.0.1:${api[$1]}"; }
for i in 1 2 3; do
  for _ in $(seq 1 100); do curl -fsS "$(url "$i")/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
done
# Under PRIO, only node 1's API threads are raised: its own background
# thread (gossip, apply, sled, audit, detector) goes back to ordinary
# (PRIO=rt) or below it (PRIO=1, nice 10), so decisions come first.
if [[ "${PRIO:-0}" != 0 ]]; then
  for t in /proc/"${pids[0]}"/task/*; do
    [[ "$(cat "$t/comm" 2>/dev/null)" == weft-api ]] && continue
    if [[ "$PRIO" == rt ]]; then chrt -o -p 0 "${t##*/}"; else renice -n 10 -p "${t##*/}"; fi >/dev/null 2>&1 || true
  done
fi
mkdir -p policies
cat >policies/main.cedar <<'EOF'
permit (principal in Group::"staff", action == Action::"read", resource);
forbid (principal in Group::"contractors", action, resource);
EOF
echo '[{"uid":{"type":"User","id":"alice"},"attrs":{},"parents":[{"type":"Group","id":"staff"}]},{"uid":{"type":"Group","id":"staff"},"attrs":{},"parents":[]}]' >policies/entities.json
"$weft" bundle create --name main --dir policies --key alice.key --node "$(url 1)" --out main.update >/dev/null
"$weft" push --node "$(url 1)" main.update >/dev/null
sleep 1

cat >post.lua <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{"principal":"User::\"alice\"","action":"Action::\"read\"","resource":"Doc::\"plan\""}]]
EOF
# Revocations stream in at node 2 during the run (each reaches node 1 by gossip).
(
  n=0
  end=$((SECONDS + secs))
  while [[ "${STREAM:-1}" != 0 && $SECONDS -lt $end ]]; do
    n=$((n + 1))
    "${on_rest[@]}" "$weft" revoke --key alice.key --node "$(url 2)" "User::\"gone$n\"" >/dev/null 2>&1 || true
    sleep 0.1
  done
) &
streamer=$!
before=$(curl -fsS "$(url 1)/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revocations"])')
# One request first, to show what is being measured.
curl -fsS -X POST "$(url 1)/v1/authorize" -H 'content-type: application/json' \
  -d '{"principal":"User::\"alice\"","action":"Action::\"read\"","resource":"Doc::\"plan\""}'
echo
# CPU time (user + system, in clock ticks) of each of node 1's threads.
thread_ticks() {
  for t in /proc/"${pids[0]}"/task/*; do
    [[ -r $t/stat ]] || continue
    # The name is in parentheses and may hold spaces: split after it.
    python3 -c 'import sys; s=open(sys.argv[1]).read(); name=s[s.index("(")+1:s.rindex(")")]; f=s[s.rindex(")")+2:].split(); print(sys.argv[1].split("/")[-2], name.replace(" ", "_"), int(f[11])+int(f[12]))' "$t/stat" 2>/dev/null || true
  done
}
thread_ticks >ticks.before
curl -fsS "$(url 1)/metrics" >metrics.before
"${on_wrk[@]}" wrk -t "$wrk_threads" -c "$conns" -d "${secs}s" --latency -s post.lua "$(url 1)/v1/authorize"
curl -fsS "$(url 1)/metrics" >metrics.after
thread_ticks >ticks.after
wait "$streamer" || true
echo "node 1's own timing of POST /v1/authorize (200), from the request head read to the answer handed to the connection:"
python3 - metrics.before metrics.after <<'PY'
import re, sys
WANT = {"route": "/v1/authorize", "method": "POST", "status": "200"}
def buckets(path):
    out = {}
    for line in open(path):
        if not line.startswith("weft_http_request_duration_seconds_bucket{"):
            continue
        labels, value = line.rsplit("} ", 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if all(labels.get(k) == v for k, v in WANT.items()):
            out[float(labels["le"])] = float(value.split()[0])
    return out
b, a = buckets(sys.argv[1]), buckets(sys.argv[2])
bounds = sorted(a)
counts = [a[le] - b.get(le, 0.0) for le in bounds]  # cumulative, for the run only
total = counts[-1] if counts else 0
if total <= 0:
    print("  no samples: is this node's /metrics missing weft_http_request_duration_seconds?")
    sys.exit(0)
def quantile(q):
    rank = q * total
    for i, le in enumerate(bounds):
        if counts[i] >= rank:
            if le == float("inf"):
                return bounds[i - 1] if i else float("nan")  # as histogram_quantile
            lo = bounds[i - 1] if i else 0.0
            below = counts[i - 1] if i else 0.0
            inside = counts[i] - below
            return lo + (le - lo) * ((rank - below) / inside if inside else 1.0)
    return float("nan")
print(f"  requests {int(total)}, p50 {quantile(0.5) * 1e6:.0f} us, p99 {quantile(0.99) * 1e6:.0f} us, p99.9 {quantile(0.999) * 1e6:.0f} us")
PY
echo "node 1's threads, CPU ticks ($(getconf CLK_TCK)/s) during the run:"
python3 - ticks.before ticks.after <<'PY'
import sys
def load(p):
    d = {}
    for line in open(p):
        tid, name, ticks = line.split()
        d[tid] = (name, int(ticks))
    return d
b, a = load(sys.argv[1]), load(sys.argv[2])
by = {}
for tid, (name, t) in a.items():
    by[name] = by.get(name, 0) + t - b.get(tid, (name, 0))[1]
for name, t in sorted(by.items(), key=lambda x: -x[1]):
    if t:
        print(f"  {name:<20} {t}")
PY
after=$(curl -fsS "$(url 1)/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revocations"])')
echo "revocations applied at the measured node during the run: $((after - before))"
