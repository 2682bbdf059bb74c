"""Camera geometry in numpy (float64): pose decoding, intrinsics at photo resolution, (un)projection, axes.

Conventions (docs/ARCHITECTURE.md): extrinsics are camera-from-world [R|t] with OpenCV axes (x right, y down,
z forward); quaternions are scalar-last (x, y, z, w); pixel coordinates are continuous with (0, 0) at the
top-left corner of the top-left pixel, and the model's principal point is (W/2, H/2).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_FOV = 1e-6  # radians

# OpenCV world (x right, y down, z forward) -> Blender world (z up): (x, y, z) -> (x, z, -y).
OPENCV_TO_BLENDER_WORLD = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _f64(a: np.ndarray | Sequence) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# Rotations


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """Scalar-last quaternions [..., 4] -> rotation matrices [..., 3, 3].

    Divides by |q|^2 like the official code, so a non-unit quaternion still gives a rotation.
    """
    q = _f64(q)
    x, y, z, w = np.moveaxis(q, -1, 0)
    s = 2.0 / np.sum(q * q, axis=-1)
    rows = [
        [1.0 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1.0 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1.0 - s * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def mat_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> unit scalar-last quaternions [..., 4] with w >= 0.

    Uses whichever of the four standard formulas has the largest (best-conditioned) denominator.
    """
    m = _f64(m)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4*c^2 for c = w, x, y, z; the largest picks the formula.
    four_sq = np.stack(
        [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], axis=-1
    )
    big = np.sqrt(np.maximum(four_sq, 0.0))  # 2*|c|
    # Each candidate (x, y, z, w) scaled by 2*c_pivot; divide by 2*big at the end.
    cand_w = np.stack([m21 - m12, m02 - m20, m10 - m01, big[..., 0] ** 2], axis=-1)
    cand_x = np.stack([big[..., 1] ** 2, m01 + m10, m02 + m20, m21 - m12], axis=-1)
    cand_y = np.stack([m01 + m10, big[..., 2] ** 2, m12 + m21, m02 - m20], axis=-1)
    cand_z = np.stack([m02 + m20, m12 + m21, big[..., 3] ** 2, m10 - m01], axis=-1)
    candidates = np.stack([cand_w, cand_x, cand_y, cand_z], axis=-2)  # [..., 4 pivots, 4 comps]
    pivot = np.argmax(four_sq, axis=-1)
    chosen = np.take_along_axis(candidates, pivot[..., None, None], axis=-2)[..., 0, :]
    denom = 2.0 * np.take_along_axis(big, pivot[..., None], axis=-1)
    q = chosen / np.maximum(denom, 1e-300)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0.0, -q, q)


# ---------------------------------------------------------------------------------------------------------
# Pose encoding "absT_quaR_FoV": [t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w]


