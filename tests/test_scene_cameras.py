"""Cameras in Blender (bpy): Blender's own projection reproduces the OpenCV one on the original photo."""

from __future__ import annotations

import importlib

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from tests.helpers import save_png
from vggt_blender.extension_package import load_extension_package
from vggt_blender.geometry.blender_camera import blender_camera_params, opencv_to_blender_points
from vggt_blender.io.reconstruction import make_reconstruction
from vggt_blender.options import SceneOptions

EXT = load_extension_package("_vggt_ext_tests")
build = importlib.import_module(f"{EXT.__name__}.scene.build")
cameras = importlib.import_module(f"{EXT.__name__}.scene.cameras")
look_through = importlib.import_module(f"{EXT.__name__}.operators.look_through")

CAMERAS_ONLY = dict(create_point_cloud=False, create_depth_planes=False, background_images=False)


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    yield


def _rot(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    return (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))


def _views(model_w, model_h, photos, seed=0):
    """A reconstruction of len(photos) views: photos = [(W, H, (sx, sy, ox, oy), valid_box)]."""
    rng = np.random.default_rng(seed)
    n = len(photos)
    K = np.zeros((n, 3, 3))
    E = np.zeros((n, 3, 4))
    for i in range(n):
        # fx != fy and the principal point off the image centre.
        K[i] = [[1.10 * model_w, 0, model_w / 2 + 7.3], [0, 1.04 * model_w, model_h / 2 - 5.1], [0, 0, 1]]
        E[i, :, :3] = _rot(*rng.uniform(-0.5, 0.5, 3))
        E[i, :, 3] = rng.uniform(-1, 1, 3)
    depth = np.full((n, model_h, model_w), 2.0, dtype=np.float32)
    return make_reconstruction(
        depth, E, K,
        pixel_map=np.array([p[2] for p in photos]),
        valid_box=np.array([p[3] for p in photos]),
        original_sizes=np.array([(p[0], p[1]) for p in photos]),
        image_paths=[f"/photos/set/view_{i}.jpg" for i in range(n)],
    )


# Pixel maps as the preprocessing makes them (resize to a multiple of 14, centre crop or pad).
CROP_PORTRAIT = (427, 640, (427 / 518, 640 / 776, 0.0, 129 * 640 / 776), (0, 0, 518, 518))
CROP_LANDSCAPE = (640, 427, (640 / 518, 427 / 350, 0.0, 0.0), (0, 0, 518, 350))
PAD_LANDSCAPE = (640, 427, (640 / 518, 427 / 350, 0.0, -84 * 427 / 350), (0, 84, 518, 434))
PAD_PORTRAIT = (427, 640, (427 / 350, 640 / 518, -84 * 427 / 350, 0.0), (84, 0, 434, 518))

SETS = {
    "crop_landscape": (518, 350, [CROP_LANDSCAPE]),
    "crop_portrait": (518, 518, [CROP_PORTRAIT]),
    "pad_mixed_sizes": (518, 518, [PAD_LANDSCAPE, PAD_PORTRAIT]),
}


@pytest.mark.parametrize("scale", [1.0, 3.0])
@pytest.mark.parametrize("set_name", list(SETS))
def test_blender_projection_matches_opencv_on_original_photo(set_name, scale):
    model_w, model_h, photos = SETS[set_name]
    rec = _views(model_w, model_h, photos)
    col = build.build_scene(rec, SceneOptions(scale=scale, **CAMERAS_ONLY), "set")
    scene = bpy.context.scene
    cams = sorted((o for o in col.objects if o.get("vggt_kind") == "camera"), key=lambda o: o["vggt_view_index"])
    assert [c.name for c in cams] == list(rec.image_names)
    rng = np.random.default_rng(1)
    for i, cam in enumerate(cams):
        W, H = (int(v) for v in rec.original_sizes[i])
        assert (cam["vggt_image_width"], cam["vggt_image_height"]) == (W, H)
        cameras.activate_camera(scene, cam)  # sets the scene resolution / pixel aspect of this photo
        assert (scene.render.resolution_x, scene.render.resolution_y) == (W, H)
        # Points seen at known photo pixels (inside and a little outside the photo).
        pix = np.c_[rng.uniform(-20, W + 20, 50), rng.uniform(-20, H + 20, 50)]
        d = rng.uniform(0.5, 8.0, 50)
        K = rec.intrinsics[i]
        ray = np.linalg.solve(K, np.c_[pix, np.ones(50)].T).T
        R, t = rec.extrinsics[i][:, :3], rec.extrinsics[i][:, 3]
        world = (ray * d[:, None] - t) @ R
        got = []
        for p in opencv_to_blender_points(world, scale):
            ndc = world_to_camera_view(scene, cam, Vector(p.tolist()))
            got.append((ndc.x * W, (1.0 - ndc.y) * H))
        err = np.abs(np.array(got) - pix).max()
        print(f"{set_name} {cam.name} max error {err:.2e} px")
        assert err < 0.01, f"{cam.name}: {err:.4f} px"


