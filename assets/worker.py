"""herd's render worker: runs inside Blender and keeps it loaded.

The node starts Blender in background mode with this script and the address of
a loopback TCP socket in HERD_WORKER_ADDR. The worker connects, proves it is
the child the node started (HERD_WORKER_SECRET), and then serves commands, one
JSON object per line, answering each with one JSON object per line. Blender's
own printing goes to stdout/stderr and never mixes with this channel.

Commands:
    {"cmd": "load", "path": "/abs/file.blend", "allow_scripts": false,
     "jail": "/abs/job/folder", "keep_inspected": false}
    {"cmd": "inspect", "path": "/abs/artist/file.blend", "scene": null}
    {"cmd": "render", "frame": 1, "dir": "/abs/renders/ID", "name": "shot_###",
     "scene": "Scene", "overrides": {...}}
    {"cmd": "quit"}

Answers:
    {"event": "loaded", "load_secs": 0.4, "kept": false, "scene": {...}}
    {"event": "inspected", "report": {...}}

`keep_inspected` says the file is the same bytes as the one the last
`inspect` opened (the node compared their hashes): when that scene reads no
other file, has no simulation and scripts stay off, it is kept as it is
instead of opened again (`kept`), since the inspection only read it.
    {"event": "rendered", "frame": 1, "dir": "/abs/renders/ID",
     "outputs": ["image/shot_001.png", "fo/0/depth_0001.exr"],
     "preview": "/abs/renders/ID/preview.png", "render_secs": 1.2,
     "width": 320, "height": 180, "notes": [...]}
    (no size when cropped to a border or rendered in several views)

A frame is rendered as `blender -b FILE -f N` would write it: the scene's own
format and settings, every view layer and pass, its File Output nodes. Only
the places change: the main image is written as DIR/image/NAME (NAME is the
file part of the output path the controller chose, Blender's `#` rules
apply), the files of the k-th File Output node under DIR/fo/k/, and
`outputs` lists every file written, relative to DIR. `preview` is what the
node checks and shrinks to a thumbnail: the frame itself when it is a PNG or
JPEG, else an 8-bit PNG of the result written to DIR/preview.png.
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

MOVIE_FORMATS = {"FFMPEG", "AVI_JPEG", "AVI_RAW", "FRAMESERVER", "H264", "XVID", "THEORA", "QUICKTIME"}


def is_movie(settings):
    return getattr(settings, "media_type", "IMAGE") == "VIDEO" or settings.file_format in MOVIE_FORMATS


def image_settings_state(settings):
    names = ("media_type", "file_format", "color_mode", "color_depth", "compression")
    return [(name, getattr(settings, name)) for name in names if hasattr(settings, name)]


def restore_image_settings(settings, state):
    for name, value in state:
        try:
            assign(settings, name, value)
        except (TypeError, ValueError, AttributeError):
            pass


def assign(owner, name, value):
    """Sets a property only when it changes: a scene left as it was keeps its
    render data warm between frames (Cycles' persistent data)."""
    if getattr(owner, name) != value:
        setattr(owner, name, value)

# EEVEE's engine id: BLENDER_EEVEE up to 4.1 and again from 5.0,
# BLENDER_EEVEE_NEXT in 4.2 to 4.5.
EEVEE_ENGINES = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")

# How often the heartbeat thread reports.
HEARTBEAT_SECS = 1.0


# ---- Differences between Blender versions, found by feature detection ----


def set_file_output_dir(node, path):
    """Points a File Output node's output under `path`, keeping 5.0's
    file_name (the prefix of each file's name) as it was."""
    if hasattr(node, "directory"):
        node.directory = path
    else:
        node.base_path = path


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
        assign(image_settings, "media_type", media_type(file_format))
    assign(image_settings, "file_format", file_format)


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
    ORIGINAL["scene"] = scene.name
    ORIGINAL["output_name"] = os.path.basename(scene.render.filepath.replace("\\", "/"))
    ORIGINAL["image_settings"] = image_settings_state(scene.render.image_settings)
    ORIGINAL["resolution_percentage"] = scene.render.resolution_percentage
    ORIGINAL["use_persistent_data"] = scene.render.use_persistent_data
    ORIGINAL["cycles_samples"] = scene.cycles.samples if hasattr(scene, "cycles") else None
    ORIGINAL["eevee_samples"] = scene.eevee.taa_render_samples if hasattr(scene, "eevee") else None


def settle(scene, overrides):
    """Puts the scene's settings as this frame wants them: the file's own
    with the request's overrides. Each property is set once and only when
    it changes: setting a value and then another would make Cycles rebuild
    the warm scene (persistent data) for every frame."""
    if ORIGINAL.get("scene") != scene.name:
        remember_settings(scene)
    render = scene.render
    percent = overrides.get("resolution_percent")
    assign(render, "resolution_percentage",
           int(percent) if percent is not None else ORIGINAL["resolution_percentage"])
    samples = overrides.get("samples")
    if ORIGINAL["cycles_samples"] is not None:
        wanted = int(samples) if samples is not None and render.engine == "CYCLES" else ORIGINAL["cycles_samples"]
        assign(scene.cycles, "samples", wanted)
    if ORIGINAL["eevee_samples"] is not None:
        wanted = int(samples) if samples is not None and render.engine != "CYCLES" else ORIGINAL["eevee_samples"]
        assign(scene.eevee, "taa_render_samples", wanted)
    restore_image_settings(render.image_settings, ORIGINAL["image_settings"])
    file_format = overrides.get("format")
    if file_format is not None:
        set_image_format(render.image_settings, file_format)
        if file_format == "JPEG":
            assign(render.image_settings, "color_mode", "RGB")
    # A warm scene: Cycles keeps what it built (geometry, BVH, shaders)
    # from one frame to the next and rebuilds only what changed.
    warm = ORIGINAL["use_persistent_data"]
    if render.engine == "CYCLES" and overrides.get("persistent_data", True):
        warm = memory_allows_warm_scene()
    assign(render, "use_persistent_data", warm)


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
    ones, and relative ones that climb out, are moved in. (What a frame
    writes is placed by `render`.)"""
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
    for line in missing:
        print(f"herd: not on this node: {line}")
    return missing


# The file the last `inspect` opened, while nothing else has touched it:
# {"self_contained": bool}. Any other command clears it.
INSPECTED = {}


def load(command):
    started = time.monotonic()
    allow_scripts = bool(command.get("allow_scripts", False))
    # The inspection opened these very bytes without scripts and only read
    # them; a file that reads no other file resolves nothing by its own
    # place, so it is the job's as it is. Otherwise it is opened again here.
    kept = (bool(command.get("keep_inspected")) and INSPECTED.get("self_contained", False)
            and not allow_scripts)
    INSPECTED.clear()
    if kept:
        missing = []
    else:
        bpy.ops.wm.open_mainfile(filepath=command["path"], load_ui=False, use_scripts=allow_scripts)
        jail = command.get("jail")
        missing = relink(jail) if jail else []
    ORIGINAL.clear()
    STEPPED.clear()
    return {
        "event": "loaded",
        "missing": missing,
        "kept": kept,
        "load_secs": time.monotonic() - started,
        "scene": scene_summary(bpy.context.scene),
    }


# Why the last frame was rendered without a warm scene, to be said once.
WARM_NOTE = []


# When memory was last read, and why it did not allow a warm scene (None:
# it did): cheap frames do not read it again before every one.
MEMORY_CHECKED = {"at": None, "refusal": None}
MEMORY_CHECK_SECS = 1.0


def memory_allows_warm_scene():
    """Whether the machine has room to keep the scene warm: the memory still
    available (and under HERD_MEMORY_BUDGET_BYTES, when the node sets one)
    must be at least what Blender holds now. Read at most every
    MEMORY_CHECK_SECS."""
    now = time.monotonic()
    last = MEMORY_CHECKED["at"]
    if last is None or now - last >= MEMORY_CHECK_SECS:
        MEMORY_CHECKED["at"] = now
        MEMORY_CHECKED["refusal"] = memory_refusal()
    refusal = MEMORY_CHECKED["refusal"]
    if refusal is None:
        return True
    WARM_NOTE[:] = [refusal]
    return False


def memory_refusal():
    """Why memory does not allow a warm scene now; None when it does."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            held = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            free = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    budget = os.environ.get("HERD_MEMORY_BUDGET_BYTES")
    if budget:
        free = min(free, max(int(budget) - held, 0))
    if free >= held:
        return None
    return (f"the scene was not kept warm between frames (persistent data off): Blender holds "
            f"{held >> 20} MiB and only {free >> 20} MiB more are available")


# The frame each scene was last stepped to (frames rendered in order).
STEPPED = {}


def step_to(scene, frame):
    """Steps `scene` through every frame before `frame`, as playback does:
    from the frame rendered before when going on, else from the scene's
    start, so that what depends on the frames before (an unbaked
    simulation) is as Blender shows it."""
    last = STEPPED.get(scene.name)
    begin = last + 1 if last is not None and last < frame else scene.frame_start
    for earlier in range(begin, frame):
        scene.frame_set(earlier)
    STEPPED[scene.name] = frame


def files_under(root):
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found)


