"""Scene alignment (pure numpy): floor and camera fits on synthetic scenes with a known floor, the matrix checks,
the file's optional `alignment` key, the `align` command and the PLY export."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from vggt_blender import cli
from vggt_blender.errors import ReconstructionFileError
from vggt_blender.geometry import alignment as al
from vggt_blender.geometry.blender_camera import camera_matrix_world, opencv_to_blender_points
from vggt_blender.geometry.cameras import opencv_world_to_blender
from vggt_blender.io.reconstruction import load_reconstruction, save_reconstruction
from tests.helpers import synthetic_reconstruction

from tests import alignment_scenes as scenes

BOXES = [((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0)), ((1.0, 0.5, 0.0), (1.6, 1.2, 0.6))]
SPHERES = [((-1.2, 0.8, 0.4), 0.4)]
WALL = [((-6.0, 3.5, 0.0), (6.0, 4.0, 8.0))]  # 12 x 8: bigger than the floor the cameras see
WALL_CAMERAS = dict(n=6, radius=3.0, height=1.6, target=(0.0, 3.5, 1.5), span_deg=60.0)


def _scene(case: str):
    if case == "tilted_first_camera":  # the first photo pitched 15 deg further down and rolled 12 deg
        E = scenes.arc_cameras(8, 4.0, 2.0, target=(0, 0, 0.3), first_roll=12.0, first_pitch_extra=15.0)
        return scenes.make_scene(E, BOXES, SPHERES)
    if case == "floor_partly_hidden":
        E = scenes.arc_cameras(8, 5.0, 2.5, target=(0, 0, 0.5))
        hide = [((-3, -1, 0), (-1, 3, 1.5)), ((0, -2, 0), (2.5, 0.5, 0.8)), ((1, 1, 0), (3, 3, 2.0))]
        return scenes.make_scene(E, hide, [((-1.5, -2.0, 0.7), 0.7)])
    if case == "wall_bigger_than_floor":
        return scenes.make_scene(scenes.arc_cameras(**WALL_CAMERAS), WALL + [((-0.4, 1.5, 0), (0.4, 2.3, 0.8))])
    if case == "no_floor":
        return scenes.make_scene(scenes.arc_cameras(**WALL_CAMERAS), WALL + [((-0.4, 1.5, 0.5), (0.4, 2.3, 1.3))],
                                 SPHERES, floor=False)
    raise KeyError(case)


def _errors(scene, matrix):
    s, R, _ = al.similarity_parts(matrix)
    up_error = scenes.angle_deg(R @ scene.up_rec, [0.0, 0.0, 1.0])
    floor_z = al.apply_alignment(matrix, scene.floor_points_rec)[:, 2]
    return up_error, float(np.abs(floor_z).max() / (s * scene.size_rec))


@pytest.mark.parametrize("method", ["floor", "auto"])
@pytest.mark.parametrize("case", ["tilted_first_camera", "floor_partly_hidden", "wall_bigger_than_floor"])
def test_floor_is_level_at_zero(case, method):
    scene = _scene(case)
    result = al.align_reconstruction(scene.rec, method)
    up_error, height = _errors(scene, result.matrix)
    print(f"{case} {method}: normal {up_error:.3f} deg from +Z, floor height {100 * height:.3f}% of the scene size "
          f"({result.describe()})")
    assert result.method == "floor"
    assert up_error < 1.0
    assert height < 0.01
    assert al.alignment_problem(result.matrix) is None
    # The origin is on the floor under the first camera: the camera is straight above it.
    c0 = al.apply_alignment(result.matrix, np.zeros(3))  # world origin = first camera centre
    assert np.hypot(c0[0], c0[1]) < 1e-9 and c0[2] > 0


def test_no_floor_auto_takes_the_cameras_and_floor_says_why():
    scene = _scene("no_floor")
    result = al.align_reconstruction(scene.rec, "auto")
    up_error, _ = _errors(scene, result.matrix)
    print(f"no floor auto -> {result.method}: up {up_error:.3f} deg off")
    assert result.method == "cameras" and up_error < 5.0
    with pytest.raises(al.AlignmentError, match="no floor found"):
        al.align_reconstruction(scene.rec, "floor")


def test_cameras_up_on_an_arc_looking_down_beats_the_mean_of_up_vectors():
    E = scenes.arc_cameras(10, 4.0, 3.0, target=(0, 0, 0), span_deg=160.0)  # pitch ~37 deg, no roll
    rng = np.random.default_rng(3)
    # Small pose noise (0.5 deg) as a real estimate would have.
    for e in E:
        w = np.radians(0.5) * rng.standard_normal(3)
        k = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
        e[:, :3] = (np.eye(3) + k) @ e[:, :3]
        u, _, vt = np.linalg.svd(e[:, :3])
        e[:, :3] = u @ vt
    scene = scenes.make_scene(E, BOXES)
    result = al.align_reconstruction(scene.rec, "cameras")
    up_error, _ = _errors(scene, result.matrix)
    mean_up = -scene.rec.extrinsics[:, 1, :3].mean(axis=0)
    mean_error = scenes.angle_deg(mean_up, scene.up_rec)
    print(f"cameras: {up_error:.3f} deg off true up; mean of up vectors {mean_error:.1f} deg off")
    assert up_error < 5.0
    assert mean_error > 10.0  # the naive estimate this method replaces really is biased here


def test_cameras_fallback_for_a_single_camera_is_its_own_up():
    E = scenes.arc_cameras(1, 4.0, 2.0, span_deg=0.0)
    matrix, up = al.cameras_alignment(E)
    np.testing.assert_allclose(up, -E[0, 1, :3], atol=1e-12)
    assert al.alignment_problem(matrix) is None


def test_none_is_exactly_todays_import():
    rec = synthetic_reconstruction()
    result = al.align_reconstruction(rec, "none")
    np.testing.assert_array_equal(result.matrix, al.DEFAULT_ALIGNMENT)
    pts = rec.world_points.reshape(-1, 3)
    for scale in (1.0, 2.7):
        got = al.apply_alignment(result.matrix, pts, scale)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, opencv_world_to_blender(pts, scale))
        np.testing.assert_array_equal(opencv_to_blender_points(pts, scale, alignment=result.matrix),
                                      opencv_world_to_blender(pts, scale))
        for E in rec.extrinsics:
            # Today's formula, written out: world fix @ inv([R|t]) @ diag(1,-1,-1), position scaled.
            fix = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
            want = np.eye(4)
            want[:3, :3] = fix @ E[:, :3].T @ np.diag([1.0, -1.0, -1.0])
            want[:3, 3] = scale * (fix @ (-E[:, :3].T @ E[:, 3]))
            np.testing.assert_array_equal(camera_matrix_world(E, scale, alignment=result.matrix), want)
            np.testing.assert_array_equal(camera_matrix_world(E, scale), want)


def test_camera_matrix_world_follows_a_general_alignment():
    rec = synthetic_reconstruction()
    A = al.make_similarity(al.rotation_between(np.array([0.3, -1.0, 0.2]), np.array([0, 0, 1.0])) @
                           al.DEFAULT_ALIGNMENT[:3, :3], np.array([0.5, -2.0, 1.0]), 3.5)
    for E in rec.extrinsics:
        M = camera_matrix_world(E, 2.0, alignment=A)
        np.testing.assert_allclose(M[:3, :3].T @ M[:3, :3], np.eye(3), atol=1e-12)  # no scale in the camera
        np.testing.assert_allclose(M[:3, 3], al.apply_alignment(A, -E[:, :3].T @ E[:, 3], 2.0), atol=1e-12)


def test_extrinsics_in_scene_project_scene_points_to_the_same_pixels():
    from vggt_blender.geometry.cameras import project_points

    rec = synthetic_reconstruction()
    A = al.make_similarity(al.rotation_between(np.array([0.3, -1.0, 0.2]), np.array([0, 0, 1.0])) @
                           al.DEFAULT_ALIGNMENT[:3, :3], np.array([0.5, -2.0, 1.0]), 3.5)
    world = rec.world_points[0, ::5, ::5].reshape(-1, 3).astype(np.float64)
    E_scene = al.extrinsics_in_scene(rec.extrinsics, A)
    for i in range(rec.num_images):
        want = project_points(world, rec.extrinsics[i], rec.intrinsics[i])
        got = project_points(al.apply_alignment(A, world), E_scene[i], rec.intrinsics[i])
        np.testing.assert_allclose(got, want, atol=1e-8)
        np.testing.assert_allclose(E_scene[i][:, :3] @ E_scene[i][:, :3].T, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("bad,problem", [
    (np.eye(4, dtype=np.float32), "dtype"),
    (np.eye(3), "shape"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "determinant"),
    (np.diag([1.0, 2.0, 1.0, 1.0]), "uniform scale"),
    (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.1, 1]]), "bottom row"),
    (np.full((4, 4), np.nan), "non-finite"),
])
def test_bad_alignment_in_a_file_is_one_line_naming_it(tmp_path, bad, problem):
    rec = synthetic_reconstruction()
    rec.extra["alignment"] = bad
    path = tmp_path / "bad.npz"
    with pytest.raises(ReconstructionFileError, match=problem) as info:
        save_reconstruction(path, rec)
    assert not path.exists()
    np.savez(path, **_raw_arrays(synthetic_reconstruction(), tmp_path), alignment=bad)
    with pytest.raises(ReconstructionFileError, match=problem) as info:
        load_reconstruction(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 'alignment'") and "\n" not in message


def _raw_arrays(rec, tmp_path):
    save_reconstruction(tmp_path / "good.npz", rec)
    with np.load(tmp_path / "good.npz") as z:
        return {k: z[k] for k in z.files}


def test_alignment_round_trips_and_defaults(tmp_path):
    rec = synthetic_reconstruction()
    np.testing.assert_array_equal(rec.alignment, al.DEFAULT_ALIGNMENT)  # no key: today's axis change
    A = al.make_similarity(al.DEFAULT_ALIGNMENT[:3, :3], np.array([1.0, 2.0, 3.0]), 0.25)
    rec.alignment = A
    back = load_reconstruction(save_reconstruction(tmp_path / "a.npz", rec))
    assert back.extra["alignment"].dtype == np.float64
    np.testing.assert_array_equal(back.alignment, A)


def test_align_command_writes_an_upright_file_and_ply_follows(tmp_path, capsys):
    scene = _scene("floor_partly_hidden")
    src = save_reconstruction(tmp_path / "scene.npz", scene.rec)
    out = tmp_path / "aligned.npz"
    assert cli.main(["align", str(src), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"wrote {out}: floor:"), err
    aligned = load_reconstruction(out)
    up_error, height = _errors(scene, aligned.alignment)
    assert up_error < 1.0 and height < 0.01
    np.testing.assert_array_equal(aligned.depth, scene.rec.depth)  # only the alignment changed

    ply = tmp_path / "points.ply"
    assert cli.main(["export-ply", str(out), str(ply), "--min-confidence", "2"]) == 0
    header, body = ply.read_bytes().split(b"end_header\n", 1)
    rows = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3), ("conf", "<f4")])
    want = al.apply_alignment(aligned.alignment, aligned.world_points[aligned.depth_conf >= 2])
    np.testing.assert_allclose(rows["xyz"], want, atol=1e-5)
    assert b"alignment" in header

    # --up none gives the default back; a floor-less scene with --up floor is one error line, nothing written.
    assert cli.main(["align", str(out), "-o", str(tmp_path / "none.npz"), "--up", "none"]) == 0
    np.testing.assert_array_equal(load_reconstruction(tmp_path / "none.npz").alignment, al.DEFAULT_ALIGNMENT)
    capsys.readouterr()
    src2 = save_reconstruction(tmp_path / "nofloor.npz", _scene("no_floor").rec)
    assert cli.main(["align", str(src2), "-o", str(tmp_path / "x.npz"), "--up", "floor"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no floor found" in err[0] and str(src2) in err[0]
    assert not (tmp_path / "x.npz").exists()


def test_scene_space_edits():
    # Level: a tilted plane through (0, 0, -1) becomes z = 0, normal +Z.
    n = np.array([0.2, -0.1, 1.0])
    n /= np.linalg.norm(n)
    D = al.level_transform(n, np.array([0.0, 0.0, -1.0]))
    pts = np.array([[0, 0, -1.0]]) + np.cross(n, [[1, 0, 0], [0, 1, 0], [1, 1, 0]]) * 3
    np.testing.assert_allclose(al.apply_alignment(D, pts)[:, 2], 0.0, atol=1e-12)
    np.testing.assert_allclose(D[:3, :3] @ n, [0, 0, 1], atol=1e-12)
    O = al.origin_transform(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(al.apply_alignment(O, np.array([1.0, 2.0, 3.0])), 0.0)
    S = al.scale_transform(np.array([0.0, 0, 0]), np.array([0.0, 0.5, 0]), 2.0)
    assert al.similarity_parts(S)[0] == pytest.approx(4.0)
    with pytest.raises(al.AlignmentError):
        al.scale_transform(np.zeros(3), np.zeros(3), 1.0)
    with pytest.raises(al.AlignmentError):
        al.fit_floor_in_scene(np.array([[0, 0, 0], [1, 0, 0.0], [2, 0, 0.0]]))


@pytest.mark.parametrize("method", ["auto", "floor"])
def test_reconstruct_align_stores_it_or_warns(tmp_path, monkeypatch, capsys, method):
    import json

    from vggt_blender.engine import inference

    scene = _scene("no_floor")

    def fake_reconstruct(_inputs, output, **_kwargs):
        rec = scene.rec
        rec.provenance = json.dumps({"device": "cpu", "timings": {"inference": 1.0}})
        save_reconstruction(output, rec)
        rec.provenance = json.dumps({"device": "cpu", "timings": {"inference": 1.0, "writing": 0.5}})  # in memory
        return rec

    monkeypatch.setattr(inference, "reconstruct_to_file", fake_reconstruct)
    out = tmp_path / "s.npz"
    assert cli.main(["reconstruct", str(tmp_path), "-o", str(out), "--align", method, "-q"]) == 0
    err = capsys.readouterr().err
    rec = load_reconstruction(out)
    if method == "auto":  # no floor: the cameras' up, stored
        assert "aligned: cameras:" in err
        assert "alignment" in rec.extra and al.alignment_problem(rec.alignment) is None
        assert rec.provenance_dict["timings"] == {"inference": 1.0}  # the file as first written, plus alignment
    else:  # an explicit floor that is not there: a warning, the good reconstruction stays as it was
        assert f"warning: {out}: no floor found" in err and "keeps the plain axis change" in err
        assert "alignment" not in rec.extra