def pose_encoding_to_extrinsics_intrinsics(
    pose_enc: np.ndarray, image_size_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pose encodings [..., 9] -> extrinsics [..., 3, 4] (camera-from-world) and intrinsics [..., 3, 3].

    Focal lengths come from the field of view at the model input size (H, W); principal point (W/2, H/2).
    A field of view below MIN_FOV (the head can output exactly 0) is clamped to it so K stays finite.
    """
    enc = _f64(pose_enc)
    if enc.shape[-1] != 9:
        raise ValueError(f"pose encoding must end in 9 values, got shape {enc.shape}")
    height, width = float(image_size_hw[0]), float(image_size_hw[1])
    rotation = quat_to_mat(enc[..., 3:7])
    extrinsics = np.concatenate([rotation, enc[..., 0:3, None]], axis=-1)

    # The camera head ReLUs the FoV, so exactly 0 can occur; clamp so the focal length stays finite.
    fov_h = np.maximum(enc[..., 7], MIN_FOV)
    fov_w = np.maximum(enc[..., 8], MIN_FOV)
    fy = (height / 2.0) / np.tan(fov_h / 2.0)
    fx = (width / 2.0) / np.tan(fov_w / 2.0)
    intrinsics = np.zeros(enc.shape[:-1] + (3, 3))
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2.0
    intrinsics[..., 1, 2] = height / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extrinsics_intrinsics_to_pose_encoding(
    extrinsics: np.ndarray, intrinsics: np.ndarray, image_size_hw: tuple[int, int]
) -> np.ndarray:
    """Inverse of `pose_encoding_to_extrinsics_intrinsics` (the principal point is not encoded)."""
    ext = _f64(extrinsics)
    k = _f64(intrinsics)
    height, width = float(image_size_hw[0]), float(image_size_hw[1])
    quat = mat_to_quat(ext[..., :3, :3])
    fov_h = 2.0 * np.arctan((height / 2.0) / k[..., 1, 1])
    fov_w = 2.0 * np.arctan((width / 2.0) / k[..., 0, 0])
    return np.concatenate([ext[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], axis=-1)


# ---------------------------------------------------------------------------------------------------------
# Intrinsics at photo resolution


def pixel_map_matrix(pixel_map: np.ndarray) -> np.ndarray:
    """(sx, sy, ox, oy) [..., 4] -> A [..., 3, 3] with [x_photo, y_photo, 1] = A @ [x_model, y_model, 1]."""
    pm = _f64(pixel_map)
    a = np.zeros(pm.shape[:-1] + (3, 3))
    a[..., 0, 0] = pm[..., 0]
    a[..., 1, 1] = pm[..., 1]
    a[..., 0, 2] = pm[..., 2]
    a[..., 1, 2] = pm[..., 3]
    a[..., 2, 2] = 1.0
    return a


def intrinsics_to_photo(intrinsics_model: np.ndarray, pixel_map: np.ndarray) -> np.ndarray:
    """Model-input intrinsics [..., 3, 3] -> intrinsics in the original photo's pixels (A @ K)."""
    return pixel_map_matrix(pixel_map) @ _f64(intrinsics_model)


def model_to_photo_pixels(xy_model: np.ndarray, pixel_map: np.ndarray) -> np.ndarray:
    """Continuous model-input pixel coordinates [..., 2] -> photo pixel coordinates [..., 2]."""
    xy = _f64(xy_model)
    pm = _f64(pixel_map)
    return np.stack([pm[..., 0] * xy[..., 0] + pm[..., 2], pm[..., 1] * xy[..., 1] + pm[..., 3]], axis=-1)


# ---------------------------------------------------------------------------------------------------------
# Extrinsics, unprojection, projection


def invert_extrinsics(extrinsics: np.ndarray) -> np.ndarray:
    """Camera-from-world [..., 3, 4] -> world-from-camera [..., 3, 4] in closed form (R^T, -R^T t)."""
    ext = _f64(extrinsics)
    rot_t = np.swapaxes(ext[..., :3, :3], -1, -2)
    t = -(rot_t @ ext[..., :3, 3:4])
    return np.concatenate([rot_t, t], axis=-1)


def depth_to_camera_points(depth: np.ndarray, intrinsics: np.ndarray, pixel_centers: bool = True) -> np.ndarray:
    """Z-depth [..., H, W] (or [..., H, W, 1]) -> camera-frame points [..., H, W, 3].

    By default each pixel's point lies on the ray through its centre (u + 0.5, v + 0.5), the convention the
    cameras use (ARCHITECTURE.md), so a point projects back onto the middle of its own pixel in Blender.
    `pixel_centers=False` reproduces the official `unproject_depth_map_to_point_map` (integer indices
    u = 0..W-1, no +0.5), which sits half a pixel up-left of that. Intrinsics must have zero skew.
    """
    d = _squeeze_depth(depth)
    height, width = d.shape[-2:]
    offset = 0.5 if pixel_centers else 0.0
    u = np.arange(width, dtype=np.float64)[None, :] + offset
    v = np.arange(height, dtype=np.float64)[:, None] + offset
    return pixels_to_camera_points(u, v, d, _f64(intrinsics)[..., None, None, :, :])


def pixels_to_camera_points(u: np.ndarray, v: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinates u, v and z-depth (broadcast together) -> camera-frame points [..., 3].

    The one pinhole unprojection: every grid or sample-point variant goes through here. `intrinsics`
    [..., 3, 3] broadcasts against the points' leading shape; zero skew is required.
    """
    k = _f64(intrinsics)
    if np.any(k[..., 0, 1] != 0.0):
        raise ValueError("intrinsics with skew are not supported")
    d = _f64(depth)
    x = (_f64(u) - k[..., 0, 2]) * d / k[..., 0, 0]
    y = (_f64(v) - k[..., 1, 2]) * d / k[..., 1, 1]
    return np.stack(np.broadcast_arrays(x, y, d), axis=-1)


def camera_to_world(points_cam: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """Camera-frame points [..., 3] of one camera -> world points with its extrinsics [3, 4] (R^T (X - t))."""
    ext = _f64(extrinsics)
    return (_f64(points_cam) - ext[:3, 3]) @ ext[:3, :3]


def depth_to_world_points(
    depth: np.ndarray,
    extrinsics: np.ndarray,
    intrinsics: np.ndarray,
    dtype: np.dtype | type = np.float64,
    pixel_centers: bool = True,
) -> np.ndarray:
    """Depth [N, H, W] (or [N, H, W, 1]) + extrinsics [N, 3, 4] + intrinsics [N, 3, 3] -> world [N, H, W, 3].

    Closed-form camera-to-world like the official unprojection; pixel convention as in
    `depth_to_camera_points`. The maths is float64, one frame at a time to bound memory; `dtype` is the
    storage type of the result.
    """
    d = np.asarray(depth)
    if d.ndim == 4 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 3:
        raise ValueError(f"depth must be [N, H, W] or [N, H, W, 1], got shape {np.shape(depth)}")
    n, height, width = d.shape
    ext = _f64(extrinsics).reshape(n, 3, 4)
    k = _f64(intrinsics).reshape(n, 3, 3)
    cam_to_world = invert_extrinsics(ext)
    out = np.empty((n, height, width, 3), dtype=dtype)
    for i in range(n):
        cam = depth_to_camera_points(d[i], k[i], pixel_centers).reshape(-1, 3)
        out[i] = (cam @ cam_to_world[i, :, :3].T + cam_to_world[i, :, 3]).reshape(height, width, 3)
    return out


def project_points(
    world_points: np.ndarray, extrinsics: np.ndarray, intrinsics: np.ndarray, return_depth: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """World points [..., P, 3] -> pixels [..., P, 2] for cameras extrinsics [..., 3, 4], intrinsics [..., 3, 3].

    Plain pinhole projection in continuous pixel coordinates: a point unprojected at pixel u (centre
    convention) projects back to u + 0.5. With return_depth, also the camera z [..., P].
    """
    pts = _f64(world_points)
    ext = _f64(extrinsics)
    k = _f64(intrinsics)
    cam = pts @ np.swapaxes(ext[..., :3, :3], -1, -2) + ext[..., None, :3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = cam[..., 0] / z
        y = cam[..., 1] / z
    u = k[..., 0, 0, None] * x + k[..., 0, 1, None] * y + k[..., 0, 2, None]
    v = k[..., 1, 1, None] * y + k[..., 1, 2, None]
    pixels = np.stack([u, v], axis=-1)
    return (pixels, z) if return_depth else pixels


# ---------------------------------------------------------------------------------------------------------
# Axes


def opencv_world_to_blender(points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """OpenCV world points [..., 3] -> Blender world (x, z, -y) * scale [..., 3]: the one implementation of
    OPENCV_TO_BLENDER_WORLD for points. Floating input keeps its dtype (float32 stays float32 for meshes),
    anything else becomes float64."""
    p = np.asarray(points)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    out = np.empty_like(p)
    out[..., 0] = p[..., 0]
    out[..., 1] = p[..., 2]
    out[..., 2] = -p[..., 1]
    if scale != 1.0:
        out *= scale
    return out


def valid_mask_from_boxes(valid_box: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [N,H,W]: True inside each image's half-open box (x0, y0, x1, y1) of model pixels, False on padding."""
    boxes = np.asarray(valid_box).reshape(-1, 4)
    mask = np.zeros((len(boxes), height, width), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        mask[i, y0:y1, x0:x1] = True
    return mask


def _squeeze_depth(depth: np.ndarray) -> np.ndarray:
    d = _f64(depth)
    if d.ndim >= 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim < 2:
        raise ValueError(f"depth must be [..., H, W], got shape {d.shape}")
    return d