def save_preview(scene, path):
    """The rendered result as an 8-bit PNG, whatever the scene's format."""
    settings = scene.render.image_settings
    state = image_settings_state(settings)
    try:
        set_image_format(settings, "PNG")
        settings.color_depth = "8"
        if settings.color_mode not in {"BW", "RGB", "RGBA"}:
            settings.color_mode = "RGBA"
        bpy.data.images["Render Result"].save_render(path, scene=scene)
    finally:
        restore_image_settings(settings, state)


def render(command):
    scene = inspector().scene_named(command.get("scene"))
    WARM_NOTE.clear()
    settle(scene, command.get("overrides") or {})
    frame = int(command["frame"])
    if (command.get("overrides") or {}).get("step_frames"):
        step_to(scene, frame)
        scene.frame_set(frame)
    else:
        # As Blender's own -f: the frame is set, and the render evaluates
        # it (an evaluation here would run the frame handlers twice).
        scene.frame_current = frame
    render = scene.render
    out = command["dir"]
    notes = list(WARM_NOTE)
    if is_movie(render.image_settings):
        set_image_format(render.image_settings, "PNG")
        notes.append("the scene's output is a movie: this frame was written as PNG")
    name = command.get("name")
    if name is None:
        name = ORIGINAL["output_name"]
    # Blender names the files (the frame number where the name says, the
    # format's extension); herd only chooses the folders.
    render.filepath = os.path.join(out, "image", "") + name
    # The nodes in the order the controller's inspection numbered them.
    nodes = inspector().file_output_nodes(scene)
    for index, node in enumerate(nodes):
        # The last part of a node's path is part of the names it writes.
        last = os.path.basename(inspector().file_output_dir(node).replace("\\", "/"))
        set_file_output_dir(node, os.path.join(out, "fo", str(index), "") + last)
    started = time.monotonic()
    # As Blender's own -f: an animation of this one frame, so that the
    # frame and every File Output node write as in -a.
    kept = scene.frame_start, scene.frame_end, scene.frame_step
    scene.frame_start, scene.frame_end, scene.frame_step = frame, frame, 1
    try:
        bpy.ops.render.render(animation=True, scene=scene.name)
    except RuntimeError:
        # A warm scene that failed would "render" the next frame blank:
        # the next frame starts cold.
        render.use_persistent_data = False
        raise
    finally:
        scene.frame_start, scene.frame_end, scene.frame_step = kept
    render_secs = time.monotonic() - started
    images = files_under(os.path.join(out, "image"))
    if not images:
        return {"event": "error", "message": f"Blender finished frame {frame} but wrote no image in {out}"}
    outputs = ["image/" + image for image in images]
    for index, node in enumerate(nodes):
        written = files_under(os.path.join(out, "fo", str(index)))
        linked = any(socket.is_linked for socket in node.inputs)
        if linked and not written:
            return {"event": "error",
                    "message": f"File Output node '{node.name}' wrote nothing for frame {frame}"}
        outputs += [f"fo/{index}/{path}" for path in written]
    main = os.path.join(out, "image", images[0])
    if len(images) == 1 and main.lower().endswith((".png", ".jpg", ".jpeg")):
        # The frame itself is what the node checks and shrinks.
        preview = main
    else:
        preview = os.path.join(out, "preview.png")
        save_preview(scene, preview)
    answer = {"event": "rendered", "frame": frame, "dir": out, "outputs": outputs,
              "preview": preview, "render_secs": render_secs, "notes": notes}
    if not (render.use_border and render.use_crop_to_border) and not render.use_multiview:
        # The size Blender renders at (integer arithmetic, as Blender does).
        answer["width"] = render.resolution_x * render.resolution_percentage // 100
        answer["height"] = render.resolution_y * render.resolution_percentage // 100
    return answer


