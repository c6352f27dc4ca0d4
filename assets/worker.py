"""herd's render worker: runs inside Blender and keeps it loaded.

The node starts Blender in background mode with this script and the address of
a loopback TCP socket in HERD_WORKER_ADDR. The worker connects, proves it is
the child the node started (HERD_WORKER_SECRET), and then serves commands, one
JSON object per line, answering each with one JSON object per line. Blender's
own printing goes to stdout/stderr and never mixes with this channel.

Commands:
    {"cmd": "load", "path": "/abs/file.blend", "allow_scripts": false,
     "jail": "/abs/job/folder"}
    {"cmd": "render", "frame": 1, "output": "/abs/out/frame", "overrides": {...}}
    {"cmd": "quit"}

Answers:
    {"event": "loaded", "load_secs": 0.4, "scene": {...}}
    {"event": "rendered", "frame": 1, "path": "...", "render_secs": 1.2,
     "width": 320, "height": 180}   (no size when cropped to a border)
    {"event": "error", "message": "..."}

Progress is not sent here: the node reads it from Blender's own statistics
lines on stdout ("Fra:1 ... | Sample 3/16"), which Blender flushes line by line.
"""

import json
import os
import re
import socket
import sys
import time
import traceback

import bpy

FORMAT_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "OPEN_EXR": "exr"}


def scene_summary(scene):
    render = scene.render
    return {
        "name": scene.name,
        "frame_start": scene.frame_start,
        "frame_end": scene.frame_end,
        "frame_step": scene.frame_step,
        "engine": render.engine,
        "resolution_x": render.resolution_x,
        "resolution_y": render.resolution_y,
        "resolution_percentage": render.resolution_percentage,
        "file_format": render.image_settings.file_format,
        "camera": scene.camera.name if scene.camera else None,
    }


# The scene's own settings as loaded, so one request's overrides never leak
# into the next request's frame.
ORIGINAL = {}


def remember_settings(scene):
    ORIGINAL.clear()
    ORIGINAL["resolution_percentage"] = scene.render.resolution_percentage
    ORIGINAL["file_format"] = scene.render.image_settings.file_format
    ORIGINAL["color_mode"] = scene.render.image_settings.color_mode
    ORIGINAL["cycles_samples"] = scene.cycles.samples if hasattr(scene, "cycles") else None
    ORIGINAL["eevee_samples"] = scene.eevee.taa_render_samples if hasattr(scene, "eevee") else None


def restore_settings(scene):
    if not ORIGINAL:
        return
    scene.render.resolution_percentage = ORIGINAL["resolution_percentage"]
    scene.render.image_settings.file_format = ORIGINAL["file_format"]
    scene.render.image_settings.color_mode = ORIGINAL["color_mode"]
    if ORIGINAL["cycles_samples"] is not None:
        scene.cycles.samples = ORIGINAL["cycles_samples"]
    if ORIGINAL["eevee_samples"] is not None:
        scene.eevee.taa_render_samples = ORIGINAL["eevee_samples"]


def inside(jail, path):
    """Where `path` (as Blender resolves it) is read from in the job folder:
    itself when it is inside, else the same absolute path under the folder
    (/mnt/tex/a.png -> JAIL/mnt/tex/a.png, D:/tex/a.png -> JAIL/D/tex/a.png),
    as herd laid the files out. Nothing outside the folder is ever read."""
    path = path.replace("\\", "/")
    if path.startswith("//"):
        return None
    resolved = os.path.normpath(path)
    if resolved == jail or resolved.startswith(jail + "/"):
        return None
    drive = re.match(r"^([A-Za-z]):/(.*)$", resolved)
    key = drive.group(1) + "/" + drive.group(2) if drive else resolved.lstrip("/")
    parts = [part for part in key.split("/") if part not in ("", ".", "..")]
    return os.path.join(jail, *parts)


