"""`refine_reconstruction`: feed-forward cameras in, bundle-adjusted cameras out (the worker and CLI entry)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import numpy as np
import pycolmap

from ..errors import RefinementError
from ..io.reconstruction import Reconstruction
from ..options import RefineOptions
from ..geometry.cameras import pixel_map_matrix
from .features import extract_features
from .intrinsics import shared_camera_hint
from .matching import fundamental_from_cameras, guided_matches, overlap_pairs, verify
from .solve import (Cameras, bundle_adjust, camera_k, check_cancel, colmap_model, distortion_params,
                    make_camera, reprojection_errors, retriangulate)
from .tracks import build_tracks

Progress = Callable[[str, float, str], None]
SAMPLE_POINTS = 2000
MIN_PAIR_INLIERS = 15
# Outlier thresholds scale with the photo: these are pixels at a 640-pixel-wide photo.
FINAL_ERROR_PX = 2.0
VERIFY_ERROR_PX = 3.0
# Predicted epipolar lines may be off by this fraction of the photo diagonal (feed-forward pose error).
EPIPOLAR_TOLERANCE = 0.05


@dataclass
class RefineReport:
    """What refinement did, for the user (messages) and for the provenance (the rest)."""

    camera_model: str = ""
    refined_views: list[int] = field(default_factory=list)
    kept_feedforward: dict[int, str] = field(default_factory=dict)
    pairs: int = 0
    points: int = 0
    observations: int = 0
    iterations: int = 0
    rounds: int = 0
    mean_error_before: float = float("nan")
    mean_error: float = float("nan")
    max_error: float = float("nan")
    depth_scale: float = 1.0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "kept_feedforward"}
        d["kept_feedforward"] = {str(k): v for k, v in self.kept_feedforward.items()}
        return d


def _note(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress("refining", fraction, message)


def _sample_points(rec: Reconstruction, rng: np.random.Generator) -> np.ndarray:
    """[N, SAMPLE_POINTS, 3] of each view's predicted points (NaN padding) for choosing pairs."""
    out = np.full((rec.num_images, SAMPLE_POINTS, 3), np.nan)
    for i in range(rec.num_images):
        ok = rec.valid_mask[i] & np.isfinite(rec.depth[i]) & (rec.depth[i] > 0)
        pts = rec.world_points[i][ok]
        if len(pts):
            pick = rng.choice(len(pts), size=min(SAMPLE_POINTS, len(pts)), replace=False)
            out[i, :len(pick)] = pts[pick]
    return out


def _photo_path(rec: Reconstruction, i: int) -> str:
    return rec.display_paths[i] or rec.image_paths[i]


