"""The point cloud: valid pixels' 3-D points, subsampled, as a vertex-only mesh shown as points by Geometry Nodes.

The mesh keeps every subsampled point; the "Min Confidence" filter lives in the GN modifier so the user can
change it live without re-importing.
"""

from __future__ import annotations

import bpy
import numpy as np

from ..vggt_blender.geometry.alignment import reconstruction_alignment
from ..vggt_blender.geometry.blender_camera import opencv_to_blender_points
from .attributes import srgb_to_linear_u8, write_attribute, write_positions
from .materials import point_material
from .node_groups import add_modifier, point_cloud_group

SUBSAMPLE_SEED = 0


def _random_subset(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniformly random k-subset of range(n), in O(n) with small constants.

    Draws ~k integers with replacement into a boolean mask (enough draws that at least k distinct are
    expected, more if needed), then drops the surplus at random; for k > n/2 the complement is drawn instead.
    About 10x faster than Generator.choice(n, k, replace=False) for 20 M candidates.
    """
    if k > n // 2:
        drop = _random_subset(n, n - k, rng)
        keep = np.ones(n, dtype=bool)
        keep[drop] = False
        return np.flatnonzero(keep)
    mask = np.zeros(n, dtype=bool)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    # Expected distinct values after m draws: n (1 - exp(-m/n)); aim ~0.5% above k.
    draws = int(np.ceil(-n * np.log1p(-min(k * 1.005 + 16, n - 1) / n)))
    count = 0
    while count < k:
        mask[rng.integers(0, n, draws)] = True
        count = int(np.count_nonzero(mask))
        draws = max(16, int((k - count) * 1.5))
    chosen = np.flatnonzero(mask)
    extra = len(chosen) - k
    if extra:
        keep = np.ones(len(chosen), dtype=bool)
        keep[rng.choice(len(chosen), extra, replace=False)] = False
        chosen = chosen[keep]
    return chosen


def subsample_mask(valid: np.ndarray, max_points: int, seed: int = SUBSAMPLE_SEED) -> np.ndarray:
    """Flat indices of exactly min(max_points, valid.sum()) randomly chosen True entries of `valid`, sorted.

    Uniform over the valid entries and deterministic for a given seed.
    """
    flat = np.asarray(valid, dtype=bool).reshape(-1)
    n_valid = int(np.count_nonzero(flat))
    k = int(max_points)
    if k <= 0 or n_valid == 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n_valid:
        return np.flatnonzero(flat)
    picked = _random_subset(n_valid, k, np.random.default_rng(seed))
    if n_valid == flat.size:
        return picked
    return np.flatnonzero(flat)[picked]


def point_cloud_arrays(rec, point_source: str, max_points: int, scale: float) -> dict[str, np.ndarray]:
    """Blender-world positions, linear RGBA colours, confidence and view index of the kept points."""
    if point_source == "point_map":
        points, conf = rec.point_map, rec.point_map_conf
    elif point_source == "depth":
        points, conf = rec.world_points, rec.depth_conf
    else:
        raise ValueError(f"unknown point source {point_source!r} (use 'depth' or 'point_map')")
    points = np.asarray(points)
    n_views, height, width = points.shape[:3]
    idx = subsample_mask(rec.valid_mask, max_points)
    xyz = points.reshape(-1, 3)[idx]
    # Non-finite points are rare: check only the kept ones (checking all 20 M costs ~0.3 s).
    finite = np.isfinite(xyz).all(axis=1)
    if not finite.all():
        idx, xyz = idx[finite], xyz[finite]
    xyz = opencv_to_blender_points(xyz.astype(np.float32, copy=False), scale, reconstruction_alignment(rec))
    rgba = np.empty((len(idx), 4), dtype=np.float32)
    rgba[:, :3] = srgb_to_linear_u8(np.asarray(rec.colors).reshape(-1, 3)[idx])
    rgba[:, 3] = 1.0
    # idx is sorted: view i owns the run of indices in [i*H*W, (i+1)*H*W).
    bounds = np.searchsorted(idx, np.arange(n_views + 1) * (height * width))
    view_index = np.repeat(np.arange(n_views, dtype=np.int32), np.diff(bounds))
    return {
        "positions": xyz,
        "colors": rgba,
        "conf": np.asarray(conf).reshape(-1)[idx].astype(np.float32, copy=False),
        "view_index": view_index,
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
