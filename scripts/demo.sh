#!/usr/bin/env bash
# The Weft demo, for now: build the `weft` binary, make a root key and two
# operator keys, write a trust root signed by the root key, and show it.
# (This becomes `weft demo` once nodes exist.)
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
if [[ "$keep" == no ]]; then
  trap 'rm -rf "$work"' EXIT
fi
cd "$work"

step() { printf '\n==> %s\n' "$*"; }

step "generating a root key and two operator keys (PKCS#8 PEM, mode 0600)"
root=$("$weft" key gen --out root.key | tail -n 1)
alice=$("$weft" key gen --out alice.key | tail -n 1)
bob=$("$weft" key gen --out bob.key | tail -n 1)
echo "root:  $root"
echo "alice: $alice"
echo "bob:   $bob"

step "writing the trust root: alice may sign policy, revocations and node admissions; bob signs policy; policy needs both"
"$weft" trust init \
  --root-key root.key \
  --operator "alice=$alice:policy,revoke,admit" \
  --operator "bob=$bob:policy" \
  --threshold 2 \
  --expires 365d \
  --out trust.json

step "showing it (and checking its signatures)"
"$weft" trust show trust.json

step "a key file others can read is refused"
chmod 644 bob.key
if "$weft" key show bob.key; then
  echo "unexpected: weft read a world-readable key" >&2
  exit 1
fi
chmod 600 bob.key

if [[ "$keep" == yes ]]; then
  step "done; the files are in $work"
else
  step "done (run with --keep to keep the files)"
fi
