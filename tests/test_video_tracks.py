"""Tracks into the Movie Clip's tracking data (bpy): markers where Blender's own camera sees the points."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

sys.path.insert(0, str(Path(__file__).parent))
from test_video_scene import CAMERAS_ONLY, EXT, shot_reconstruction  # noqa: E402
from video_helpers import write_video  # noqa: E402
from vggt_blender.geometry.blender_camera import opencv_to_blender_points  # noqa: E402
from vggt_blender.options import SceneOptions  # noqa: E402

pytest.importorskip("av")
build = importlib.import_module(f"{EXT.__name__}.scene.build")
tracks_mod = importlib.import_module(f"{EXT.__name__}.scene.tracks")


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
    tracks_mod.set_tracking_camera(clip, K[0, 0], K[1, 1], K[0, 2], K[1, 2], 160, 120, sensor_width=36.0)
    cam = clip.tracking.camera
    assert cam.focal_length_pixels == pytest.approx(K[0, 0], rel=1e-6)
    assert cam.focal_length == pytest.approx(K[0, 0] * 36.0 / 160, rel=1e-5)
    assert cam.pixel_aspect == pytest.approx(K[1, 1] / K[0, 0], rel=1e-6)
    assert tuple(cam.principal_point_pixels) == pytest.approx((K[0, 2], 120 - K[1, 2]), abs=1e-4)
    assert (cam.k1, cam.k2, cam.k3) == (0.0, 0.0, 0.0)
