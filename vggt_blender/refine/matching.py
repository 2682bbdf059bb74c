"""Which photos to match (from the predicted cameras' overlap) and matching guided by the predicted geometry.

A candidate match must lie near the epipolar line of the predicted fundamental matrix (a tolerance wide
enough for feed-forward pose errors), pass the ratio test and the mutual nearest-neighbour check among those
candidates, and then agree with a fundamental matrix re-estimated by LO-RANSAC on the matches themselves.
"""

from __future__ import annotations

import numpy as np
import pycolmap

from ..geometry.cameras import invert_extrinsics, project_points

RATIO = 0.85
TOP_K = 8


def overlap_pairs(world_points: np.ndarray, extrinsics: np.ndarray, intrinsics: np.ndarray,
                  sizes_wh: np.ndarray, max_per_image: int, min_overlap: float = 0.05) -> list[tuple[int, int]]:
    """Pairs (i < j) to match: for each view, the views its predicted points land in most often.

    `world_points` [N, P, 3] are a sample of each view's predicted points (NaN where invalid).
    """
    n = len(extrinsics)
    score = np.zeros((n, n))
    for i in range(n):
        pts = world_points[i][np.all(np.isfinite(world_points[i]), axis=1)]
        if len(pts) == 0:
            continue
        for j in range(n):
            if i == j:
                continue
            uv, z = project_points(pts, extrinsics[j], intrinsics[j], return_depth=True)
            w, h = sizes_wh[j]
            inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            score[i, j] = inside.mean()
    both = np.minimum(score, score.T)
    pairs: set[tuple[int, int]] = set()
    for i in range(n):
        order = [j for j in np.argsort(-both[i]) if j != i and both[i, j] >= min_overlap]
        for j in order[:max_per_image]:
            pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def fundamental_from_cameras(ext1: np.ndarray, k1: np.ndarray, ext2: np.ndarray, k2: np.ndarray) -> np.ndarray:
    """F with x2^T F x1 = 0 for photo pixels of camera 1 and camera 2 (camera-from-world extrinsics)."""
    w_from_1 = np.eye(4)
    w_from_1[:3] = invert_extrinsics(ext1)
    c2_from_w = np.eye(4)
    c2_from_w[:3] = ext2
    rel = c2_from_w @ w_from_1
    r, t = rel[:3, :3], rel[:3, 3]
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    f = np.linalg.inv(k2).T @ tx @ r @ np.linalg.inv(k1)
    return f / max(np.linalg.norm(f), 1e-300)


def _sampson(f: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of corresponding rows of x1 [M,2] (photo 1) and x2 [M,2] (photo 2)."""
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], axis=1)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], axis=1)
    fx1 = h1 @ f.T
    ftx2 = h2 @ f
    num = np.sum(h2 * fx1, axis=1)
    den = fx1[:, 0] ** 2 + fx1[:, 1] ** 2 + ftx2[:, 0] ** 2 + ftx2[:, 1] ** 2
    return np.abs(num) / np.sqrt(np.maximum(den, 1e-300))


def _top_k(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's k largest entries, best first (repeated argmax along rows
    is several times faster than argpartition for small k)."""
    work = np.array(sim, dtype=np.float32, order="C")
    rows = np.arange(len(work))
    idx = np.empty((len(work), k), dtype=np.int64)
    val = np.empty((len(work), k), dtype=np.float32)
    for r in range(k):
        idx[:, r] = np.argmax(work, axis=1)
        val[:, r] = work[rows, idx[:, r]]
        work[rows, idx[:, r]] = -np.inf
    return idx, val


def _best_on_line(sim: np.ndarray, xy_from: np.ndarray, xy_to: np.ndarray, f: np.ndarray, epipolar_px: float,
                  swap: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `sim` [A, B]: the most similar column among its TOP_K whose point lies within
    `epipolar_px` of the predicted epipolar geometry, and whether it passes the ratio test against the
    next such column. `swap` says xy_from belongs to the second photo of F."""
    k = min(TOP_K, sim.shape[1])
    top, s_top = _top_k(sim, k)
    rows = np.repeat(np.arange(len(sim)), k)
    a, b = (xy_to[top.ravel()], xy_from[rows]) if swap else (xy_from[rows], xy_to[top.ravel()])
    near = (_sampson(f, a, b) <= epipolar_px).reshape(len(sim), k)
    s_ok = np.where(near, s_top, -np.inf)
    first = np.argmax(s_ok, axis=1)
    s1 = s_ok[np.arange(len(sim)), first]
    s_ok[np.arange(len(sim)), first] = -np.inf
    s2 = np.max(s_ok, axis=1) if k > 1 else np.full(len(sim), -np.inf)
    dist1 = np.sqrt(np.maximum(2.0 - 2.0 * s1, 0.0))
    dist2 = np.where(np.isfinite(s2), np.sqrt(np.maximum(2.0 - 2.0 * s2, 0.0)), np.inf)
    best = top[np.arange(len(sim)), first]
    return best, np.isfinite(s1) & (dist1 < RATIO * dist2)


def guided_matches(xy1: np.ndarray, d1: np.ndarray, xy2: np.ndarray, d2: np.ndarray, f_pred: np.ndarray,
                   epipolar_px: float) -> np.ndarray:
    """Mutual nearest neighbours passing the ratio test among candidates within `epipolar_px` of the
    predicted epipolar geometry -> index pairs [M, 2]. Candidates are each feature's TOP_K most similar
    descriptors (the full epipolar test on every pair of features costs far more and finds little more)."""
    if len(xy1) < 2 or len(xy2) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    sim = d1 @ d2.T
    best12, ok12 = _best_on_line(sim, xy1, xy2, f_pred, epipolar_px, swap=False)
    best21, ok21 = _best_on_line(sim.T, xy2, xy1, f_pred, epipolar_px, swap=True)
    i1 = np.nonzero(ok12)[0]
    j = best12[i1]
    mutual = ok21[j] & (best21[j] == i1)
    return np.stack([i1[mutual], j[mutual]], axis=1).astype(np.int64)


def verify(xy1: np.ndarray, xy2: np.ndarray, matches: np.ndarray, max_error_px: float,
           min_inliers: int) -> np.ndarray:
    """Matches that agree with a fundamental matrix estimated by LO-RANSAC on them; empty if too few."""
    if len(matches) < max(min_inliers, 8):
        return matches[:0]
    options = pycolmap.RANSACOptions()
    options.max_error = float(max_error_px)
    options.random_seed = 0
    result = pycolmap.estimate_fundamental_matrix(xy1[matches[:, 0]], xy2[matches[:, 1]], options)
    if not result:
        return matches[:0]
    inliers = np.asarray(result["inlier_mask"], dtype=bool).reshape(-1)
    if inliers.sum() < min_inliers:
        return matches[:0]
    return matches[inliers]