def refine_reconstruction(rec: Reconstruction, options: RefineOptions | dict | None = None,
                          progress: Progress | None = None,
                          should_cancel: Callable[[], bool] | None = None,
                          photos: Iterable[np.ndarray] | None = None) -> tuple[Reconstruction, RefineReport]:
    """Bundle-adjust the cameras of `rec` against SIFT matches found in its photos; see docs/REFINEMENT.md.

    `photos`: the views' images in view order (uint8 RGB at the original size); None reads each view's photo
    file, or for a video shot (whose views are not files of their own) decodes its frames
    (`shot.source.shot_photos`).

    Returns a new Reconstruction (the input is not modified) and a RefineReport. A view that cannot be
    refined, or whose refined camera reprojects worse than its feed-forward one, keeps the feed-forward camera
    and gets a message. Raises RefinementError when fewer than two views can be refined.
    """
    started = time.monotonic()
    if photos is None:
        from ..shot.source import shot_photos  # None for photo sets and image sequences: their views are files

        photos = shot_photos(rec)
    opts = RefineOptions.from_dict(options) if isinstance(options, dict) else (options or RefineOptions())
    n = rec.num_images
    if n < 2:
        raise RefinementError("camera refinement needs at least two photos")
    sizes = np.asarray(rec.original_sizes, dtype=np.int64)
    if opts.shared_intrinsics and len({tuple(s) for s in sizes}) > 1:
        raise RefinementError("--shared-intrinsics needs photos of one size; these are "
                              + ", ".join(sorted({f"{w}x{h}" for w, h in sizes})))
    unit = float(np.max(sizes)) / 640.0  # pixel thresholds are given for a 640-pixel photo
    report = RefineReport(camera_model=colmap_model(opts.camera_model, opts.separate_focal))
    if not opts.shared_intrinsics:
        report.suggestion = shared_camera_hint(rec)
    k_ff = np.asarray(rec.intrinsics, dtype=np.float64)
    ext_ff = np.asarray(rec.extrinsics, dtype=np.float64)

    # 1. Features at photo resolution.
    feats = []
    decoded = iter(photos) if photos is not None else None
    for i in range(n):
        check_cancel(should_cancel)
        _note(progress, 0.3 * i / n, f"features {i + 1}/{n}")
        rgb = next(decoded, None) if decoded is not None else None
        if decoded is not None and rgb is None:
            raise RefinementError(f"{_photo_path(rec, i)}: the shot gave {i} frames for {n} views")
        feats.append(extract_features(_photo_path(rec, i), tuple(sizes[i]), opts.max_features, opts.max_image_size,
                                      rgb=rgb))

    report.timings["features"] = time.monotonic() - started
    # 2. Pairs from predicted overlap, guided matching, geometric verification.
    pairs = overlap_pairs(_sample_points(rec, np.random.default_rng(0)), ext_ff, k_ff, sizes,
                          opts.max_pairs_per_image)
    matches: dict[tuple[int, int], np.ndarray] = {}
    for p, (i, j) in enumerate(pairs):
        check_cancel(should_cancel)
        _note(progress, 0.3 + 0.3 * p / max(len(pairs), 1), f"matching pair {p + 1}/{len(pairs)}")
        f_pred = fundamental_from_cameras(ext_ff[i], k_ff[i], ext_ff[j], k_ff[j])
        diag = float(np.hypot(*sizes[j]))
        m = guided_matches(feats[i].xy, feats[i].descriptors, feats[j].xy, feats[j].descriptors, f_pred,
                           EPIPOLAR_TOLERANCE * diag)
        m = verify(feats[i].xy, feats[j].xy, m, VERIFY_ERROR_PX * unit, MIN_PAIR_INLIERS)
        if len(m):
            matches[(i, j)] = m
    report.pairs = len(matches)
    track, view, feat = build_tracks([len(f.xy) for f in feats], matches)
    num_tracks = int(track.max()) + 1 if len(track) else 0
    xy = np.zeros((len(track), 2))
    for v in range(n):
        sel = view == v
        xy[sel] = feats[v].xy[feat[sel]]

    report.timings["matching"] = time.monotonic() - started - report.timings["features"]
    # 3. Initial cameras from the file.
    model = report.camera_model
    if opts.shared_intrinsics:
        k0 = np.median(k_ff, axis=0)
        cams = [make_camera(model, k0, tuple(sizes[0]))]
        cam_of_view = np.zeros(n, dtype=np.int64)
    else:
        cams = [make_camera(model, k_ff[i], tuple(sizes[i])) for i in range(n)]
        cam_of_view = np.arange(n)
    start = Cameras(cams=cams, cam_of_view=cam_of_view, cam_from_world=ext_ff.copy())
    state = start

    # 4. Rounds: re-triangulate with the current cameras, drop outliers, robust bundle adjustment.
    first_error = EPIPOLAR_TOLERANCE * float(np.hypot(*sizes.max(axis=0)))
    final_error = FINAL_ERROR_PX * unit
    rounds = max(int(opts.rounds), 1)
    thresholds = np.geomspace(max(first_error, final_error), final_error, rounds)
    points = np.zeros((num_tracks, 3))
    keep = np.zeros(len(track), dtype=bool)
    refine_extra = model not in ("SIMPLE_PINHOLE", "PINHOLE")
    for r, thr in enumerate(thresholds):
        check_cancel(should_cancel)
        _note(progress, 0.6 + 0.35 * r / rounds, f"bundle adjustment round {r + 1}/{rounds}")
        points, keep = retriangulate(state, track, view, xy, num_tracks, thr)
        if keep.sum() < 2 * MIN_PAIR_INLIERS:
            break
        state, points, iters = bundle_adjust(state, points, track, view, xy, keep, max(thr / 4.0, 0.5 * unit),
                                             opts.refine_principal_point, refine_extra and r > 0)
        report.iterations += iters
        report.rounds += 1
    if report.rounds == 0:
        raise RefinementError(f"camera refinement found too few matches ({len(track)} observations in "
                              f"{report.pairs} matched pairs of {len(pairs)} tried); the cameras are unchanged")
    # Final inliers against the adjusted cameras.
    err = reprojection_errors(state, points, track, view, xy)
    keep &= err <= final_error
    state = _to_file_frame(state, ext_ff, points)

    # 5. Per view: keep the better of the refined and the feed-forward camera, compared on the same
    # observations (the feed-forward error with points triangulated from the feed-forward cameras).
    ff_points, _ = retriangulate(start, track, view, xy, num_tracks, np.inf)
    err_before = reprojection_errors(start, ff_points, track, view, xy)
    use_ff = np.zeros(n, dtype=bool)
    per_view = np.full(n, np.nan)
    per_view_before = np.full(n, np.nan)
    for v in range(n):
        sel = keep & (view == v)
        count = int(sel.sum())
        name = rec.image_names[v]
        if count:
            per_view[v] = float(err[sel].mean())
            fin = sel & np.isfinite(err_before)
            per_view_before[v] = float(err_before[fin].mean()) if fin.any() else np.inf
        if count < opts.min_observations:
            use_ff[v] = True
            report.kept_feedforward[v] = (f"{name}: only {count} inlier observations (needs "
                                          f"{opts.min_observations}); kept the feed-forward camera")
        elif not per_view[v] <= per_view_before[v]:
            use_ff[v] = True
            report.kept_feedforward[v] = (f"{name}: refined error {per_view[v]:.2f} px is not better than "
                                          f"{per_view_before[v]:.2f} px; kept the feed-forward camera")
    if (~use_ff).sum() < 2:
        raise RefinementError("camera refinement could not refine two views: "
                              + "; ".join(report.kept_feedforward.values()))
    report.messages.extend(report.kept_feedforward.values())
    report.refined_views = [int(v) for v in np.nonzero(~use_ff)[0]]

    # 6. Assemble the refined file.
    k_out = k_ff.copy()
    dist = np.zeros((n, len(distortion_params(state.cams[0]))))
    ext_out = ext_ff.copy()
    for v in range(n):
        if not use_ff[v]:
            cam = state.camera(v)
            k_out[v] = camera_k(cam)
            dist[v] = distortion_params(cam)
            ext_out[v] = state.cam_from_world[v]
    # Views that kept the feed-forward camera: measure that camera against the refined points.
    final_state = Cameras(cams=[make_camera(model, k_out[v], tuple(sizes[v])) if use_ff[v] else state.camera(v)
                                for v in range(n)],
                          cam_of_view=np.arange(n), cam_from_world=ext_out)
    err_final = reprojection_errors(final_state, points, track, view, xy)
    obs_keep = keep & (err_final <= final_error)
    for v in range(n):
        sel = (view == v) & keep
        per_view[v] = float(err_final[sel].mean()) if sel.any() and np.isfinite(err_final[sel]).all() else np.nan
    refined_obs = obs_keep & ~use_ff[view]
    report.observations = int(refined_obs.sum())
    report.points = int(len(np.unique(track[refined_obs])))
    ok_err = err_final[refined_obs]
    report.mean_error = float(ok_err.mean()) if len(ok_err) else float("nan")
    report.max_error = float(ok_err.max()) if len(ok_err) else float("nan")
    before_ok = err_before[refined_obs & np.isfinite(err_before)]
    report.mean_error_before = float(before_ok.mean()) if len(before_ok) else float("nan")

    # Depth follows the refined scale: the median ratio of triangulated to predicted depth at the tracks.
    report.depth_scale = _depth_scale(rec, final_state, points, track, view, xy, refined_obs)
    depth = (np.asarray(rec.depth, dtype=np.float64) * report.depth_scale).astype(np.float32)
    # The model-input intrinsics that give the refined photo intrinsics; points, photo intrinsics and the valid
    # mask follow from these primaries in geometry/derive.py when the Reconstruction is built.
    k_model = np.linalg.inv(pixel_map_matrix(rec.pixel_map)) @ k_out
    report.seconds = time.monotonic() - started
    report.timings["adjustment"] = report.seconds - report.timings["features"] - report.timings["matching"]

    extra = dict(rec.extra)
    extra.setdefault("extrinsics_feedforward", ext_ff.copy())
    extra.setdefault("intrinsics_feedforward", k_ff.copy())
    extra["reprojection_error"] = per_view.astype(np.float64)
    if dist.shape[1]:
        extra["distortion_model"] = np.array(model)
        extra["distortion"] = dist
    else:
        extra.pop("distortion_model", None)
        extra.pop("distortion", None)
    t_ids = track[refined_obs]
    uniq, t_new = np.unique(t_ids, return_inverse=True)
    extra["track_points"] = points[uniq].astype(np.float64)
    extra["track_colors"] = _track_colors(feats, t_new, view[refined_obs], feat[refined_obs], len(uniq))
    extra["track_observations"] = np.stack([t_new, view[refined_obs]], axis=1).astype(np.int32)
    extra["track_pixels"] = xy[refined_obs].astype(np.float64)

    prov = rec.provenance_dict
    prov["refinement"] = {
        "engine": f"pycolmap {pycolmap.__version__}",
        "camera_model": model,
        "shared_intrinsics": bool(opts.shared_intrinsics),
        "refine_principal_point": bool(opts.refine_principal_point),
        "rounds": report.rounds,
        "iterations": report.iterations,
        "pairs": report.pairs,
        "points": report.points,
        "observations": report.observations,
        "mean_error_px_before": report.mean_error_before,
        "mean_error_px": report.mean_error,
        "max_error_px": report.max_error,
        "depth_scale": report.depth_scale,
        "refined_views": len(report.refined_views),
        "kept_feedforward": report.to_dict()["kept_feedforward"],
        "seconds": round(report.seconds, 3),
        "timings": {k: round(v, 3) for k, v in report.timings.items()},
    }
    out = replace(rec, extrinsics=ext_out, intrinsics_model=k_model, depth=depth,
                  provenance=json.dumps(prov, sort_keys=True), extra=extra)
    _note(progress, 1.0, f"mean error {report.mean_error:.2f} px over {report.observations} observations")
    return out, report


