#!/usr/bin/env bash
# Tests the weft Debian package on this machine (as root): installs it
# with `dpkg -i`, checks the files it holds, verifies its systemd unit with
# `systemd-analyze verify`, runs `weft demo --exit` from /usr/bin/weft, and
# removes it again with `dpkg -r` and `dpkg --purge`. Takes the .deb's path, or builds it
# with scripts/package-deb.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Only a package that is installed counts: one removed earlier leaves its
# status at "deinstall ok config-files", which is no obstacle.
if [[ "$(dpkg-query -W -f='${Status}' weft 2>/dev/null || true)" == "install ok installed" ]]; then
  echo "error: a weft package is installed already; remove it first (dpkg -r weft)" >&2
  exit 1
fi

deb="${1:-}"
if [[ -z "$deb" ]]; then
  deb=$(./scripts/package-deb.sh | tail -n 1)
fi

cleanup() { as_root dpkg --purge weft >/dev/null 2>&1 || true; }
trap cleanup EXIT

as_root dpkg -i "$deb"
for f in /usr/bin/weft /usr/lib/systemd/system/weft.service /etc/weft/weft.toml.example \
  /usr/share/doc/weft/install.md; do
  [[ -e "$f" ]] || { echo "error: the package did not install $f" >&2; exit 1; }
done
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /usr/lib/systemd/system/weft.service
  echo "systemd-analyze verify: ok"
else
  echo "error: systemd-analyze is missing (apt-get install systemd)" >&2
  exit 1
fi
/usr/bin/weft --version
/usr/bin/weft demo --exit
as_root dpkg -r weft
if [[ -e /usr/bin/weft ]]; then
  echo "error: /usr/bin/weft is still there after dpkg -r" >&2
  exit 1
fi
# Purged, the package leaves nothing behind, not even its configuration.
as_root dpkg --purge weft
if [[ -e /etc/weft/weft.toml.example ]]; then
  echo "error: /etc/weft/weft.toml.example is still there after dpkg --purge" >&2
  exit 1
fi
echo "package test: ok"
