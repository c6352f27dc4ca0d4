"""Builds the test scene of tests/dependencies.rs: a .blend that reads files
from three folders beside its own, the awkward cases a farm must carry.

    blender -b --factory-startup --python tests/deps_scene.py -- OUT [evil]

OUT/textures/wood.png          an image texture in another folder
OUT/seq/frame_0001..0003.png   an image sequence (one image per frame)
OUT/lib/library.blend          a library: the object "LibCube" is linked; it
                               reads OUT/textures/paint.png by an absolute path
OUT/shot/scene.blend           the scene: //-relative paths to the texture and
                               the library, an absolute one to the sequence

With "evil" the scene also holds an image whose path climbs out of any
folder (//../../../../../../../../etc/hostname) and a compositor File Output
node that writes to /tmp/herd-evil-output: a node must neither read nor
write there.

Cycles on the CPU, 8 samples, a fixed seed, 64x48 pixels: renders are the
same on every machine with this Blender, so frames can be compared pixel by
pixel.
"""

import os
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1 :]
out = os.path.abspath(argv[0])
evil = len(argv) > 1 and argv[1] == "evil"
for folder in ("textures", "seq", "lib", "shot"):
    os.makedirs(os.path.join(out, folder), exist_ok=True)


def write_png(path, width, height, pixel):
    image = bpy.data.images.new("tmp", width, height)
    pixels = []
    for y in range(height):
        for x in range(width):
            pixels.extend(pixel(x, y))
    image.pixels = pixels
    image.filepath_raw = path
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


def empty_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


# The texture: a checker, so a wrong or missing image shows.
write_png(
    os.path.join(out, "textures", "wood.png"),
    32,
    32,
    lambda x, y: (0.8, 0.5, 0.2, 1.0) if (x // 8 + y // 8) % 2 else (0.3, 0.15, 0.05, 1.0),
)
# The sequence: one colour per frame.
for frame, colour in enumerate([(1, 0, 0, 1), (0, 1, 0, 1), (0, 0, 1, 1)], start=1):
    write_png(os.path.join(out, "seq", f"frame_{frame:04d}.png"), 8, 8, lambda x, y, c=colour: c)


def material(name, colour=None, image=None, sequence=False):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    if image is not None:
        tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
        tex.image = image
        if sequence:
            tex.image_user.frame_duration = 3
            tex.image_user.frame_start = 1
            tex.image_user.use_auto_refresh = True
        mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    else:
        bsdf.inputs["Base Color"].default_value = colour
    return mat


# The library: its cube reads a texture by an absolute path.
empty_scene()
paint_path = os.path.join(out, "textures", "paint.png")
write_png(paint_path, 16, 16, lambda x, y: (0.9, 0.1, 0.1, 1) if x < 8 else (0.9, 0.9, 0.1, 1))
bpy.ops.mesh.primitive_cube_add(size=0.8, location=(1.2, 0, 0.4))
cube = bpy.context.object
cube.name = "LibCube"
cube.data.materials.append(material("LibPaint", image=bpy.data.images.load(paint_path)))
library_path = os.path.join(out, "lib", "library.blend")
bpy.ops.wm.save_as_mainfile(filepath=library_path, relative_remap=False)

# The scene.
scene = empty_scene()
scene_path = os.path.join(out, "shot", "scene.blend")
bpy.ops.wm.save_as_mainfile(filepath=scene_path)  # so that paths can be relative
scene.render.engine = "CYCLES"
scene.cycles.device = "CPU"
scene.cycles.samples = 8
scene.cycles.seed = 0
scene.cycles.use_animated_seed = False
scene.cycles.use_denoising = False
scene.render.resolution_x = 64
scene.render.resolution_y = 48
scene.render.resolution_percentage = 100
scene.frame_start = 1
scene.frame_end = 3
scene.render.image_settings.file_format = "PNG"

world = bpy.data.worlds.new("World")
world.color = (0.05, 0.05, 0.05)
scene.world = world
bpy.ops.object.camera_add(location=(0, -5, 2.2), rotation=(1.2, 0, 0))
scene.camera = bpy.context.object
bpy.ops.object.light_add(type="SUN", location=(0, 0, 5))
bpy.context.object.data.energy = 4.0

wood = bpy.data.images.load(os.path.join(out, "textures", "wood.png"))
wood.filepath = bpy.path.relpath(wood.filepath)  # //../textures/wood.png
bpy.ops.mesh.primitive_plane_add(size=1.6, location=(-1.2, 0, 0.4), rotation=(1.2, 0, 0))
bpy.context.object.data.materials.append(material("Wood", image=wood))

# Kept absolute on purpose: the nodes must move it into the job's folder.
frames = bpy.data.images.load(os.path.join(out, "seq", "frame_0001.png"))
frames.source = "SEQUENCE"
bpy.ops.mesh.primitive_plane_add(size=1.0, location=(0, 0, 1.3), rotation=(1.2, 0, 0))
bpy.context.object.data.materials.append(material("Frames", image=frames, sequence=True))

with bpy.data.libraries.load(library_path, link=True, relative=True) as (source, target):
    target.objects = ["LibCube"]
for obj in target.objects:
    scene.collection.objects.link(obj)

if evil:
    # An image path that climbs out of the job's folder, wherever it is.
    secret = bpy.data.images.new("secret", 4, 4)
    secret.source = "FILE"
    secret.filepath = "//" + "../" * 12 + "etc/hostname"
    bpy.ops.mesh.primitive_plane_add(size=0.5, location=(0, 0, 0))
    bpy.context.object.data.materials.append(material("Secret", image=secret))
    # A compositor node that writes outside.
    scene.use_nodes = True
    tree = scene.node_tree
    output = tree.nodes.new("CompositorNodeOutputFile")
    output.base_path = "/tmp/herd-evil-output/"
    tree.links.new(tree.nodes["Render Layers"].outputs["Image"], output.inputs[0])

bpy.ops.wm.save_as_mainfile(filepath=scene_path, relative_remap=True)
if evil:
    # Saving made nothing relative that was meant to climb out.
    assert bpy.data.images["secret"].filepath.startswith("//../")
