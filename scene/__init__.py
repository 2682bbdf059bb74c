"""Blender-side scene builders (bpy): cameras, point cloud, depth planes, Geometry Nodes groups, materials.

`build.build_scene(rec, options, name, context)` is the entry point; every module uses relative imports so the
package works installed as `bl_ext.<repo>.vggt_blender` and loaded under a private name by tests/blend_file.
"""