def test_camera_data_and_properties():
    rec = _views(518, 518, [PAD_LANDSCAPE, PAD_PORTRAIT])
    col = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "props")
    cam = col.objects[rec.image_names[1]]
    p = blender_camera_params(rec.intrinsics[1], 427, 640, rec.extrinsics[1])
    assert cam.data.sensor_fit == "HORIZONTAL"
    assert cam.data.lens == pytest.approx(p.lens, rel=1e-6)
    assert cam.data.shift_x == pytest.approx(p.shift_x, abs=1e-7)
    assert cam.data.shift_y == pytest.approx(p.shift_y, abs=1e-7)
    assert cam["vggt_kind"] == "camera" and cam["vggt_view_index"] == 1
    assert cam["vggt_image_path"] == rec.display_paths[1]
    assert (cam["vggt_pixel_aspect_x"], cam["vggt_pixel_aspect_y"]) == pytest.approx(
        (p.pixel_aspect_x, p.pixel_aspect_y))
    np.testing.assert_allclose(np.array(cam.matrix_world), p.matrix_world, atol=1e-6)


def test_look_through_operator_applies_each_cameras_photo_size():
    rec = _views(518, 518, [PAD_LANDSCAPE, PAD_PORTRAIT])
    col = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "look")
    for cls in look_through.classes:
        bpy.utils.register_class(cls)
    try:
        scene = bpy.context.scene
        for i, (W, H) in enumerate(rec.original_sizes):
            name = rec.image_names[i]
            assert bpy.ops.vggt.look_through(camera=name) == {"FINISHED"}
            assert scene.camera == col.objects[name]
            assert (scene.render.resolution_x, scene.render.resolution_y) == (W, H)
            p = blender_camera_params(rec.intrinsics[i], W, H, rec.extrinsics[i])
            assert scene.render.pixel_aspect_x == pytest.approx(p.pixel_aspect_x, rel=1e-6)
            assert scene.render.pixel_aspect_y == pytest.approx(p.pixel_aspect_y, rel=1e-6)
        with pytest.raises(RuntimeError, match="not a camera"):
            bpy.ops.vggt.look_through(camera="no such camera")
        # From a 3D view: that view looks through the camera (a view-local camera) in camera perspective.
        screen = bpy.context.window.screen if bpy.context.window else None
        area = next((a for a in screen.areas if a.type == "VIEW_3D"), None) if screen else None
        if area is not None:
            name = rec.image_names[1]
            with bpy.context.temp_override(area=area):
                assert bpy.ops.vggt.look_through(camera=name) == {"FINISHED"}
            space = area.spaces.active
            assert space.use_local_camera and space.camera == col.objects[name]
            assert space.region_3d.view_perspective == "CAMERA"
    finally:
        for cls in reversed(look_through.classes):
            bpy.utils.unregister_class(cls)


def test_animated_camera_follows_every_photo():
    photos = [CROP_LANDSCAPE] * 5
    rec = _views(518, 350, photos, seed=3)
    opts = SceneOptions(camera_mode="animated", scale=2.0, **CAMERAS_ONLY)
    col = build.build_scene(rec, opts, "shot")
    scene = bpy.context.scene
    shots = [o for o in col.objects if o.get("vggt_kind") == "animated_camera"]
    assert len(shots) == 1 and not [o for o in col.objects if o.get("vggt_kind") == "camera"]
    shot = shots[0]
    assert (scene.frame_start, scene.frame_end) == (1, 5)
    previous = None
    for i in range(5):
        scene.frame_set(i + 1)
        p = blender_camera_params(rec.intrinsics[i], 640, 427, rec.extrinsics[i], scale=2.0)
        np.testing.assert_allclose(np.array(shot.matrix_world), p.matrix_world, atol=1e-5)
        assert shot.data.lens == pytest.approx(p.lens, rel=1e-6)
        assert shot.data.shift_x == pytest.approx(p.shift_x, abs=1e-6)
        assert shot.data.shift_y == pytest.approx(p.shift_y, abs=1e-6)
        q = np.array(shot.rotation_quaternion)
        if previous is not None:
            assert np.dot(q, previous) > 0  # make_compatible: no sign flips between keys
        previous = q
    fcurves = cameras._fcurves(shot)
    assert {fc.data_path for fc in fcurves} == {"location", "rotation_quaternion"}
    assert all(len(fc.keyframe_points) == 5 for fc in fcurves)


