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

While a command runs, two more kinds of line come, from other threads:
    {"event": "alive", "cpu_secs": 12.5, "tid": 4243}   every second, from
        a thread of its own (tid) that keeps running while Blender renders:
        the CPU seconds Blender's other threads have used, so the node can
        tell a long silent frame (CPU time grows) from a stopped or
        deadlocked Blender (it does not)
    {"event": "progress", "stats": "Fra:1 ... | Sample 3/16"}   Blender's
        render statistics, from bpy.app.handlers.render_stats: Blender 5.0 no
        longer prints them on stdout. (3.x passes the handler no text, but
        prints them on stdout, where the node reads them too.)

The worker runs on Blender 3.x, 4.2 LTS, 4.5 LTS and 5.0 alike: the helpers
below ask the API what it has (hasattr/getattr) instead of checking version
numbers.
"""

import json
import os
import re
import socket
import sys
import threading
import time
import traceback

import bpy

FORMAT_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "OPEN_EXR": "exr"}

# EEVEE's engine id: BLENDER_EEVEE up to 4.1 and again from 5.0,
# BLENDER_EEVEE_NEXT in 4.2 to 4.5.
EEVEE_ENGINES = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")

# How often the heartbeat thread reports.
HEARTBEAT_SECS = 1.0


# ---- Differences between Blender versions, found by feature detection ----


def compositor_tree(scene):
    """The compositing node tree the scene renders through, or None.
    5.0: scene.compositing_node_group (scene.node_tree and the meaning of
    scene.use_nodes are gone); before: scene.node_tree when use_nodes is on."""
    if hasattr(scene, "compositing_node_group"):
        return scene.compositing_node_group
    return scene.node_tree if scene.use_nodes else None


def file_output_dir(node):
    """The folder (before 5.0: folder or path prefix) a File Output node
    writes under. 5.0 splits base_path into directory + file_name."""
    if hasattr(node, "directory"):
        return node.directory
    return node.base_path


def set_file_output_dir(node, path):
    """Points a File Output node's output under `path`, keeping 5.0's
    file_name (the prefix of each file's name) as it was."""
    if hasattr(node, "directory"):
        node.directory = path
    else:
        node.base_path = path


def file_output_slots(node):
    """What a File Output node writes, one (name, image_settings) pair per
    input: name is the input's sub-path (file_slots[].path before 5.0),
    layer name (multilayer EXR) or item name (5.0's file_output_items);
    image_settings is the input's own format when it overrides the node's,
    else the node's."""
    if hasattr(node, "file_output_items"):
        return [
            (item.name, item.format if getattr(item, "override_node_format", False) else node.format)
            for item in node.file_output_items
        ]
    if node.format.file_format == "OPEN_EXR_MULTILAYER":
        return [(slot.name, node.format) for slot in node.layer_slots]
    return [(slot.path, node.format if slot.use_node_format else slot.format) for slot in node.file_slots]


def media_type(file_format):
    """5.0's media type for a file format."""
    if file_format == "OPEN_EXR_MULTILAYER":
        return "MULTI_LAYER_IMAGE"
    if file_format == "FFMPEG":
        return "VIDEO"
    return "IMAGE"


def set_image_format(image_settings, file_format):
    """Sets an output format. 5.0 first needs the media type (image,
    multilayer image, video): file_format = "PNG" fails on a scene whose
    output is a movie until media_type is IMAGE."""
    if hasattr(image_settings, "media_type"):
        wanted = media_type(file_format)
        if image_settings.media_type != wanted:
            image_settings.media_type = wanted
    image_settings.file_format = file_format


def is_eevee(engine):
    """Whether `engine` is EEVEE under either of its ids."""
    return engine in EEVEE_ENGINES


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
    set_image_format(scene.render.image_settings, ORIGINAL["file_format"])
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
        tree = compositor_tree(scene)
        for node in tree.nodes if tree else []:
            if node.type == "OUTPUT_FILE":
                set_file_output_dir(node, os.path.join(jail, "file_output", node.name))
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
        elif is_eevee(render.engine) and hasattr(scene, "eevee"):
            scene.eevee.taa_render_samples = int(samples)
    file_format = overrides.get("format")
    if file_format is not None:
        set_image_format(render.image_settings, file_format)
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
        set_image_format(render.image_settings, "PNG")
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


class Channel:
    """The connection to the node, one JSON object per line. Sending takes a
    lock: the heartbeat thread and the statistics handler write while the
    main thread is inside a render."""

    def __init__(self, connection):
        self.reader = connection.makefile("r", encoding="utf-8")
        self.writer = connection.makefile("w", encoding="utf-8")
        self.lock = threading.Lock()

    def send(self, message):
        line = json.dumps(message) + "\n"
        with self.lock:
            self.writer.write(line)
            self.writer.flush()


# Set while a command runs: the heartbeat is sent only then, so an idle
# worker does not pile up lines that the node reads only with its next command.
BUSY = threading.Event()


def heartbeat(channel):
    """Tells the node every HEARTBEAT_SECS that this Python still runs, with
    the CPU time Blender's other threads have used (this thread's own is left
    out, so a deadlocked Blender does not look busy because of it)."""
    while True:
        time.sleep(HEARTBEAT_SECS)
        if not BUSY.is_set():
            continue
        try:
            channel.send({"event": "alive", "cpu_secs": time.process_time() - time.thread_time(),
                          "tid": threading.get_native_id()})
        except (OSError, ValueError):
            return  # the channel is closed: the worker is leaving


def watch_render_stats(channel):
    """Forwards Blender's render statistics to the node, on every version
    (5.0 does not print them on stdout any more)."""

    @bpy.app.handlers.persistent
    def forward(*args):
        stats = next((arg for arg in args if isinstance(arg, str)), None)
        if stats:
            try:
                channel.send({"event": "progress", "stats": stats})
            except (OSError, ValueError):
                pass

    bpy.app.handlers.render_stats.append(forward)


def serve(channel):
    channel.send({"event": "hello", "secret": os.environ.get("HERD_WORKER_SECRET", ""),
                  "blender_version": bpy.app.version_string, "pid": os.getpid()})
    threading.Thread(target=heartbeat, args=(channel,), name="herd-heartbeat", daemon=True).start()
    watch_render_stats(channel)
    for line in channel.reader:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        name = command.get("cmd")
        if name == "quit":
            return
        handler = HANDLERS.get(name)
        if handler is None:
            channel.send({"event": "error", "message": f"unknown worker command {name!r}"})
            continue
        BUSY.set()
        try:
            answer = handler(command)
        except Exception as error:  # Blender reports failures as RuntimeError
            message = str(error).strip() or traceback.format_exc()
            answer = {"event": "error", "message": message}
        finally:
            BUSY.clear()
        channel.send(answer)
        sys.stdout.flush()


def main():
    host, port = os.environ["HERD_WORKER_ADDR"].rsplit(":", 1)
    connection = socket.create_connection((host, int(port)))
    try:
        serve(Channel(connection))
    finally:
        connection.close()


main()
# Leaving Blender at once: the node owns this process's lifetime.
os._exit(0)
