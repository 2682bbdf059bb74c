"""Does Blender undistort a photo the way the refinement's lens model distorts it? A check through the compositor.

For each COLMAP lens model the refinement solves, tests/lens_undistort.py draws a 640x480 plate with soft dots at
the distorted positions of 35 points, sets a clip's tracking camera with the extension's own `scene/lens.py` (what
an import writes) and undistorts it with the compositor's Movie Distortion node; each dot is compared with the
point's pinhole position, where the extension's camera projects it. Run it with the Python of the Blender to
check (bpy as a module):

    .venv-bpy42/bin/python bench/check_lens_distortion.py      # any bpy: 4.2 to 5.2

Prints one row per model: the largest and mean distance in pixels; the uniform shift of the whole image some
Blender versions' node adds and what is left after removing it (the lens model's own error); and the distance
for the plate as drawn (what leaving the distortion out would cost).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import bpy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.lens_undistort import CASES, F, H, W, measure  # noqa: E402
from vggt_blender.extension_package import load_extension_package  # noqa: E402


def main() -> int:
    ext = load_extension_package("_vggt_ext_lens_check")
    lens = importlib.import_module(f"{ext.__name__}.scene.lens")
    print(f"Blender {bpy.app.version_string}, {W}x{H}, f {F} px")
    print("| model | undistorted: max / mean px | its uniform shift (x, y) px | max after the shift px "
          "| plate as drawn: max / mean px |")
    print("|---|---:|---:|---:|---:|")
    for name, (model, params) in CASES.items():
        r = measure(lens, model, params)
        note = f" ({'; '.join(r['warnings'])})" if r["warnings"] else ""
        print(f"| {name} ({r['fields']['distortion_model']}){note} | {r['error'].max():.3f} / "
              f"{r['error'].mean():.3f} | {r['shift'][0]:+.2f}, {r['shift'][1]:+.2f} | {r['shape_error'].max():.3f} "
              f"| {r['drawn_error'].max():.2f} / {r['drawn_error'].mean():.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
