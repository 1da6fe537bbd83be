#!/usr/bin/env bash
# Decisions over HTTP on loopback: wrk against `POST /v1/authorize` of one node
# of a three-node mesh, while revocations stream in by gossip from another
# node. Prints wrk's latency distribution and throughput, and how many
# revocations arrived during the run.
#
# Usage: scripts/bench-http.sh [SECONDS] [CONNECTIONS]   (default 10 s, 32)
# STREAM=0 runs without the revocation stream, as a baseline.
# Needs Debian's `wrk`, plus `curl` and `python3`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
command -v wrk >/dev/null || { echo "error: wrk is not installed (apt-get install wrk)" >&2; exit 1; }

cargo build --release -p weft-node >/dev/null 2>&1
weft="$PWD/target/release/weft"
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
  "$weft" node run --dir "n$i" >"n$i.log" 2>&1 &
  pids+=($!)
done
url() { echo "http://127.0.0.1:${api[$1]}"; }
for i in 1 2 3; do
  for _ in $(seq 1 100); do curl -fsS "$(url "$i")/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
done
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
    "$weft" revoke --key alice.key --node "$(url 2)" "User::\"gone$n\"" >/dev/null 2>&1 || true
    sleep 0.1
  done
) &
streamer=$!
before=$(curl -fsS "$(url 1)/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revocations"])')
# One request first, to show what is being measured.
curl -fsS -X POST "$(url 1)/v1/authorize" -H 'content-type: application/json' \
  -d '{"principal":"User::\"alice\"","action":"Action::\"read\"","resource":"Doc::\"plan\""}'
echo
wrk -t 2 -c "$conns" -d "${secs}s" --latency -s post.lua "$(url 1)/v1/authorize"
wait "$streamer" || true
after=$(curl -fsS "$(url 1)/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revocations"])')
echo "revocations applied at the measured node during the run: $((after - before))"
