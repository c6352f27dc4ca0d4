#!/usr/bin/env bash
# Frame order and warm data: does a Blender with persistent data render
# consecutive frames more cheaply than scattered ones? For two scenes (a
# static heavy one with a moving camera, and a deforming one: a wave
# modifier over a level-5 subdivided monkey), one Blender renders frames
# 2..N either in order or scattered (stride 5), each as herd's worker does
# (an animation of one frame), after frame 1 (which builds everything and is
# left out). The two orders alternate, the first of them swapped each round.
# Prints per round the wall and CPU seconds of frames 2..N and the
# scattered / consecutive ratios.
#   scripts/bench_order.sh [ROUNDS] [FRAMES]
set -euo pipefail
rounds="${1:-4}"
frames="${2:-12}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/scene.py" <<'PY'
import bpy, sys
kind, path, frames = sys.argv[-3], sys.argv[-2], int(sys.argv[-1])
s = bpy.context.scene
s.render.engine = "CYCLES"; s.cycles.samples = 4; s.cycles.use_denoising = False
s.render.resolution_x = 160; s.render.resolution_y = 90
s.frame_start = 1; s.frame_end = frames
bpy.data.objects.remove(bpy.data.objects["Cube"])
bpy.ops.mesh.primitive_monkey_add()
obj = bpy.context.active_object
sub = obj.modifiers.new("sub", "SUBSURF")
sub.levels = sub.render_levels = 6 if kind == "heavy" else 5
if kind == "deform":
    wave = obj.modifiers.new("wave", "WAVE")
    wave.height = 0.2; wave.speed = 0.1
cam = s.camera
cam.keyframe_insert("location", frame=1); cam.location.x += 1.0; cam.keyframe_insert("location", frame=frames)
bpy.ops.wm.save_as_mainfile(filepath=path)
PY
cat > "$work/order.py" <<'PY'
import bpy, sys, time
argv = sys.argv[sys.argv.index("--") + 1:]
s = bpy.context.scene
s.render.use_persistent_data = True
s.render.filepath = argv[1] + "/f_####"
wall = cpu = 0.0
for position, frame in enumerate(int(f) for f in argv[0].split(",")):
    s.frame_start = s.frame_end = frame
    t, c = time.monotonic(), time.process_time()
    bpy.ops.render.render(animation=True)
    if position > 0:
        wall += time.monotonic() - t
        cpu += time.process_time() - c
print(f"HERD {wall:.3f} {cpu:.3f}")
PY
consecutive="1,$(seq -s, 2 "$frames")"
scattered="1,$(python3 -c "import sys; n = $frames - 1; print(','.join(str(i * 5 % n + 2) for i in range(n)))")"
for kind in heavy deform; do
  blender -b --factory-startup --python "$work/scene.py" -- "$kind" "$work/$kind.blend" "$frames" >/dev/null 2>&1
  for round in $(seq "$rounds"); do
    orders="consecutive scattered"
    [ $((round % 2)) = 0 ] && orders="scattered consecutive"
    declare -A wall cpu
    for order in $orders; do
      list=$consecutive; [ "$order" = scattered ] && list=$scattered
      read -r w c < <(blender -b "$work/$kind.blend" -t 2 --python "$work/order.py" -- "$list" "$work/out" 2>/dev/null | sed -n 's/^HERD //p')
      wall[$order]=$w; cpu[$order]=$c
    done
    printf '%s round %s: consecutive %s s (%s CPU-s), scattered %s s (%s CPU-s), scattered / consecutive: wall %.3f, CPU %.3f\n' \
      "$kind" "$round" "${wall[consecutive]}" "${cpu[consecutive]}" "${wall[scattered]}" "${cpu[scattered]}" \
      "$(echo "${wall[scattered]} / ${wall[consecutive]}" | bc -l)" "$(echo "${cpu[scattered]} / ${cpu[consecutive]}" | bc -l)"
  done
done
