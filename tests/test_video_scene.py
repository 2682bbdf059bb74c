"""A shot in Blender (bpy): one animated camera keyed on the source's frame numbers, on its Movie Clip."""

from __future__ import annotations

import importlib
from fractions import Fraction
from pathlib import Path

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from tests.video_helpers import CAMERAS_ONLY, frame_pattern, shot_reconstruction, write_video
from vggt_blender.extension_package import load_extension_package  # noqa: E402
from vggt_blender.geometry.blender_camera import opencv_to_blender_points  # noqa: E402
from vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction  # noqa: E402
from vggt_blender.options import SceneOptions  # noqa: E402

pytest.importorskip("av")
EXT = load_extension_package("_vggt_ext_video_tests")
build = importlib.import_module(f"{EXT.__name__}.scene.build")
shot_scene = importlib.import_module(f"{EXT.__name__}.scene.shot")
cameras = importlib.import_module(f"{EXT.__name__}.scene.cameras")

@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)
    yield


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("plate") / "plate.mp4")


def _shot_camera(col):
    cams = [o for o in col.objects if o.get("vggt_kind") == "animated_camera"]
    assert len(cams) == 1 and len([o for o in col.objects if o.type == "CAMERA"]) == 1
    return cams[0]


def test_keys_on_source_frames_scene_fps_range_and_clip(video, tmp_path):
    numbers = list(range(2, 48, 3))  # --start 2 --every 3
    path = tmp_path / "shot.npz"
    save_reconstruction(path, shot_reconstruction(numbers, video))
    col = build.import_reconstruction_file(path, SceneOptions(**CAMERAS_ONLY))
    scene = bpy.context.scene
    ob = _shot_camera(col)
    assert scene.camera == ob
    curves = cameras._fcurves(ob)
    for fc in curves:
        assert [round(k.co.x) for k in fc.keyframe_points] == [1 + n for n in numbers]
        assert {k.interpolation for k in fc.keyframe_points} == {"LINEAR"}
    assert (scene.render.fps, scene.render.fps_base) == (24, pytest.approx(1.001, abs=1e-7))  # float32
    assert scene.render.fps / scene.render.fps_base == pytest.approx(24000 / 1001, rel=1e-7)
    assert (scene.frame_start, scene.frame_end) == (3, 48)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (160, 120)
    # The plate: the video as a Movie Clip behind the camera, clip frame 1 (= source frame 0) at scene
    # frame 1, so key frame 1 + n shows source frame n.
    bgs = list(ob.data.background_images)
    assert ob.data.show_background_images and len(bgs) == 1 and bgs[0].source == "MOVIE_CLIP"
    clip = bgs[0].clip
    assert Path(bpy.path.abspath(clip.filepath)).resolve() == video.resolve()
    assert (clip.frame_start, clip.frame_offset, clip.frame_duration) == (1, 0, 48)
    assert tuple(clip.size) == (160, 120)
    assert clip.fps == pytest.approx(24000 / 1001, rel=1e-6)  # Blender reads the same rate
    # At each key the camera projects a point to the pixel the OpenCV camera of that view does.
    rec = load_reconstruction(path)
    for i in (0, 7, len(numbers) - 1):
        scene.frame_set(1 + numbers[i])
        X = np.array([0.3, -0.2, 2.5])
        X_world = rec.extrinsics[i, :, :3].T @ (X - rec.extrinsics[i, :, 3])  # a point 2.5 in front
        uvw = rec.intrinsics[i] @ X
        want = uvw[:2] / uvw[2]
        p = world_to_camera_view(scene, ob, Vector(opencv_to_blender_points(X_world[None])[0]))
        got = np.array([p.x * 160, (1 - p.y) * 120])
        assert np.abs(got - want).max() < 1e-3, (i, got, want)


