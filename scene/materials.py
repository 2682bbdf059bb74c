"""Materials: the shared point-colour material and one photo material per image.

Both emit their colour so the photo/point colours show unchanged in Material Preview and in Cycles, whatever
the lighting of the user's scene.
"""

from __future__ import annotations

import bpy

POINT_MATERIAL = "VGGT Point Color"
_MARKER_KEY = "vggt_material"


def _emission_material(name: str, source_type: str) -> tuple[bpy.types.Material, bpy.types.Node]:
    """A material whose surface is Emission (strength 1) of a new `source_type` node's Color output.

    Emission, not a lit BSDF: points and planes show the photos' own colours under any light.
    """
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True  # deprecated (always on) in 5.0
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    source = nodes.new(source_type)
    source.location = (-400, 0)
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Strength"].default_value = 1.0
    emit.location = (-100, 0)
    out = nodes.new("ShaderNodeOutputMaterial")
    out.location = (150, 0)
    links.new(source.outputs["Color"], emit.inputs["Color"])
    links.new(emit.outputs["Emission"], out.inputs["Surface"])
    return mat, source


def point_material() -> bpy.types.Material:
    """Emission of the `Col` point attribute (shared, reused): points show the photos' colours under any
    light, like the photo material."""
    for mat in bpy.data.materials:
        if mat.get(_MARKER_KEY) == "point_color_v2":
            return mat
    mat, attr = _emission_material(POINT_MATERIAL, "ShaderNodeAttribute")
    attr.attribute_type = "GEOMETRY"
    attr.attribute_name = "Col"
    mat[_MARKER_KEY] = "point_color_v2"
    return mat


def photo_material(image: bpy.types.Image, name: str) -> bpy.types.Material:
    """Emission of `image` through the active UV map; one material per image, reused for the same image."""
    for mat in bpy.data.materials:
        if mat.get(_MARKER_KEY) == "photo_v1" and mat.get("vggt_image") == image.name:
            return mat
    mat, tex = _emission_material(name, "ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Linear"
    tex.extension = "EXTEND"
    mat[_MARKER_KEY] = "photo_v1"
    mat["vggt_image"] = image.name
    return mat
