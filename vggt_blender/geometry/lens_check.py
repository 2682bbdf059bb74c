"""Is a predicted camera a lens that exists? Flags intrinsics no real lens has (numpy only).

A bad prediction (random weights gave fy = 9.6e8 px) still builds a camera, but Blender clamps the pixel aspect
at 200 and the camera then silently stops matching its photo: say so instead. Bounds, generous on purpose:
- field of view (per axis) from 0.5 degrees (beyond a 4000 mm lens on full frame) to 170 degrees (a pinhole
  cannot see more; fisheye photos are out of the model's range anyway);
- pixel aspect fx/fy from 1/2.5 to 2.5 (real sensors have square pixels; anamorphic squeeze is at most 2x).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MIN_FOV_DEG = 0.5
MAX_FOV_DEG = 170.0
MAX_PIXEL_ASPECT = 2.5


def field_of_view_deg(focal_px: float, size_px: float) -> float:
    """Full field of view (degrees) of a pinhole with focal length `focal_px` over `size_px` pixels."""
    return math.degrees(2.0 * math.atan2(size_px / 2.0, focal_px))


def lens_problems(K: np.ndarray, width: float, height: float) -> list[str]:
    """What is implausible about one camera's intrinsics K (3x3, pixels) for a width x height photo."""
    K = np.asarray(K, dtype=np.float64)
    fx, fy = float(K[0, 0]), float(K[1, 1])
    if not (math.isfinite(fx) and math.isfinite(fy)) or fx <= 0 or fy <= 0:
        return [f"focal length fx = {fx:.4g}, fy = {fy:.4g} px is not a lens"]
    problems = []
    for axis, focal, size in (("horizontal", fx, width), ("vertical", fy, height)):
        fov = field_of_view_deg(focal, size)
        if not MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
            problems.append(f"{axis} field of view {fov:.3g}° (f = {focal:.4g} px over {size:.0f} px) is outside "
                            f"any real lens ({MIN_FOV_DEG:g}°-{MAX_FOV_DEG:g}°)")
    aspect = fx / fy
    if not 1.0 / MAX_PIXEL_ASPECT <= aspect <= MAX_PIXEL_ASPECT:
        problems.append(f"fx/fy = {aspect:.4g} (fx = {fx:.4g}, fy = {fy:.4g} px): no camera has pixels that "
                        f"unequal")
    return problems


def lens_warnings(intrinsics: np.ndarray, sizes: np.ndarray, names: Sequence[str] | None = None,
                  limit: int = 3) -> list[str]:
    """One line per implausible camera (at most `limit`, then a count), naming the photo and what is wrong.

    `intrinsics` is N x 3 x 3 for the original photos, `sizes` N x 2 (width, height). Empty when all is well.
    """
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    lines = []
    bad = 0
    for i in range(len(intrinsics)):
        problems = lens_problems(intrinsics[i], sizes[i][0], sizes[i][1])
        if not problems:
            continue
        bad += 1
        if len(lines) < limit:
            name = str(names[i]) if names is not None and i < len(names) else f"view {i}"
            lines.append(f"{name}: implausible camera, {'; '.join(problems)}; the Blender camera will not match "
                         "the photo (bad weights or an unusual photo?)")
    if bad > len(lines):
        lines.append(f"... {bad - len(lines)} more of {len(intrinsics)} cameras are implausible")
    return lines
