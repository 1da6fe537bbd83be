#!/usr/bin/env bash
# Builds the weft Debian package: a release build of `weft` without the
# simulator, packed with cargo-deb (pinned below, installed when missing)
# from `[package.metadata.deb]` in node/Cargo.toml. Prints the .deb's path
# as the last line. Extra arguments go to `cargo deb`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qF "$cargo_deb_version"; then
  cargo install cargo-deb --locked --version "$cargo_deb_version"
fi

out="${CARGO_TARGET_DIR:-target}/debian"
mkdir -p "$out"
# cargo-deb prints the package's path last; --strip drops the line tables
# the release profile keeps for backtraces (180 MB of the binary).
deb=$(cargo deb -p weft-node --locked --strip --output "$out" "$@" | tail -n 1)
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p' >&2
dpkg-deb --contents "$deb" >&2
echo "$deb"
