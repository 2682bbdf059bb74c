"""Bundle adjustment with pycolmap: rounds of re-triangulation, outlier rejection and robust adjustment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycolmap

from ..errors import CancelledError
from .tracks import triangulate

MIN_ANGLE_DEG = 1.0


@dataclass
class Cameras:
    """The solve's state: one pycolmap camera per intrinsic set and camera-from-world per view."""

    cams: list  # pycolmap.Camera
    cam_of_view: np.ndarray  # [N] index into cams
    cam_from_world: np.ndarray  # [N, 3, 4]

    def camera(self, v: int):
        return self.cams[int(self.cam_of_view[v])]


def colmap_model(camera_model: str, separate_focal: bool) -> str:
    if camera_model == "pinhole":
        return "PINHOLE" if separate_focal else "SIMPLE_PINHOLE"
    if camera_model == "simple_radial":
        return "SIMPLE_RADIAL"
    return "OPENCV"  # COLMAP's OPENCV model has fx and fy apart


def make_camera(model: str, k: np.ndarray, size_wh: tuple[int, int]):
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    f = 0.5 * (fx + fy)
    params = {
        "SIMPLE_PINHOLE": [f, cx, cy],
        "PINHOLE": [fx, fy, cx, cy],
        "SIMPLE_RADIAL": [f, cx, cy, 0.0],
        "OPENCV": [fx, fy, cx, cy, 0.0, 0.0, 0.0, 0.0],
    }[model]
    return pycolmap.Camera(model=model, width=int(size_wh[0]), height=int(size_wh[1]), params=params)


def camera_k(camera) -> np.ndarray:
    """Pinhole part of a pycolmap camera as K (photo pixels)."""
    k = np.asarray(camera.calibration_matrix(), dtype=np.float64)
    return k


def distortion_params(camera) -> np.ndarray:
    p = np.asarray(camera.params, dtype=np.float64)
    return {"SIMPLE_PINHOLE": p[:0], "PINHOLE": p[:0], "SIMPLE_RADIAL": p[3:], "OPENCV": p[4:]}[camera.model.name]


def normalised(state: Cameras, view: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Photo pixels -> undistorted normalised coordinates (x/z, y/z) with each view's camera."""
    out = np.empty_like(xy)
    for c in range(len(state.cams)):
        sel = state.cam_of_view[view] == c
        if sel.any():
            out[sel] = np.asarray(state.cams[c].cam_from_img(xy[sel]), dtype=np.float64)[:, :2]
    return out


def reprojection_errors(state: Cameras, points: np.ndarray, track: np.ndarray, view: np.ndarray,
                        xy: np.ndarray) -> np.ndarray:
    """Pixel distance per observation (inf behind the camera or for a missing point)."""
    err = np.full(len(track), np.inf)
    p = points[track]
    rot = state.cam_from_world[view, :, :3]
    cam = np.einsum("mij,mj->mi", rot, p) + state.cam_from_world[view, :, 3]
    ok = np.all(np.isfinite(p), axis=1) & (cam[:, 2] > 1e-9)
    for c in range(len(state.cams)):
        sel = ok & (state.cam_of_view[view] == c)
        if sel.any():
            uv = np.asarray(state.cams[c].img_from_cam(cam[sel]), dtype=np.float64)
            err[sel] = np.linalg.norm(uv - xy[sel], axis=1)
    return err


def _angle_ok(points: np.ndarray, track: np.ndarray, view: np.ndarray, keep: np.ndarray, centres: np.ndarray,
              num_tracks: int) -> np.ndarray:
    """Tracks whose widest pair of viewing rays (approximated against the mean ray) spans MIN_ANGLE_DEG."""
    t, v = track[keep], view[keep]
    rays = centres[v] - points[t]
    rays /= np.maximum(np.linalg.norm(rays, axis=1, keepdims=True), 1e-300)
    mean = np.zeros((num_tracks, 3))
    np.add.at(mean, t, rays)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-300)
    cosang = np.sum(rays * mean[t], axis=1)
    widest = np.full(num_tracks, 1.0)
    np.minimum.at(widest, t, cosang)
    # Angle to the mean ray is about half the widest pair's angle.
    return np.degrees(2.0 * np.arccos(np.clip(widest, -1.0, 1.0))) >= MIN_ANGLE_DEG


