#!/usr/bin/env bash
# Warm scenes: herd render with only the local node against blender -b -a,
# with and without Cycles' persistent data, side by side, ROUNDS rounds each;
# prints each round and the medians of the ratios. Scenes: a static heavy
# one (a monkey with a level-6 subdivision, camera moving, 10 frames at
# 160x90, 4 samples) and the demo.
#   scripts/bench_warm.sh [ROUNDS] [HERD]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
herd="${2:-target/release/herd}"
export HERD_LOOPBACK_ONLY=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/heavy.py" <<'PY'
import bpy, sys
s = bpy.context.scene
s.render.engine = "CYCLES"; s.cycles.samples = 4; s.cycles.use_denoising = False
s.render.resolution_x = 160; s.render.resolution_y = 90
s.frame_start = 1; s.frame_end = 10
bpy.data.objects.remove(bpy.data.objects["Cube"])
bpy.ops.mesh.primitive_monkey_add()
sub = bpy.context.active_object.modifiers.new("sub", "SUBSURF")
sub.levels = sub.render_levels = 6
cam = s.camera
cam.keyframe_insert("location", frame=1); cam.location.x += 1.0; cam.keyframe_insert("location", frame=10)
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
PY
blender -b --factory-startup --python "$work/heavy.py" -- "$work/heavy.blend" >/dev/null 2>&1
cp assets/demo/demo.blend "$work/demo.blend"

# Seconds a command takes; a failed command stops the benchmark.
secs() {
  local start
  start=$(date +%s.%N)
  if ! "$@" >/dev/null 2>&1; then
    echo "failed: $*" >&2
    kill -TERM $$
  fi
  echo "$(date +%s.%N) - $start" | bc
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for scene in heavy demo; do
  blend="$work/$scene.blend"
  : > "$work/$scene.herd"; : > "$work/$scene.pd"
  for round in $(seq "$rounds"); do
    native=$(cd "$work" && secs blender -b "$blend" -o "$work/native/f_" -a)
    native_pd=$(cd "$work" && secs blender -b "$blend" -o "$work/native_pd/f_" \
      --python-expr "import bpy; bpy.context.scene.render.use_persistent_data = True" -a)
    rm -rf "$work/herd"
    herd_secs=$(secs "$herd" render "$blend" --no-discovery --out "$work/herd" --work-dir "$work/node")
    echo "$scene round $round: blender -a ${native} s, with persistent data ${native_pd} s, herd ${herd_secs} s"
    echo "$herd_secs / $native" | bc -l >> "$work/$scene.herd"
    echo "$herd_secs / $native_pd" | bc -l >> "$work/$scene.pd"
  done
  printf '%s: herd / blender -a = %.2f, herd / blender -a with persistent data = %.2f (medians of %s)\n' \
    "$scene" "$(median < "$work/$scene.herd")" "$(median < "$work/$scene.pd")" "$rounds"
done
