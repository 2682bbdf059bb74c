"""COLMAP export: pycolmap reads the model back and every camera projects like the file's own camera."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pycolmap = pytest.importorskip("pycolmap")

from vggt_blender.cli import main  # noqa: E402
from vggt_blender.io.colmap import ColmapExportError, export_colmap, project  # noqa: E402
from tests.helpers import synthetic_reconstruction
from vggt_blender.io.reconstruction import save_reconstruction  # noqa: E402


def _with_photos(tmp_path: Path, n: int = 3):
    from PIL import Image

    rec = synthetic_reconstruction(n)
    paths = []
    for i in range(n):
        p = tmp_path / "photos" / f"synthetic_{i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rec.colors[i]).save(p)
        paths.append(str(p))
    rec.display_paths = paths
    rec.image_paths = paths
    return rec


def _distorted(rec, model: str):
    n = rec.num_images
    if model == "SIMPLE_RADIAL":
        rec.extra["distortion_model"] = np.array(model)
        rec.extra["distortion"] = np.linspace(-0.08, 0.05, n)[:, None]
    elif model == "OPENCV":
        rec.extra["distortion_model"] = np.array(model)
        rec.extra["distortion"] = np.stack([np.linspace(-0.1, 0.1, n), np.full(n, 0.02), np.full(n, 1e-3),
                                            np.full(n, -2e-3)], axis=1)
    return rec


def _probe_points(rec) -> np.ndarray:
    rng = np.random.default_rng(0)
    pts = rec.world_points.reshape(-1, 3)
    return pts[rng.choice(len(pts), 300, replace=False)].astype(np.float64) + rng.normal(0, 0.05, (300, 3))


@pytest.mark.parametrize("model", ["PINHOLE", "SIMPLE_RADIAL", "OPENCV"])
@pytest.mark.parametrize("text", [False, True])
def test_model_reads_back_and_projects_like_the_file(tmp_path, model, text):
    rec = _distorted(_with_photos(tmp_path), model)
    export_colmap(rec, tmp_path / "out", text=text)
    suffix = "txt" if text else "bin"
    assert sorted(p.name for p in (tmp_path / "out" / "sparse" / "0").iterdir()) == [
        f"cameras.{suffix}", f"images.{suffix}", f"points3D.{suffix}"]
    colmap = pycolmap.Reconstruction(str(tmp_path / "out" / "sparse" / "0"))
    assert colmap.num_images() == rec.num_images
    probe = _probe_points(rec)
    for img in colmap.images.values():
        i = rec.image_names.index(Path(img.name).stem)
        cam = colmap.cameras[img.camera_id]
        assert cam.model.name == model and (cam.width, cam.height) == tuple(rec.original_sizes[i])
        m = np.asarray(img.cam_from_world().matrix())
        uv = np.asarray(cam.img_from_cam(probe @ m[:, :3].T + m[:, 3]))
        assert np.abs(uv - project(rec, i, probe)).max() <= 0.01
    if model == "PINHOLE":
        # Depth points sit exactly on their observations (float32 world points: far below a pixel). With a
        # lens model they do not: the depth derivation unprojects through the pinhole part only.
        assert colmap.compute_mean_reprojection_error() < 1e-3
    assert colmap.num_points3D() > 1000
    for pid, point in list(colmap.points3D.items())[:500]:
        assert point.track.length() >= 1
        for el in point.track.elements:
            assert colmap.images[el.image_id].points2D[el.point2D_idx].point3D_id == pid


def test_depth_points_carry_observations_in_other_views(tmp_path):
    rec = _with_photos(tmp_path, 4)
    model = export_colmap(rec, tmp_path / "out")
    lengths = np.array([len(t) for t in model.tracks])
    assert lengths.max() >= 2 and (lengths >= 2).sum() > 50
    # Confidence filter: nothing below the threshold reaches the model.
    assert len(model.xyz) <= int((rec.depth_conf >= 1.5).sum())


def test_photos_are_copied_under_unique_names(tmp_path):
    rec = _with_photos(tmp_path)
    rec.image_names = ["same", "same", "other"]
    model = export_colmap(rec, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert names == sorted(model.names) and len(set(names)) == 3
    for src, name in zip(rec.display_paths, model.names):
        assert (tmp_path / "out" / "images" / name).read_bytes() == Path(src).read_bytes()


def test_missing_photo_is_one_clear_error_and_writes_nothing(tmp_path):
    rec = _with_photos(tmp_path)
    Path(rec.display_paths[1]).unlink()
    with pytest.raises(ColmapExportError, match="synthetic_01.png: photo not found"):
        export_colmap(rec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_is_in_the_files_opencv_world_whatever_its_alignment(tmp_path):
    """The scene alignment (Z-up, with a scale) is Blender's and the PLY export's: COLMAP gets the stored cameras."""
    from vggt_blender.geometry.alignment import DEFAULT_ALIGNMENT

    rec = _with_photos(tmp_path)
    plain = export_colmap(rec, tmp_path / "plain", copy_images=False)
    turn = np.eye(4)
    turn[:3, :3] = 2.5 * np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    turn[:3, 3] = (1.0, -2.0, 0.5)
    rec.alignment = turn @ DEFAULT_ALIGNMENT
    aligned = export_colmap(rec, tmp_path / "aligned", copy_images=False)
    np.testing.assert_array_equal(aligned.qvec, plain.qvec)
    np.testing.assert_array_equal(aligned.tvec, plain.tvec)
    np.testing.assert_array_equal(aligned.xyz, plain.xyz)
    np.testing.assert_array_equal(aligned.tvec, rec.extrinsics[:, :, 3])


def test_command_line(tmp_path, capsys):
    rec = _with_photos(tmp_path)
    save_reconstruction(tmp_path / "scene.npz", rec)
    assert main(["export-colmap", str(tmp_path / "scene.npz"), str(tmp_path / "out"), "--text"]) == 0
    assert (tmp_path / "out" / "sparse" / "0" / "images.txt").is_file()
    err = capsys.readouterr().err
    assert "3 images" in err and "OpenCV world" in err
    assert main(["export-colmap", str(tmp_path / "missing.npz"), str(tmp_path / "out2")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.npz" in err