def test_the_animated_camera_follows_the_files_alignment(video, tmp_path):
    """`reconstruct` aligns by default: the keys are placed through the file's alignment (a rotation, scale
    and offset here), so the camera still sees each view's points at the OpenCV camera's pixels."""
    from vggt_blender.geometry.alignment import DEFAULT_ALIGNMENT, make_similarity

    numbers = list(range(0, 48, 6))
    rec = shot_reconstruction(numbers, video)
    turn = np.radians(35.0)
    R = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    alignment = make_similarity(R, np.array([1.0, -2.0, 0.5]), 2.5) @ DEFAULT_ALIGNMENT
    rec.alignment = alignment
    path = tmp_path / "aligned.npz"
    save_reconstruction(path, rec)
    col = build.import_reconstruction_file(path, SceneOptions(**CAMERAS_ONLY))
    scene, ob = bpy.context.scene, _shot_camera(col)
    rec = load_reconstruction(path)
    for i in (0, 3, len(numbers) - 1):
        scene.frame_set(1 + numbers[i])
        X = np.array([-0.4, 0.25, 3.0])
        X_world = rec.extrinsics[i, :, :3].T @ (X - rec.extrinsics[i, :, 3])
        uvw = rec.intrinsics[i] @ X
        p = world_to_camera_view(scene, ob, Vector(opencv_to_blender_points(X_world[None], 1.0, alignment)[0]))
        assert np.abs(np.array([p.x * 160, (1 - p.y) * 120]) - uvw[:2] / uvw[2]).max() < 1e-3, i
        # Camera centre in the scene = the alignment applied to the OpenCV centre.
        centre = -rec.extrinsics[i, :, :3].T @ rec.extrinsics[i, :, 3]
        want = opencv_to_blender_points(centre[None], 1.0, alignment)[0]
        assert np.allclose(np.array(ob.matrix_world.translation), want, atol=1e-4), i
    # The check can fail: the default axis change puts the first key elsewhere.
    scene.frame_set(1 + numbers[-1])
    default = opencv_to_blender_points((-rec.extrinsics[-1, :, :3].T @ rec.extrinsics[-1, :, 3])[None])[0]
    assert not np.allclose(np.array(ob.matrix_world.translation), default, atol=1e-2)


def test_camera_path_has_no_quaternion_flips(video, tmp_path):
    numbers = list(range(0, 48, 4))  # 340 degrees over 48 frames: 28 degrees between keys
    path = tmp_path / "spin.npz"
    save_reconstruction(path, shot_reconstruction(numbers, video))
    col = build.import_reconstruction_file(path, SceneOptions(**CAMERAS_ONLY))
    ob = _shot_camera(col)
    scene = bpy.context.scene
    keys = []
    for fc in cameras._fcurves(ob):
        if fc.data_path == "rotation_quaternion":
            keys.append([k.co.y for k in fc.keyframe_points])
    q = np.array(keys).T  # [keys, 4]
    assert (np.sum(q[1:] * q[:-1], axis=1) > 0).all()  # sign-continuous key to key
    previous = None
    steps = []
    for f in range(1, 46):  # every scene frame, in-between frames included
        scene.frame_set(f)
        R = np.array(ob.matrix_world)[:3, :3]
        if previous is not None:
            steps.append(np.degrees(np.arccos(np.clip((np.trace(previous.T @ R) - 1) / 2, -1, 1))))
        previous = R
    # 340/47 = 7.2 degrees per frame along the path; a flip would be a jump of up to 180.
    assert max(steps) < 7.6 and min(steps) > 6.8, (min(steps), max(steps))


def test_image_sequence_clip_starts_at_its_first_file(tmp_path):
    Image = pytest.importorskip("PIL.Image")  # the bpy 4.2 test venv has no Pillow

    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(frame_pattern(i)).save(folder / f"plate.{1001 + i:04d}.png")
    numbers = [2, 5, 8]
    files = [str(folder / f"plate.{1001 + n:04d}.png") for n in numbers]
    rec = shot_reconstruction(numbers, folder / "plate.####.png", Fraction(30000, 1001), "sequence", files,
                              first_number=1001, total=10)
    col = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "seq")
    ob = _shot_camera(col)
    clip = ob.data.background_images[0].clip
    assert clip.source == "SEQUENCE" and Path(bpy.path.abspath(clip.filepath)).name == "plate.1001.png"
    assert (clip.frame_start, clip.frame_offset, clip.frame_duration) == (1, 0, 10)
    scene = bpy.context.scene
    assert (scene.render.fps, scene.render.fps_base) == (30, pytest.approx(1.001, abs=1e-7))
    assert (scene.frame_start, scene.frame_end) == (3, 9)


