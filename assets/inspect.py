"""herd's scene inspector: runs inside Blender and describes the loaded scene.

`herd inspect` starts Blender in background mode with the .blend on the
command line and this script after it:

    blender -b -noaudio -Y FILE --python inspect.py -- OUT.json

(without --factory-startup, like the nodes: add-on engines the user enabled count)

A node's worker imports it too, to read a scene in its own warm Blender
(the controller's local node does, so a job starts one Blender, not two).

Blender has loaded FILE by the time the script runs (when it cannot, the
script never runs and OUT.json is never written). The script writes one JSON
object to OUT.json, not to stdout, so nothing Blender prints can be mistaken
for it:

    {"scene": "Scene", "frame_start": 1, ..., "engine": "CYCLES", ...,
     "dependencies": [{"kind": "image", "name": "wood", "path": "//tex/wood.png",
                       "files": ["/abs/tex/wood.png"]}, ...]}
    {"error": "..."}   (when reading the scene failed)

It reports facts only; herd turns them into warnings. The engine is the one
Blender will render with: when the file names an engine this Blender lacks
(an add-on such as LUXCORE), Blender has already fallen back and printed
"Engine 'LUXCORE' not available for scene ...", which herd reads from
Blender's output.
"""

import json
import os
import re
import sys
import traceback

import bpy

EEVEE_ENGINES = {"BLENDER_EEVEE", "BLENDER_EEVEE_NEXT"}


def denoiser_available():
    """Whether Cycles here can denoise on the CPU (OpenImageDenoise)."""
    try:
        import _cycles
    except ImportError:
        return None
    return bool(getattr(_cycles, "with_openimagedenoise", False))


def describe(scene):
    render = scene.render
    engine = render.engine
    samples = None
    use_denoising = None
    if engine == "CYCLES" and hasattr(scene, "cycles"):
        samples = scene.cycles.samples
        use_denoising = bool(scene.cycles.use_denoising)
    elif engine in EEVEE_ENGINES and hasattr(scene, "eevee"):
        samples = scene.eevee.taa_render_samples
    return {
        "scene": scene.name,
        "frame_start": scene.frame_start,
        "frame_end": scene.frame_end,
        "frame_step": scene.frame_step,
        "resolution_x": render.resolution_x,
        "resolution_y": render.resolution_y,
        "resolution_percentage": render.resolution_percentage,
        "engine": engine,
        "samples": samples,
        "file_format": render.image_settings.file_format,
        "fps": render.fps / render.fps_base,
        "camera": scene.camera.name if scene.camera else None,
        "use_denoising": use_denoising,
        "denoiser_available": denoiser_available() if engine == "CYCLES" else None,
        "blender_version": bpy.app.version_string,
        "output_path": render.filepath,
        "use_file_extension": bool(render.use_file_extension),
        "use_multiview": bool(render.use_multiview),
        "file_outputs": [{"name": node.name, "path": file_output_dir(node)}
                         for node in file_output_nodes(scene)],
        "scenes": [other.name for other in bpy.data.scenes],
        "view_layers": [layer.name for layer in scene.view_layers if layer.use],
        "simulations": simulations(scene),
    }


def point_caches(scene):
    """The simulations of `scene` Blender caches frame by frame (rigid body,
    cloth, soft body, particles, dynamic paint): (kind, name, point cache)."""
    found = []
    world = scene.rigidbody_world
    if world and world.enabled and world.collection and len(world.collection.objects):
        found.append(("rigid body", world.collection.name, world.point_cache))
    for obj in scene.objects:
        for modifier in obj.modifiers:
            if not modifier.show_render:
                continue
            if modifier.type in {"CLOTH", "SOFT_BODY"}:
                found.append((modifier.type.lower().replace("_", " "), obj.name, modifier.point_cache))
            elif modifier.type == "DYNAMIC_PAINT" and modifier.canvas_settings:
                for surface in modifier.canvas_settings.canvas_surfaces:
                    found.append(("dynamic paint", obj.name, surface.point_cache))
        for system in obj.particle_systems:
            settings = system.settings
            if settings.type == "EMITTER" or getattr(settings, "use_hair_dynamics", False) and system.use_hair_dynamics:
                found.append(("particles", f"{obj.name}/{system.name}", system.point_cache))
    return found


