"""Tracks into the Movie Clip's tracking data (bpy): markers where Blender's own camera sees the points."""

from __future__ import annotations

import importlib
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from tests.video_helpers import CAMERAS_ONLY, shot_reconstruction, write_video
from vggt_blender.extension_package import load_extension_package
from vggt_blender.geometry.blender_camera import opencv_to_blender_points  # noqa: E402
from vggt_blender.options import SceneOptions  # noqa: E402

pytest.importorskip("av")
EXT = load_extension_package("_vggt_ext_video_tests")
build = importlib.import_module(f"{EXT.__name__}.scene.build")
tracks_mod = importlib.import_module(f"{EXT.__name__}.scene.tracks")
lens_mod = importlib.import_module(f"{EXT.__name__}.scene.lens")


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    yield


def test_markers_match_blenders_projection_and_the_tracking_camera(tmp_path):
    video = write_video(tmp_path / "plate.mp4", count=20)
    numbers = list(range(0, 20, 2))
    rec = shot_reconstruction(numbers, video, total=20)
    col = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "trk")
    ob = next(o for o in col.objects if o.get("vggt_kind") == "animated_camera")
    clip = ob.data.background_images[0].clip
    scene = bpy.context.scene
    # World points in front of the cameras, projected with the OpenCV cameras into photo pixels.
    world = np.array([[0.2, 0.1, 3.0], [-0.3, -0.2, 2.5], [0.0, 0.3, 4.0]])
    tracks = []
    for p, X in enumerate(world):
        track = []
        for i, n in enumerate(numbers):
            if p == 2 and n in (8, 10):
                continue  # track 2 is lost for two views
            Xc = rec.extrinsics[i, :, :3] @ X + rec.extrinsics[i, :, 3]
            uv = rec.intrinsics[i] @ Xc
            track.append((n, uv[0] / uv[2], uv[1] / uv[2]))
        tracks.append(track)
    made = tracks_mod.create_clip_tracks(clip, tracks, views=numbers)
    assert [t.name for t in made] == ["VGGT_00000", "VGGT_00001", "VGGT_00002"]
    assert len(clip.tracking.tracks) == 3
    for p, (track, points) in enumerate(zip(made, tracks)):
        enabled = [m for m in track.markers if not m.mute]
        assert [m.frame for m in enabled] == [1 + n for n, _, _ in points]
        for marker in enabled:
            scene.frame_set(marker.frame)
            seen = world_to_camera_view(scene, ob, Vector(opencv_to_blender_points(world[p][None])[0]))
            assert abs(marker.co[0] - seen.x) < 1e-4 and abs(marker.co[1] - seen.y) < 1e-4
    gap = [m.frame for m in made[2].markers if m.mute]
    assert gap == [1 + 8, 1 + 10]  # lost at views 8 and 10: disabled there
    assert all(not m.mute for t in made[:2] for m in t.markers)  # the stride alone is no gap
    assert clip["vggt_tracks"] == 3
    K = rec.intrinsics[0]
    lens_mod.set_tracking_camera(clip, K[0, 0], K[1, 1], K[0, 2], K[1, 2], 160, 120, sensor_width=36.0)
    cam = clip.tracking.camera
    assert cam.focal_length_pixels == pytest.approx(K[0, 0], rel=1e-6)
    assert cam.focal_length == pytest.approx(K[0, 0] * 36.0 / 160, rel=1e-5)
    assert cam.pixel_aspect == pytest.approx(K[1, 1] / K[0, 0], rel=1e-6)
    assert tuple(cam.principal_point_pixels) == pytest.approx((K[0, 2], 120 - K[1, 2]), abs=1e-4)
    assert (cam.k1, cam.k2, cam.k3) == (0.0, 0.0, 0.0)


def _refined_shot(video, numbers, world, lost=(), model="SIMPLE_RADIAL", distortion=(-0.05,)):
    """A shot file as the refinement leaves it (shared intrinsics, radial distortion, its inlier tracks):
    `world` points projected by each view's OpenCV camera, track p not seen at the views in lost[p]."""
    rec = shot_reconstruction(numbers, video, total=20)
    obs, pixels = [], []
    for p, X in enumerate(world):
        for i, n in enumerate(numbers):
            if n in (lost[p] if p < len(lost) else ()):
                continue
            uvw = rec.intrinsics[i] @ (rec.extrinsics[i, :, :3] @ X + rec.extrinsics[i, :, 3])
            obs.append((p, i))
            pixels.append(uvw[:2] / uvw[2])
    order = np.random.default_rng(0).permutation(len(obs))  # the file's rows come in no particular order
    rec.extra.update({
        "track_points": np.asarray(world, dtype=np.float64),
        "track_observations": np.asarray(obs, dtype=np.int32)[order],
        "track_pixels": np.asarray(pixels, dtype=np.float64)[order],
        "distortion_model": np.array(model),
        "distortion": np.tile(np.asarray(distortion, dtype=np.float64), (len(numbers), 1)),
        "reprojection_error": np.full(len(numbers), 0.3),
    })
    return rec


