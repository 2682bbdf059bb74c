"""Refining a video shot: the views are frames of one H.264 file, decoded for refinement (no photo files).

The rendered ground-truth scene of tests/test_refine.py (10 views, 640x480) is encoded as a 10-frame H.264 shot;
its reconstruction stores the video as every view's source, the true depth and perturbed cameras, as a model
pass on the shot would. `refine --shared-intrinsics` must decode the frames and recover the true cameras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import refine_groundtruth as gt
from tests.video_helpers import write_video
from vggt_blender.cli import main
from vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction
from vggt_blender.io.shot_fields import shot_extra

pytest.importorskip("av")
pytest.importorskip("pycolmap")

SCENE = Path(__file__).resolve().parent / "fixtures" / "refine_scene"
VIEWS = 10


@pytest.fixture(scope="module")
def refined_shot(tmp_path_factory):
    """(truth extrinsics, intrinsics, the input reconstruction, the refined one, the video)."""
    from PIL import Image

    work = tmp_path_factory.mktemp("refine_video")
    truth = np.load(SCENE / "truth.npz")
    ext_t, k_t = truth["extrinsics"][:VIEWS], truth["intrinsics"][:VIEWS]
    frames = [np.asarray(Image.open(SCENE / f"view_{i:02d}.jpg").convert("RGB")) for i in range(VIEWS)]
    video = write_video(work / "shot.mp4", count=VIEWS, width=640, height=480, frame_of=frames.__getitem__, gop=4)
    ext_p, k_p = gt.perturb_cameras(ext_t, k_t)
    rec = gt.scene_reconstruction(SCENE, ext_p, k_p)
    rec.image_paths = rec.display_paths = [str(video)] * VIEWS  # as the worker writes a video shot
    rec.extra = shot_extra(np.arange(VIEWS), 24, 1, str(video), "video", (640, 480), VIEWS)
    save_reconstruction(work / "shot.npz", rec)
    assert main(["refine", str(work / "shot.npz"), "-o", str(work / "refined.npz"), "--shared-intrinsics",
                 "--camera-model", "simple_radial", "-q"]) == 0
    return ext_t, k_t, rec, load_reconstruction(work / "refined.npz"), video


def test_refine_reads_a_video_shots_frames_and_recovers_the_cameras(refined_shot):
    ext_t, k_t, rec, out, _video = refined_shot
    before = gt.camera_errors(rec.extrinsics, rec.intrinsics, ext_t, k_t)
    after = gt.camera_errors(out.extrinsics, out.intrinsics, ext_t, k_t)
    print(f"\nvideo shot, {VIEWS} frames: rotation {before['rotation_deg'].mean():.3f} -> "
          f"{after['rotation_deg'].mean():.4f} deg, focal {before['focal_pct'].mean():.2f} -> "
          f"{after['focal_pct'].mean():.3f} %, error {np.nanmean(out.extra['reprojection_error']):.3f} px")
    assert before["rotation_deg"].mean() > 1.0
    assert after["rotation_deg"].mean() <= 0.1 and after["focal_pct"].mean() <= 0.5
    assert np.nanmean(out.extra["reprojection_error"]) <= 1.0
    # One lens for the shot, and the tracks the Blender import puts into the clip.
    assert np.ptp(out.intrinsics[:, 0, 0]) < 1e-9
    assert len(out.extra["track_observations"]) > 100
    np.testing.assert_array_equal(out.extra["frame_numbers"], np.arange(VIEWS))


def test_refine_names_a_missing_video(tmp_path, capsys):
    truth = np.load(SCENE / "truth.npz")
    rec = gt.scene_reconstruction(SCENE, truth["extrinsics"][:3], truth["intrinsics"][:3])
    gone = tmp_path / "moved.mp4"
    rec.image_paths = rec.display_paths = [str(gone)] * 3
    rec.extra = shot_extra(np.arange(3), 24, 1, str(gone), "video", (640, 480), 3)
    save_reconstruction(tmp_path / "shot.npz", rec)
    assert main(["refine", str(tmp_path / "shot.npz"), "-o", str(tmp_path / "refined.npz"), "-q"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(gone) in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "refined.npz").exists()


def test_the_refined_video_shot_imports_with_its_tracks_in_the_clip(refined_shot):
    bpy = pytest.importorskip("bpy")
    import importlib

    from vggt_blender.extension_package import load_extension_package
    from vggt_blender.options import SceneOptions

    _ext_t, _k_t, _rec, out, video = refined_shot
    ext = load_extension_package("_vggt_ext_refine_video")
    build = importlib.import_module(f"{ext.__name__}.scene.build")
    bpy.ops.wm.read_homefile(use_empty=True)
    col = build.build_scene(out, SceneOptions(create_point_cloud=False, create_depth_planes=False), "shot")
    cam = next(o for o in col.objects if o.get("vggt_kind") == "animated_camera")
    clip = cam.data.background_images[0].clip
    assert Path(bpy.path.abspath(clip.filepath)).resolve() == video.resolve()
    obs = np.asarray(out.extra["track_observations"])
    tracks = clip.tracking.tracks
    assert len(tracks) == len(np.unique(obs[:, 0]))
    # Every marker sits where the refinement observed its track, in Blender's normalised clip coordinates.
    xy = np.asarray(out.extra["track_pixels"])
    first = {}
    for k in np.lexsort((obs[:, 1], obs[:, 0])):
        first.setdefault(int(obs[k, 0]), (int(obs[k, 1]), xy[k]))
    worst = 0.0
    for track, (tid, (view, pixel)) in zip(sorted(tracks, key=lambda t: t.name), sorted(first.items())):
        marker = track.markers.find_frame(1 + view)
        assert marker is not None and not marker.mute
        got = np.array([marker.co[0] * 640, (1 - marker.co[1]) * 480])
        worst = max(worst, float(np.abs(got - pixel).max()))
    assert worst < 1e-3
    # The clip's tracking camera is the refined lens: focal in pixels and its radial distortion.
    tc = clip.tracking.camera
    assert tc.focal_length_pixels == pytest.approx(out.intrinsics[0, 0, 0], rel=1e-6)
    assert tc.k1 == pytest.approx(float(out.extra["distortion"][0][0]), abs=1e-9)
