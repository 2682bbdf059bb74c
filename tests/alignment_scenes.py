"""Synthetic reconstructions with a known floor for the alignment tests (ray-cast boxes and spheres).

The true world is Z-up with the floor at z = 0. Cameras look at the scene without roll unless asked; depth is
ray-cast per pixel, then everything is expressed in the first camera's OpenCV frame and multiplied by an
arbitrary scale, as VGGT would output it. `Scene.up_rec` is the true up in the file's world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vggt_blender.io.reconstruction import make_reconstruction

FLOOR = ((-4.0, -4.0, -0.05), (4.0, 4.0, 0.0))


@dataclass
class Scene:
    rec: object
    up_rec: np.ndarray  # true up (unit) in the reconstruction's world
    to_rec: np.ndarray  # 4x4: true world -> reconstruction world (similarity)
    floor_points_rec: np.ndarray  # points on the true floor (z = 0), reconstruction world
    size_rec: float  # scene size in reconstruction units (median hit distance from the first camera)


def look_at(centre, target, roll_deg=0.0) -> np.ndarray:
    """Camera-from-world [R|t] (OpenCV axes) at `centre` looking at `target`, up = +Z, rolled about forward."""
    c, f = np.asarray(centre, float), np.asarray(target, float) - np.asarray(centre, float)
    f /= np.linalg.norm(f)
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    a = np.radians(roll_deg)
    right, down = np.cos(a) * right + np.sin(a) * down, -np.sin(a) * right + np.cos(a) * down
    R = np.stack([right, down, f])  # rows: camera axes in world
    return np.hstack([R, (-R @ c)[:, None]])


def arc_cameras(n, radius, height, target=(0.0, 0.0, 0.0), span_deg=120.0, start_deg=-90.0, first_roll=0.0,
                first_pitch_extra=0.0):
    """n cameras on an arc around `target` at `height`, looking at it (pitch down)."""
    out = []
    for i, a in enumerate(np.radians(np.linspace(start_deg - span_deg / 2, start_deg + span_deg / 2, n))):
        centre = np.array([radius * np.cos(a), radius * np.sin(a), height])
        tgt = np.array(target, float)
        if i == 0 and first_pitch_extra:
            tgt = tgt - np.array([0.0, 0.0, np.tan(np.radians(first_pitch_extra)) * radius])
        out.append(look_at(centre, tgt, first_roll if i == 0 else 0.0))
    return np.stack(out)


def _ray_box(o, d, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (np.asarray(lo) - o) / d
        t2 = (np.asarray(hi) - o) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    return np.where((tmax >= tmin) & (tmin > 1e-6), tmin, np.inf)


def _ray_sphere(o, d, c, r):
    oc = o - np.asarray(c)
    b = d @ oc
    disc = b * b - (oc @ oc - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc >= 0) & (t > 1e-6), t, np.inf)


def make_scene(extrinsics_true, boxes=(), spheres=(), floor=True, width=48, height=36, scale=0.37,
               noise=0.002, seed=0) -> Scene:
    """Ray-cast depth for cameras `extrinsics_true` (true world) and return the reconstruction."""
    rng = np.random.default_rng(seed)
    E = np.asarray(extrinsics_true, float)
    n = len(E)
    focal = 0.8 * width
    K = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    boxes = ([FLOOR] if floor else []) + list(boxes)
    vv, uu = np.mgrid[0:height, 0:width] + 0.5
    rays_cam = np.stack([(uu - K[0, 2]) / focal, (vv - K[1, 2]) / focal, np.ones_like(uu)], -1).reshape(-1, 3)
    depth = np.zeros((n, height, width))
    conf = np.zeros((n, height, width))
    for i in range(n):
        R, t = E[i, :, :3], E[i, :, 3]
        o = -R.T @ t
        d = rays_cam @ R  # world directions (not unit: t is then z-depth)
        hits = np.full(len(d), np.inf)
        for lo, hi in boxes:
            hits = np.minimum(hits, _ray_box(o, d, lo, hi))
        for c, r in spheres:
            dn = np.linalg.norm(d, axis=1)
            hits = np.minimum(hits, _ray_sphere(o, d / dn[:, None], c, r) / dn)
        hit = np.isfinite(hits)
        z = np.where(hit, hits * (1.0 + noise * rng.standard_normal(len(d))), 30.0)
        depth[i] = z.reshape(height, width)
        conf[i] = np.where(hit, 3.0 + 7.0 * rng.random(len(d)), 1.0).reshape(height, width)
    # True world -> first camera's frame, times `scale`.
    R0, t0 = E[0, :, :3], E[0, :, 3]
    to_rec = np.eye(4)
    to_rec[:3, :3] = scale * R0
    to_rec[:3, 3] = scale * t0
    E_rec = np.zeros_like(E)
    for i in range(n):
        R, t = E[i, :, :3], E[i, :, 3]
        E_rec[i, :, :3] = R @ R0.T
        E_rec[i, :, 3] = scale * (t - R @ R0.T @ t0)
    rec = make_reconstruction((depth * scale).astype(np.float32), E_rec, np.repeat(K[None], n, 0),
                              depth_conf=conf.astype(np.float32))
    g = np.linspace(-3.0, 3.0, 7)
    fp = np.stack(np.meshgrid(g, g, [0.0]), -1).reshape(-1, 3)
    floor_rec = fp @ to_rec[:3, :3].T + to_rec[:3, 3]
    hitpts = rec.world_points[rec.depth_conf > 2].reshape(-1, 3)
    size = float(np.median(np.linalg.norm(hitpts, axis=1)))
    return Scene(rec, R0 @ np.array([0.0, 0.0, 1.0]), to_rec, floor_rec, size)


def angle_deg(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1.0, 1.0))))
