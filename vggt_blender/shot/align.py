"""Sim(3) alignment of overlapping chunk reconstructions into one camera path (numpy only).

A chunk's reconstruction lives in its own gauge (world = its first camera, its own scale). Chunk k is
brought into the running (global) gauge by the similarity x_global = s * R @ x_chunk + t estimated from the
views it shares with what is already aligned:
- Umeyama's closed form on corresponding 3-D points: the same confident pixels of the shared views,
  unprojected in both gauges, plus the shared camera centres;
- the scale cross-checked by the ratio of the shared depth maps (depth scales with s);
- residuals reported: centre and point RMS (in global units and relative to the scene depth), the rotation
  disagreement of the shared cameras (degrees), the spread of the depth ratios.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Sim3:
    scale: float
    rotation: np.ndarray  # [3,3]
    translation: np.ndarray  # [3]

    @classmethod
    def identity(cls) -> "Sim3":
        return cls(1.0, np.eye(3), np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """x -> s R x + t on [..., 3] points (computed in float64)."""
        p = np.asarray(points, dtype=np.float64)
        return self.scale * p @ self.rotation.T + self.translation

    def apply_extrinsics(self, extrinsics: np.ndarray) -> np.ndarray:
        """Camera-from-world [R_c|t_c] of the chunk gauge -> the global gauge (camera units scaled by s):
        R_g = R_c R^T, t_g = s t_c - R_g t."""
        E = np.asarray(extrinsics, dtype=np.float64)
        Rc, tc = E[..., :3, :3], E[..., :3, 3]
        Rg = Rc @ self.rotation.T
        tg = self.scale * tc - np.einsum("...ij,j->...i", Rg, self.translation)
        return np.concatenate([Rg, tg[..., None]], axis=-1)

    def compose(self, inner: "Sim3") -> "Sim3":
        """self ∘ inner."""
        return Sim3(self.scale * inner.scale, self.rotation @ inner.rotation,
                    self.scale * self.rotation @ inner.translation + self.translation)

    def inverse(self) -> "Sim3":
        R = self.rotation.T
        return Sim3(1.0 / self.scale, R, -(R @ self.translation) / self.scale)


def umeyama(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = True) -> Sim3:
    """The least-squares similarity (Umeyama 1991) with target ≈ s R source + t, optionally weighted."""
    src = np.asarray(source, dtype=np.float64).reshape(-1, 3)
    dst = np.asarray(target, dtype=np.float64).reshape(-1, 3)
    if src.shape != dst.shape or len(src) < 3:
        raise ValueError("umeyama needs at least 3 corresponding points of the same shape")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0  # a rotation, never a reflection
    R = U @ D @ Vt
    var_s = float(w @ (xs ** 2).sum(axis=1))
    s = float(np.trace(np.diag(S) @ D) / var_s) if with_scale and var_s > 0 else 1.0
    return Sim3(s, R, mu_d - s * R @ mu_s)


def camera_centres(extrinsics: np.ndarray) -> np.ndarray:
    E = np.asarray(extrinsics, dtype=np.float64)
    R, t = E[..., :3, :3], E[..., :3, 3]
    return -np.einsum("...ji,...j->...i", R, t)


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """Angle of Ra^T Rb per pair, degrees."""
    rel = np.einsum("...ji,...jk->...ik", Ra, Rb)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


@dataclass
class AlignmentReport:
    chunk: int
    shared_views: int
    scale: float
    depth_ratio_scale: float
    depth_ratio_spread: float  # (p90 - p10) / median of the per-pixel depth ratios
    centre_rms: float  # global units
    point_rms: float
    relative_point_rms: float  # point RMS / median shared depth
    rotation_max_deg: float

    def to_dict(self) -> dict:
        return {k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def align_chunk(chunk: int, ref_extrinsics: np.ndarray, ref_points: np.ndarray, ref_depth: np.ndarray,
                new_extrinsics: np.ndarray, new_points: np.ndarray, new_depth: np.ndarray,
                weights: np.ndarray | None = None, max_points: int = 20000,
                seed: int = 0) -> tuple[Sim3, AlignmentReport]:
    """The Sim(3) taking the new chunk's gauge onto the reference (already global) gauge, from the shared
    views: `*_extrinsics` [V,3,4], `*_points` world points [V,H,W,3], `*_depth` [V,H,W] of the same views,
    `weights` [V,H,W] (confidence; 0 = unusable pixel)."""
    ref_depth = np.asarray(ref_depth, dtype=np.float64)
    new_depth = np.asarray(new_depth, dtype=np.float64)
    usable = np.isfinite(ref_depth) & np.isfinite(new_depth) & (ref_depth > 0) & (new_depth > 0)
    usable &= np.isfinite(np.asarray(ref_points)).all(-1) & np.isfinite(np.asarray(new_points)).all(-1)
    w = np.ones(ref_depth.shape) if weights is None else np.asarray(weights, dtype=np.float64)
    usable &= w > 0
    index = np.flatnonzero(usable.reshape(-1))
    if index.size < 3:
        raise ValueError(f"chunk {chunk}: the shared views have fewer than 3 usable pixels to align on")
    if index.size > max_points:
        index = np.sort(np.random.default_rng(seed).choice(index, max_points, replace=False))
    src = np.asarray(new_points, dtype=np.float64).reshape(-1, 3)[index]
    dst = np.asarray(ref_points, dtype=np.float64).reshape(-1, 3)[index]
    pw = w.reshape(-1)[index]
    ref_c, new_c = camera_centres(ref_extrinsics), camera_centres(new_extrinsics)
    # Centres count as much as all points together: they carry the path the user sees.
    cw = np.full(len(ref_c), pw.sum() / max(len(ref_c), 1))
    sim = umeyama(np.concatenate([src, new_c]), np.concatenate([dst, ref_c]), np.concatenate([pw, cw]))

    ratios = ref_depth.reshape(-1)[index] / new_depth.reshape(-1)[index]
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
    aligned_pts = sim.apply(src)
    point_rms = float(np.sqrt(np.mean(np.sum((aligned_pts - dst) ** 2, axis=1))))
    centre_rms = float(np.sqrt(np.mean(np.sum((sim.apply(new_c) - ref_c) ** 2, axis=1))))
    rot = rotation_angle_deg(np.asarray(ref_extrinsics)[..., :3, :3],
                             sim.apply_extrinsics(new_extrinsics)[..., :3, :3])
    report = AlignmentReport(chunk=chunk, shared_views=int(len(ref_c)), scale=float(sim.scale),
                             depth_ratio_scale=float(p50), depth_ratio_spread=float((p90 - p10) / p50),
                             centre_rms=centre_rms, point_rms=point_rms,
                             relative_point_rms=point_rms / float(np.median(ref_depth.reshape(-1)[index])),
                             rotation_max_deg=float(rot.max()))
    return sim, report


class ShotAssembler:
    """The whole shot's primaries, filled chunk by chunk: chunk 0 sets the gauge, every later chunk is
    aligned on the views it shares with what is already there (those keep the earlier values) and its new
    views are written in the global gauge. World points are never stored: the alignment derives those of the
    shared views from depth and cameras (geometry/derive.py), as the Reconstruction and its file do.
    Memory: one set of arrays for the shot, maths frame by frame."""

    def __init__(self, count: int, height: int, width: int, spool: bool = False, point_map: bool = True) -> None:
        """`spool`: keep the model's point map (the one xyz primary) in a temporary file (io/spool.py);
        `point_map` False: the model predicts none (VGGT-Omega), so none is kept."""
        self.spools: dict = {}
        if spool and point_map:
            from ..io.spool import SpoolArray

            self.spools = {"point_map": SpoolArray((count, height, width, 3), np.float32, name="point_map")}
        self.extrinsics = np.empty((count, 3, 4), dtype=np.float64)
        self.intrinsics_model = np.empty((count, 3, 3), dtype=np.float64)
        self.depth = np.empty((count, height, width), dtype=np.float32)
        self.depth_conf = np.empty_like(self.depth)
        self.point_map_conf = np.empty_like(self.depth) if point_map else None
        self.point_map = (self.spools.get("point_map") or np.zeros((count, height, width, 3), np.float32)) \
            if point_map else None
        self.reports: list[AlignmentReport] = []
        self.transforms: list[Sim3] = []

    def add(self, index: int, start: int, overlap: int, extrinsics: np.ndarray, intrinsics_model: np.ndarray,
            depth: np.ndarray, depth_conf: np.ndarray, point_map: np.ndarray | None = None,
            point_map_conf: np.ndarray | None = None) -> Sim3:
        """Chunk `index` holds views start..start+len-1 in its own gauge; the first `overlap` are shared."""
        from ..geometry.derive import world_points

        size = len(extrinsics)
        sim = Sim3.identity()
        if index > 0:
            if overlap < 1:
                raise ValueError(f"chunk {index} shares no view with the previous one")
            shared = slice(start, start + overlap)
            weight = np.minimum(self.depth_conf[shared], np.asarray(depth_conf[:overlap], dtype=np.float64))
            ref_points = world_points(self.depth[shared], self.extrinsics[shared], self.intrinsics_model[shared])
            new_points = world_points(np.asarray(depth[:overlap], dtype=np.float32), extrinsics[:overlap],
                                      intrinsics_model[:overlap])
            sim, report = align_chunk(index, self.extrinsics[shared], ref_points, self.depth[shared],
                                      extrinsics[:overlap], new_points, depth[:overlap], weight)
            self.reports.append(report)
        self.transforms.append(sim)
        first = overlap if index > 0 else 0
        target = slice(start + first, start + size)
        # Scaled depth under the transformed cameras unprojects to sim.apply(the chunk's own world points).
        self.extrinsics[target] = sim.apply_extrinsics(np.asarray(extrinsics)[first:])
        self.intrinsics_model[target] = np.asarray(intrinsics_model)[first:]
        self.depth[target] = np.asarray(depth)[first:] * sim.scale
        self.depth_conf[target] = np.asarray(depth_conf)[first:]
        if point_map_conf is not None and self.point_map_conf is not None:
            self.point_map_conf[target] = np.asarray(point_map_conf)[first:]
        if point_map is not None and self.point_map is not None:
            for i in range(first, size):  # frame by frame: float64 maths without a chunk-sized copy
                self.point_map[start + i] = sim.apply(point_map[i])
        return sim

    def point_map_array(self) -> np.ndarray | None:
        """The point map as an array: in memory, or a read-only map of its spool file (None: no point map)."""
        spool = self.spools.get("point_map")
        return spool.view() if spool is not None else self.point_map