def test_animated_camera_lens_and_shift_interpolate_linearly():
    """The lens/shift keys live on the camera DATA: on 4.4+ (slotted actions) its curves are in the data's
    own slot, not the object's, and must be made LINEAR like the pose (a BEZIER lens eases in and out)."""
    photos = [CROP_LANDSCAPE] * 3
    rec = _views(518, 350, photos, seed=5)
    zoomed = rec.intrinsics_model.copy()
    zoomed[1, 0, 0] *= 1.5  # a zoom between the photos, so the in-between lens tells the curve apart
    rec.intrinsics_model = zoomed  # (photo intrinsics follow: they are derived)
    opts = SceneOptions(camera_mode="animated", **CAMERAS_ONLY)
    col = build.build_scene(rec, opts, "zoom")
    shot = next(o for o in col.objects if o.get("vggt_kind") == "animated_camera")
    data_curves = cameras._fcurves(shot.data)
    assert {fc.data_path for fc in data_curves} == {"lens", "shift_x", "shift_y"}
    lenses = [blender_camera_params(rec.intrinsics[i], 640, 427, rec.extrinsics[i]).lens for i in range(3)]
    scene = bpy.context.scene
    scene.frame_set(1, subframe=0.25)
    assert shot.data.lens == pytest.approx(lenses[0] + 0.25 * (lenses[1] - lenses[0]), rel=1e-5)
    for fc in data_curves:
        assert {kp.interpolation for kp in fc.keyframe_points} == {"LINEAR"}, fc.data_path


def _write_photo(path, width: int, height: int) -> str:
    save_png(path, np.zeros((height, width, 3), np.uint8))
    return str(path)


def test_solved_lens_distortion_goes_into_each_photos_movie_clip_tracking_camera(tmp_path):
    rec = _views(518, 518, [PAD_LANDSCAPE, PAD_PORTRAIT])
    paths = [_write_photo(tmp_path / f"view_{i}.png", *(int(v) for v in rec.original_sizes[i])) for i in range(2)]
    rec.image_paths = rec.display_paths = paths
    # A refinement with OPENCV: per view k1, k2, p1, p2 (the second view with tangential terms).
    rec.extra["distortion_model"] = np.array("OPENCV")
    rec.extra["distortion"] = np.array([[-0.081, 0.013, 0.0, 0.0], [0.052, -0.007, 3e-4, -2e-4]])
    col = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "lens")
    for i in range(2):
        ob = col.objects[rec.image_names[i]]
        clip = ob["vggt_lens_clip"]
        assert clip.users >= 1 and clip["vggt_kind"] == "lens_clip" and clip["vggt_view_index"] == i
        assert bpy.path.abspath(clip.filepath) == paths[i]
        W, H = (int(v) for v in rec.original_sizes[i])
        assert tuple(clip.size) == (W, H)
        K, tc = rec.intrinsics[i], clip.tracking.camera
        k1, k2, p1, p2 = rec.extra["distortion"][i]
        if i == 0:  # radial only: the polynomial model
            assert tc.distortion_model == "POLYNOMIAL"
            assert (tc.k1, tc.k2, tc.k3) == pytest.approx((k1, k2, 0.0), abs=1e-7)
        else:  # tangential terms too: Brown, COLMAP's (p1, p2) as Blender's (p2, -p1)
            assert tc.distortion_model == "BROWN"
            assert (tc.brown_k1, tc.brown_k2, tc.brown_k3, tc.brown_k4) == pytest.approx((k1, k2, 0, 0), abs=1e-7)
            assert (tc.brown_p1, tc.brown_p2) == pytest.approx((p2, -p1), abs=1e-9)
        assert tc.focal_length_pixels == pytest.approx(K[0, 0], rel=1e-5)
        assert tc.pixel_aspect == pytest.approx(K[1, 1] / K[0, 0], rel=1e-5)
        # Blender's principal point is measured from the bottom-left corner.
        pp = tc.principal_point_pixels if hasattr(tc, "principal_point_pixels") else tc.principal_point
        assert tuple(pp) == pytest.approx((K[0, 2], H - K[1, 2]), abs=1e-3)
        # The tracking camera and the scene camera describe the same lens: same sensor, same focal in mm.
        assert tc.sensor_width == pytest.approx(ob.data.sensor_width)
        assert tc.focal_length == pytest.approx(ob.data.lens, rel=1e-5)
    assert not [w for w in col.get("vggt_warnings", []) if "distortion" in w]


def test_no_distortion_no_lens_clip(tmp_path):
    rec = _views(518, 518, [PAD_LANDSCAPE])
    rec.image_paths = rec.display_paths = [_write_photo(tmp_path / "view_0.png", 640, 427)]
    col = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "plain")
    assert "vggt_lens_clip" not in col.objects[rec.image_names[0]]
    assert len(bpy.data.movieclips) == 0
