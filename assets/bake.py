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
import sys

import bpy


def point_caches(scene):
    caches = []
    world = scene.rigidbody_world
    if world and world.enabled and world.collection:
        caches.append(world.point_cache)
    for obj in scene.objects:
        for modifier in obj.modifiers:
            if modifier.type in {"CLOTH", "SOFT_BODY"}:
                caches.append(modifier.point_cache)
            elif modifier.type == "DYNAMIC_PAINT" and modifier.canvas_settings:
                caches.extend(surface.point_cache for surface in modifier.canvas_settings.canvas_surfaces)
        caches.extend(system.point_cache for system in obj.particle_systems)
    return [cache for cache in caches if not cache.is_baked]


def main():
    argv = sys.argv[sys.argv.index("--") + 1 :]
    with open(argv[0], encoding="utf-8") as handle:
        job = json.load(handle)
    scene = bpy.context.scene
    if job.get("scene"):
        scene = bpy.data.scenes[job["scene"]]
        for window in bpy.context.window_manager.windows:
            window.scene = scene
    caches = point_caches(scene)
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
