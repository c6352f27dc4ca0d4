"""herd's movie encoder: runs inside Blender on the controller once every
frame of a movie scene is in, and writes the movie Blender itself would have
written, with the scene's own settings (container, codec, quality, bitrate,
fps, audio from its sound strips).

    blender -b FILE --python encode.py -- JOB.json

JOB.json: {"scene": "Scene" or null, "frames": ["/abs/f_0001.png", ...],
           "frame_start": 1, "target": "/abs/movie/shot_"}

The frames (rendered by the nodes, one PNG per frame, already through the
scene's view transform) are laid over everything in the scene's sequencer as
one image strip; other picture strips are muted, sound strips stay. Blender's
own FFMPEG writer then renders the sequencer to `target`, named as Blender
names movies (`shot_0001-0250.mkv`). Progress goes to stdout as
`herd-encode: DONE/TOTAL` lines; the movie's path as `herd-encoded: PATH`.
"""

import json
import os
import sys

import bpy

# herd's inspector, written beside this script, for what both need.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import herd_inspect  # noqa: E402


def top_strips(editor):
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def main():
    argv = sys.argv[sys.argv.index("--") + 1 :]
    with open(argv[0], encoding="utf-8") as handle:
        job = json.load(handle)
    scene = herd_inspect.scene_named(job.get("scene"))
    frames = job["frames"]
    start = int(job["frame_start"])
    render = scene.render
    render.filepath = job["target"]
    scene.frame_start = start
    scene.frame_end = start + len(frames) - 1
    scene.frame_step = 1
    # The frames carry the scene's look already: shown as they are.
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    scene.view_settings.use_curve_mapping = False
    render.use_sequencer = True
    render.use_compositing = False
    editor = scene.sequence_editor or scene.sequence_editor_create()
    channel = 1
    for strip in herd_inspect.all_strips(editor):
        channel = max(channel, strip.channel + 1)
        if strip.type not in {"SOUND", "META"}:
            strip.mute = True
    strip = top_strips(editor).new_image(
        name="herd frames", filepath=frames[0], channel=min(channel, 128), frame_start=start
    )
    for path in frames[1:]:
        strip.elements.append(os.path.basename(path))
    strip.colorspace_settings.name = scene.sequencer_colorspace_settings.name
    if hasattr(strip, "blend_type"):
        strip.blend_type = "REPLACE"
    total = len(frames)

    def progress(scene_, *_):
        done = scene_.frame_current - start + 1
        print(f"herd-encode: {done}/{total}", flush=True)

    bpy.app.handlers.render_write.append(progress)
    bpy.ops.render.render(animation=True, scene=scene.name)
    print(f"herd-encoded: {render.frame_path(frame=start)}", flush=True)


main()
