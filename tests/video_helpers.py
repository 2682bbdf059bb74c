"""Shots the video tests write with PyAV: every frame shows its own number as 8 black/white blocks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from vggt_blender.io.reconstruction import make_reconstruction
from vggt_blender.io.shot_fields import shot_extra

BITS = 8
W, H = 160, 120


def frame_pattern(number: int, width: int = W, height: int = H) -> np.ndarray:
    """uint8 [H,W,3]: a row of 8 blocks on top (white = bit set, bit 0 on the left), a texture below."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    img[..., 0] = (xx * 255 // max(width - 1, 1)).astype(np.uint8)
    img[..., 1] = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
    img[..., 2] = ((xx // 8 + yy // 8) % 2 * 200).astype(np.uint8)
    block = width // BITS
    for bit in range(BITS):
        img[: height // 4, bit * block:(bit + 1) * block] = 255 if (number >> bit) & 1 else 0
    return img


def read_number(rgb: np.ndarray) -> int:
    """The number `frame_pattern` drew, read back from an upright (possibly resized) frame."""
    height, width = rgb.shape[:2]
    grey = rgb.astype(np.float64).mean(axis=2)
    block = width / BITS
    value = 0
    for bit in range(BITS):
        x0, x1 = int(bit * block + block * 0.25), int((bit + 1) * block - block * 0.25)
        if grey[int(height * 0.04): int(height * 0.2), x0:x1].mean() > 128:
            value |= 1 << bit
    return value


def write_video(path: Path, count: int = 48, rate: Fraction = Fraction(24000, 1001), width: int = W,
                height: int = H, rotation_ccw: int | None = None, pix_fmt: str = "yuv420p",
                codec: str = "libx264", pts_of=None, gop: int = 12, frame_of=None) -> Path:
    """An H.264 file with B-frames (keyframe every `gop` frames); `pts_of(i)` gives variable timestamps in
    units of 1/(rate*1000)... or None for constant rate. `frame_of(i)` gives frame i (uint8 [H,W,3] RGB);
    default `frame_pattern(i)`."""
    import av

    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "12", "bf": "3", "g": str(gop),
                              "keyint_min": str(gop), "sc_threshold": "0"}
        if pts_of is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        if rotation_ccw is not None:
            stream.set_display_rotation(rotation_ccw)
        for i in range(count):
            rgb = frame_pattern(i, width, height) if frame_of is None else frame_of(i)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts_of is not None:
                frame.pts = int(pts_of(i))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# A synthetic shot reconstruction for the Blender tests (scene, tracks).
CAMERAS_ONLY = dict(create_point_cloud=False, create_depth_planes=False)
MW, MH = 56, 42  # model input (the photo is 160x120: pixel map scale 160/56)


def _yaw(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def shot_reconstruction(numbers, source: Path, rate=Fraction(24000, 1001), kind="video", files=None,
                        first_number=0, total=48, no_point_map=False):
    """Views at `numbers`: the camera turns 340 degrees about the vertical over the shot (keys 20+ degrees
    apart in places, so an unlucky quaternion sign would show as a flip) while it dollies."""
    n = len(numbers)
    E = np.zeros((n, 3, 4))
    for i, f in enumerate(numbers):
        R_wc = _yaw(np.radians(340.0 * f / (total - 1)))
        C = np.array([0.05 * f, 0.0, 0.02 * f])
        E[i, :, :3], E[i, :, 3] = R_wc.T, -R_wc.T @ C
    K = np.repeat(np.array([[[60.0, 0, MW / 2 + 1.5], [0, 58.0, MH / 2 - 1.0], [0, 0, 1]]]), n, 0)
    sx, sy = 160 / MW, 120 / MH
    rec = make_reconstruction(np.full((n, MH, MW), 3.0, np.float32), E, K,
                              pixel_map=np.tile([sx, sy, 0.0, 0.0], (n, 1)),
                              original_sizes=np.tile([160, 120], (n, 1)),
                              image_paths=files or [str(source)] * n, no_point_map=no_point_map,
                              provenance={"model_family": "vggt-omega"} if no_point_map else None)
    rec.extra = shot_extra(numbers, rate.numerator, rate.denominator, str(source), kind, (160, 120), total,
                           first_number)
    return rec


