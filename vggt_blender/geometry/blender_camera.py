"""OpenCV pinhole camera -> Blender camera parameters, as plain numbers (numpy only, no bpy).

Blender's perspective camera (sensor fit HORIZONTAL) maps a camera-space point (X, Y, Z), Z < 0 in front, to
    x_px = lens * W / sensor_width * X / -Z + W/2 - shift_x * W                    (from the left edge)
    y_px = (lens * W / sensor_width * Y / -Z + ycor * H/2 - shift_y * W) / ycor    (from the bottom edge)
with ycor = pixel_aspect_y / pixel_aspect_x. Matching this with u = fx X/Z + cx, v = fy Y/Z + cy (OpenCV,
y down) gives the formulas below; `project_with_blender_params` re-implements Blender's model so tests can
check the round trip independently of bpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .alignment import alignment_or_default, apply_alignment, similarity_parts
from .cameras import OPENCV_TO_BLENDER_WORLD

# Blender's default sensor width (mm); any value works as long as lens is derived from it.
DEFAULT_SENSOR_WIDTH = 36.0

# OpenCV world (x, y, z) -> Blender world (x, z, -y): geometry's matrix, rotation part.
WORLD_FIX = OPENCV_TO_BLENDER_WORLD[:3, :3].copy()

# OpenCV camera axes (x right, y down, z forward) -> Blender camera axes (x right, y up, -z forward).
CV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0])


@dataclass
class BlenderCameraParams:
    sensor_fit: str
    sensor_width: float
    lens: float
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int
    pixel_aspect_x: float
    pixel_aspect_y: float
    matrix_world: np.ndarray  # 4x4, Blender Z-up world (alignment and scale applied), rotation orthonormal


def opencv_to_blender_points(points: np.ndarray, scale: float = 1.0,
                             alignment: np.ndarray | None = None) -> np.ndarray:
    """OpenCV-world points [..., 3] -> Blender-world points: `scale` (the user's extra factor) times the
    reconstruction's `alignment` (scene_from_world 4x4; None: the default (x, z, -y)). Float32 stays float32.
    With the default alignment this is exactly (x, z, -y) * scale, today's import."""
    return apply_alignment(alignment_or_default(alignment), points, scale)


def camera_matrix_world(extrinsic: np.ndarray, scale: float = 1.0, alignment: np.ndarray | None = None) -> np.ndarray:
    """Blender matrix_world (4x4) of a camera with OpenCV camera-from-world `extrinsic` ([R|t], 3x4 or 4x4),
    placed by `scale` * `alignment` (None: the default axis change)."""
    E = np.asarray(extrinsic, dtype=np.float64)
    R = E[:3, :3]
    t = E[:3, 3]
    s, A_rot, A_t = similarity_parts(alignment_or_default(alignment))
    # inv([R|t]) = [R^T | -R^T t]; the rotation part is kept orthonormal (no scale), the position is scaled.
    cam_to_world_rot = R.T
    centre = -R.T @ t
    M = np.eye(4)
    M[:3, :3] = A_rot @ cam_to_world_rot @ CV_TO_BLENDER_CAMERA
    M[:3, 3] = (scale * s) * (A_rot @ centre) + scale * A_t
    return M


def blender_camera_params(
    K: np.ndarray,
    width: int,
    height: int,
    extrinsic: np.ndarray,
    scale: float = 1.0,
    sensor_width: float = DEFAULT_SENSOR_WIDTH,
    alignment: np.ndarray | None = None,
) -> BlenderCameraParams:
    """Blender camera + render settings reproducing intrinsics `K` (pixels of a width x height image)."""
    K = np.asarray(K, dtype=np.float64)
    W, H = int(width), int(height)
    if W <= 0 or H <= 0:
        raise ValueError(f"image size must be positive, got {W}x{H}")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if fx <= 0 or fy <= 0:
        raise ValueError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
    # ycor = aspect_y / aspect_x must equal fx / fy; Blender wants both >= 1, so the larger one is set.
    if fx >= fy:
        aspect_x, aspect_y = 1.0, fx / fy
    else:
        aspect_x, aspect_y = fy / fx, 1.0
    return BlenderCameraParams(
        sensor_fit="HORIZONTAL",
        sensor_width=float(sensor_width),
        lens=float(fx * sensor_width / W),
        shift_x=float((W / 2.0 - cx) / W),
        shift_y=float((cy - H / 2.0) * (fx / fy) / W),
        resolution_x=W,
        resolution_y=H,
        pixel_aspect_x=float(aspect_x),
        pixel_aspect_y=float(aspect_y),
        matrix_world=camera_matrix_world(extrinsic, scale, alignment),
    )


def project_with_blender_params(params: BlenderCameraParams, world_points_blender: np.ndarray) -> np.ndarray:
    """Pixels (x right, y down, top-left origin) where Blender's camera model puts Blender-world points.

    Written from Blender's view-plane computation (sensor fit, pixel aspect, shift), not from the OpenCV
    formulas, so it independently checks `blender_camera_params`.
    """
    pts = np.asarray(world_points_blender, dtype=np.float64).reshape(-1, 3)
    M = np.asarray(params.matrix_world, dtype=np.float64)
    # Camera-space coordinates: remove any scale in the matrix columns the way Blender's inverse would.
    local = (np.linalg.inv(M) @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]
    W, H = params.resolution_x, params.resolution_y
    ycor = params.pixel_aspect_y / params.pixel_aspect_x
    fit = params.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if params.pixel_aspect_x * W >= params.pixel_aspect_y * H else "VERTICAL"
    viewfac = W if fit == "HORIZONTAL" else ycor * H
    # View plane at distance 1: half extents and shifts in units of `pixsize` (sensor / lens / viewfac).
    pixsize = params.sensor_width / params.lens / viewfac
    xmin = (-0.5 * W + params.shift_x * viewfac) * pixsize
    ymin = (-0.5 * ycor * H + params.shift_y * viewfac) * pixsize
    xsize = W * pixsize
    ysize = ycor * H * pixsize
    depth = -local[:, 2]
    px = local[:, 0] / depth
    py = local[:, 1] / depth
    fx_frac = (px - xmin) / xsize
    fy_frac = (py - ymin) / ysize  # from the bottom
    return np.stack([fx_frac * W, (1.0 - fy_frac) * H], axis=1)


def opencv_project(K: np.ndarray, extrinsic: np.ndarray, world_points: np.ndarray) -> np.ndarray:
    """Plain pinhole projection of OpenCV-world points to pixels (for tests and checks)."""
    E = np.asarray(extrinsic, dtype=np.float64)
    pts = np.asarray(world_points, dtype=np.float64).reshape(-1, 3)
    cam = pts @ E[:3, :3].T + E[:3, 3]
    uvw = cam @ np.asarray(K, dtype=np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]