def retriangulate(state: Cameras, track: np.ndarray, view: np.ndarray, xy: np.ndarray, num_tracks: int,
                  max_error: float) -> tuple[np.ndarray, np.ndarray]:
    """Points from all observations, then again from those within `max_error`; -> (points, inlier mask)."""
    rays = normalised(state, view, xy)
    keep = np.ones(len(track), dtype=bool)
    points = triangulate(track, view, rays, state.cam_from_world, num_tracks)
    for _ in range(2):
        err = reprojection_errors(state, points, track, view, xy)
        keep = err <= max_error
        points = triangulate(track, view, rays, state.cam_from_world, num_tracks, keep.astype(float))
    err = reprojection_errors(state, points, track, view, xy)
    keep = err <= max_error
    centres = np.einsum("nji,nj->ni", state.cam_from_world[:, :, :3], -state.cam_from_world[:, :, 3])
    counts = np.bincount(track[keep], minlength=num_tracks)
    good = (counts >= 2) & np.all(np.isfinite(points), axis=1)
    good &= _angle_ok(points, track, view, keep, centres, num_tracks)
    keep &= good[track]
    points[~good] = np.nan
    return points, keep


def bundle_adjust(state: Cameras, points: np.ndarray, track: np.ndarray, view: np.ndarray, xy: np.ndarray,
                  keep: np.ndarray, loss_scale: float, refine_principal_point: bool, refine_extra: bool,
                  max_iterations: int = 100) -> tuple[Cameras, np.ndarray, int]:
    """One robust (Cauchy) bundle adjustment of cameras, poses and points over the kept observations.
    -> (new state, new points, iterations). The gauge is fixed on two cameras (pose and scale)."""
    rec = pycolmap.Reconstruction()
    for c, cam in enumerate(state.cams):
        cam = pycolmap.Camera(model=cam.model, width=cam.width, height=cam.height, params=list(cam.params))
        cam.camera_id = c + 1
        rec.add_camera_with_trivial_rig(cam)
    n = len(state.cam_from_world)
    obs_index = np.full(len(track), -1)
    for v in range(n):
        sel = np.nonzero(keep & (view == v))[0]
        obs_index[sel] = np.arange(len(sel))
        image = pycolmap.Image(name=str(v), keypoints=xy[sel] if len(sel) else np.zeros((0, 2)),
                               camera_id=int(state.cam_of_view[v]) + 1, image_id=v + 1)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(state.cam_from_world[v, :, :3]), state.cam_from_world[v, :, 3])
        rec.add_image_with_trivial_frame(image, pose)
    kept_tracks = np.unique(track[keep])
    point_id = {}
    order = np.argsort(track, kind="stable")
    sorted_t = track[order]
    bounds = np.searchsorted(sorted_t, kept_tracks, side="left"), np.searchsorted(sorted_t, kept_tracks, side="right")
    for t, lo, hi in zip(kept_tracks, *bounds):
        rows = order[lo:hi]
        rows = rows[keep[rows]]
        elems = [pycolmap.TrackElement(int(view[r]) + 1, int(obs_index[r])) for r in rows]
        point_id[int(t)] = rec.add_point3D(points[t], pycolmap.Track(elems))

    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = True
    options.refine_principal_point = bool(refine_principal_point)
    options.refine_extra_params = bool(refine_extra)
    options.print_summary = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    options.ceres.loss_function_scale = float(loss_scale)
    options.ceres.solver_options.max_num_iterations = int(max_iterations)
    options.ceres.solver_options.num_threads = -1
    config = pycolmap.BundleAdjustmentConfig()
    for v in range(n):
        if (keep & (view == v)).any():
            config.add_image(v + 1)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    adjuster = pycolmap.create_default_bundle_adjuster(options, config, rec)
    summary = adjuster.solve()
    iterations = _iterations(summary)

    new = Cameras(cams=[rec.camera(c + 1) for c in range(len(state.cams))], cam_of_view=state.cam_of_view.copy(),
                  cam_from_world=state.cam_from_world.copy())
    for v in range(n):
        new.cam_from_world[v] = np.asarray(rec.image(v + 1).cam_from_world().matrix(), dtype=np.float64)
    new_points = points.copy()
    for t, pid in point_id.items():
        new_points[t] = rec.point3D(pid).xyz
    return new, new_points, iterations


def _iterations(summary) -> int:
    """Ceres iterations of a solve (0 where the summary does not say)."""
    ceres = getattr(summary, "ceres_summary", None)
    for name in ("num_successful_steps", "iterations"):
        value = getattr(ceres, name, None) if ceres is not None else None
        if isinstance(value, int):
            return value
    text = summary.brief_report() if hasattr(summary, "brief_report") else ""
    for token in str(text).replace(",", " ").split():
        if token.startswith("Iterations:"):
            break
    import re

    found = re.search(r"Iterations:\s*(\d+)", str(text))
    return int(found.group(1)) if found else 0


def check_cancel(should_cancel) -> None:
    if should_cancel is not None and should_cancel():
        raise CancelledError("camera refinement cancelled")