def test_photo_sets_are_unchanged_and_a_missing_plate_is_a_warning(tmp_path):
    rec = shot_reconstruction([0, 1, 2], tmp_path / "gone.mp4")
    col = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "gone")
    ob = _shot_camera(col)
    assert len(ob.data.background_images) == 0
    assert list(col["vggt_warnings"]) == [f"shot source not found: {tmp_path / 'gone.mp4'}"]
    rec.extra = {}
    col2 = build.build_scene(rec, SceneOptions(**CAMERAS_ONLY), "photos")
    assert sorted(o.get("vggt_kind") for o in col2.objects) == ["camera"] * 3


def test_panel_probe_reads_the_shot_with_blenders_clip_loader(video, tmp_path):
    Image = pytest.importorskip("PIL.Image")

    info = shot_scene.probe_clip(str(video))
    assert info == {"frames": 48, "fps": pytest.approx(24000 / 1001, rel=1e-6), "width": 160, "height": 120,
                    "sequence": False}
    assert len(bpy.data.movieclips) == 0  # probing leaves no clip behind
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(7):
        Image.fromarray(frame_pattern(i)).save(folder / f"sh010_{101 + i:04d}.png")
    seq = shot_scene.probe_clip(str(folder / "sh010_0103.png"))
    assert seq["sequence"] and (seq["width"], seq["height"]) == (160, 120) and seq["frames"] >= 5
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a movie" * 100)
    assert shot_scene.probe_clip(str(bad)) is None
    # The stride line: the same rule as the worker's frame selection.
    assert shot_scene.selected_count(48, 3, 2, -1, 0) == 16
    assert shot_scene.selected_count(48, 1, 0, 40, 5) == 5
    assert shot_scene.selected_count(48, 1, 60, -1, 0) == 0


def test_panel_request_fields_for_a_shot(tmp_path):
    ops = importlib.import_module(f"{EXT.__name__}.operators.shot")

    class Settings:
        shot_path = str(tmp_path / "plates" / "sh010.1001.exr")
        shot_every, shot_start, shot_end, shot_max_frames = 2, 5, -1, 0
        shot_refine = False

    fields = ops.shot_request_fields(Settings)
    assert fields == {"images": [str(tmp_path / "plates" / "sh010.####.exr")], "every": 2, "start": 5}
    Settings.shot_refine = True  # the panel's default: one lens for the shot, its tracks into the clip
    assert ops.shot_request_fields(Settings)["refine"] == {"shared_intrinsics": True}
    Settings.shot_refine = False
    Settings.shot_path, Settings.shot_end, Settings.shot_max_frames = str(tmp_path / "a.mov"), 40, 10
    assert ops.shot_request_fields(Settings) == {"images": [str(tmp_path / "a.mov")], "every": 2, "start": 5,
                                                 "end": 40, "max_frames": 10}
    Settings.shot_path = ""
    assert ops.shot_request_fields(Settings) == {}


def test_an_omega_shot_without_a_point_map_builds_its_points_from_depth(video, tmp_path):
    rec = shot_reconstruction([0, 6, 12], video, no_point_map=True)
    assert rec.point_map is None  # as a VGGT-Omega shot is written
    col = build.build_scene(rec, SceneOptions(point_source="point_map", create_depth_planes=False,
                                              background_images=False), "omega shot")
    cloud = next(o for o in col.objects if o.get("vggt_kind") == "point_cloud")
    assert len(cloud.data.vertices if hasattr(cloud.data, "vertices") else cloud.data.points) > 0
    assert any("no point map" in w for w in col["vggt_warnings"])
