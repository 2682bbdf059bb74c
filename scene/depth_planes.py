"""Depth-textured planes: per photo, a grid mesh placed along the camera rays at the predicted depth.

Vertices sit on the rays through model-pixel centres ((i + 0.5, j + 0.5), ARCHITECTURE's pixel convention);
the outermost row/column is moved to the edge of `valid_box` so the plane covers the whole visible photo.
UVs go through the pixel map to the original photo, so the texture lines up with the photo as Blender shows it.
"""

from __future__ import annotations

import bpy
import numpy as np

from ..vggt_blender.geometry.alignment import reconstruction_alignment, similarity_parts
from ..vggt_blender.geometry.blender_camera import opencv_to_blender_points
from ..vggt_blender.geometry.derive import unproject_pixels
from .attributes import write_attribute, write_positions
from .materials import photo_material
from .node_groups import PLANE_MIN_CONFIDENCE_PROP, add_modifier, depth_plane_group, drive_input_from_collection


def _grid_samples(start: int, stop: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices sampled every `step` in [start, stop) (last pixel always included), and the continuous
    coordinates of their vertices (pixel centres; the first/last pushed to the box edges)."""
    idx = np.arange(start, stop, step)
    if idx[-1] != stop - 1:
        idx = np.append(idx, stop - 1)
    coord = idx + 0.5
    coord[0] = start
    coord[-1] = stop
    return idx, coord.astype(np.float64)


def grid_faces(rows: int, cols: int) -> np.ndarray:
    """Quad vertex indices (rows-1)*(cols-1) x 4 for a row-major grid, counter-clockwise seen from the camera."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    v00 = (r * cols + c).reshape(-1)
    # In Blender's view the image's y axis points down, so (00, 10, 11, 01) faces the camera.
    return np.stack([v00, v00 + cols, v00 + cols + 1, v00 + 1], axis=1).astype(np.int32)


def depth_plane_arrays(rec, i: int, step: int, scale: float) -> dict[str, np.ndarray]:
    """Vertex positions (Blender world), UVs per corner, faces, conf and depth for view `i`."""
    if step < 1:
        raise ValueError(f"plane_step must be >= 1, got {step}")
    x0, y0, x1, y1 = (int(v) for v in rec.valid_box[i])
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"view {i}: valid box {x0, y0, x1, y1} is too small for a plane")
    cols_idx, u = _grid_samples(x0, x1, step)
    rows_idx, v = _grid_samples(y0, y1, step)
    depth = np.asarray(rec.depth[i], dtype=np.float64)[np.ix_(rows_idx, cols_idx)]
    conf = np.asarray(rec.depth_conf[i], dtype=np.float32)[np.ix_(rows_idx, cols_idx)]
    uu, vv = np.meshgrid(u, v)
    world = unproject_pixels(uu, vv, depth, rec.extrinsics[i], rec.intrinsics_model[i]).reshape(-1, 3)
    alignment = reconstruction_alignment(rec)
    positions = opencv_to_blender_points(world, scale, alignment).astype(np.float32)
    scale = scale * similarity_parts(alignment)[0]  # the depth attribute is in scene units too

    sx, sy, ox, oy = (float(a) for a in rec.pixel_map[i])
    width, height = (float(a) for a in rec.original_sizes[i])
    vert_uv = np.stack([(sx * uu + ox) / width, 1.0 - (sy * vv + oy) / height], axis=-1).reshape(-1, 2)
    faces = grid_faces(len(rows_idx), len(cols_idx))
    return {
        "positions": positions,
        "faces": faces,
        "corner_uv": vert_uv[faces.reshape(-1)].astype(np.float32),
        "conf": conf.reshape(-1),
        "depth": (depth.reshape(-1) * scale).astype(np.float32),
    }


def build_grid_mesh(name: str, positions: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """Quad mesh from numpy arrays with bulk foreach_set (from_pydata is ~10x slower)."""
    mesh = bpy.data.meshes.new(name)
    n_faces = len(faces)
    mesh.vertices.add(len(positions))
    mesh.loops.add(n_faces * 4)
    mesh.polygons.add(n_faces)
    write_positions(mesh, positions)
    mesh.loops.foreach_set("vertex_index", faces.reshape(-1))
    mesh.polygons.foreach_set("loop_start", np.arange(0, 4 * n_faces, 4, dtype=np.int32))
    if bpy.app.version < (4, 0, 0):
        mesh.polygons.foreach_set("loop_total", np.full(n_faces, 4, dtype=np.int32))
    mesh.update(calc_edges=True)
    return mesh


def create_depth_plane(rec, i: int, options, collection: bpy.types.Collection,
                       image: bpy.types.Image | None) -> bpy.types.Object:
    stem = str(rec.image_names[i])
    arrays = depth_plane_arrays(rec, i, int(options.plane_step), float(options.scale))
    mesh = build_grid_mesh(f"{stem} Depth", arrays["positions"], arrays["faces"])
    uv = mesh.uv_layers.new(name="UVMap")
    write_attribute(mesh, uv.name, "CORNER", "FLOAT2", arrays["corner_uv"])
    write_attribute(mesh, "conf", "POINT", "FLOAT", arrays["conf"])
    write_attribute(mesh, "depth", "POINT", "FLOAT", arrays["depth"])
    if image is not None:
        mesh.materials.append(photo_material(image, f"VGGT Photo {stem}"))
    ob = bpy.data.objects.new(f"{stem} Depth", mesh)
    ob["vggt_kind"] = "depth_plane"
    ob["vggt_view_index"] = int(i)
    ob["vggt_image_width"] = int(rec.original_sizes[i][0])
    ob["vggt_image_height"] = int(rec.original_sizes[i][1])
    ob["vggt_image_path"] = str(rec.display_paths[i])
    collection.objects.link(ob)
    add_modifier(ob, depth_plane_group(), {"Min Confidence": float(options.min_confidence)})
    if PLANE_MIN_CONFIDENCE_PROP in collection:
        # One control for every plane of the reconstruction: the collection's shared threshold.
        drive_input_from_collection(ob, "Min Confidence", collection, PLANE_MIN_CONFIDENCE_PROP)
    return ob
