#!/usr/bin/env bash
# EEVEE in a warm Blender: the first frame against the rest. The demo scene
# switched to EEVEE (8 samples, 50 %), frames 1..FRAMES rendered in one
# Blender as herd's worker renders them (an animation of one frame each),
# with each Blender given (default: blender); then, with the first Blender,
# by `herd render --no-discovery` (the local node's warm Blender; per-frame
# seconds from its debug log). Prints each frame's seconds and first / median
# of the rest.
#   scripts/bench_eevee.sh [FRAMES] [HERD] [BLENDER]...
set -euo pipefail
cd "$(dirname "$0")/.."
frames="${1:-6}"
herd="${2:-target/release/herd}"
shift $(( $# > 2 ? 2 : $# ))
blenders=("$@")
[ ${#blenders[@]} -eq 0 ] && blenders=(blender)
export HERD_LOOPBACK_ONLY=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/eevee.py" <<'PY'
import bpy, sys, time
argv = sys.argv[sys.argv.index("--") + 1:]
frames, out = int(argv[0]), argv[1]
s = bpy.context.scene
engines = [e.identifier for e in bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items]
s.render.engine = "BLENDER_EEVEE_NEXT" if "BLENDER_EEVEE_NEXT" in engines else "BLENDER_EEVEE"
s.eevee.taa_render_samples = 8
s.render.resolution_percentage = 50
s.frame_start, s.frame_end = 1, frames
if out == "save":
    bpy.ops.wm.save_as_mainfile(filepath=argv[2])
    sys.exit(0)
s.render.filepath = out + "/f_####"
for frame in range(1, frames + 1):
    s.frame_start = s.frame_end = frame
    t = time.monotonic()
    bpy.ops.render.render(animation=True)
    print(f"HERD {frame} {time.monotonic() - t:.3f}")
PY
summary() {
  python3 -c '
import statistics, sys
secs = [float(line.split()[1]) for line in sys.stdin if line.strip()]
rest = statistics.median(secs[1:])
print("first %.2f s, median of the rest %.2f s, first / rest %.2f; frames: %s" % (secs[0], rest, secs[0] / rest, " / ".join("%.2f" % v for v in secs)))'
}
for b in "${blenders[@]}"; do
  version=$("$b" -b --factory-startup --python-expr "import bpy; print('HERDV', bpy.app.version_string)" 2>/dev/null | sed -n 's/^HERDV //p')
  printf 'Blender %s, one Blender: ' "$version"
  "$b" -b assets/demo/demo.blend -t 2 --python "$work/eevee.py" -- "$frames" "$work/out" 2>/dev/null \
    | sed -n 's/^HERD //p' | summary
done
"${blenders[0]}" -b assets/demo/demo.blend --python "$work/eevee.py" -- "$frames" save "$work/eevee.blend" >/dev/null 2>&1
printf 'herd render (local node, %s): ' "${blenders[0]}"
HERD_LOG=herd=debug "$herd" render "$work/eevee.blend" --no-discovery --local-threads 2 \
  --blender "${blenders[0]}" --out "$work/herd" --work-dir "$work/node" 2>&1 >/dev/null \
  | sed 's/\x1b\[[0-9;]*m//g' | sed -n 's/.*frame \([0-9]*\) took \([0-9.]*\) s.*/\1 \2/p' | summary
