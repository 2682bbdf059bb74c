"""The lens the import writes, checked by Blender itself: its compositor undistorts a plate drawn with COLMAP's
lens model, and every dot must land where the pinhole camera projects its point (tests/lens_undistort.py)."""

from __future__ import annotations

import importlib

import pytest

pytest.importorskip("bpy")

from tests.lens_undistort import CASES, measure  # noqa: E402
from vggt_blender.extension_package import load_extension_package  # noqa: E402

EXT = load_extension_package("_vggt_ext_tests")
lens = importlib.import_module(f"{EXT.__name__}.scene.lens")


@pytest.mark.parametrize("case", list(CASES))
def test_blender_undistorts_the_plate_onto_the_pinhole_camera(case, tmp_path):
    model, params = CASES[case]
    r = measure(lens, model, params, tmp_path)
    assert r["warnings"] == []
    assert r["drawn_error"].max() > 5.0  # the plate really is distorted
    # The lens model itself: within a few hundredths of a pixel once the node's whole-image shift is removed
    # (Blender 4.5 to 5.2 move the undistorted image by half or whole pixels; 4.2 does not).
    assert r["shape_error"].max() < 0.1, r["shape_error"].max()
    assert abs(r["shift"]).max() <= 2.5
