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

import os
import sys

import bpy

def warm_scene(scene, cube, feature, folder):
    """Adds `feature`, animated over frames 1-3, to the scene."""
    if feature == "deform":
        bpy.ops.object.armature_add(location=(0, 0, -1))
        armature = bpy.context.active_object
        group = cube.vertex_groups.new(name="Bone")
        group.add(range(len(cube.data.vertices)), 1.0, "REPLACE")
        modifier = cube.modifiers.new("armature", "ARMATURE")
        modifier.object = armature
        bone = armature.pose.bones["Bone"]
        bone.rotation_mode = "XYZ"
        bone.keyframe_insert("rotation_euler", frame=1)
        bone.rotation_euler.x = 0.6
        bone.keyframe_insert("rotation_euler", frame=3)
        cube.shape_key_add(name="Basis")
        bulge = cube.shape_key_add(name="Bulge")
        bulge.data[0].co.z += 1.0
        bulge.value = 0.0
        bulge.keyframe_insert("value", frame=1)
        bulge.value = 1.0
        bulge.keyframe_insert("value", frame=3)
        cube.modifiers.new("subsurf", "SUBSURF")
        cube.modifiers.new("wave", "WAVE")
    elif feature == "geonodes":
        group = bpy.data.node_groups.new("move", "GeometryNodeTree")
        if hasattr(group, "interface"):
            group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
            group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
        else:
            group.inputs.new("NodeSocketGeometry", "Geometry")
            group.outputs.new("NodeSocketGeometry", "Geometry")
        nodes, links = group.nodes, group.links
        given = nodes.new("NodeGroupInput")
        result = nodes.new("NodeGroupOutput")
        time = nodes.new("GeometryNodeInputSceneTime")
        combine = nodes.new("ShaderNodeCombineXYZ")
        move = nodes.new("GeometryNodeSetPosition")
        links.new(time.outputs["Seconds"], combine.inputs["Z"])
        links.new(given.outputs[0], move.inputs["Geometry"])
        links.new(combine.outputs[0], move.inputs["Offset"])
        links.new(move.outputs[0], result.inputs[0])
        cube.modifiers.new("nodes", "NODES").node_group = group
    elif feature in ("particles", "hair"):
        bpy.ops.mesh.primitive_plane_add(size=4, location=(0, 0, -1))
        plane = bpy.context.active_object
        plane.modifiers.new("particles", "PARTICLE_SYSTEM")
        settings = plane.particle_systems[0].settings
        bpy.ops.mesh.primitive_ico_sphere_add(radius=0.1, location=(20, 0, 0))
        settings.count = 40
        if feature == "hair":
            settings.type = "HAIR"
            settings.hair_length = 0.8
        else:
            settings.frame_start = 1
            settings.frame_end = 2
            settings.lifetime = 50
            settings.render_type = "OBJECT"
            settings.instance_object = bpy.context.active_object
    elif feature == "instancing":
        collection = bpy.data.collections.new("instanced")
        collection.objects.link(cube.copy())
        bpy.ops.object.empty_add(location=(1.5, 0, 0))
        empty = bpy.context.active_object
        empty.instance_type = "COLLECTION"
        empty.instance_collection = collection
        empty.keyframe_insert("location", frame=1)
        empty.location.z += 1.0
        empty.keyframe_insert("location", frame=3)
        array = cube.modifiers.new("array", "ARRAY")
        array.count = 1
        array.keyframe_insert("count", frame=1)
        array.count = 3
        array.keyframe_insert("count", frame=3)
    elif feature == "motion_blur":
        scene.render.use_motion_blur = True
        cube.keyframe_insert("rotation_euler", frame=1)
        cube.rotation_euler.z += 1.2
        cube.keyframe_insert("rotation_euler", frame=3)
    elif feature == "material":
        material = bpy.data.materials.new("glow")
        material.use_nodes = True
        emission = material.node_tree.nodes.new("ShaderNodeEmission")
        output = material.node_tree.nodes["Material Output"]
        material.node_tree.links.new(emission.outputs[0], output.inputs["Surface"])
        strength = emission.inputs["Strength"]
        strength.default_value = 0.5
        strength.keyframe_insert("default_value", frame=1)
        strength.default_value = 4.0
        strength.keyframe_insert("default_value", frame=3)
        cube.data.materials.append(material)
        light = bpy.data.objects["Light"].data
        light.keyframe_insert("energy", frame=1)
        light.energy *= 3
        light.keyframe_insert("energy", frame=3)
    elif feature == "image_sequence":
        for index, colour in enumerate([(1, 0, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1)]):
            image = bpy.data.images.new(f"seq{index}", 8, 8)
            image.pixels = list(colour) * 64
            image.filepath_raw = os.path.join(folder, f"seq_{index + 1:04d}.png")
            image.file_format = "PNG"
            image.save()
            bpy.data.images.remove(image)
        material = bpy.data.materials.new("sequence")
        material.use_nodes = True
        texture = material.node_tree.nodes.new("ShaderNodeTexImage")
        texture.image = bpy.data.images.load(os.path.join(folder, "seq_0001.png"))
        texture.image.source = "SEQUENCE"
        texture.image_user.frame_duration = 3
        texture.image_user.use_auto_refresh = True
        bsdf = material.node_tree.nodes["Principled BSDF"]
        material.node_tree.links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
        cube.data.materials.append(material)
    elif feature == "view_layers":
        set_format(scene.render.image_settings, "OPEN_EXR_MULTILAYER")
        second = scene.view_layers.new("Second")
        second.use_pass_z = True
        cube.keyframe_insert("location", frame=1)
        cube.location.y += 0.5
        cube.keyframe_insert("location", frame=3)
    else:
        raise SystemExit(f"unknown feature {feature}")


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
    """The scene's compositor tree with its Render Layers node, the image
    going to the output as Blender's default tree does."""
    if hasattr(scene, "compositing_node_group"):  # 5.0
        tree = bpy.data.node_groups.new("Compositing", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        layers = tree.nodes.new("CompositorNodeRLayers")
        output = tree.nodes.new("NodeGroupOutput")
        tree.links.new(layers.outputs["Image"], output.inputs[0])
        scene.compositing_node_group = tree
        return tree, layers
    scene.use_nodes = True
    tree = scene.node_tree
    return tree, tree.nodes.get("Render Layers")


def set_format(settings, file_format):
    """An image format; 5.0 first needs its media type."""
    if hasattr(settings, "media_type"):
        settings.media_type = "MULTI_LAYER_IMAGE" if file_format == "OPEN_EXR_MULTILAYER" else "IMAGE"
    settings.file_format = file_format


def file_output(tree, path, name, file_format):
    node = tree.nodes.new("CompositorNodeOutputFile")
    node.name = name
    if hasattr(node, "directory"):  # 5.0
        node.directory = path
    else:
        node.base_path = path
    set_format(node.format, file_format)
    node["herd_slots"] = 0
    return node


def slot(node, path, kind="RGBA"):
    """A new input of a File Output node writing to `path` (its first
    input before 5.0 exists already)."""
    if hasattr(node, "file_output_items"):  # 5.0 (a "/" in a name becomes "_")
        node.file_output_items.new(kind, path)
        return node.inputs[len(node.file_output_items) - 1]
    if node["herd_slots"] == 0:
        node.file_slots[0].path = path
    else:
        node.file_slots.new(path)
    node["herd_slots"] += 1
    return node.inputs[node["herd_slots"] - 1]


if kind == "file_output":
    scene.view_layers[0].use_pass_z = True
    scene.view_layers[0].use_pass_normal = True
    tree, layers = compositor(scene)
    passes = file_output(tree, "//passes/", "passes", "PNG")
    tree.links.new(layers.outputs["Image"], slot(passes, "image_"))
    tree.links.new(layers.outputs["Normal"], slot(passes, "normal/normal_", "VECTOR"))
    depth = file_output(tree, "//", "depth", "OPEN_EXR")
    tree.links.new(layers.outputs["Depth"], slot(depth, "depth/depth_", "FLOAT"))
    if absolute:
        far = file_output(tree, absolute, "far", "PNG")
        tree.links.new(layers.outputs["Image"], slot(far, "Image"))
elif kind == "multilayer":
    set_format(scene.render.image_settings, "OPEN_EXR_MULTILAYER")
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
    if hasattr(scene.render.image_settings, "media_type"):
        scene.render.image_settings.media_type = "VIDEO"
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
elif kind.startswith("warm_"):
    # Scenes that change from frame to frame in every way persistent data
    # must notice; the camera moves too.
    scene.frame_end = 3
    camera = scene.camera
    camera.keyframe_insert("location", frame=1)
    camera.location.x += 0.4
    camera.keyframe_insert("location", frame=3)
    feature = kind[len("warm_"):]
    warm_scene(scene, cube, feature, os.path.dirname(out))
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
