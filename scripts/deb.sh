#!/usr/bin/env bash
# Builds herd's Debian package from the release build:
# target/debian/herd_<version>-1_<arch>.deb, with the binary in /usr/bin,
# the desktop entry (and its "Render node" action) and the icon. The
# package's metadata is [package.metadata.deb] in Cargo.toml.
#
#   scripts/deb.sh              # release build (long: the window's wgpu), then the package
#   scripts/deb.sh --no-build   # package an existing target/release/herd
#
# Then: apt-get install ./target/debian/herd_*.deb (apt installs Blender
# beside it, as recommended) and `herd --version`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb (once)" >&2
  cargo install cargo-deb --locked
fi
# cargo-deb runs `cargo build --release` itself unless --no-build is given,
# and strips the binary (the package carries no debug info).
cargo deb "$@"
ls -l target/debian/*.deb
