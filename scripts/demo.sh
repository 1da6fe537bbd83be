#!/usr/bin/env bash
# The Weft demo: a three-node mesh on loopback, driven only through the `weft`
# CLI and the HTTP API. It builds the binary, makes a root key and two
# operator keys, writes the trust root, sets up and certifies three nodes,
# runs them, and then walks through the story:
#   1. two operators co-sign a policy bundle and push it to node 1;
#   2. it reaches every node by gossip; alice is allowed everywhere;
#   3. alice is revoked at node 2, and within moments denied at every node;
#   4. node 3 is restarted from its store and still denies alice before it
#      has reconnected to anyone.
# Every step is checked; the script exits 1 if one does not hold.
#
# Usage: ./scripts/demo.sh [--keep]    --keep leaves the demo directory in place
set -euo pipefail
cd "$(dirname "$0")/.."

keep=no
[[ "${1:-}" == "--keep" ]] && keep=yes

echo "==> building weft (release)"
cargo build --release -p weft-node
weft="$PWD/target/release/weft"

work="$(mktemp -d "${TMPDIR:-/tmp}/weft-demo.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ "$keep" == no ]]; then rm -rf "$work"; else echo "files kept in $work"; fi
}
trap cleanup EXIT
cd "$work"

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "demo failed: $*" >&2; exit 1; }

# Free loopback ports, picked by the kernel.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "keys: a root key and two operators (PKCS#8 PEM files, mode 0600)"
"$weft" key gen --out root.key >/dev/null
alice=$("$weft" key gen --out alice.key 2>/dev/null | tail -n 1)
bob=$("$weft" key gen --out bob.key 2>/dev/null | tail -n 1)
echo "alice (policy, revoke, admit): $alice"
echo "bob   (policy):                $bob"

step "trust root: policy needs both operators, a revocation needs one"
"$weft" trust init --root-key root.key \
  --operator "alice=$alice:policy,revoke,admit" --operator "bob=$bob:policy" \
  --threshold 2 --revoke-threshold 1 --expires 365d --out trust.json >/dev/null
"$weft" trust show trust.json | head -n 12

step "three nodes: init, certify (by alice), run"
declare -a api p2p
for i in 1 2 3; do
  api[$i]=$(free_port)
  p2p[$i]=$(free_port)
done
for i in 1 2 3; do
  peers=()
  for j in 1 2 3; do
    [[ $j -lt $i ]] && peers+=(--peer "/ip4/127.0.0.1/tcp/${p2p[$j]}")
  done
  id=$("$weft" node init --dir "n$i" --trust trust.json \
    --listen "/ip4/127.0.0.1/tcp/${p2p[$i]}" --api "127.0.0.1:${api[$i]}" "${peers[@]}" | tail -n 1)
  "$weft" node certify --key alice.key --dir "n$i" >/dev/null
  echo "node $i: $id  http://127.0.0.1:${api[$i]}"
done
start_node() {
  "$weft" node run --dir "n$1" >"n$1.log" 2>&1 &
  pids[$1]=$!
}
for i in 1 2 3; do start_node "$i"; done
url() { echo "http://127.0.0.1:${api[$1]}"; }
for i in 1 2 3; do
  for _ in $(seq 1 100); do curl -fsS "$(url "$i")/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "$(url "$i")/healthz" >/dev/null || fail "node $i did not start (see n$i.log)"
done
echo "all three nodes answer /healthz"

step "1. alice writes a bundle, bob co-signs it, it is pushed to node 1"
mkdir -p policies
cat >policies/main.cedar <<'EOF'
@id("staff-read")
permit (principal in Group::"staff", action == Action::"read", resource);
@id("no-contractors")
forbid (principal in Group::"contractors", action, resource);
EOF
cat >policies/entities.json <<'EOF'
[{"uid":{"type":"User","id":"alice"},"attrs":{},"parents":[{"type":"Group","id":"staff"}]},
 {"uid":{"type":"User","id":"carol"},"attrs":{},"parents":[{"type":"Group","id":"staff"},{"type":"Group","id":"contractors"}]},
 {"uid":{"type":"Group","id":"staff"},"attrs":{},"parents":[]},
 {"uid":{"type":"Group","id":"contractors"},"attrs":{},"parents":[]}]
EOF
"$weft" bundle create --name main --dir policies --key alice.key --node "$(url 1)" --out main.update >/dev/null
if "$weft" push --node "$(url 1)" main.update 2>push.err; then fail "a bundle with one signature was accepted"; fi
echo "with alice's signature only, node 1 refuses it: $(cat push.err)"
"$weft" update sign --key bob.key main.update >/dev/null
"$weft" push --node "$(url 1)" main.update

authorize() { # node principal -> decision
  curl -fsS -X POST "$(url "$1")/v1/authorize" -H 'content-type: application/json' \
    -d "{\"principal\":\"User::\\\"$2\\\"\",\"action\":\"Action::\\\"read\\\"\",\"resource\":\"Doc::\\\"plan\\\"\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["decision"])'
}
wait_for() { # node principal decision
  for _ in $(seq 1 200); do [[ "$(authorize "$1" "$2")" == "$3" ]] && return 0; sleep 0.05; done
  return 1
}

step "2. the bundle reaches every node; alice is allowed, carol (a contractor) is not"
t0=$(date +%s%N)
for i in 1 2 3; do wait_for "$i" alice allow || fail "node $i never allowed alice"; done
echo "alice allowed at nodes 1, 2, 3 ($(( ($(date +%s%N) - t0) / 1000000 )) ms after the push)"
for i in 1 2 3; do [[ "$(authorize "$i" carol)" == deny ]] || fail "node $i allowed carol"; done
echo "carol denied at nodes 1, 2, 3 (forbid wins)"

step "3. alice is revoked at node 2 (one revoke-role signature is enough)"
t0=$(date +%s%N)
"$weft" revoke --key alice.key --node "$(url 2)" 'User::"alice"' --reason "laptop stolen" | tail -n 1
for i in 1 2 3; do wait_for "$i" alice deny || fail "node $i still allows alice"; done
echo "alice denied at nodes 1, 2, 3 within $(( ($(date +%s%N) - t0) / 1000000 )) ms"

step "4. node 3 restarts alone, from its store, and still denies alice"
kill "${pids[3]}"; wait "${pids[3]}" 2>/dev/null || true
kill "${pids[1]}" "${pids[2]}"; wait 2>/dev/null || true
start_node 3
for _ in $(seq 1 100); do curl -fsS "$(url 3)/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
[[ "$(authorize 3 alice)" == deny ]] || fail "node 3 forgot the revocation"
echo "node 3, with no peer reachable, denies alice"
"$weft" status --node "$(url 3)" | head -n 20

step "the demo held at every step"
