#!/usr/bin/env bash
# Builds herd's Debian package from the release build:
# target/debian/herd_<version>-1_<arch>.deb, with the binary in /usr/bin,
# the desktop entry (and its "Render node" action) and the icon. The
# package's metadata is [package.metadata.deb] in Cargo.toml.
#
#   scripts/deb.sh              # release build (long: the window's wgpu), then the package
#   scripts/deb.sh --no-build   # package an existing target/release/herd
#
# Prints the package's path on its last line (in target/debian, or in
# $CARGO_TARGET_DIR/debian when that is set). Then: apt-get install
# ./target/debian/herd_*.deb (apt installs Blender beside it, as
# recommended) and `herd --version`; CI does so (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo install puts it in ~/.cargo/bin, which outlives the clone: later
# runs (and CI's) skip this.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb (once)" >&2
  cargo install cargo-deb --locked
fi
# cargo-deb runs `cargo build --release` itself unless --no-build is given.
# --strip: the package carries no debug info (the release profile keeps
# line tables, which cargo-deb would otherwise ship: a 226 MB binary
# instead of 36 MB). It prints the package's path on stdout (its progress
# goes to stderr).
deb="$(cargo deb --strip "$@" | tail -1)"
ls -l "$deb" >&2
echo "$deb"
