"""Implausible intrinsics are flagged (pure numpy), with the photo named and the numbers that are wrong."""

from __future__ import annotations

import numpy as np
import pytest

from vggt_blender.geometry.lens_check import field_of_view_deg, lens_problems, lens_warnings


def _K(fx, fy, w=640, h=427):
    return np.array([[fx, 0, w / 2], [0, fy, h / 2], [0, 0, 1.0]])


def test_field_of_view_hand_computed():
    assert field_of_view_deg(320.0, 640.0) == pytest.approx(90.0)
    assert field_of_view_deg(640 / (2 * np.tan(np.radians(30))), 640.0) == pytest.approx(60.0)


@pytest.mark.parametrize("fx,fy", [(500.0, 480.0), (26.0e3, 26.0e3), (60.0, 60.0)])
def test_real_lenses_pass(fx, fy):
    # A phone's main camera, a 1000 mm lens on a 640 px wide photo (~1.4°), an ultra-wide (~158°).
    assert lens_problems(_K(fx, fy), 640, 427) == []


def test_random_weights_focal_is_flagged():
    # What random weights gave: fy = 9.6e8 px (a field of view of ~3e-5 degrees; Blender clamps pixel aspect).
    problems = lens_problems(_K(480.0, 9.6e8), 640, 427)
    assert len(problems) == 2
    assert "vertical field of view" in problems[0] and "9.6e+08" in problems[0]
    assert "fx/fy = 5e-07" in problems[1]


@pytest.mark.parametrize("fx,fy,needle", [
    (30.0, 30.0, "horizontal field of view 169"),  # just inside 170° horizontally, vertically fine
    (20.0, 20.0, "horizontal field of view 173°"),
    (500.0, 1300.0, "fx/fy = 0.3846"),
    (float("nan"), 500.0, "is not a lens"),
    (-500.0, 500.0, "is not a lens"),
])
def test_bounds(fx, fy, needle):
    text = "; ".join(lens_problems(_K(fx, fy), 640, 427))
    if needle.endswith("169"):
        assert "horizontal" not in text
    else:
        assert needle in text


def test_warning_lines_name_the_photo_and_count_the_rest():
    K = np.stack([_K(500, 500)] + [_K(500, 9.6e8)] * 5)
    sizes = np.array([(640, 427)] * 6)
    names = [f"IMG_{i}" for i in range(6)]
    lines = lens_warnings(K, sizes, names, limit=2)
    assert len(lines) == 3
    assert lines[0].startswith("IMG_1: implausible camera, vertical field of view")
    assert lines[1].startswith("IMG_2: ")
    assert lines[2] == "... 3 more of 6 cameras are implausible"
    assert lens_warnings(K[:1], sizes[:1], names[:1]) == []