def simulations(scene):
    """Every simulation of the scene and whether it is baked: unbaked ones
    depend on every frame before them. `bakeable`: herd can bake it by
    stepping the frames (point caches); others must be baked in Blender."""
    found = [{"kind": kind, "name": name, "baked": bool(cache.is_baked), "bakeable": True}
             for kind, name, cache in point_caches(scene)]
    for obj in scene.objects:
        for modifier in obj.modifiers:
            settings = getattr(modifier, "domain_settings", None)
            if modifier.type == "FLUID" and modifier.fluid_type == "DOMAIN" and settings:
                baked = bool(getattr(settings, "has_cache_baked_data", False)
                             or getattr(settings, "has_cache_baked_any", False))
                found.append({"kind": "fluid", "name": obj.name, "baked": baked, "bakeable": False})
            elif modifier.type == "NODES" and modifier.node_group:
                zones = any(node.bl_idname == "GeometryNodeSimulationOutput"
                            for node in modifier.node_group.nodes)
                if zones:
                    bakes = getattr(modifier, "bakes", None)
                    baked = bool(bakes) and all(getattr(bake, "bake_mode", "") == "STILL" or
                                                 os.path.isdir(bpy.path.abspath(getattr(bake, "directory", "") or ""))
                                                 for bake in bakes)
                    found.append({"kind": "geometry nodes simulation", "name": obj.name,
                                  "baked": baked, "bakeable": False})
    return found


def scene_named(name):
    """The scene called `name` (the file's active one when empty), made the
    window's scene as Blender's -S does, so that frame changes evaluate its
    animation. Shared by the inspector, the worker and the steps around a
    job (assets/bake.py, assets/encode.py)."""
    if not name:
        return bpy.context.scene
    scene = bpy.data.scenes.get(name)
    if scene is None:
        names = ", ".join(repr(other.name) for other in bpy.data.scenes)
        raise RuntimeError(f"the file has no scene named {name!r} (it has {names})")
    for window in bpy.context.window_manager.windows:
        if window.scene != scene:
            window.scene = scene
    return scene


def compositor_tree(scene):
    """The compositor's node tree Blender runs when it renders `scene`, or None.
    Blender 5.0 names it `compositing_node_group` (no `use_nodes`)."""
    if not scene.render.use_compositing:
        return None
    if hasattr(scene, "compositing_node_group"):
        return scene.compositing_node_group
    return scene.node_tree if scene.use_nodes else None


def file_output_dir(node):
    """A File Output node's folder (`base_path`; `directory` in 5.0)."""
    return node.directory if hasattr(node, "directory") else node.base_path


def file_output_nodes(scene):
    """The File Output nodes that write when `scene` renders, in the tree's order
    (as the worker counts them)."""
    tree = compositor_tree(scene)
    if tree is None:
        return []
    return [node for node in tree.nodes if node.type == "OUTPUT_FILE" and not node.mute]


def absolute(raw, library=None):
    """The absolute path Blender reads `raw` from (`//` is the folder of the
    .blend, or of the library the data comes from; Windows backslashes are
    read as slashes, as Blender does)."""
    return os.path.normpath(bpy.path.abspath(raw.replace("\\", "/"), library=library))


def sequence_files(path):
    """The files of a numbered image sequence whose first file is `path`
    (frame_0001.png -> frame_0001.png, frame_0002.png, ...)."""
    folder, name = os.path.split(path)
    match = re.match(r"^(.*?)(\d+)(\.[^.]*)?$", name)
    if not match:
        return [path]
    prefix, suffix = match.group(1), match.group(3) or ""
    pattern = re.compile(re.escape(prefix) + r"\d+" + re.escape(suffix) + "$")
    try:
        names = sorted(n for n in os.listdir(folder) if pattern.match(n))
    except OSError:
        return [path]
    return [os.path.join(folder, n) for n in names] or [path]


def tile_files(image, path):
    """The files of a UDIM tile set: one per tile of the image."""
    files = []
    for tile in image.tiles:
        number = tile.number
        u, v = (number - 1001) % 10 + 1, (number - 1001) // 10 + 1
        files.append(path.replace("<UDIM>", str(number)).replace("<UVTILE>", f"u{u}_v{v}"))
    return files or [path]


def folder_files(folder):
    """Every file under `folder` (a cache), or the folder itself when it is
    missing, so that it is reported."""
    files = []
    for root, _dirs, names in os.walk(folder):
        files.extend(os.path.join(root, n) for n in sorted(names))
    return files or [folder]


def all_strips(sequence_editor):
    """Every strip of the sequencer, in meta strips too: strips_all since 4.4
    (sequences_all, its old name, is gone in 5.0)."""
    strips = getattr(sequence_editor, "strips_all", None)
    if strips is None:
        strips = sequence_editor.sequences_all
    return strips


