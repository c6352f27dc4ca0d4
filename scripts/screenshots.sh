#!/usr/bin/env bash
# Screenshots of the real app during a real render of the demo scene, for
# the README: the controller window mid-job and a node window.
#
# It builds a LAN of network namespaces (controller on h1, nodes on h2 and
# h3, discovery by real broadcast that never leaves the namespaces), starts
# two Xvfb displays, a headless node on h2, a node *window* on h3 and the
# controller window on h1 rendering assets/demo/demo.blend with real
# Blender, and captures both displays mid-job into screenshots/.
#
# Needs root (namespaces), iproute2, xvfb and imagemagick (import):
#   apt-get install -y xvfb xauth imagemagick mesa-vulkan-drivers
#   scripts/screenshots.sh [SECONDS_INTO_THE_JOB]   (default 14)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "screenshots.sh: needs root (network namespaces)" >&2; exit 1; }
wait_secs="${1:-14}"
cargo build --release --quiet
herd="$PWD/target/release/herd"
prefix="hshot$$"
work="$(mktemp -d)"
runtime_dir="$work/xdg"; mkdir -m 700 "$runtime_dir"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns"
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The LAN: a bridge in its own namespace, hosts h1..h3 on 10.77.0.0/24.
ip netns add "$prefix-br"
ip -n "$prefix-br" link add br0 type bridge
ip -n "$prefix-br" link set br0 up
for i in 1 2 3; do
  ns="$prefix-h$i"; veth="v${prefix}h$i"; veth="${veth:0:15}"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" netns "$prefix-br"
  ip -n "$prefix-br" link set "$veth" master br0
  ip -n "$prefix-br" link set "$veth" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "10.77.0.$i/24" brd + dev eth0
  ip -n "$ns" link set eth0 up
done
in_host() { local host="$1"; shift; ip netns exec "$prefix-$host" env -u HERD_LOOPBACK_ONLY XDG_RUNTIME_DIR="$runtime_dir" "$@"; }

Xvfb :71 -screen 0 1100x760x24 -nolisten tcp >/dev/null 2>&1 & pids+=($!)
Xvfb :72 -screen 0 520x360x24 -nolisten tcp >/dev/null 2>&1 & pids+=($!)
sleep 1

cp assets/demo/demo.blend "$work/demo.blend"
in_host h2 "$herd" node --headless --name render-2 --threads 1 --work-dir "$work/n2" >/dev/null 2>&1 & pids+=($!)
in_host h3 env DISPLAY=:72 "$herd" node --name render-3 --threads 1 --work-dir "$work/n3" >/dev/null 2>&1 & pids+=($!)
sleep 2
in_host h1 env DISPLAY=:71 "$herd" controller "$work/demo.blend" --start --local-threads 1 \
  --work-dir "$work/n1" >/dev/null 2>&1 & pids+=($!)

sleep "$wait_secs"
mkdir -p screenshots
import -display :71 -window root screenshots/controller.png
import -display :72 -window root screenshots/node.png
echo "wrote screenshots/controller.png and screenshots/node.png"
