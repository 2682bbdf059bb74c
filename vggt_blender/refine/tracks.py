"""Tracks from pairwise matches (union-find over features) and multi-view triangulation (linear, batched)."""

from __future__ import annotations

import numpy as np


def build_tracks(num_features: list[int], pair_matches: dict[tuple[int, int], np.ndarray]) -> tuple[np.ndarray, ...]:
    """Connected components of the match graph -> observations (track, view, feature), one row each.

    A component that holds two features of the same view is ambiguous and dropped, like one-view components.
    """
    offsets = np.concatenate([[0], np.cumsum(num_features)]).astype(np.int64)
    parent = np.arange(offsets[-1], dtype=np.int64)

    def find(a: np.ndarray) -> np.ndarray:
        # Path halving, vectorised: repeat until every node points at a root.
        while True:
            p = parent[a]
            if np.all(p == a):
                return a
            parent[a] = parent[p]
            a = parent[a]

    for (i, j), m in pair_matches.items():
        if len(m) == 0:
            continue
        a = offsets[i] + m[:, 0]
        b = offsets[j] + m[:, 1]
        # Union edge by edge in rounds: hooking roots onto roots, until all edges are inside one component.
        while True:
            ra, rb = find(a.copy()), find(b.copy())
            diff = ra != rb
            if not diff.any():
                break
            lo, hi = np.minimum(ra[diff], rb[diff]), np.maximum(ra[diff], rb[diff])
            parent[hi] = lo
    nodes = np.unique(np.concatenate([offsets[i] + m[:, 0] for (i, _), m in pair_matches.items() if len(m)]
                                     + [offsets[j] + m[:, 1] for (_, j), m in pair_matches.items() if len(m)]
                                     + [np.zeros(0, np.int64)]))
    roots = find(nodes.copy())
    view = np.searchsorted(offsets, nodes, side="right") - 1
    feat = nodes - offsets[view]
    _, track = np.unique(roots, return_inverse=True)
    # Drop tracks with two features in one view or fewer than two views.
    key = track * (len(num_features) + 1) + view
    _, per_key = np.unique(key, return_counts=True)
    dup_tracks = np.unique(track[np.isin(key, np.unique(key)[per_key > 1])])
    length = np.bincount(track)
    keep = ~np.isin(track, dup_tracks) & (length[track] >= 2)
    _, track = np.unique(track[keep], return_inverse=True)
    return track.astype(np.int64), view[keep].astype(np.int64), feat[keep].astype(np.int64)


def triangulate(track: np.ndarray, view: np.ndarray, rays: np.ndarray, cam_from_world: np.ndarray,
                num_tracks: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Linear (DLT) triangulation of every track from normalised image coordinates `rays` [M, 2] of its
    observations -> points [T, 3] (NaN where a track has fewer than two observations with weight > 0).

    `cam_from_world` [N, 3, 4]; `weights` [M] (0 drops an observation). Tracks are solved in batches of
    equal length so numpy's batched SVD does the work.
    """
    w = np.ones(len(track)) if weights is None else np.asarray(weights, dtype=np.float64)
    use = w > 0
    t, v, r = track[use], view[use], rays[use]
    points = np.full((num_tracks, 3), np.nan)
    if len(t) == 0:
        return points
    order = np.argsort(t, kind="stable")
    t, v, r = t[order], v[order], r[order]
    counts = np.bincount(t, minlength=num_tracks)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    p = cam_from_world[v]  # [M, 3, 4]
    rows_x = r[:, 0:1] * p[:, 2] - p[:, 0]  # [M, 4]
    rows_y = r[:, 1:2] * p[:, 2] - p[:, 1]
    for length in np.unique(counts[counts >= 2]):
        ids = np.nonzero(counts == length)[0]
        idx = starts[ids][:, None] + np.arange(length)[None, :]  # [B, L]
        a = np.concatenate([rows_x[idx], rows_y[idx]], axis=1)  # [B, 2L, 4]
        _, _, vt = np.linalg.svd(a)
        h = vt[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            points[ids] = h[:, :3] / h[:, 3:4]
    return points
