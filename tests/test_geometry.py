"""Geometry: rotations, pose encoding, photo intrinsics, unprojection/projection, Blender axes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggt_blender.geometry import cameras as g
from vggt_blender.preprocess import preprocess_images

RNG = np.random.default_rng(1234)


def _random_extrinsics(n: int) -> np.ndarray:
    rot = g.quat_to_mat(RNG.normal(size=(n, 4)))
    t = RNG.normal(size=(n, 3, 1))
    return np.concatenate([rot, t], axis=-1)


# ---------------------------------------------------------------------------------------------------------
# Rotations


def test_quat_to_mat_known_rotation_and_normalisation() -> None:
    s = math.sqrt(0.5)
    rz90 = g.quat_to_mat([0.0, 0.0, s, s])  # 90 degrees about z, scalar last
    np.testing.assert_allclose(rz90, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    # A non-unit quaternion gives the same rotation (|q|^2 division).
    np.testing.assert_allclose(g.quat_to_mat([0.0, 0.0, 3 * s, 3 * s]), rz90, atol=1e-15)
    np.testing.assert_allclose(g.quat_to_mat([0.0, 0.0, 0.0, 2.0]), np.eye(3), atol=1e-15)


def test_quaternion_matrix_round_trip() -> None:
    q = RNG.normal(size=(500, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[:, 3:] < 0, -q, q)
    # Include the awkward near-180-degree cases where w ~ 0 and another pivot must be used.
    q[:4] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.6, 0.8, 0, 0]]
    rot = g.quat_to_mat(q)
    assert np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max() < 1e-14
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-14)
    back = g.mat_to_quat(rot)
    assert (back[:, 3] >= 0).all()
    # q and -q are the same rotation; compare as rotations and (away from w = 0) as numbers.
    np.testing.assert_allclose(g.quat_to_mat(back), rot, atol=1e-14)
    np.testing.assert_allclose(back[4:], q[4:], atol=1e-14)


# ---------------------------------------------------------------------------------------------------------
# Pose encoding


def test_pose_encoding_decodes_hand_computed_case() -> None:
    # Landscape model input 518x392: fx = 400, fy = 300 (fx != fy), principal point at the centre.
    height, width = 392, 518
    fov_h = 2 * math.atan((height / 2) / 300.0)
    fov_w = 2 * math.atan((width / 2) / 400.0)
    s = math.sqrt(0.5)
    enc = np.array([[[0.1, -0.2, 0.3, 0.0, 0.0, s, s, fov_h, fov_w]]])  # [B=1, S=1, 9]
    ext, k = g.pose_encoding_to_extrinsics_intrinsics(enc, (height, width))
    assert ext.shape == (1, 1, 3, 4) and k.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(ext[0, 0], [[0, -1, 0, 0.1], [1, 0, 0, -0.2], [0, 0, 1, 0.3]], atol=1e-15)
    np.testing.assert_allclose(k[0, 0], [[400, 0, 259], [0, 300, 196], [0, 0, 1]], atol=1e-12)


def test_pose_encoding_round_trip_portrait() -> None:
    height, width = 518, 392  # portrait model input
    n = 6
    ext = _random_extrinsics(n)
    k = np.zeros((n, 3, 3))
    k[:, 0, 0] = RNG.uniform(200, 900, n)
    k[:, 1, 1] = RNG.uniform(200, 900, n)
    k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = width / 2, height / 2, 1.0
    enc = g.extrinsics_intrinsics_to_pose_encoding(ext, k, (height, width))
    assert enc.shape == (n, 9)
    ext2, k2 = g.pose_encoding_to_extrinsics_intrinsics(enc, (height, width))
    np.testing.assert_allclose(ext2, ext, atol=1e-12)
    np.testing.assert_allclose(k2, k, rtol=1e-12)
    enc2 = g.extrinsics_intrinsics_to_pose_encoding(ext2, k2, (height, width))
    np.testing.assert_allclose(enc2, enc, atol=1e-12)


def test_float32_pose_encoding_is_decoded_in_float64() -> None:
    enc = np.array([0, 0, 0, 0, 0, 0, 1, 1.0, 1.2], dtype=np.float32)
    ext, k = g.pose_encoding_to_extrinsics_intrinsics(enc, (392, 518))
    assert ext.dtype == np.float64 and k.dtype == np.float64
    np.testing.assert_allclose(k[1, 1], 196 / math.tan(float(np.float32(1.0)) / 2), rtol=1e-15)


def test_zero_field_of_view_gives_finite_intrinsics() -> None:
    _, k = g.pose_encoding_to_extrinsics_intrinsics(np.array([0, 0, 0, 0, 0, 0, 1, 0.0, 0.0]), (392, 518))
    assert np.isfinite(k).all() and k[0, 0] > 1e8


# ---------------------------------------------------------------------------------------------------------
# Extrinsics, unprojection, projection


def test_invert_extrinsics_closed_form() -> None:
    ext = _random_extrinsics(5)
    inv = g.invert_extrinsics(ext)
    as4 = np.concatenate([ext, np.tile([[[0, 0, 0, 1.0]]], (5, 1, 1))], axis=1)
    np.testing.assert_allclose(inv, np.linalg.inv(as4)[:, :3], atol=1e-12)


def test_depth_to_camera_points_hand_computed() -> None:
    # Principal point off centre and fx != fy.
    k = np.array([[2.0, 0, 0.5], [0, 4.0, 1.5], [0, 0, 1]])
    depth = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # H=2, W=3
    pts = g.depth_to_camera_points(depth, k, pixel_centers=False)
    assert pts.shape == (2, 3, 3)
    # u = 2, v = 0, d = 3: x = (2 - 0.5) * 3 / 2, y = (0 - 1.5) * 3 / 4 (integer indices, no +0.5).
    np.testing.assert_allclose(pts[0, 2], [2.25, -1.125, 3.0])
    # u = 0, v = 1, d = 4: x = -0.5 * 4 / 2, y = -0.5 * 4 / 4.
    np.testing.assert_allclose(pts[1, 0], [-1.0, -0.5, 4.0])
    # [H, W, 1] depth is accepted too.
    np.testing.assert_array_equal(g.depth_to_camera_points(depth[..., None], k, pixel_centers=False), pts)
    # Default: rays through pixel centres. u = 2, v = 0 -> (2.5 - 0.5) * 3 / 2, (0.5 - 1.5) * 3 / 4.
    np.testing.assert_allclose(g.depth_to_camera_points(depth, k)[0, 2], [3.0, -0.75, 3.0])


def _reference_unprojection(depth: np.ndarray, ext: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Pixel-by-pixel statement of the official unprojection (spec section 7), for comparison."""
    n, h, w = depth.shape
    out = np.zeros((n, h, w, 3))
    for i in range(n):
        rot, t = ext[i, :, :3], ext[i, :, 3]
        for v in range(h):
            for u in range(w):
                d = depth[i, v, u]
                cam = np.array([(u - k[i, 0, 2]) * d / k[i, 0, 0], (v - k[i, 1, 2]) * d / k[i, 1, 1], d])
                out[i, v, u] = rot.T @ cam - rot.T @ t
    return out