def _to_file_frame(state: Cameras, ext_ff: np.ndarray, points: np.ndarray) -> Cameras:
    """Move the adjusted solve (free in position, rotation and scale) onto the file's frame: view 0 where
    the file had it and the camera centres spread as much as the file's. `points` are moved in place."""
    def centres(ext: np.ndarray) -> np.ndarray:
        return np.einsum("nji,nj->ni", ext[:, :, :3], -ext[:, :, 3])

    # new_world = s * R * old_world + t such that camera 0 matches: R = R0_ff^T R0, t from centres.
    r0, r0_ff = state.cam_from_world[0, :, :3], ext_ff[0, :, :3]
    rot = r0_ff.T @ r0
    c_old, c_ff = centres(state.cam_from_world), centres(ext_ff)
    spread_old = np.sqrt(np.mean(np.sum((c_old - c_old[0]) ** 2, axis=1)))
    spread_ff = np.sqrt(np.mean(np.sum((c_ff - c_ff[0]) ** 2, axis=1)))
    scale = spread_ff / spread_old if spread_old > 1e-12 and spread_ff > 1e-12 else 1.0
    shift = c_ff[0] - scale * rot @ c_old[0]
    out = state.cam_from_world.copy()
    for v in range(len(out)):
        r = out[v, :, :3] @ rot.T
        c = scale * rot @ c_old[v] + shift
        out[v, :, :3] = r
        out[v, :, 3] = -r @ c
    finite = np.all(np.isfinite(points), axis=1)
    points[finite] = scale * points[finite] @ rot.T + shift
    return Cameras(cams=state.cams, cam_of_view=state.cam_of_view, cam_from_world=out)