def dependencies(blend_path):
    """The files outside the .blend that rendering it reads, by data-block.
    Packed files are inside the .blend and are not listed."""
    found = []

    def add(kind, name, raw, files):
        found.append({"kind": kind, "name": name, "path": raw, "files": files})

    for image in bpy.data.images:
        if image.packed_file or image.source not in {"FILE", "SEQUENCE", "TILED", "MOVIE"}:
            continue
        if not image.filepath or any(tile.packed_file for tile in getattr(image, "packed_files", [])):
            continue
        path = absolute(image.filepath, image.library)
        if image.source == "TILED" or "<UDIM>" in path or "<UVTILE>" in path:
            files = tile_files(image, path)
        elif image.source == "SEQUENCE":
            files = sequence_files(path)
        else:
            files = [path]
        add("image", image.name, image.filepath, files)
    for library in bpy.data.libraries:
        if library.packed_file:
            continue
        add("library", library.name, library.filepath, [absolute(library.filepath, library.parent)])
    for clip in bpy.data.movieclips:
        path = absolute(clip.filepath, clip.library)
        files = sequence_files(path) if clip.source == "SEQUENCE" else [path]
        add("movie clip", clip.name, clip.filepath, files)
    for sound in bpy.data.sounds:
        if not sound.packed_file and sound.filepath:
            add("sound", sound.name, sound.filepath, [absolute(sound.filepath, sound.library)])
    for font in bpy.data.fonts:
        if not font.packed_file and font.filepath and font.filepath != "<builtin>":
            add("font", font.name, font.filepath, [absolute(font.filepath, font.library)])
    for volume in getattr(bpy.data, "volumes", []):
        if volume.packed_file or not volume.filepath:
            continue
        path = absolute(volume.filepath, volume.library)
        files = sequence_files(path) if volume.is_sequence else [path]
        add("volume", volume.name, volume.filepath, files)
    for cache in bpy.data.cache_files:
        add("cache file", cache.name, cache.filepath, [absolute(cache.filepath, cache.library)])
    # Point caches baked to disk: blendcache_<name>/ beside the .blend, or
    # their own folder when "external"; fluid domains keep theirs.
    blendcache = os.path.join(
        os.path.dirname(blend_path),
        "blendcache_" + os.path.splitext(os.path.basename(blend_path))[0],
    )
    cache_folders = {}
    for obj in bpy.data.objects:
        caches = [(psys.name, psys.point_cache) for psys in obj.particle_systems]
        for modifier in obj.modifiers:
            cache = getattr(modifier, "point_cache", None)
            if cache is not None:
                caches.append((modifier.name, cache))
            domain = getattr(modifier, "domain_settings", None)
            if modifier.type == "FLUID" and modifier.fluid_type == "DOMAIN" and domain:
                folder = absolute(domain.cache_directory or "", obj.library)
                # No folder: nothing baked, Blender simulates while rendering.
                if domain.cache_directory and os.path.isdir(folder):
                    cache_folders.setdefault(folder, (obj.name + " fluid cache", domain.cache_directory))
        for name, cache in caches:
            if cache.use_external and cache.filepath:
                folder = absolute(cache.filepath, obj.library)
                cache_folders.setdefault(folder, (f"{obj.name} {name}", cache.filepath))
            elif cache.use_disk_cache and cache.is_baked:
                cache_folders.setdefault(blendcache, (f"{obj.name} {name}", "//" + os.path.basename(blendcache)))
    for folder, (name, raw) in cache_folders.items():
        add("cache", name, raw, folder_files(folder))
    scene = bpy.context.scene
    if scene.sequence_editor:
        for strip in all_strips(scene.sequence_editor):
            if strip.type == "IMAGE":
                folder = absolute(strip.directory, scene.library)
                files = [os.path.join(folder, element.filename) for element in strip.elements]
                add("strip", strip.name, strip.directory, files)
            elif strip.type == "MOVIE":
                add("strip", strip.name, strip.filepath, [absolute(strip.filepath, scene.library)])
    return found


def main():
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    if len(argv) not in (1, 2):
        sys.stderr.write("usage: blender -b FILE --python inspect.py -- OUT.json [SCENE]\n")
        sys.exit(2)
    try:
        answer = describe(scene_named(argv[1] if len(argv) == 2 else None))
        answer["dependencies"] = dependencies(bpy.data.filepath)
    except Exception as error:
        answer = {"error": str(error).strip() or traceback.format_exc()}
    with open(argv[0], "w", encoding="utf-8") as out:
        json.dump(answer, out)


if __name__ == "__main__":
    main()