def test_depth_to_world_points_matches_official_formula_portrait() -> None:
    n, h, w = 2, 7, 5  # portrait
    depth = RNG.uniform(0.5, 3.0, (n, h, w)).astype(np.float32)
    ext = _random_extrinsics(n)
    k = np.array([[[6.0, 0, 2.5], [0, 5.0, 3.5], [0, 0, 1]], [[4.0, 0, 1.0], [0, 9.0, 4.0], [0, 0, 1]]])
    world = g.depth_to_world_points(depth, ext, k, pixel_centers=False)
    assert world.shape == (n, h, w, 3) and world.dtype == np.float64
    np.testing.assert_allclose(world, _reference_unprojection(depth.astype(np.float64), ext, k), atol=1e-12)
    as_f32 = g.depth_to_world_points(depth[..., None], ext, k, dtype=np.float32, pixel_centers=False)
    assert as_f32.dtype == np.float32
    np.testing.assert_array_equal(as_f32, world.astype(np.float32))


def test_unproject_then_project_returns_pixel_centres() -> None:
    n, h, w = 3, 6, 9
    depth = RNG.uniform(0.5, 5.0, (n, h, w))
    ext = _random_extrinsics(n)
    _, k = g.pose_encoding_to_extrinsics_intrinsics(
        np.concatenate([np.zeros((n, 6)), np.ones((n, 1)), RNG.uniform(0.6, 1.6, (n, 2))], axis=1), (h, w)
    )
    world = g.depth_to_world_points(depth, ext, k)
    pixels, z = g.project_points(world.reshape(n, h * w, 3), ext, k, return_depth=True)
    vv, uu = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(pixels[..., 0].reshape(n, h, w), np.broadcast_to(uu + 0.5, (n, h, w)), atol=1e-9)
    np.testing.assert_allclose(pixels[..., 1].reshape(n, h, w), np.broadcast_to(vv + 0.5, (n, h, w)), atol=1e-9)
    np.testing.assert_allclose(z.reshape(n, h, w), depth, rtol=1e-12)


def test_project_points_hand_computed() -> None:
    ext = np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2.0]])  # camera 2 units behind the origin
    k = np.array([[100.0, 0, 50], [0, 200.0, 30], [0, 0, 1]])
    px = g.project_points(np.array([[1.0, -1.0, 2.0]]), ext, k)  # camera point (1, -1, 4)
    np.testing.assert_allclose(px, [[100 * 0.25 + 50, 200 * -0.25 + 30]])


# ---------------------------------------------------------------------------------------------------------
# Photo intrinsics


def test_intrinsics_to_photo_hand_computed() -> None:
    k_model = np.array([[400.0, 0, 259], [0, 300.0, 196], [0, 0, 1]])
    k_photo = g.intrinsics_to_photo(k_model, np.array([2.0, 3.0, 10.0, -20.0]))
    np.testing.assert_allclose(k_photo, [[800, 0, 528], [0, 900, 568], [0, 0, 1]])
    batched = g.intrinsics_to_photo(np.stack([k_model] * 2), np.array([[1, 1, 0, 0], [2.0, 3.0, 10.0, -20.0]]))
    np.testing.assert_allclose(batched[1], k_photo)
    np.testing.assert_allclose(batched[0], k_model)


