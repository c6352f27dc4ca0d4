"""herd's scene inspector: runs inside Blender and describes the loaded scene.

`herd inspect` starts Blender in background mode with the .blend on the
command line and this script after it:

    blender -b -noaudio -Y FILE --python inspect.py -- OUT.json

(without --factory-startup, like the nodes: add-on engines the user enabled count)

Blender has loaded FILE by the time the script runs (when it cannot, the
script never runs and OUT.json is never written). The script writes one JSON
object to OUT.json, not to stdout, so nothing Blender prints can be mistaken
for it:

    {"scene": "Scene", "frame_start": 1, ..., "engine": "CYCLES", ...}
    {"error": "..."}   (when reading the scene failed)

It reports facts only; herd turns them into warnings. The engine is the one
Blender will render with: when the file names an engine this Blender lacks
(an add-on such as LUXCORE), Blender has already fallen back and printed
"Engine 'LUXCORE' not available for scene ...", which herd reads from
Blender's output.
"""

import json
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
    }


def main():
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    if len(argv) != 1:
        sys.stderr.write("usage: blender -b FILE --python inspect.py -- OUT.json\n")
        sys.exit(2)
    try:
        answer = describe(bpy.context.scene)
    except Exception as error:
        answer = {"error": str(error).strip() or traceback.format_exc()}
    with open(argv[0], "w", encoding="utf-8") as out:
        json.dump(answer, out)


main()
