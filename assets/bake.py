"""herd's simulation baker: runs inside Blender on the controller before a
job whose scene has unbaked simulations that Blender caches frame by frame
(rigid body, cloth, soft body, particles, dynamic paint).

    blender -b FILE --python bake.py -- JOB.json

JOB.json: {"scene": "Scene" or null, "frame_start": 1, "frame_end": 250,
           "out": "/abs/baked.blend"}

It steps the frames in order from the start, as the artist's playback does,
marks what the caches hold as baked and saves a copy of the file to `out`
(paths kept as they are, so the copy works in the .blend's place). Every
node then renders that copy in parallel and each frame equals the stepped
one. Progress goes to stdout as `herd-bake: DONE/TOTAL` lines.
"""

import json
import os
import sys

import bpy

# herd's inspector, written beside this script: what it reports as a
# simulation is what is baked here.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herd_inspect  # noqa: E402


def unbaked_caches(scene):
    """The point caches herd inspect reports for the scene, not baked yet."""
    return [cache for _, _, cache in herd_inspect.point_caches(scene) if not cache.is_baked]


def main():
    argv = sys.argv[sys.argv.index("--") + 1 :]
    with open(argv[0], encoding="utf-8") as handle:
        job = json.load(handle)
    scene = herd_inspect.scene_named(job.get("scene"))
    caches = unbaked_caches(scene)
    start = min(int(job["frame_start"]), scene.frame_start)
    end = int(job["frame_end"])
    for cache in caches:
        # A cache stops at its own end; the job may go further.
        cache.frame_end = max(cache.frame_end, end)
    total = end - start + 1
    for frame in range(start, end + 1):
        scene.frame_set(frame)
        print(f"herd-bake: {frame - start + 1}/{total}", flush=True)
    for cache in caches:
        with bpy.context.temp_override(scene=scene, point_cache=cache):
            bpy.ops.ptcache.bake_from_cache()
    unbaked = [cache.info for cache in caches if not cache.is_baked]
    if unbaked:
        raise SystemExit(f"herd: could not bake: {unbaked}")
    scene.frame_set(start)
    bpy.ops.wm.save_as_mainfile(filepath=job["out"], copy=True, relative_remap=False)
    print("herd-baked", flush=True)


main()