def _marker_photo(path: Path, size: tuple[int, int], marker: tuple[int, int], half: int = 12) -> None:
    arr = np.full((size[1], size[0], 3), 128, dtype=np.uint8)
    arr[marker[1] - half : marker[1] + half, marker[0] - half : marker[0] + half] = (255, 0, 0)
    Image.fromarray(arr).save(path)


def _red_centroid(image_chw: np.ndarray) -> tuple[float, float]:
    weight = np.clip(image_chw[0].astype(np.float64) - image_chw[1], 0.0, None)
    ys, xs = np.indices(weight.shape)
    return float((weight * xs).sum() / weight.sum() + 0.5), float((weight * ys).sum() / weight.sum() + 0.5)


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_model_ray_lands_on_the_photo_pixel_through_photo_intrinsics(tmp_path: Path, mode: str) -> None:
    """A ray through the marker in the model image, projected with K_photo, hits the marker in the photo.

    Landscape + portrait photos: crop mode exercises the centre crop and batch padding, pad mode the padding.
    """
    photos = {"land.png": ((1200, 800), (900, 150)), "port.png": ((800, 1200), (200, 900))}
    for name, (size, marker) in photos.items():
        _marker_photo(tmp_path / name, size, marker)
    result = preprocess_images([str(tmp_path / n) for n in photos], mode=mode)
    width, height = result.model_size
    s = math.sqrt(0.5)
    enc = np.array([[0.3, 0.1, -0.2, 0.1, 0.2, s, s, 1.1, 1.3], [0, 0, 0, 0, 0, 0, 1, 0.8, 0.95]])
    ext, k_model = g.pose_encoding_to_extrinsics_intrinsics(enc, (height, width))
    k_photo = g.intrinsics_to_photo(k_model, result.pixel_map)
    for i, (_, marker) in enumerate(photos.values()):
        x_model, y_model = _red_centroid(result.images_np[i])
        # Back-project the continuous model pixel at depth 2.5, then project into the photo.
        ray = np.linalg.inv(k_model[i]) @ np.array([x_model, y_model, 1.0]) * 2.5
        world = g.invert_extrinsics(ext[i])[:, :3] @ ray + g.invert_extrinsics(ext[i])[:, 3]
        px = g.project_points(world[None], ext[i], k_photo[i])[0]
        np.testing.assert_allclose(px, marker, atol=0.25)
        np.testing.assert_allclose(px, g.model_to_photo_pixels([x_model, y_model], result.pixel_map[i]), atol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# Blender axes


def test_opencv_to_blender_world() -> None:
    pts = RNG.normal(size=(4, 3))
    blender = g.opencv_world_to_blender(pts)
    np.testing.assert_allclose(blender, pts[:, [0, 2, 1]] * [1, 1, -1])
    homogeneous = np.concatenate([pts, np.ones((4, 1))], axis=1) @ g.OPENCV_TO_BLENDER_WORLD.T
    np.testing.assert_allclose(homogeneous[:, :3], blender)
    assert np.linalg.det(g.OPENCV_TO_BLENDER_WORLD[:3, :3]) == pytest.approx(1.0)  # a rotation, no mirror
    # The camera's forward (+z) becomes Blender +Y and image-down (+y) becomes Blender -Z.
    np.testing.assert_allclose(g.opencv_world_to_blender([0, 0, 1.0]), [0, 1, 0])
    np.testing.assert_allclose(g.opencv_world_to_blender([0, 1.0, 0]), [0, 0, -1])


def test_unproject_pixels_matches_the_grid_derivation_at_pixel_centres() -> None:
    from vggt_blender.geometry import derive

    rng = np.random.default_rng(3)
    depth = rng.uniform(1.0, 3.0, (2, 5, 7))
    ext = np.zeros((2, 3, 4))
    ext[:, :, :3] = g.quat_to_mat(rng.normal(size=(2, 4)))
    ext[:, :, 3] = rng.normal(size=(2, 3))
    k = np.array([[[6.0, 0, 3.5], [0, 6.5, 2.5], [0, 0, 1]]] * 2)
    grid = derive.world_points(depth, ext, k)
    vv, uu = np.mgrid[0:5, 0:7] + 0.5
    for i in range(2):
        pts = derive.unproject_pixels(uu, vv, depth[i], ext[i], k[i])
        np.testing.assert_allclose(pts, grid[i], rtol=1e-5, atol=1e-5)
        # and each point projects back to the pixel it came from, at its depth
        px, z = g.project_points(pts.reshape(-1, 3), ext[i], k[i], return_depth=True)
        np.testing.assert_allclose(px, np.stack([uu.ravel(), vv.ravel()], -1), atol=1e-9)
        np.testing.assert_allclose(z, depth[i].ravel(), rtol=1e-12)