def _depth_scale(rec: Reconstruction, state: Cameras, points: np.ndarray, track: np.ndarray, view: np.ndarray,
                 xy: np.ndarray, use: np.ndarray) -> float:
    """Median over observations of (refined point depth / predicted depth at that pixel); 1 if unknown."""
    h, w = rec.model_hw
    pm = np.asarray(rec.pixel_map)[view[use]]
    mx = np.floor((xy[use, 0] - pm[:, 2]) / pm[:, 0]).astype(np.int64)
    my = np.floor((xy[use, 1] - pm[:, 3]) / pm[:, 1]).astype(np.int64)
    v = view[use]
    inside = (mx >= 0) & (mx < w) & (my >= 0) & (my < h)
    p = points[track[use]]
    z = np.einsum("mj,mj->m", state.cam_from_world[v, 2, :3], p) + state.cam_from_world[v, 2, 3]
    d = np.zeros(len(v))
    d[inside] = rec.depth[v[inside], my[inside], mx[inside]]
    ok = inside & (d > 0) & np.isfinite(d) & (z > 0)
    ok[inside] &= rec.valid_mask[v[inside], my[inside], mx[inside]]
    if ok.sum() < 10:
        return 1.0
    return float(np.median(z[ok] / d[ok]))


def _track_colors(feats, track: np.ndarray, view: np.ndarray, feat: np.ndarray, num: int) -> np.ndarray:
    """Mean photo colour of each track's observations (uint8 [T, 3])."""
    acc = np.zeros((num, 3))
    for v in np.unique(view):
        sel = view == v
        np.add.at(acc, track[sel], feats[v].colors[feat[sel]].astype(np.float64))
    counts = np.maximum(np.bincount(track, minlength=num), 1)
    return np.clip(np.round(acc / counts[:, None]), 0, 255).astype(np.uint8)