def test_import_writes_a_refined_shots_tracks_and_tracking_camera(tmp_path):
    from vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction

    video = write_video(tmp_path / "plate.mp4", count=20)
    numbers = list(range(1, 20, 3))
    world = np.array([[0.2, 0.1, 3.0], [-0.3, -0.2, 2.5], [0.0, 0.3, 4.0], [0.4, -0.1, 3.5]])
    path = tmp_path / "refined.npz"
    save_reconstruction(path, _refined_shot(video, numbers, world, lost=((), (7, 10), (), (16,))))
    rec = load_reconstruction(path)
    col = build.import_reconstruction_file(path, SceneOptions(**CAMERAS_ONLY))
    ob = next(o for o in col.objects if o.get("vggt_kind") == "animated_camera")
    clip = ob.data.background_images[0].clip
    scene = bpy.context.scene
    tracks = list(clip.tracking.tracks)
    assert len(tracks) == 4 and clip["vggt_tracks"] == 4
    for p, track in enumerate(tracks):
        seen = [m for m in track.markers if not m.mute]
        lost = {1: (7, 10), 3: (16,)}.get(p, ())
        assert [m.frame for m in seen] == [1 + n for n in numbers if n not in lost], p
        # Each marker lies where Blender's own keyed camera sees the track's point on that frame.
        for marker in seen:
            scene.frame_set(marker.frame)
            where = world_to_camera_view(scene, ob, Vector(opencv_to_blender_points(world[p][None],
                                                                                    1.0, rec.alignment)[0]))
            assert abs(marker.co[0] - where.x) < 1e-4 and abs(marker.co[1] - where.y) < 1e-4, (p, marker.frame)
        muted = [m.frame for m in track.markers if m.mute]
        assert muted == [1 + n for n in lost if numbers[0] < n < numbers[-1]]
    # The tracking camera is the refined (shared) camera: focal, principal point, sensor, radial distortion.
    K = rec.intrinsics[0]
    cam = clip.tracking.camera
    assert cam.focal_length_pixels == pytest.approx(K[0, 0], rel=1e-6)
    assert cam.sensor_width == pytest.approx(ob.data.sensor_width, rel=1e-6)
    assert cam.focal_length == pytest.approx(K[0, 0] * cam.sensor_width / 160, rel=1e-5)
    assert tuple(cam.principal_point_pixels) == pytest.approx((K[0, 2], 120 - K[1, 2]), abs=1e-4)
    assert cam.distortion_model == "POLYNOMIAL" and cam.k1 == pytest.approx(-0.05) and cam.k2 == 0.0
    assert "vggt_warnings" not in col
    # With a camera per view as well, the shot's clip stays the one clip: each view's "photo" is the whole
    # video, so a lens clip per view would load it once per frame.
    clips_before = len(bpy.data.movieclips)
    both = build.import_reconstruction_file(path, SceneOptions(**CAMERAS_ONLY, camera_mode="both"))
    assert len([o for o in both.objects if o.get("vggt_kind") == "camera"]) == len(numbers)
    assert len(bpy.data.movieclips) == clips_before  # the same plate clip, loaded once


def test_tangential_distortion_goes_into_blenders_brown_model_and_a_file_without_tracks_adds_none(tmp_path):
    from vggt_blender.io.reconstruction import save_reconstruction

    video = write_video(tmp_path / "plate.mp4", count=20)
    numbers = [0, 5, 10, 15]
    path = tmp_path / "opencv.npz"
    save_reconstruction(path, _refined_shot(video, numbers, np.array([[0.1, 0.0, 3.0], [0.0, 0.2, 2.0]]),
                                            model="OPENCV", distortion=(-0.04, 0.01, 1e-3, -2e-3)))
    col = build.import_reconstruction_file(path, SceneOptions(**CAMERAS_ONLY))
    clip = next(o for o in col.objects if o.get("vggt_kind") == "animated_camera").data.background_images[0].clip
    cam = clip.tracking.camera
    # COLMAP's (p1, p2) with y down are libmv's (p2, -p1) with y up (scene/lens.py).
    assert cam.distortion_model == "BROWN"
    assert (cam.brown_k1, cam.brown_k2, cam.brown_k3, cam.brown_k4) == pytest.approx((-0.04, 0.01, 0.0, 0.0))
    assert (cam.brown_p1, cam.brown_p2) == pytest.approx((-2e-3, -1e-3))
    assert len(clip.tracking.tracks) == 2
    assert not any("distortion" in w for w in col.get("vggt_warnings", []))
    bpy.ops.wm.read_homefile(use_empty=True)
    plain = shot_reconstruction(numbers, video, total=20)  # feed-forward: no track keys
    col = build.build_scene(plain, SceneOptions(**CAMERAS_ONLY), "plain")
    clip = next(o for o in col.objects if o.get("vggt_kind") == "animated_camera").data.background_images[0].clip
    assert len(clip.tracking.tracks) == 0 and "vggt_tracks" not in clip
