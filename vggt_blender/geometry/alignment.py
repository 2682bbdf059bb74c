"""Scene alignment (numpy only): the similarity `scene_from_world` that stands a reconstruction upright.

An alignment is a 4x4 matrix [s R | t; 0 0 0 1] (R a right-handed rotation, s > 0 a uniform scale) mapping the
reconstruction file's OpenCV world (the first camera's frame) to a right-handed Z-up scene. It always includes
the axis change (x, y, z) -> (x, z, -y): `DEFAULT_ALIGNMENT` is exactly today's import, so "none" changes nothing.

Methods (`compute_alignment`):
- "floor": the dominant near-horizontal plane of the confident points (RANSAC with a fixed seed, then least
  squares on its inliers) becomes z = 0 with +Z towards the cameras; the origin is the floor point under the
  first camera.
- "cameras": up is the direction perpendicular to every camera's x axis (least squares: the smallest singular
  vector of the stacked x axes). Cameras are held without roll, so their x axes are horizontal; a mean of the
  cameras' up vectors would instead lean by their average pitch.
- "auto": "floor" when a plane within 30 degrees of the cameras' up holds enough points, else "cameras".
- "none": the axis change only.
In every method the first camera's x axis, levelled, stays the scene's +X, so the view keeps its heading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import RequestError
from .cameras import OPENCV_TO_BLENDER_WORLD, invert_extrinsics, opencv_world_to_blender

ALIGNMENT_KEY = "alignment"
DEFAULT_ALIGNMENT = OPENCV_TO_BLENDER_WORLD.copy()
DEFAULT_ALIGNMENT.flags.writeable = False

# A floor candidate's normal must lie within this angle of the cameras' up.
FLOOR_MAX_TILT_DEG = 30.0
# ... and its inliers must be at least this share of the sampled confident points ("enough points").
FLOOR_MIN_FRACTION = 0.08
# Inlier band (half-width) of the RANSAC plane, as a share of the scene size (median point distance).
FLOOR_INLIER_BAND = 0.01
RANSAC_ITERATIONS = 400
# Planes found one after another (each on the points the earlier ones leave); the lowest big one is the floor.
MAX_PLANES = 3
RANSAC_SEED = 0
# Points used for the fits: a fixed-seed random subset of the confident points.
MAX_FIT_POINTS = 30_000
# When the cameras' x axes span less than this (ratio of singular values), their normal is undetermined in
# one direction and the cameras' mean up fills it in.
CAMERA_SPREAD_MIN = 0.05
_ORTHO_TOL = 1e-6


class AlignmentError(RequestError):
    """An alignment cannot be found (e.g. `floor` on a scene without a floor)."""


@dataclass
class AlignmentResult:
    """The matrix and what the fit found (for the command line's one-line report)."""

    matrix: np.ndarray
    method: str  # the method that produced it ("floor" or "cameras" for auto)
    up_world: np.ndarray  # the scene's +Z in the OpenCV world
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        tilt = np.degrees(np.arccos(np.clip(-self.up_world[1], -1.0, 1.0)))
        text = f"{self.method}: up is {tilt:.1f} deg from the first camera's up"
        if "inlier_fraction" in self.details:
            text += f", floor holds {100 * self.details['inlier_fraction']:.0f}% of the confident points"
        if "scale" in self.details:
            text += f", scale {self.details['scale']:.4g}"
        return text


# ------------------------------------------------------------------------------------------ the matrix


def alignment_problem(matrix: Any) -> str | None:
    """Why `matrix` is not a valid alignment (one short phrase), or None when it is."""
    m = np.asarray(matrix)
    if m.shape != (4, 4):
        return f"has shape {list(m.shape)}, expected [4,4]"
    if m.dtype != np.float64:
        return f"has dtype {m.dtype}, expected float64"
    if not np.isfinite(m).all():
        return "holds non-finite values"
    if not np.array_equal(m[3], [0.0, 0.0, 0.0, 1.0]):
        return f"bottom row is {m[3].tolist()}, expected [0, 0, 0, 1]"
    a = m[:3, :3]
    det = np.linalg.det(a)
    if not det > 0:
        return f"rotation part has determinant {det:.3g} (a mirror or degenerate), expected > 0"
    s = det ** (1.0 / 3.0)
    gram = a.T @ a / (s * s)
    if np.abs(gram - np.eye(3)).max() > _ORTHO_TOL:
        return "rotation part is not a rotation times a uniform scale"
    return None


def similarity_parts(matrix: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) of a valid alignment [s R | t]."""
    m = np.asarray(matrix, dtype=np.float64)
    s = float(np.linalg.det(m[:3, :3]) ** (1.0 / 3.0))
    return s, m[:3, :3] / s, m[:3, 3].copy()


def make_similarity(rotation: np.ndarray, translation: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = scale * np.asarray(rotation, dtype=np.float64)
    if translation is not None:
        m[:3, 3] = translation
    return m


def scaled_alignment(matrix: np.ndarray, scale: float) -> np.ndarray:
    """diag(scale, scale, scale, 1) @ matrix: the alignment with the user's extra scale folded in."""
    out = np.array(matrix, dtype=np.float64)
    out[:3] *= scale
    return out


def alignment_or_default(matrix: np.ndarray | None) -> np.ndarray:
    """A float64 copy of `matrix`, or of DEFAULT_ALIGNMENT when None (a file without the key)."""
    return np.array(DEFAULT_ALIGNMENT if matrix is None else matrix, dtype=np.float64)


def reconstruction_alignment(rec: Any) -> np.ndarray:
    """scene_from_world of a Reconstruction (or anything with an `alignment` or `extra` attribute)."""
    matrix = getattr(rec, "alignment", None)
    if matrix is None:
        matrix = (getattr(rec, "extra", None) or {}).get(ALIGNMENT_KEY)
    return alignment_or_default(matrix)


def is_axis_change(matrix: np.ndarray) -> tuple[bool, float]:
    """(True, s) when `matrix` is the default axis change times s with no translation (today's import)."""
    m = np.asarray(matrix, dtype=np.float64)
    s = m[0, 0]
    ok = s > 0 and not m[:3, 3].any() and np.array_equal(m[:3, :3], s * DEFAULT_ALIGNMENT[:3, :3])
    return bool(ok), float(s)


def apply_alignment(matrix: np.ndarray, points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """OpenCV-world points [..., 3] -> scene points (scale * matrix applied). Floating input keeps its dtype.

    The default axis change goes through `opencv_world_to_blender`, so "none" is bit-for-bit today's import."""
    exact, s = is_axis_change(matrix)
    if exact:
        return opencv_world_to_blender(points, s * scale)
    p = np.asarray(points)
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    m = np.asarray(matrix, dtype=np.float64) * np.array([[scale], [scale], [scale], [1.0]])
    out = p @ m[:3, :3].T.astype(p.dtype) + m[:3, 3].astype(p.dtype)
    return out.astype(p.dtype, copy=False)


def extrinsics_in_scene(extrinsics: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Camera-from-scene [..., 3, 4] (OpenCV camera axes) for exports that write cameras in the scene frame
    (COLMAP): with X_scene = s R X_world + t, the camera's own coordinates are scaled by s (same pixels), so
    E' = [R_c R^T | s t_c - R_c R^T t]."""
    ext = np.asarray(extrinsics, dtype=np.float64)
    s, rot, t = similarity_parts(matrix)
    r_c = ext[..., :3, :3] @ rot.T
    return np.concatenate([r_c, (s * ext[..., :3, 3] - r_c @ t)[..., None]], axis=-1)


# ------------------------------------------------------------------------------------------ the fits


def camera_up(extrinsics: np.ndarray) -> np.ndarray:
    """Unit up direction (OpenCV world) perpendicular to all cameras' x axes, least squares.

    Sign: agrees with the cameras' -y (up in OpenCV). When the x axes barely vary (one photo, a dolly without
    panning) the perpendicular is undetermined within a plane; there the cameras' mean up, projected into that
    plane, is used.
    """
    ext = np.asarray(extrinsics, dtype=np.float64).reshape(-1, 3, 4)
    x_axes = ext[:, 0, :3]  # rows of R: camera axes in world coordinates
    ups = -ext[:, 1, :3]
    _, sv, vt = np.linalg.svd(x_axes, full_matrices=True)
    sv = np.r_[sv, np.zeros(3 - len(sv))]
    mean_up = ups.mean(axis=0)
    if sv[1] < CAMERA_SPREAD_MIN * sv[0]:
        basis = vt[1:3]
        up = basis.T @ (basis @ mean_up)
    else:
        up = vt[2]
    norm = np.linalg.norm(up)
    if not norm > 1e-12:
        up = ups[0]
        norm = np.linalg.norm(up)
    up = up / norm
    return up if up @ mean_up >= 0 else -up


def _camera_centres(extrinsics: np.ndarray) -> np.ndarray:
    return invert_extrinsics(np.asarray(extrinsics, dtype=np.float64).reshape(-1, 3, 4))[:, :, 3]


def frame_from_up(up: np.ndarray, first_extrinsic: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """The alignment (scale 1) with +Z = `up`, +X = the first camera's x axis levelled, `origin` -> 0."""
    z = np.asarray(up, dtype=np.float64)
    z = z / np.linalg.norm(z)
    e0 = np.asarray(first_extrinsic, dtype=np.float64)
    for candidate in (e0[0, :3], e0[2, :3], -e0[1, :3], np.eye(3)[np.argmin(np.abs(z))]):
        x = candidate - (candidate @ z) * z
        if np.linalg.norm(x) > 1e-6:
            break
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])  # rows: scene axes in world coordinates
    return make_similarity(rot, -rot @ np.asarray(origin, dtype=np.float64))


def fit_plane_lsq(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit normal, centroid) of the least-squares plane through `points` [P, 3]."""
    p = np.asarray(points, dtype=np.float64)
    centroid = p.mean(axis=0)
    _, _, vt = np.linalg.svd(p - centroid, full_matrices=False)
    return vt[2], centroid


@dataclass
class PlaneFit:
    normal: np.ndarray  # unit, oriented towards the cameras
    point: np.ndarray  # a point on the plane
    inlier_fraction: float
    inliers: int


def scene_size(points: np.ndarray, centre: np.ndarray) -> float:
    """Median distance of the points from `centre` (the first camera): the length scale of thresholds."""
    d = np.linalg.norm(np.asarray(points, dtype=np.float64) - centre, axis=1)
    size = float(np.median(d)) if len(d) else 1.0
    return size if np.isfinite(size) and size > 0 else 1.0


def find_floor(points: np.ndarray, extrinsics: np.ndarray, up_hint: np.ndarray | None = None,
               max_tilt_deg: float = FLOOR_MAX_TILT_DEG, band: float = FLOOR_INLIER_BAND,
               min_fraction: float = FLOOR_MIN_FRACTION, iterations: int = RANSAC_ITERATIONS,
               seed: int = RANSAC_SEED) -> PlaneFit | None:
    """The floor: the lowest of the near-horizontal planes (within `max_tilt_deg` of `up_hint`, cameras above
    them) that hold at least `min_fraction` of the points; when none does, the best-supported one (the caller
    compares its inlier_fraction). None when there is no candidate at all.

    Planes are found one after another (RANSAC with a fixed seed on the points not yet explained, then least
    squares on the inliers), so a big table top seen from above does not hide the floor under it.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < 3:
        return None
    centres = _camera_centres(extrinsics)
    up = camera_up(extrinsics) if up_hint is None else np.asarray(up_hint, dtype=np.float64)
    up = up / np.linalg.norm(up)
    thr = band * scene_size(pts, centres[0])
    rng = np.random.default_rng(seed)
    remaining = np.ones(len(pts), dtype=bool)
    planes: list[PlaneFit] = []
    for _ in range(MAX_PLANES):
        plane = _best_plane(pts, remaining, centres, up, np.cos(np.radians(max_tilt_deg)), thr, iterations, rng)
        if plane is None:
            break
        inl = np.abs((pts - plane.point) @ plane.normal) < thr
        plane.inliers = int(inl.sum())
        plane.inlier_fraction = plane.inliers / len(pts)
        if planes and plane.inlier_fraction < min_fraction:
            break
        planes.append(plane)
        remaining &= ~inl
        if remaining.sum() < 3:
            break
    if not planes:
        return None
    enough = [p for p in planes if p.inlier_fraction >= min_fraction]
    if not enough:
        return planes[0]
    return max(enough, key=lambda p: (centres[0] - p.point) @ p.normal)  # the lowest


def _best_plane(pts: np.ndarray, remaining: np.ndarray, centres: np.ndarray, up: np.ndarray, cos_max: float,
                thr: float, iterations: int, rng: np.random.Generator) -> PlaneFit | None:
    """RANSAC on pts[remaining] for the best-supported near-horizontal plane below the cameras, refined."""
    sub = pts[remaining]
    if len(sub) < 3:
        return None
    triples = rng.integers(0, len(sub), size=(iterations, 3))
    a, b, c = sub[triples[:, 0]], sub[triples[:, 1]], sub[triples[:, 2]]
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1)
    ok = lengths > 1e-12
    normals[ok] /= lengths[ok, None]
    normals *= np.where(normals @ up < 0, -1.0, 1.0)[:, None]
    ok &= normals @ up >= cos_max
    best, best_count = -1, 0
    for k in np.flatnonzero(ok):
        n, p0 = normals[k], a[k]
        if np.median((centres - p0) @ n) <= 0:  # a ceiling, or a plane above the cameras: not a floor
            continue
        count = int(np.count_nonzero(np.abs((sub - p0) @ n) < thr))
        if count > best_count:
            best, best_count = k, count
    if best < 0:
        return None
    n, p0 = normals[best], a[best]
    for _ in range(3):
        inl = np.abs((sub - p0) @ n) < thr
        if inl.sum() < 3:
            break
        n, p0 = fit_plane_lsq(sub[inl])
        if n @ up < 0:
            n = -n
    return PlaneFit(normal=n, point=p0, inlier_fraction=0.0, inliers=0)


def floor_alignment(points: np.ndarray, extrinsics: np.ndarray, plane: PlaneFit) -> np.ndarray:
    """Alignment putting `plane` at z = 0 (+Z its normal) with the origin under the first camera."""
    c0 = _camera_centres(extrinsics)[0]
    origin = c0 - ((c0 - plane.point) @ plane.normal) * plane.normal
    return frame_from_up(plane.normal, np.asarray(extrinsics).reshape(-1, 3, 4)[0], origin)


def cameras_alignment(extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alignment, up): +Z the cameras' up, origin at the first camera."""
    ext = np.asarray(extrinsics, dtype=np.float64).reshape(-1, 3, 4)
    up = camera_up(ext)
    return frame_from_up(up, ext[0], _camera_centres(ext)[0]), up


def compute_alignment(points: np.ndarray, extrinsics: np.ndarray, method: str = "auto",
                      min_fraction: float = FLOOR_MIN_FRACTION) -> AlignmentResult:
    """The alignment by `method` (auto, floor, cameras, none) from confident world points and the cameras."""
    from ..options import ALIGN_METHODS

    if method not in ALIGN_METHODS:
        raise AlignmentError(f"unknown alignment '{method}': choose {', '.join(ALIGN_METHODS)}")
    ext = np.asarray(extrinsics, dtype=np.float64).reshape(-1, 3, 4)
    if method == "none":
        return AlignmentResult(alignment_or_default(None), "none", np.array([0.0, -1.0, 0.0]))
    cam_matrix, up = cameras_alignment(ext)
    if method in ("floor", "auto"):
        plane = find_floor(points, ext, up, min_fraction=min_fraction)
        if plane is not None and plane.inlier_fraction >= min_fraction:
            return AlignmentResult(floor_alignment(points, ext, plane), "floor", plane.normal,
                                   {"inlier_fraction": plane.inlier_fraction,
                                    "angle_to_cameras_up_deg": float(np.degrees(np.arccos(
                                        np.clip(plane.normal @ up, -1.0, 1.0))))})
        if method == "floor":
            found = (f"the best near-horizontal plane holds {100 * plane.inlier_fraction:.0f}% of the confident "
                     f"points (needs {100 * min_fraction:.0f}%)" if plane is not None
                     else "no plane within 30 degrees of the cameras' up lies below them")
            raise AlignmentError(f"no floor found: {found}; use --up cameras or auto")
    return AlignmentResult(cam_matrix, "cameras", up)


# ---------------------------------------------------------------------- the reconstruction's points


def confident_world_points(rec: Any, max_points: int = MAX_FIT_POINTS, seed: int = RANSAC_SEED) -> np.ndarray:
    """float64 [P, 3] OpenCV-world points of the reconstruction for the fits: valid, finite, depth confidence
    at or above the median of the valid pixels, a fixed-seed random subset of at most `max_points`.

    Only the chosen pixels are unprojected (geometry/derive.py at their centres), never the whole world-point
    array: a 600-frame shot's would be over a gigabyte."""
    from .derive import unproject_pixels
    from .selection import subsample_mask

    valid = np.asarray(rec.valid_mask)
    conf_all = np.asarray(rec.depth_conf)
    conf = conf_all[valid]
    conf = conf[np.isfinite(conf)]
    threshold = float(np.median(conf)) if conf.size else 1.0
    idx = subsample_mask(valid & (conf_all >= threshold), max_points, seed)
    depth = np.asarray(rec.depth)
    _, height, width = depth.shape
    view, rest = np.divmod(idx, height * width)
    row, col = np.divmod(rest, width)
    xyz = np.empty((len(idx), 3), dtype=np.float64)
    for v in np.unique(view):
        sel = view == v
        xyz[sel] = unproject_pixels(col[sel] + 0.5, row[sel] + 0.5, depth[v, row[sel], col[sel]],
                                    rec.extrinsics[v], rec.intrinsics_model[v])
    # The stored points are float32: the fits see the same values as before.
    xyz = xyz.astype(np.float32).astype(np.float64)
    return xyz[np.isfinite(xyz).all(axis=1)]


def align_reconstruction(rec: Any, method: str = "auto") -> AlignmentResult:
    """`compute_alignment` on a Reconstruction's confident points and cameras (does not change `rec`)."""
    points = confident_world_points(rec) if method in ("auto", "floor") else np.zeros((0, 3))
    return compute_alignment(points, rec.extrinsics, method)


# ------------------------------------------------------------------ edits in the scene (Blender panel)


def level_transform(normal: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Scene-space rigid motion D putting the plane (unit `normal`, `point`, scene coordinates) at z = 0 with
    the normal along +Z: the smallest rotation that does it, about the plane point under the scene origin (which
    becomes the new origin), so the heading is kept."""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    if n[2] < 0:
        n = -n
    p = np.asarray(point, dtype=np.float64)
    foot = -((-p) @ n) * n  # the plane point nearest to the origin: origin - ((origin - p) . n) n
    rot = rotation_between(n, np.array([0.0, 0.0, 1.0]))
    return make_similarity(rot, -rot @ foot)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector a to unit vector b (Rodrigues)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(a @ b)
    if c < -1.0 + 1e-12:  # opposite: half a turn about any axis perpendicular to a
        axis = np.cross(a, np.eye(3)[np.argmin(np.abs(a))])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def origin_transform(new_origin: np.ndarray) -> np.ndarray:
    """Scene-space translation moving `new_origin` to (0, 0, 0)."""
    return make_similarity(np.eye(3), -np.asarray(new_origin, dtype=np.float64))


def scale_transform(a: np.ndarray, b: np.ndarray, distance: float) -> np.ndarray:
    """Scene-space uniform scale about the origin making |a - b| equal `distance` (scene units = metres)."""
    current = float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))
    if not current > 0:
        raise AlignmentError("the two points coincide: pick two different points")
    if not distance > 0:
        raise AlignmentError(f"the distance must be positive, got {distance}")
    return make_similarity(np.eye(3), scale=distance / current)


def fit_floor_in_scene(points_scene: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normal, point) of the least-squares plane through selected scene points (normal towards +Z)."""
    pts = np.asarray(points_scene, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 3:
        raise AlignmentError(f"select at least 3 points on the floor (got {len(pts)})")
    n, c = fit_plane_lsq(pts)
    if np.linalg.svd(pts - c, compute_uv=False)[1] < 1e-9:
        raise AlignmentError("the selected points lie on a line: select points spread over the floor")
    return (n if n[2] >= 0 else -n), c
