"""Generate herd's demo scene: a small animated Cycles scene.

Usage:
    blender -b --factory-startup --python assets/demo/make_demo.py -- OUT.blend

The scene is deliberately cheap: 320x180 pixels, 16 samples, denoising off
(Debian's Blender is built without OpenImageDenoiser), 24 frames with three
objects moving in front of a camera. A fixed seed keeps renders repeatable.
"""

import math
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
if len(argv) != 1:
    sys.stderr.write("usage: blender -b --factory-startup --python make_demo.py -- OUT.blend\n")
    sys.exit(2)
out_path = argv[0]

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.name = "Demo"

render = scene.render
render.engine = "CYCLES"
render.resolution_x = 320
render.resolution_y = 180
render.resolution_percentage = 100
render.image_settings.file_format = "PNG"
render.image_settings.color_mode = "RGB"
render.fps = 24
scene.frame_start = 1
scene.frame_end = 24

cycles = scene.cycles
cycles.device = "CPU"
cycles.samples = 16
cycles.use_adaptive_sampling = False
cycles.use_denoising = False
cycles.seed = 7
cycles.max_bounces = 4

world = bpy.data.worlds.new("World")
world.use_nodes = True
world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.06, 0.08, 1.0)
world.node_tree.nodes["Background"].inputs["Strength"].default_value = 1.0
scene.world = world


def material(name, rgb):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.4
    return mat


def keyframe(obj, frame, location):
    obj.location = location
    obj.keyframe_insert(data_path="location", frame=frame)


bpy.ops.mesh.primitive_plane_add(size=20, location=(0, 0, 0))
ground = bpy.context.active_object
ground.name = "Ground"
ground.data.materials.append(material("Ground", (0.6, 0.6, 0.6)))

bpy.ops.mesh.primitive_cube_add(size=1.0)
cube = bpy.context.active_object
cube.name = "Cube"
cube.data.materials.append(material("Red", (0.8, 0.1, 0.08)))
keyframe(cube, 1, (-3.0, 0.0, 0.5))
keyframe(cube, 24, (3.0, 0.0, 0.5))
cube.rotation_euler = (0, 0, 0)
cube.keyframe_insert(data_path="rotation_euler", frame=1)
cube.rotation_euler = (0, 0, math.pi)
cube.keyframe_insert(data_path="rotation_euler", frame=24)

bpy.ops.mesh.primitive_uv_sphere_add(radius=0.6, segments=24, ring_count=12)
sphere = bpy.context.active_object
sphere.name = "Sphere"
sphere.data.materials.append(material("Blue", (0.1, 0.25, 0.8)))
bpy.ops.object.shade_smooth()
for frame in range(1, 25, 4):
    height = 0.6 + 1.5 * abs(math.sin(frame / 24.0 * 2.0 * math.pi))
    keyframe(sphere, frame, (0.0, 1.5, height))
keyframe(sphere, 24, (0.0, 1.5, 0.6))

bpy.ops.mesh.primitive_cone_add(radius1=0.5, depth=1.2)
cone = bpy.context.active_object
cone.name = "Cone"
cone.data.materials.append(material("Yellow", (0.9, 0.7, 0.1)))
keyframe(cone, 1, (2.0, -1.5, 0.6))
keyframe(cone, 24, (-2.0, -1.5, 0.6))

bpy.ops.object.light_add(type="SUN", location=(4, -4, 8))
sun = bpy.context.active_object
sun.data.energy = 3.0
sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))

bpy.ops.object.camera_add(location=(0, -9, 4))
camera = bpy.context.active_object
camera.rotation_euler = (math.radians(68), 0, 0)
scene.camera = camera

bpy.ops.wm.save_as_mainfile(filepath=out_path, compress=True)
print(f"herd demo scene written to {out_path}")