def relink(jail):
    """Points the scene's files inside `jail`. Relative paths resolve there
    already (the .blend sits where it sat on the artist's machine); absolute
    ones, and relative ones that climb out, are moved in. File Output nodes
    write under the folder too."""
    jail = os.path.normpath(jail)
    missing = []

    def point(owner, attribute, kind, library=None):
        raw = getattr(owner, attribute)
        if not raw or raw == "<builtin>":
            return
        resolved = os.path.normpath(bpy.path.abspath(raw.replace("\\", "/"), library=library))
        target = inside(jail, resolved)
        if target is not None:
            setattr(owner, attribute, target)
            resolved = target
        if "<UDIM>" not in resolved and "<UVTILE>" not in resolved and not os.path.exists(resolved):
            missing.append(f"{kind} '{owner.name}': {raw}")

    # Linked data too: its paths are relative to its library's file.
    for image in bpy.data.images:
        if not image.packed_file and image.source in {"FILE", "SEQUENCE", "TILED", "MOVIE"}:
            point(image, "filepath", "image", image.library)
    for collection, kind in ((bpy.data.movieclips, "movie clip"), (bpy.data.sounds, "sound"),
                             (bpy.data.fonts, "font"), (getattr(bpy.data, "volumes", []), "volume"),
                             (bpy.data.cache_files, "cache file")):
        for block in collection:
            if not getattr(block, "packed_file", None):
                point(block, "filepath", kind, block.library)
    # Libraries are read as the file opens, before this runs: one that was
    # read from outside the folder is read again from inside it, or, when
    # herd was not sent it, dropped with what it brought.
    for library in list(bpy.data.libraries):
        if library.packed_file:
            continue
        before = library.filepath
        point(library, "filepath", "library", library.parent)
        if library.filepath == before:
            continue
        try:
            if not os.path.isfile(library.filepath):
                raise RuntimeError("not sent")
            library.reload()
        except RuntimeError:
            bpy.data.libraries.remove(library)
    for obj in bpy.data.objects:
        if obj.library is not None:
            continue
        for modifier in obj.modifiers:
            domain = getattr(modifier, "domain_settings", None)
            if modifier.type == "FLUID" and modifier.fluid_type == "DOMAIN" and domain:
                target = inside(jail, os.path.normpath(bpy.path.abspath(domain.cache_directory or "//")))
                if target is not None:
                    domain.cache_directory = target
    for scene in bpy.data.scenes:
        tree = scene.node_tree if scene.use_nodes else None
        for node in tree.nodes if tree else []:
            if node.type == "OUTPUT_FILE":
                node.base_path = os.path.join(jail, "file_output", node.name)
    for line in missing:
        print(f"herd: not on this node: {line}")
    return missing


def load(command):
    started = time.monotonic()
    ORIGINAL.clear()
    bpy.ops.wm.open_mainfile(
        filepath=command["path"],
        load_ui=False,
        use_scripts=bool(command.get("allow_scripts", False)),
    )
    jail = command.get("jail")
    missing = relink(jail) if jail else []
    remember_settings(bpy.context.scene)
    return {
        "event": "loaded",
        "missing": missing,
        "load_secs": time.monotonic() - started,
        "scene": scene_summary(bpy.context.scene),
    }


def apply_overrides(scene, overrides):
    render = scene.render
    percent = overrides.get("resolution_percent")
    if percent is not None:
        render.resolution_percentage = int(percent)
    samples = overrides.get("samples")
    if samples is not None:
        if render.engine == "CYCLES":
            scene.cycles.samples = int(samples)
        elif hasattr(scene, "eevee"):
            scene.eevee.taa_render_samples = int(samples)
    file_format = overrides.get("format")
    if file_format is not None:
        render.image_settings.file_format = file_format
        if file_format == "JPEG":
            render.image_settings.color_mode = "RGB"


def render(command):
    scene = bpy.context.scene
    restore_settings(scene)
    apply_overrides(scene, command.get("overrides") or {})
    frame = int(command["frame"])
    scene.frame_set(frame)
    render = scene.render
    extension = FORMAT_EXTENSIONS.get(render.image_settings.file_format)
    if extension is None:
        # Formats herd does not decode (TIFF, movies, ...) come back as PNG.
        render.image_settings.file_format = "PNG"
        extension = "png"
    path = command["output"] + "." + extension
    started = time.monotonic()
    bpy.ops.render.render(scene=scene.name)
    bpy.data.images["Render Result"].save_render(path, scene=scene)
    render_secs = time.monotonic() - started
    if not os.path.isfile(path):
        return {"event": "error", "message": f"Blender finished frame {frame} but wrote no image at {path}"}
    answer = {"event": "rendered", "frame": frame, "path": path, "render_secs": render_secs}
    if not (render.use_border and render.use_crop_to_border):
        # The size Blender renders at (integer arithmetic, as Blender does).
        answer["width"] = render.resolution_x * render.resolution_percentage // 100
        answer["height"] = render.resolution_y * render.resolution_percentage // 100
    return answer


HANDLERS = {"load": load, "render": render}


def serve(channel):
    reader = channel.makefile("r", encoding="utf-8")
    writer = channel.makefile("w", encoding="utf-8")

    def send(message):
        writer.write(json.dumps(message) + "\n")
        writer.flush()

    send({"event": "hello", "secret": os.environ.get("HERD_WORKER_SECRET", ""),
          "blender_version": bpy.app.version_string, "pid": os.getpid()})
    for line in reader:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        name = command.get("cmd")
        if name == "quit":
            return
        handler = HANDLERS.get(name)
        if handler is None:
            send({"event": "error", "message": f"unknown worker command {name!r}"})
            continue
        try:
            send(handler(command))
        except Exception as error:  # Blender reports failures as RuntimeError
            message = str(error).strip() or traceback.format_exc()
            send({"event": "error", "message": message})
        sys.stdout.flush()


def main():
    host, port = os.environ["HERD_WORKER_ADDR"].rsplit(":", 1)
    channel = socket.create_connection((host, int(port)))
    try:
        serve(channel)
    finally:
        channel.close()


main()
# Leaving Blender at once: the node owns this process's lifetime.
os._exit(0)
