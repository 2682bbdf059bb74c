"""The point cloud: valid pixels' 3-D points, subsampled, as a vertex-only mesh shown as points by Geometry Nodes.

The mesh keeps every subsampled point; the "Min Confidence" filter lives in the GN modifier so the user can
change it live without re-importing.
"""

from __future__ import annotations

import bpy
import numpy as np

from ..vggt_blender.geometry.alignment import reconstruction_alignment
from ..vggt_blender.geometry.blender_camera import opencv_to_blender_points
from ..vggt_blender.geometry.selection import select_points, subsample_mask  # noqa: F401 - subsample_mask: public path
from .attributes import srgb_to_linear_u8, write_attribute, write_positions
from .materials import point_material
from .node_groups import add_modifier, point_cloud_group

def point_cloud_arrays(rec, point_source: str, max_points: int, scale: float) -> dict[str, np.ndarray]:
    """Blender-world positions, linear RGBA colours, confidence and view index of the kept points.

    Every valid point is a candidate (no confidence threshold: the modifier filters live)."""
    picked = select_points(rec, point_source, max_points=max_points)
    rgba = np.empty((len(picked), 4), dtype=np.float32)
    rgba[:, :3] = srgb_to_linear_u8(picked.rgb)
    rgba[:, 3] = 1.0
    return {
        "positions": opencv_to_blender_points(picked.xyz, scale, reconstruction_alignment(rec)),
        "colors": rgba,
        "conf": picked.confidence,
        "view_index": picked.views,
    }


def create_point_cloud(rec, options, collection: bpy.types.Collection, name: str) -> bpy.types.Object:
    """Vertex-only mesh with `Col`, `conf`, `view_index` attributes and the point-cloud GN modifier."""
    arrays = point_cloud_arrays(rec, options.point_source, options.max_points, options.scale)
    mesh = bpy.data.meshes.new(f"{name} Points")
    mesh.vertices.add(len(arrays["positions"]))
    write_positions(mesh, arrays["positions"])
    write_attribute(mesh, "Col", "POINT", "FLOAT_COLOR", arrays["colors"])
    write_attribute(mesh, "conf", "POINT", "FLOAT", arrays["conf"])
    write_attribute(mesh, "view_index", "POINT", "INT", arrays["view_index"])
    mesh.update()
    ob = bpy.data.objects.new(f"{name} Points", mesh)
    ob["vggt_kind"] = "point_cloud"
    ob["vggt_point_source"] = options.point_source
    collection.objects.link(ob)
    mat = point_material()
    # Also in a material slot so the material is listed on the object (GN's Set Material assigns it).
    mesh.materials.append(mat)
    add_modifier(ob, point_cloud_group(), {
        "Min Confidence": float(options.min_confidence),
        # Already in scene units (after Scale), as the option says: not multiplied by the scale.
        "Point Radius": float(options.point_radius),
        "Material": mat,
    })
    return ob
