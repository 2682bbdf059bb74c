"""The one derivation of a reconstruction's dependent arrays from its primaries (numpy only).

Primaries (what the model and preprocessing decide): depth, extrinsics, intrinsics_model, pixel_map, valid_box.
Derived from them, here and nowhere else:
- world points: depth unprojected through model-pixel centres with intrinsics_model, then to the world with
  the extrinsics (docs/ARCHITECTURE.md conventions);
- photo intrinsics: pixel_map ∘ intrinsics_model (K for the original photo);
- the valid mask: True inside each image's valid_box, False on padding.
A camera refinement that changes extrinsics or intrinsics_model therefore moves the points (and the depth
planes, which sample `unproject_pixels`) with it: `Reconstruction` re-derives on every change.
"""

from __future__ import annotations

import numpy as np

from .cameras import (
    camera_to_world,
    depth_to_world_points,
    intrinsics_to_photo,
    pixels_to_camera_points,
    valid_mask_from_boxes,
)

# The Reconstruction fields each derived array follows from (the cache key of `Reconstruction`).
DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "world_points": ("depth", "extrinsics", "intrinsics_model"),
    "intrinsics": ("intrinsics_model", "pixel_map"),
    "valid_mask": ("valid_box", "depth"),
}


def world_points(depth: np.ndarray, extrinsics: np.ndarray, intrinsics_model: np.ndarray) -> np.ndarray:
    """float32 [N,H,W,3]: every model pixel's depth unprojected through its centre into the world frame.

    A non-finite depth gives a non-finite point (dropped by geometry/selection.py), without a warning."""
    with np.errstate(invalid="ignore", over="ignore"):
        return depth_to_world_points(depth, extrinsics, intrinsics_model, dtype=np.float32)


def photo_intrinsics(intrinsics_model: np.ndarray, pixel_map: np.ndarray) -> np.ndarray:
    """float64 [N,3,3]: K in the original photo's pixels (pixel map applied to the model-input K)."""
    return np.asarray(intrinsics_to_photo(intrinsics_model, pixel_map), dtype=np.float64)


def valid_mask(valid_box: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [N,H,W]: the model pixels inside each image's valid box (the photo, not padding)."""
    return valid_mask_from_boxes(np.asarray(valid_box, dtype=np.int64), int(height), int(width))


def derive(name: str, depth: np.ndarray, extrinsics: np.ndarray, intrinsics_model: np.ndarray,
           pixel_map: np.ndarray, valid_box: np.ndarray) -> np.ndarray:
    """One derived array by its Reconstruction field name (see DERIVED_FROM)."""
    if name == "world_points":
        return world_points(depth, extrinsics, intrinsics_model)
    if name == "intrinsics":
        return photo_intrinsics(intrinsics_model, pixel_map)
    if name == "valid_mask":
        height, width = np.shape(depth)[-2:]
        return valid_mask(valid_box, height, width)
    raise KeyError(f"'{name}' is not a derived reconstruction array")


def unproject_pixels(u: np.ndarray, v: np.ndarray, depth: np.ndarray, extrinsics: np.ndarray,
                     intrinsics_model: np.ndarray) -> np.ndarray:
    """World points [..., 3] of one view at continuous model-pixel coordinates (u, v) with the given depth.

    For samples off the pixel-centre grid (depth planes push their border vertices to the valid box's edge);
    at pixel centres it gives the same points as `world_points`.
    """
    return camera_to_world(pixels_to_camera_points(u, v, depth, intrinsics_model), extrinsics)


__all__ = ["DERIVED_FROM", "world_points", "photo_intrinsics", "valid_mask", "derive", "unproject_pixels"]
