"""Long-shot drift on a rendered, H.264-encoded shot (bench/bench_shot_drift.py and tests/test_shot_drift.py).

The shot: tests/refine_groundtruth.py's textured floor and boxes, rendered with bpy (Cycles) along a camera
path that dollies across the scene while it pans, encoded to H.264 (yuv420p) with PyAV and decoded back
with the product's shot reader (vggt_blender/shot/source.py).

No model weights exist here, so a VGGT pass is STOOD IN FOR: a pass over views a..b reports the ground
truth in its own gauge (world = camera a, units times a random scale, as a real pass does) with
feed-forward-sized noise drawn independently per pass (see `stand_in_pass`). Those passes are chunked with
the product's plan_chunks and assembled with its ShotAssembler (Sim(3) from the shared cameras and depth),
as engine/shot.py does; depth is at a model-like resolution (1/`DEPTH_FACTOR` of the frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tests import refine_groundtruth as gt
from tests.video_helpers import write_video
from vggt_blender.geometry.cameras import quat_to_mat
from vggt_blender.shot.align import ShotAssembler, Sim3, camera_centres, rotation_angle_deg, umeyama
from vggt_blender.shot.chunks import Chunk, plan_chunks

RATE = Fraction(24000, 1001)
DEPTH_FACTOR = 4  # model depth is 1/4 of the frame size, like VGGT's 518 px input for a 2K frame


@dataclass(frozen=True)
class Noise:
    rot_deg: float = 0.5  # RMS rotation error per view (random axis)
    pos_frac: float = 0.01  # RMS centre error per view, as a fraction of that view's median depth
    depth_frac: float = 0.02  # RMS relative depth error: a smooth random field per view


def camera_path(count: int) -> np.ndarray:
    """Camera-from-world [N,3,4] (OpenCV axes, the scene's y-down world): about 3.4 units above the floor,
    the camera dollies 4.8 units across the scene, swinging in and out, while it pans from the left boxes to
    the right ones (faster, then slower); it looks down at about 45 degrees so the floor fills most of the
    frame."""
    t = np.linspace(0.0, 1.0, count)
    ext = np.zeros((count, 3, 4))
    for i, s in enumerate(t):
        centre = np.array([-2.4 + 4.8 * s, -3.4 - 0.3 * np.sin(2 * np.pi * s), -3.2 + 0.8 * np.sin(np.pi * s)])
        target = np.array([-1.4 + 2.8 * s + 0.6 * np.sin(2 * np.pi * s), 0.0, -0.1 + 0.5 * np.cos(np.pi * s)])
        ext[i] = gt.look_at(centre, target)
    return ext


def render_shot(scene_dir: Path, count: int, width: int, height: int,
                samples: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Render the path (reused when already there); (extrinsics [N,3,4], photo K [3,3])."""
    ext = camera_path(count)
    gt.render_path(scene_dir, ext, width, height, samples)
    return ext, gt.photo_intrinsics(width, height)


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def encode_shot(scene_dir: Path, count: int, video: Path, width: int, height: int) -> Path:
    """The rendered PNGs as an H.264 file (yuv420p, 24000/1001 fps, B-frames) through tests/video_helpers."""
    return write_video(video, count=count, rate=RATE, width=width, height=height,
                       frame_of=lambda i: read_png(gt.path_frame(scene_dir, i)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


@dataclass
class DecodeCheck:
    numbers: list[int]  # frame numbers the product's reader gave, in order
    frame_count: int  # what its probe said
    fps: Fraction
    psnr_own: np.ndarray  # decoded frame n vs rendered PNG n (dB)
    psnr_neighbour: np.ndarray  # decoded frame n vs the better of PNG n-1 / n+1 (dB)
    best_match: list[int]  # the PNG each decoded frame is closest to (among n-1, n, n+1)


def decode_shot_frames(video: Path, scene_dir: Path, save_dir: Path | None = None) -> DecodeCheck:
    """Decode every frame with the product's reader and compare it with the renders; optionally save the
    decoded frames as PNG (what a refinement reads)."""
    from vggt_blender.shot.selection import FrameSelection
    from vggt_blender.shot.source import iter_frames, probe_shot, select_frames

    info = probe_shot(str(video))
    numbers = select_frames(info, FrameSelection())
    got, own, near, best = [], [], [], []
    for number, image in iter_frames(info, numbers):
        rgb = np.asarray(image.convert("RGB"))
        got.append(number)
        if save_dir is not None:
            image.save(Path(save_dir) / f"decoded_{number:04d}.png")
        scores = {}
        for j in (number - 1, number, number + 1):
            if gt.path_frame(scene_dir, j).exists() and j >= 0:
                scores[j] = psnr(rgb, read_png(gt.path_frame(scene_dir, j)))
        own.append(scores.get(number, float("nan")))
        near.append(max((v for j, v in scores.items() if j != number), default=float("nan")))
        best.append(max(scores, key=scores.get))
    return DecodeCheck(got, info.frame_count, info.fps, np.array(own), np.array(near), best)


def model_geometry(k_photo: np.ndarray, width: int, height: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """(model (h, w), pixel_map [4], model K [3,3]) for depth at 1/DEPTH_FACTOR of the frame."""
    mh, mw = height // DEPTH_FACTOR, width // DEPTH_FACTOR
    sx, sy = width / mw, height / mh
    k_model = np.linalg.inv(np.diag([sx, sy, 1.0])) @ k_photo
    return (mh, mw), np.array([sx, sy, 0.0, 0.0]), k_model


def true_depth(ext: np.ndarray, k_photo: np.ndarray, width: int, height: int) -> np.ndarray:
    """Exact z-depth [N,h,w] at model pixel centres (inf where a ray leaves the scene)."""
    hw, pixel_map, _ = model_geometry(k_photo, width, height)
    return gt.depth_maps(ext, np.repeat(k_photo[None], len(ext), 0), np.tile(pixel_map, (len(ext), 1)), hw)


def _random_rotation(rng: np.random.Generator, rms_deg: float) -> np.ndarray:
    v = np.radians(rms_deg) * rng.standard_normal(3) / np.sqrt(3.0)  # axis-angle with RMS angle rms_deg
    angle = np.linalg.norm(v)
    axis = v / angle if angle > 0 else np.array([1.0, 0.0, 0.0])
    return quat_to_mat(np.concatenate([axis * np.sin(angle / 2), [np.cos(angle / 2)]]))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], rms: float) -> np.ndarray:
    """A low-frequency random field (bilinear from a 3x4 grid of N(0, rms)): depth errors of a network are
    smooth, not per-pixel speckle that averages away."""
    grid = rms * rng.standard_normal((3, 4))
    h, w = shape
    y = np.linspace(0, 2, h)
    x = np.linspace(0, 3, w)
    y0, x0 = np.minimum(y.astype(int), 1), np.minimum(x.astype(int), 2)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    g = lambda a, b: grid[np.ix_(y0 + a, x0 + b)]  # noqa: E731
    return (1 - fy) * ((1 - fx) * g(0, 0) + fx * g(0, 1)) + fy * ((1 - fx) * g(1, 0) + fx * g(1, 1))


def stand_in_pass(ext: np.ndarray, depth: np.ndarray, rng: np.random.Generator,
                  noise: Noise) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """What a model pass over these views is stood in for: (extrinsics, depth, confidence, scale) in the
    pass's own gauge (world = its first camera, units * a random scale in e^-1..e^1) with independent noise:
    each camera turned by a random rotation, its centre moved by pos_frac of its median depth (both RMS), its
    depth multiplied by 1 + a smooth random field. Confidence 0 where a ray leaves the scene."""
    scale = float(np.exp(rng.uniform(-1.0, 1.0)))
    gauge = Sim3(scale, ext[0, :, :3], scale * ext[0, :, 3])  # x_pass = s (R0 x + t0)
    e = gauge.apply_extrinsics(ext)
    d = depth * scale
    finite = np.isfinite(d)
    for i in range(len(e)):
        median = float(np.median(d[i][finite[i]])) if finite[i].any() else scale
        centre = camera_centres(e[i]) + noise.pos_frac * median * rng.standard_normal(3) / np.sqrt(3.0)
        rot = _random_rotation(rng, noise.rot_deg) @ e[i, :, :3]
        e[i, :, :3], e[i, :, 3] = rot, -rot @ centre
        d[i] = d[i] * (1.0 + _smooth_field(rng, d.shape[1:], noise.depth_frac))
    conf = np.where(finite, 2.0, 0.0).astype(np.float32)
    return e, np.where(finite, d, 0.0).astype(np.float32), conf, scale


@dataclass
class Assembly:
    extrinsics: np.ndarray  # [N,3,4] in the first pass's gauge
    chunks: list[Chunk]
    reports: list  # the assembler's AlignmentReport per aligned chunk
    depth: np.ndarray  # [N,h,w] in the same gauge (0 where the view has none)
    depth_conf: np.ndarray


def assemble(ext_true: np.ndarray, depth_true: np.ndarray, k_model: np.ndarray, chunk_size: int, overlap: int,
             noise: Noise, seed: int, align: bool = True) -> Assembly:
    """Plan chunks (the product's plan_chunks), stand in a pass per chunk, and assemble them with the
    product's ShotAssembler as engine/shot.py does; `align=False` writes each chunk's new views in its own
    gauge instead (what the alignment buys). chunk_size >= the frame count is the single pass."""
    count, h, w = depth_true.shape
    chunks = plan_chunks(count, chunk_size, overlap)
    rng = np.random.default_rng(seed)
    shot = ShotAssembler(count, h, w)
    for index, chunk in enumerate(chunks):
        e, d, conf, _ = stand_in_pass(ext_true[chunk.start:chunk.end], depth_true[chunk.start:chunk.end], rng,
                                      noise)
        k = np.repeat(k_model[None], chunk.size, 0)
        if align:
            shot.add(index, chunk.start, chunk.overlap, e, k, d, conf)
        else:
            first = chunk.overlap if index > 0 else 0
            shot.extrinsics[chunk.start + first:chunk.end] = e[first:]
    return Assembly(shot.extrinsics.copy(), chunks, list(shot.reports), shot.depth.copy(), shot.depth_conf.copy())


def path_length(ext: np.ndarray) -> float:
    return float(np.sum(np.linalg.norm(np.diff(camera_centres(ext), axis=0), axis=1)))


def orientation_fit(r_est: np.ndarray, r_true: np.ndarray) -> np.ndarray:
    """The world rotation Q that best maps the estimated orientations onto the true ones (R_est Q^T ~ R_true,
    chordal least squares): the projection of sum R_true^T R_est onto SO(3)."""
    u, _, vt = np.linalg.svd(np.einsum("nji,njk->ik", r_true, r_est))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    return u @ d @ vt


def path_errors(ext_est: np.ndarray, ext_true: np.ndarray, window: int = 15) -> dict:
    """Centre error after the one similarity that best maps the estimated camera centres onto the true ones
    (Umeyama), as a fraction of the true path length (max, mean, last frame); rotation error (deg) after the
    one world rotation that best maps the orientations (`rot_*`), and under the centres' similarity
    (`rot_*_centre_fit`: on a nearly straight path the centres pin the rotation about it poorly).
    `drift_max`: the largest centre error once averaged over `window` consecutive frames, which keeps a slow
    drift and shrinks independent per-view jitter by about sqrt(window)."""
    c_est, c_true = camera_centres(ext_est), camera_centres(ext_true)
    sim = umeyama(c_est, c_true)
    offsets = (sim.apply(c_est) - c_true) / path_length(ext_true)
    centre = np.linalg.norm(offsets, axis=1)
    window = max(1, min(window, len(offsets)))
    box = np.ones(window) / window
    smooth = np.stack([np.convolve(offsets[:, j], box, mode="valid") for j in range(3)], axis=1)
    q = orientation_fit(ext_est[:, :, :3], ext_true[:, :, :3])
    rot = rotation_angle_deg(ext_true[:, :, :3], ext_est[:, :, :3] @ q.T)
    rot_c = rotation_angle_deg(ext_true[:, :, :3], sim.apply_extrinsics(ext_est)[:, :, :3])
    return {"centre_max": float(centre.max()), "centre_mean": float(centre.mean()), "centre_end": float(centre[-1]),
            "drift_max": float(np.linalg.norm(smooth, axis=1).max()),
            "rot_max_deg": float(rot.max()), "rot_mean_deg": float(rot.mean()),
            "rot_max_deg_centre_fit": float(rot_c.max()), "rot_mean_deg_centre_fit": float(rot_c.mean())}


def refine_assembly(asm: Assembly, frame_paths: list, k_model: np.ndarray, width: int, height: int,
                    options: dict | None = None):
    """The product's refinement (vggt_blender.refine, one shared camera by default) of the assembled shot
    reading `frame_paths` (the decoded frames); (refined Reconstruction, RefineReport)."""
    from vggt_blender.io.reconstruction import make_provenance, make_reconstruction
    from vggt_blender.options import RefineOptions
    from vggt_blender.refine import refine_reconstruction

    n = len(asm.extrinsics)
    _, pixel_map, _ = model_geometry(np.eye(3), width, height)
    rec = make_reconstruction(asm.depth, asm.extrinsics, np.repeat(k_model[None], n, 0), depth_conf=asm.depth_conf,
                              image_paths=[str(p) for p in frame_paths], pixel_map=np.tile(pixel_map, (n, 1)),
                              original_sizes=np.tile([width, height], (n, 1)),
                              provenance=make_provenance(checkpoint="stand-in passes, assembled", mode="test"))
    return refine_reconstruction(rec, RefineOptions.from_dict({"shared_intrinsics": True, **(options or {})}))
