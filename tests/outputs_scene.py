"""Builds the scenes of herd's output tests (tests/outputs.rs): what Blender
writes for each must be what herd brings back.

    blender -b --factory-startup --python outputs_scene.py -- OUT.blend KIND

KIND: file_output (a File Output node writing passes to a `//` path, a
relative sub-folder and an absolute path, PNG and EXR), multilayer (two
view layers with Z and Normal passes to one multilayer EXR), png16, tiff,
pattern (`//renders/shot_###` in a sub-folder), movie (H.264 in MKV),
sequencer_movie (colour strips and no camera, to MKV), default (the untouched
`/tmp/`), rigid_body (an unbaked rigid body drop over 12 frames), two_scenes (a second scene that differs, chosen with --scene).
"""

import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1 :]
out, kind = argv[0], argv[1]
absolute = argv[2] if len(argv) > 2 else None

scene = bpy.context.scene
scene.render.engine = "CYCLES"
scene.cycles.samples = 2
scene.cycles.use_denoising = False
scene.render.resolution_x = 64
scene.render.resolution_y = 48
scene.render.resolution_percentage = 100
scene.frame_start = 1
scene.frame_end = 2
scene.render.filepath = "//out/frame_"
cube = bpy.data.objects.get("Cube")
cube.keyframe_insert("location", frame=1)
cube.location.x += 1.0
cube.keyframe_insert("location", frame=2)


def compositor(scene):
    if hasattr(scene, "compositing_node_group"):
        tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
        scene.compositing_node_group = tree
        return tree, None
    scene.use_nodes = True
    tree = scene.node_tree
    return tree, tree.nodes.get("Render Layers")


def file_output(tree, path, name):
    node = tree.nodes.new("CompositorNodeOutputFile")
    node.name = name
    if hasattr(node, "base_path"):
        node.base_path = path
    else:
        node.directory = path
    return node


if kind == "file_output":
    scene.view_layers[0].use_pass_z = True
    scene.view_layers[0].use_pass_normal = True
    tree, layers = compositor(scene)
    passes = file_output(tree, "//passes/", "passes")
    passes.format.file_format = "PNG"
    passes.file_slots.new("normal/normal_")
    passes.file_slots[0].path = "image_"
    tree.links.new(layers.outputs["Image"], passes.inputs[0])
    tree.links.new(layers.outputs["Normal"], passes.inputs[1])
    depth = file_output(tree, "//", "depth")
    depth.format.file_format = "OPEN_EXR"
    depth.file_slots[0].path = "depth/depth_"
    tree.links.new(layers.outputs["Depth"], depth.inputs[0])
    if absolute:
        far = file_output(tree, absolute, "far")
        far.format.file_format = "PNG"
        tree.links.new(layers.outputs["Image"], far.inputs[0])
elif kind == "multilayer":
    scene.render.image_settings.file_format = "OPEN_EXR_MULTILAYER"
    scene.render.image_settings.color_depth = "16"
    first = scene.view_layers[0]
    first.use_pass_z = True
    first.use_pass_normal = True
    second = scene.view_layers.new("Second")
    second.use_pass_z = True
elif kind == "png16":
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_depth = "16"
    scene.render.image_settings.color_mode = "RGBA"
elif kind == "tiff":
    scene.render.image_settings.file_format = "TIFF"
    scene.render.image_settings.color_depth = "16"
elif kind == "pattern":
    scene.render.filepath = "//renders/shot_###"
    scene.render.image_settings.file_format = "JPEG"
elif kind in ("movie", "movie_mp4", "sequencer_movie"):
    scene.frame_end = 3
    scene.render.filepath = "//movie/shot_"
    scene.render.image_settings.file_format = "FFMPEG"
    scene.render.ffmpeg.format = "MPEG4" if kind == "movie_mp4" else "MKV"
    scene.render.ffmpeg.codec = "H264"
    scene.render.ffmpeg.constant_rate_factor = "MEDIUM"
    scene.view_settings.view_transform = "Filmic"
    if kind == "sequencer_movie":
        # Strips only: what Blender renders is the sequencer's picture.
        scene.camera = None
        editor = scene.sequence_editor_create()
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences
        red = strips.new_effect("red", "COLOR", channel=1, frame_start=1, frame_end=3)
        red.color = (0.8, 0.1, 0.1)
        wipe = strips.new_effect("green", "COLOR", channel=2, frame_start=2, frame_end=4)
        wipe.color = (0.1, 0.7, 0.2)
        wipe.blend_alpha = 0.5
        # A sound strip: a second of a 440 Hz tone beside the .blend.
        import math
        import os
        import struct
        import wave

        tone = os.path.join(os.path.dirname(out), "tone.wav")
        with wave.open(tone, "wb") as sound:
            sound.setnchannels(1)
            sound.setsampwidth(2)
            sound.setframerate(48000)
            sound.writeframes(b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * i / 48000)))
                for i in range(48000)))
        strips.new_sound("tone", "//tone.wav", channel=3, frame_start=1)
        scene.render.ffmpeg.audio_codec = "AAC"
elif kind == "rigid_body":
    # A cube dropped onto a plane, unbaked.
    scene.frame_end = 12
    cube.animation_data_clear()
    cube.location = (0.0, 0.0, 3.0)
    cube.rotation_euler = (0.3, 0.2, 0.0)
    bpy.ops.mesh.primitive_plane_add(size=10, location=(0, 0, -1))
    bpy.ops.rigidbody.object_add(type="PASSIVE")
    bpy.context.view_layer.objects.active = cube
    bpy.ops.rigidbody.object_add(type="ACTIVE")
elif kind == "default":
    scene.render.filepath = "/tmp/"
elif kind == "two_scenes":
    other = scene.copy()
    other.name = "Other"
    other.use_fake_user = True  # no window shows it: keep it in the file
    other.render.resolution_x = 40
    other.render.resolution_y = 30
    other.render.filepath = "//other/o_"
else:
    raise SystemExit(f"unknown kind {kind}")

bpy.ops.wm.save_as_mainfile(filepath=out)
