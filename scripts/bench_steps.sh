#!/usr/bin/env bash
# The steps around a job, against the job: a movie scene's encode time
# against its render time, and an unbaked simulation's bake time against the
# job's time. herd render with only the local node, ROUNDS rounds, medians.
#   scripts/bench_steps.sh [ROUNDS] [HERD]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
herd="$(realpath "${2:-target/release/herd}")"
export HERD_LOOPBACK_ONLY=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/make.py" <<'PY'
import bpy, sys
kind, out = sys.argv[-2], sys.argv[-1]
s = bpy.context.scene
s.render.engine = "CYCLES"; s.cycles.samples = 8; s.cycles.use_denoising = False
s.render.resolution_x = 320; s.render.resolution_y = 180
s.frame_start = 1; s.frame_end = 48
s.render.filepath = "//out/shot_"
cube = bpy.data.objects["Cube"]
if kind == "movie":
    s.render.image_settings.file_format = "FFMPEG"
    s.render.ffmpeg.format = "MKV"; s.render.ffmpeg.codec = "H264"
    cube.keyframe_insert("location", frame=1); cube.location.x += 2; cube.keyframe_insert("location", frame=48)
else:
    cube.location.z = 3
    bpy.ops.mesh.primitive_plane_add(size=10, location=(0, 0, -1))
    bpy.ops.rigidbody.object_add(type="PASSIVE")
    bpy.context.view_layer.objects.active = cube
    bpy.ops.rigidbody.object_add(type="ACTIVE")
    s.rigidbody_world.point_cache.frame_end = 48
bpy.ops.wm.save_as_mainfile(filepath=out)
PY
for kind in movie simulation; do
  mkdir -p "$work/$kind"
  blender -b --factory-startup --python "$work/make.py" -- "$kind" "$work/$kind/scene.blend" >/dev/null 2>&1
  for round in $(seq "$rounds"); do
    rm -rf "$work/$kind/out" "$work/$kind/scene_frames"
    "$herd" render "$work/$kind/scene.blend" --no-discovery --json \
      --work-dir "$work/node" > "$work/$kind/events.jsonl"
    python3 - "$kind" "$work/$kind/events.jsonl" <<'PY' | tee -a "$work/$kind.ratios"
import json, sys
kind, path = sys.argv[1], sys.argv[2]
events = [json.loads(line) for line in open(path) if line.startswith("{")]
job = next(e for e in events if e["event"] == "finished")["wall_secs"]
step = next(e for e in events if e["event"] == ("encoded" if kind == "movie" else "baked"))["secs"]
print(f"{step / job:.3f} {kind}: step {step:.2f} s, job {job:.2f} s")
PY
  done
  printf '%s: step / job = %s (median of %s)\n' "$kind" \
    "$(sort -g "$work/$kind.ratios" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')" "$rounds"
done