INSPECTOR = []


def inspector():
    """herd's scene inspector (assets/inspect.py), beside this script."""
    if not INSPECTOR:
        import importlib.util

        path = os.environ["HERD_INSPECT_SCRIPT"]
        spec = importlib.util.spec_from_file_location("herd_inspect", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        INSPECTOR.append(module)
    return INSPECTOR[0]


def inspect(command):
    """Reads a scene as `herd inspect` does (assets/inspect.py), with the
    file as it is on this machine: nothing relinked, no scripts run."""
    INSPECTED.clear()
    bpy.ops.wm.open_mainfile(filepath=command["path"], load_ui=False, use_scripts=False)
    ORIGINAL.clear()
    STEPPED.clear()
    module = inspector()
    report = module.describe(module.scene_named(command.get("scene")))
    report["dependencies"] = module.dependencies(bpy.data.filepath)
    # A simulation may write its cache beside the file it was opened from
    # (a fluid domain that is not baked does while rendering).
    INSPECTED["self_contained"] = not (report["dependencies"] or bpy.data.libraries
                                       or report["simulations"])
    return {"event": "inspected", "report": report}


HANDLERS = {"load": load, "render": render, "inspect": inspect}


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
        if name not in ("load", "inspect"):
            INSPECTED.clear()
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
