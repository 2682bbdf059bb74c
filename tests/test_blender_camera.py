"""OpenCV -> Blender camera parameters (pure numpy): hand-computed cases and the projection round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vggt_blender.geometry.blender_camera import (
    blender_camera_params,
    camera_matrix_world,
    opencv_project,
    opencv_to_blender_points,
    project_with_blender_params,
)


def _K(fx, fy, cx, cy):
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _rot(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


IDENTITY_E = np.hstack([np.eye(3), np.zeros((3, 1))])


def test_landscape_off_centre_principal_point_hand_computed():
    p = blender_camera_params(_K(500.0, 500.0, 300.0, 200.0), 640, 427, IDENTITY_E)
    assert p.sensor_fit == "HORIZONTAL"
    assert p.lens == pytest.approx(500 * 36 / 640)  # 28.125 mm
    assert p.shift_x == pytest.approx((320 - 300) / 640)  # +0.03125: principal point left of centre
    assert p.shift_y == pytest.approx((200 - 213.5) / 640)  # -0.02109375: principal point above centre
    assert (p.resolution_x, p.resolution_y) == (640, 427)
    assert (p.pixel_aspect_x, p.pixel_aspect_y) == (1.0, 1.0)


def test_fx_greater_than_fy_sets_pixel_aspect_y():
    # ycor = aspect_y / aspect_x must be fx / fy; the inverted choice is the mistake BLENDER_NOTES lists.
    p = blender_camera_params(_K(600.0, 500.0, 330.0, 220.0), 640, 427, IDENTITY_E)
    assert (p.pixel_aspect_x, p.pixel_aspect_y) == pytest.approx((1.0, 1.2))
    assert p.lens == pytest.approx(600 * 36 / 640)
    assert p.shift_x == pytest.approx((320 - 330) / 640)
    assert p.shift_y == pytest.approx((220 - 213.5) * 1.2 / 640)


def test_fy_greater_than_fx_portrait_sets_pixel_aspect_x():
    p = blender_camera_params(_K(400.0, 500.0, 200.0, 330.0), 427, 640, IDENTITY_E)
    assert (p.pixel_aspect_x, p.pixel_aspect_y) == pytest.approx((1.25, 1.0))
    assert p.lens == pytest.approx(400 * 36 / 427)
    assert p.shift_x == pytest.approx((213.5 - 200) / 427)
    assert p.shift_y == pytest.approx((330 - 320) * 0.8 / 427)


def test_identity_pose_looks_along_blender_plus_y_with_z_up():
    M = camera_matrix_world(IDENTITY_E)
    # Blender cameras look down their local -Z, with local +Y up.
    np.testing.assert_allclose(M[:3, :3] @ [0, 0, -1], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(M[:3, :3] @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(M[:3, 3], 0.0, atol=1e-12)


def test_scale_applies_to_position_only():
    R = _rot(0.3, -0.2, 0.1)
    t = np.array([0.5, -1.0, 2.0])
    E = np.hstack([R, t[:, None]])
    M1 = camera_matrix_world(E, 1.0)
    M3 = camera_matrix_world(E, 3.0)
    np.testing.assert_allclose(M3[:3, :3], M1[:3, :3])
    np.testing.assert_allclose(M3[:3, 3], 3.0 * M1[:3, 3])
    centre_cv = -R.T @ t
    np.testing.assert_allclose(M1[:3, 3], opencv_to_blender_points(centre_cv))
    np.testing.assert_allclose(np.linalg.det(M1[:3, :3]), 1.0)


def test_opencv_to_blender_points_mapping():
    np.testing.assert_allclose(opencv_to_blender_points(np.array([1.0, 2.0, 3.0]), 2.0), [2.0, 6.0, -4.0])
    pts = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    assert opencv_to_blender_points(pts).dtype == np.float32


CASES = [
    # (name, width, height, fx, fy, cx, cy)
    ("landscape_square_pixels", 640, 427, 520.0, 520.0, 301.3, 230.7),
    ("landscape_fx_gt_fy", 640, 427, 610.0, 540.0, 333.0, 201.0),
    ("landscape_fy_gt_fx", 640, 427, 480.0, 560.0, 310.0, 225.0),
    ("portrait_fx_gt_fy", 427, 640, 600.0, 520.0, 200.0, 340.0),
    ("portrait_fy_gt_fx", 427, 640, 450.0, 530.0, 221.0, 300.5),
    ("odd_size", 517, 389, 700.0, 690.0, 258.5, 194.5),
]


@pytest.mark.parametrize("name,W,H,fx,fy,cx,cy", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_blender_model_reproduces_opencv_projection(name, W, H, fx, fy, cx, cy, scale):
    rng = np.random.default_rng(7)
    K = _K(fx, fy, cx, cy)
    R = _rot(*rng.uniform(-0.6, 0.6, 3))
    t = rng.uniform(-1, 1, 3)
    E = np.hstack([R, t[:, None]])
    # Points in front of the camera spread over (and beyond) the image.
    pix = np.c_[rng.uniform(-50, W + 50, 200), rng.uniform(-50, H + 50, 200)]
    depth = rng.uniform(0.5, 20.0, 200)
    cam = np.c_[(pix[:, 0] - cx) / fx * depth, (pix[:, 1] - cy) / fy * depth, depth]
    world = (cam - t) @ R  # R^T (cam - t)
    np.testing.assert_allclose(opencv_project(K, E, world), pix, atol=1e-8)

    params = blender_camera_params(K, W, H, E, scale=scale)
    got = project_with_blender_params(params, opencv_to_blender_points(world, scale))
    np.testing.assert_allclose(got, pix, atol=1e-6)

    # The inverted pixel aspect (a mistake seen in existing add-ons) is visibly wrong whenever fx != fy.
    if fx != fy:
        wrong = dataclasses.replace(params, pixel_aspect_x=params.pixel_aspect_y,
                                    pixel_aspect_y=params.pixel_aspect_x)
        err = np.abs(project_with_blender_params(wrong, opencv_to_blender_points(world, scale)) - pix).max()
        assert err > 5.0


def test_rejects_bad_sizes_and_focals():
    with pytest.raises(ValueError):
        blender_camera_params(_K(500, 500, 1, 1), 0, 10, IDENTITY_E)
    with pytest.raises(ValueError):
        blender_camera_params(_K(-500, 500, 1, 1), 10, 10, IDENTITY_E)
