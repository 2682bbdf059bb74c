"""Materials: the shared point-colour material and one photo material per image.

Both emit their colour so the photo/point colours show unchanged in Material Preview and in Cycles, whatever
the lighting of the user's scene.
"""

from __future__ import annotations

import bpy

POINT_MATERIAL = "VGGT Point Color"
_MARKER_KEY = "vggt_material"


def _new_node_material(name: str) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True  # deprecated (always on) in 5.0
    mat.node_tree.nodes.clear()
    return mat


def point_material() -> bpy.types.Material:
    """Emission of the `Col` point attribute (shared, reused): points show the photos' colours under any
    light, like the photo material."""
    for mat in bpy.data.materials:
        if mat.get(_MARKER_KEY) == "point_color_v2":
            return mat
    mat = _new_node_material(POINT_MATERIAL)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    attr = nodes.new("ShaderNodeAttribute")
    attr.attribute_type = "GEOMETRY"
    attr.attribute_name = "Col"
    attr.location = (-400, 0)
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Strength"].default_value = 1.0
    emit.location = (-100, 0)
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (150, 0)
    links.new(attr.outputs["Color"], emit.inputs["Color"])
    links.new(emit.outputs["Emission"], out.inputs["Surface"])
    mat[_MARKER_KEY] = "point_color_v2"
    return mat


def photo_material(image: bpy.types.Image, name: str) -> bpy.types.Material:
    """Emission of `image` through the active UV map; one material per image, reused for the same image."""
    for mat in bpy.data.materials:
        if mat.get(_MARKER_KEY) == "photo_v1" and mat.get("vggt_image") == image.name:
            return mat
    mat = _new_node_material(name)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    tex.extension = "EXTEND"
    tex.location = (-400, 0)
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Strength"].default_value = 1.0
    emit.location = (-100, 0)
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (150, 0)
    links.new(tex.outputs["Color"], emit.inputs["Color"])
    links.new(emit.outputs["Emission"], out.inputs["Surface"])
    mat[_MARKER_KEY] = "photo_v1"
    mat["vggt_image"] = image.name
    return mat
