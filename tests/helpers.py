"""Helpers shared by several test modules (import them as `from tests.helpers import ...`: conftest.py puts the
repository root on sys.path). Heavy packages are imported inside the helpers that need them, so the Blender
tests (no torch, no Pillow in Blender 4.2's environment) can import this module too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vggt_blender.io.reconstruction import Reconstruction, make_provenance, make_reconstruction

FIXTURES = Path(__file__).parent / "fixtures"
TINY_CONFIG = FIXTURES / "parity" / "tiny" / "config.json"
TINY_OMEGA_CONFIG = FIXTURES / "parity" / "omega_tiny" / "config.json"


def synthetic_reconstruction(num_images: int = 3, height: int = 28, width: int = 42, seed: int = 0) -> Reconstruction:
    """A small, plausible reconstruction for tests: cameras on an arc looking at a bumpy wall.

    Camera 0 is the identity; the others rotate about the y axis by 10 degrees per image and sit to the
    side. Depth is 2 +- 0.3, confidences span 1..10, colours vary with the pixel. Deterministic in `seed`.
    """
    rng = np.random.default_rng(seed)
    n, h, w = num_images, height, width
    focal = 0.9 * max(h, w)
    k = np.array([[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]])
    extrinsics = np.zeros((n, 3, 4))
    for i in range(n):
        a = np.deg2rad(10.0 * i)
        rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
        centre = np.array([-0.4 * i, 0.0, 0.05 * i])
        extrinsics[i, :, :3] = rot
        extrinsics[i, :, 3] = -rot @ centre
    yy, xx = np.mgrid[0:h, 0:w]
    depth = 2.0 + 0.3 * np.sin(xx / w * 2 * np.pi)[None] * np.cos(yy / h * np.pi)[None] + rng.uniform(
        -0.01, 0.01, (n, h, w))
    conf = 1.0 + 9.0 * rng.random((n, h, w))
    colors = np.stack([np.broadcast_to(xx * 255 // max(w - 1, 1), (n, h, w)),
                       np.broadcast_to(yy * 255 // max(h - 1, 1), (n, h, w)),
                       np.broadcast_to((np.arange(n) * 60 % 256)[:, None, None], (n, h, w))], axis=-1)
    paths = [f"/photos/synthetic_{i:02d}.jpg" for i in range(n)]
    return make_reconstruction(
        depth, extrinsics, np.repeat(k[None], n, axis=0), colors=colors.astype(np.uint8), depth_conf=conf,
        point_map_conf=conf[:, ::-1].copy(), image_paths=paths,
        provenance=make_provenance(checkpoint="synthetic", mode="crop", precision="fp32", device="cpu",
                                   timings={"inference": 0.0}),
    )


def tiny_model() -> "torch.nn.Module":
    import torch

    from vggt_blender.model import VGGT, VGGTConfig

    torch.manual_seed(0)
    model = VGGT(VGGTConfig.load(TINY_CONFIG)).eval()
    # Random weights predict any field of view (0 after the ReLU, or beyond pi): pin both FoV outputs to
    # 1 radian (4 refinement iterations each add 0.25) so the cameras are usable.
    with torch.no_grad():
        model.camera_head.pose_branch.fc2.weight[7:9] = 0.0
        model.camera_head.pose_branch.fc2.bias[7:9] = 0.25
    return model


def write_tiny_checkpoint(folder: Path) -> Path:
    import torch

    path = folder / "model.pt"
    torch.save(tiny_model().state_dict(), path)
    return path


def tiny_omega_model() -> "torch.nn.Module":
    """A small VGGT-Omega (the parity fixture's config) with random weights and usable cameras."""
    import torch

    from vggt_blender.model import VGGTOmega, VGGTOmegaConfig

    torch.manual_seed(0)
    model = VGGTOmega(VGGTOmegaConfig.load(TINY_OMEGA_CONFIG)).eval()
    # As for tiny_model: pin both field-of-view outputs (ReLU + floor) to about 1 radian.
    with torch.no_grad():
        last = model.camera_head.camera_branch[-1]
        last.weight[7:9] = 0.0
        last.bias[7:9] = 1.0
    return model


def write_tiny_omega_checkpoint(folder: Path, name: str = "omega.pt") -> Path:
    """The official layout (a raw state dict saved with torch.save, buffers included) of `tiny_omega_model`."""
    import torch

    path = folder / name
    torch.save(tiny_omega_model().state_dict(), path)
    return path


def photo_pixels(width: int, height: int, shift: int) -> np.ndarray:
    """Smooth, position-coded colours (R from x, G from y) plus a little texture that moves with `shift`."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 20 + 200 * (xx + 0.5) / width
    green = 20 + 200 * (yy + 0.5) / height
    blue = 128 + 60 * np.sin((xx + shift) / 5.0) * np.cos(yy / 7.0)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).round().astype(np.uint8)


def write_photos(folder: Path, count: int = 3, size: tuple[int, int] = (160, 120)) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"view_{index}.png"
        Image.fromarray(photo_pixels(size[0], size[1], 6 * index)).save(path)
        paths.append(path)
    return paths


def unproject(depth: np.ndarray, extrinsics: np.ndarray, k_model: np.ndarray) -> np.ndarray:
    """Independent reference: rays through pixel centres, camera -> world with the inverted [R|t]."""
    n, h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    out = np.empty((n, h, w, 3))
    for i in range(n):
        k = k_model[i]
        cam = np.stack([(u - k[0, 2]) * depth[i] / k[0, 0], (v - k[1, 2]) * depth[i] / k[1, 1], depth[i]], -1)
        rot, t = extrinsics[i, :, :3], extrinsics[i, :, 3]
        out[i] = (cam - t) @ rot
    return out


def check_consistent(rec, photos: dict[str, np.ndarray]) -> None:
    """The stored arrays agree with each other and with the photos."""
    n = rec.num_images
    h, w = rec.model_hw
    assert rec.depth.shape == (n, h, w) and np.all(rec.depth > 0)
    assert np.all(rec.depth_conf >= 1.0) and np.all(rec.point_map_conf >= 1.0)
    # Unprojecting depth with the stored cameras gives the stored world points.
    np.testing.assert_allclose(rec.world_points, unproject(rec.depth, rec.extrinsics, rec.intrinsics_model),
                               rtol=1e-4, atol=1e-5)
    for i in range(n):
        k = rec.intrinsics_model[i]
        assert k[0, 2] == pytest.approx(w / 2) and k[1, 2] == pytest.approx(h / 2)
        # Photo intrinsics send a camera point to the photo pixel that the pixel map gives for its model pixel.
        x0, y0, x1, y1 = rec.valid_box[i]
        ys, xs = np.mgrid[y0:y1:17, x0:x1:23].reshape(2, -1)
        centre = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs, dtype=float)])
        ray = np.linalg.inv(k) @ centre * 2.5
        model_px = (k @ ray)[:2] / (k @ ray)[2]
        photo_px = (rec.intrinsics[i] @ ray)[:2] / (rec.intrinsics[i] @ ray)[2]
        sx, sy, ox, oy = rec.pixel_map[i]
        np.testing.assert_allclose(photo_px[0], sx * model_px[0] + ox, atol=1e-6)
        np.testing.assert_allclose(photo_px[1], sy * model_px[1] + oy, atol=1e-6)
        # ... and that photo pixel has the model pixel's colour (R encodes x, G encodes y in the test photos).
        photo = photos[rec.image_names[i]]
        ph, pw = photo.shape[:2]
        assert tuple(rec.original_sizes[i]) == (pw, ph)
        px = np.clip(np.floor(photo_px[0]).astype(int), 0, pw - 1)
        py = np.clip(np.floor(photo_px[1]).astype(int), 0, ph - 1)
        inner = (px > 2) & (px < pw - 3) & (py > 2) & (py < ph - 3)
        got = rec.colors[i, ys, xs][inner].astype(int)
        want = photo[py, px][inner].astype(int)
        assert np.abs(got[:, :2] - want[:, :2]).max() <= 4
        # Padding is marked invalid, the rest valid.
        assert rec.valid_mask[i].sum() == (x1 - x0) * (y1 - y0)


def save_png(path, rgb_u8: np.ndarray) -> None:
    """Write an 8-bit RGB PNG with Blender itself (no Pillow needed in the Blender 4.2 test env)."""
    import bpy

    h, w = rgb_u8.shape[:2]
    img = bpy.data.images.new("png_writer", w, h, alpha=False)
    rgba = np.ones((h, w, 4), dtype=np.float32)
    rgba[..., :3] = rgb_u8 / 255.0
    img.pixels.foreach_set(rgba[::-1].reshape(-1))  # Blender stores the bottom row first
    img.filepath_raw = str(path)
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)


def nearest_rows(source: np.ndarray, rows: np.ndarray, tol: float) -> np.ndarray:
    """Index into `source` [P,3] of the point within `tol` (max norm) of each of `rows` [Q,3]; AssertionError when
    a row has none. Sorted on x so each row compares with a handful of candidates, not all P points."""
    source = np.asarray(source, dtype=np.float64)
    order = np.argsort(source[:, 0], kind="stable")
    xs = source[order, 0]
    found = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(np.asarray(rows, dtype=np.float64)):
        lo, hi = np.searchsorted(xs, [row[0] - tol, row[0] + tol])
        candidates = order[lo:hi]
        distance = np.abs(source[candidates] - row).max(axis=1) if len(candidates) else np.empty(0)
        assert len(distance) and distance.min() <= tol, f"row {i} ({row}) matches no point within {tol}"
        found[i] = candidates[int(np.argmin(distance))]
    return found
