"""Camera refinement against ground truth rendered with bpy (tests/refine_groundtruth.py): a textured floor and
boxes seen by 10 cameras at 640x480, a reconstruction file made from the exact depth with feed-forward-like
camera errors (2 degrees, 5 % position, 5 % focal), refined through the command line and compared with the
true cameras after a similarity alignment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from tests import refine_groundtruth as gt  # noqa: E402
from vggt_blender.cli import main  # noqa: E402
from vggt_blender.errors import RefinementError  # noqa: E402
from vggt_blender.geometry.cameras import depth_to_world_points, intrinsics_to_photo  # noqa: E402
from vggt_blender.io.colmap import project  # noqa: E402
from vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction  # noqa: E402
from vggt_blender.options import RefineOptions  # noqa: E402
from vggt_blender.refine import refine_reconstruction  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "refine_scene"


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory) -> Path:
    """The committed render, or a fresh one (same generator) when the fixture is absent."""
    if (FIXTURE / "truth.npz").exists():
        return FIXTURE
    return gt.render(tmp_path_factory.mktemp("refine_scene"))


@pytest.fixture(scope="module")
def refined(scene_dir, tmp_path_factory):
    truth = np.load(scene_dir / "truth.npz")
    ext_p, k_p = gt.perturb_cameras(truth["extrinsics"], truth["intrinsics"])
    rec = gt.scene_reconstruction(scene_dir, ext_p, k_p)
    work = tmp_path_factory.mktemp("refine")
    save_reconstruction(work / "scene.npz", rec)
    assert main(["refine", str(work / "scene.npz"), "-o", str(work / "refined.npz"), "-q"]) == 0
    return truth, rec, load_reconstruction(work / "refined.npz"), work


def _table(before: dict, after: dict) -> str:
    rows = [f"{'error':<14}{'before mean':>12}{'before max':>12}{'after mean':>12}{'after max':>12}"]
    for k in before:
        rows.append(f"{k:<14}{before[k].mean():>12.4f}{before[k].max():>12.4f}{after[k].mean():>12.4f}"
                    f"{after[k].max():>12.4f}")
    return "\n".join(rows)


def test_refined_cameras_match_ground_truth(refined):
    truth, rec, out, _ = refined
    before = gt.camera_errors(rec.extrinsics, rec.intrinsics, truth["extrinsics"], truth["intrinsics"])
    after = gt.camera_errors(out.extrinsics, out.intrinsics, truth["extrinsics"], truth["intrinsics"])
    print("\n" + _table(before, after))
    assert before["rotation_deg"].mean() > 1.0 and before["focal_pct"].mean() > 4.0  # the input really is off
    assert after["rotation_deg"].mean() <= 0.1
    assert after["focal_pct"].max() <= 0.5
    assert after["position_pct"].mean() <= 0.5
    err = out.extra["reprojection_error"]
    assert err.dtype == np.float64 and err.shape == (rec.num_images,)
    assert np.all(np.isfinite(err)) and err.mean() <= 1.0


def test_refined_file_keeps_its_invariants(refined):
    truth, rec, out, _ = refined
    np.testing.assert_allclose(out.intrinsics, intrinsics_to_photo(out.intrinsics_model, out.pixel_map),
                               rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(out.extra["extrinsics_feedforward"], rec.extrinsics)
    np.testing.assert_array_equal(out.extra["intrinsics_feedforward"], rec.intrinsics)
    prov = out.provenance_dict["refinement"]
    assert prov["camera_model"] == "SIMPLE_PINHOLE" and prov["refined_views"] == rec.num_images
    assert prov["points"] > 500 and prov["observations"] >= 2 * prov["points"] and prov["iterations"] > 0
    assert prov["mean_error_px"] < prov["mean_error_px_before"] and prov["max_error_px"] <= 2.0
    assert "distortion" not in out.extra  # nothing solved with the pinhole model
    # Depth follows the refined scale and the world points are re-derived from it.
    np.testing.assert_allclose(out.depth, (rec.depth.astype(np.float64) * prov["depth_scale"]).astype(np.float32))
    derived = depth_to_world_points(out.depth, out.extrinsics, out.intrinsics_model, dtype=np.float32)
    np.testing.assert_array_equal(out.world_points, derived)
    # The rescaled depth agrees with the refined tracks: their points lie on the depth surface.
    obs = out.extra["track_observations"]
    pix = out.extra["track_pixels"]
    pts = out.extra["track_points"]
    v = obs[:, 1]
    z = np.einsum("mj,mj->m", out.extrinsics[v, 2, :3], pts[obs[:, 0]]) + out.extrinsics[v, 2, 3]
    pm = out.pixel_map[v]
    mx = np.floor((pix[:, 0] - pm[:, 2]) / pm[:, 0]).astype(int)
    my = np.floor((pix[:, 1] - pm[:, 3]) / pm[:, 1]).astype(int)
    d = out.depth[v, my, mx]
    ok = d > 0
    assert abs(np.median(z[ok] / d[ok]) - 1.0) < 0.01


def test_refined_tracks_reproject_through_the_file_cameras(refined):
    _, _, out, _ = refined
    obs = out.extra["track_observations"]
    pix = out.extra["track_pixels"]
    pts = out.extra["track_points"]
    worst = 0.0
    for i in range(out.num_images):
        sel = obs[:, 1] == i
        assert sel.sum() >= 20
        err = np.linalg.norm(project(out, i, pts[obs[sel, 0]]) - pix[sel], axis=1)
        assert abs(err.mean() - out.extra["reprojection_error"][i]) < 1e-6
        worst = max(worst, err.max())
    assert worst <= 2.0


def test_colmap_export_of_refined_file_projects_like_the_file(refined):
    truth, _, out, work = refined
    assert main(["export-colmap", str(work / "refined.npz"), str(work / "colmap")]) == 0
    model = pycolmap.Reconstruction(str(work / "colmap" / "sparse" / "0"))
    assert model.num_images() == out.num_images and model.num_points3D() == len(out.extra["track_points"])
    assert sorted(p.name for p in (work / "colmap" / "images").iterdir()) == sorted(
        img.name for img in model.images.values())
    rng = np.random.default_rng(1)
    probe = rng.uniform([-3, -1.5, -3], [3, 0, 3], (200, 3))
    for img in model.images.values():
        i = out.image_names.index(Path(img.name).stem)
        cam = model.cameras[img.camera_id]
        m = np.asarray(img.cam_from_world().matrix())
        uv = np.asarray(cam.img_from_cam(probe @ m[:, :3].T + m[:, 3]))
        assert np.abs(uv - project(out, i, probe)).max() <= 0.01
    assert model.compute_mean_reprojection_error() <= 1.0


def test_view_without_matches_keeps_its_feedforward_camera(scene_dir, tmp_path):
    """A photo replaced by a featureless one cannot be refined: it keeps its camera, with a message."""
    from PIL import Image

    truth = np.load(scene_dir / "truth.npz")
    views = [3, 4, 5, 6]
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in views:
        shutil.copy(scene_dir / f"view_{i:02d}.jpg", photos / f"view_{i:02d}.jpg")
    Image.new("RGB", (640, 480), (120, 120, 120)).save(photos / "view_06.jpg")
    shutil.copy(scene_dir / "truth.npz", photos / "truth.npz")
    ext_p, k_p = gt.perturb_cameras(truth["extrinsics"][views], truth["intrinsics"][views], seed=3)
    rec = gt.scene_reconstruction(photos, ext_p, k_p, views=views)
    out, report = refine_reconstruction(rec, RefineOptions(max_features=2048))
    assert 3 in report.kept_feedforward and "view_06" in report.kept_feedforward[3]
    assert report.refined_views == [0, 1, 2]
    np.testing.assert_array_equal(out.intrinsics[3], rec.intrinsics[3])
    assert json.loads(out.provenance)["refinement"]["kept_feedforward"]["3"].startswith("view_06")


def test_refinement_refuses_what_it_cannot_do(scene_dir):
    truth = np.load(scene_dir / "truth.npz")
    one = gt.scene_reconstruction(scene_dir, truth["extrinsics"][:1], truth["intrinsics"][:1])
    with pytest.raises(RefinementError, match="at least two photos"):
        refine_reconstruction(one, RefineOptions())
    two = gt.scene_reconstruction(scene_dir, truth["extrinsics"][:2], truth["intrinsics"][:2])
    two.original_sizes[1] = (641, 480)
    with pytest.raises(RefinementError, match="one size"):
        refine_reconstruction(two, RefineOptions(shared_intrinsics=True))
    with pytest.raises(ValueError, match="camera model"):
        RefineOptions(camera_model="fisheye")


def test_shared_intrinsics_with_radial_distortion(scene_dir, tmp_path):
    """One lens for all views (--shared-intrinsics --camera-model simple_radial): one focal length and one k,
    both right for the rendered (distortion-free) photos, and a COLMAP export with one SIMPLE_RADIAL camera."""
    from vggt_blender.io.colmap import export_colmap

    truth = np.load(scene_dir / "truth.npz")
    views = list(range(2, 8))
    ext_t, k_t = truth["extrinsics"][views], truth["intrinsics"][views]
    ext_p, k_p = gt.perturb_cameras(ext_t, k_t, seed=5)
    rec = gt.scene_reconstruction(scene_dir, ext_p, k_p, views=views)
    out, report = refine_reconstruction(rec, RefineOptions(shared_intrinsics=True, camera_model="simple_radial"))
    assert report.refined_views == list(range(len(views)))
    assert np.ptp(out.intrinsics, axis=0).max() == 0.0  # one intrinsic set
    assert str(out.extra["distortion_model"]) == "SIMPLE_RADIAL" and out.extra["distortion"].shape == (6, 1)
    assert np.abs(out.extra["distortion"]).max() < 0.01
    after = gt.camera_errors(out.extrinsics, out.intrinsics, ext_t, k_t)
    assert after["focal_pct"].max() <= 0.5 and after["rotation_deg"].mean() <= 0.1
    assert out.provenance_dict["refinement"]["shared_intrinsics"] is True
    model = export_colmap(out, tmp_path / "colmap")
    assert [c[0] for c in model.cameras] == ["SIMPLE_RADIAL"]


def test_worker_request_accepts_refine():
    from vggt_blender.errors import RequestError
    from vggt_blender.jobs.worker import parse_request

    base = {"images": ["/photos"], "output": "/out.npz"}
    assert parse_request(base)["refine"] is False
    assert parse_request({**base, "refine": True})["refine"] is True
    assert parse_request({**base, "refine": {"shared_intrinsics": True}})["refine"] == {"shared_intrinsics": True}
    with pytest.raises(RequestError, match="unknown refine option"):
        parse_request({**base, "refine": {"sharde": True}})
    with pytest.raises(RequestError, match="camera model"):
        parse_request({**base, "refine": {"camera_model": "fisheye"}})
    with pytest.raises(RequestError, match="'refine' must be"):
        parse_request({**base, "refine": "yes"})


def test_feature_limit_is_a_hard_limit_keeping_the_coarsest(tmp_path):
    # COLMAP's own limit counts detections (each may give two orientations): a busy photo came back with three
    # times the limit, and matching cost grows with the product of the counts.
    from PIL import Image

    from vggt_blender.refine.features import extract_features

    rng = np.random.default_rng(3)
    noise = rng.integers(0, 255, (60, 80), dtype=np.uint8)
    photo = np.asarray(Image.fromarray(noise).resize((640, 480), Image.BICUBIC))
    Image.fromarray(photo).save(tmp_path / "busy.png")
    full = extract_features(str(tmp_path / "busy.png"), (640, 480), 100000, 3200)
    few = extract_features(str(tmp_path / "busy.png"), (640, 480), 300, 3200)
    assert len(full.xy) > 3 * 300 and len(few.xy) == 300
    # The kept ones are features of the full set (same position and descriptor: one position can carry two
    # orientations), not new detections...
    at: dict = {}
    for k, xy in enumerate(full.xy):
        at.setdefault(tuple(np.round(xy, 3)), []).append(k)
    kept = []
    for xy, desc in zip(few.xy, few.descriptors):
        twins = at.get(tuple(np.round(xy, 3)), [])
        assert twins, xy
        kept.append(min(twins, key=lambda k: np.abs(full.descriptors[k] - desc).max()))
    np.testing.assert_allclose(few.descriptors, full.descriptors[kept], atol=1e-6)
    # ...and the coarsest of them: their scales are the 300 largest of the full set (well above its median).
    np.testing.assert_allclose(np.sort(few.scale), np.sort(full.scale)[-300:], rtol=1e-6)
    assert few.scale.min() > np.median(full.scale)
    # Each keypoint keeps the photo's colour under it (the photo itself is not kept: tracks get their colour
    # from these).
    x, y = few.xy[:, 0].astype(int), few.xy[:, 1].astype(int)
    np.testing.assert_array_equal(few.colors, np.repeat(photo[y, x][:, None], 3, axis=1))
