"""Shots the video tests write with PyAV: every frame shows its own number as 8 black/white blocks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

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
                codec: str = "libx264", pts_of=None, gop: int = 12) -> Path:
    """An H.264 file with B-frames (keyframe every `gop` frames); `pts_of(i)` gives variable timestamps in
    units of 1/(rate*1000)... or None for constant rate."""
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
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            if pts_of is not None:
                frame.pts = int(pts_of(i))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
