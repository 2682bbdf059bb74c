"""`python -m vggt_blender`: real subprocesses on real files with a tiny checkpoint."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import nearest_rows, TINY_CONFIG, check_consistent, write_photos, write_tiny_checkpoint
from vggt_blender import cli
from vggt_blender.io.reconstruction import load_reconstruction

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], tmp: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # no checkpoint is found by accident
    env["OMP_NUM_THREADS"] = "1"
    env.pop("VGGT_WEIGHTS", None)
    return subprocess.run([sys.executable, "-m", "vggt_blender", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tmp)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cli")
    photos = write_photos(tmp / "photos")
    (tmp / "photos" / "notes.txt").write_text("not an image")
    checkpoint = write_tiny_checkpoint(tmp)
    out = tmp / "scene.npz"
    result = run_cli(["reconstruct", str(tmp / "photos"), "-o", str(out), "--weights", str(checkpoint),
                      "--config", str(TINY_CONFIG), "--device", "cpu"], tmp)
    return {"tmp": tmp, "photos": photos, "checkpoint": checkpoint, "out": out, "result": result}


def test_reconstruct_writes_a_consistent_file(tiny):
    result = tiny["result"]
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "warning: skipped notes.txt: not an image file" in lines or any(
        line.startswith("warning: skipped notes.txt") for line in lines)
    for stage in ("preprocessing", "loading", "inference", "writing"):
        assert any(line.startswith(f"{stage}: done in") for line in lines), result.stderr
    assert lines[-1].startswith(f"wrote {tiny['out']}: 3 image(s) at 518x392, 609,168 candidate points")
    rec = load_reconstruction(tiny["out"])
    photos = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in tiny["photos"]}
    check_consistent(rec, photos)
    prov = rec.provenance_dict
    assert prov["checkpoint"] == "model.pt" and len(prov["checkpoint_sha256"]) == 64
    assert prov["precision"] == "fp32" and prov["mode"] == "crop"
    assert set(prov["timings"]) == {"preprocessing", "loading", "inference"}


def test_info_prints_the_summary(tiny):
    result = run_cli(["info", str(tiny["out"])], tiny["tmp"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 images, model input 518x392")
    assert "view_0" in result.stdout and "precision: fp32" in result.stdout

    broken = tiny["tmp"] / "broken.npz"
    broken.write_bytes(b"not a zip")
    result = run_cli(["info", str(broken)], tiny["tmp"])
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {broken}: not a reconstruction file")
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_explains_how_to_get_one(tmp_path):
    write_photos(tmp_path / "photos", count=1)
    out = tmp_path / "scene.npz"
    result = run_cli(["reconstruct", str(tmp_path / "photos"), "-o", str(out), "-q"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no VGGT weights found")
    assert "python -m vggt_blender download" in result.stderr and "huggingface.co" in result.stderr
    assert not out.exists()


def test_bad_image_is_named(tiny, tmp_path):
    photos = write_photos(tmp_path / "photos", count=2)
    bad = tmp_path / "photos" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    out = tmp_path / "scene.npz"
    result = run_cli(["reconstruct", *map(str, photos), str(bad), "-o", str(out), "-q",
                      "--weights", str(tiny["checkpoint"]), "--config", str(TINY_CONFIG)], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and str(bad) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.npz"))


def test_bad_arguments(tmp_path):
    result = run_cli(["reconstruct", "x.jpg", "--precision", "fp8"], tmp_path)
    assert result.returncode == 2 and "invalid choice: 'fp8'" in result.stderr
    result = run_cli(["reconstruct", str(tmp_path), "-q"], tmp_path)
    assert result.returncode == 1 and result.stderr == "error: give an output file with -o scene.npz " \
                                                         "(and/or --blend scene.blend)\n"


def test_scene_flags_map_onto_scene_options():
    args = cli.build_parser().parse_args(
        ["reconstruct", "a.jpg", "--blend", "s.blend", "--no-cameras", "--no-planes", "--plane-step", "8",
         "--max-points", "5000", "--min-confidence", "2.5", "--scale", "3", "--camera-mode", "animated",
         "--point-source", "point_map"])
    options = cli.scene_options_from_args(args)
    assert (options.create_cameras, options.create_point_cloud, options.create_depth_planes) == (False, True, False)
    assert (options.plane_step, options.max_points, options.min_confidence, options.scale) == (8, 5000, 2.5, 3.0)
    assert (options.camera_mode, options.point_source) == ("animated", "point_map")
    defaults = cli.scene_options_from_args(cli.build_parser().parse_args(["reconstruct", "a.jpg"]))
    assert defaults == type(options)()


def test_ctrl_c_while_writing_exits_130_and_keeps_the_earlier_file(tiny, tmp_path, monkeypatch, capsys):
    # A real run interrupted half-way through writing its file: the earlier good result at the same path must
    # survive byte for byte, and no temporary file may be left beside it.
    from vggt_blender.engine import inference
    from vggt_blender.io import reconstruction

    out = tmp_path / "s.npz"
    earlier = tiny["out"].read_bytes()
    out.write_bytes(earlier)
    real_write = np.lib.format.write_array
    written = []

    def interrupted_write(*args, **kwargs):
        if len(written) == 3:  # part of the archive reaches the disk
            raise KeyboardInterrupt
        written.append(real_write(*args, **kwargs))

    monkeypatch.setattr(reconstruction.np.lib.format, "write_array", interrupted_write)
    try:
        code = cli.main(["reconstruct", *map(str, tiny["photos"]), "-o", str(out), "-q", "--weights",
                         str(tiny["checkpoint"]), "--config", str(TINY_CONFIG), "--device", "cpu"])
    finally:
        inference.clear_model_cache()
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]
    assert out.read_bytes() == earlier


@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy is not installed")
def test_blend_output(tiny, tmp_path):
    import bpy
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    blend = tmp_path / "scene.blend"
    result = run_cli(["reconstruct", *map(str, tiny["photos"]), "--blend", str(blend), "-q",
                      "--weights", str(tiny["checkpoint"]), "--config", str(TINY_CONFIG), "--no-planes",
                      "--max-points", "2000", "--scale", "2"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path / 'scene.npz'} and {blend}:" in result.stderr
    # Which Blender opens it (bpy 5.0 writes it: 4.5 LTS and newer), and the .npz route for 4.2.
    assert "scene.blend was saved by Blender 5.0 and opens in Blender 4.5 or newer" in result.stderr
    assert "VGGT Reconstruction on scene.npz" in result.stderr
    rec = load_reconstruction(tmp_path / "scene.npz")  # the reconstruction goes beside the .blend
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    try:
        objects = {kind: [o for o in bpy.data.objects if o.get("vggt_kind") == kind]
                   for kind in ("camera", "point_cloud", "depth_plane")}
        assert len(objects["camera"]) == 3 and len(objects["point_cloud"]) == 1 and not objects["depth_plane"]
        # The points: exactly 2000 distinct valid points of the file, in the scene frame: the file's alignment
        # (reconstruct aligns by default), a rotation, uniform scale and shift, applied here by hand, times 2.
        mesh = objects["point_cloud"][0].data
        got = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", got)
        got = got.reshape(-1, 3)
        A = rec.alignment
        wp = rec.world_points[rec.valid_mask].astype(np.float64)
        scene_points = 2.0 * (wp @ A[:3, :3].T + A[:3, 3])
        nearest = nearest_rows(scene_points, got, 1e-4 * max(1.0, np.abs(scene_points).max()))
        assert len(got) == 2000 and len(set(nearest.tolist())) == 2000
        # Each camera sees the world point of a model pixel at the photo pixel the pixel map gives for it.
        scene = bpy.context.scene
        for cam in objects["camera"]:
            i = int(cam["vggt_view_index"])
            scene.camera = cam
            scene.render.resolution_x, scene.render.resolution_y = (int(v) for v in rec.original_sizes[i])
            scene.render.resolution_percentage = 100
            sx, sy, ox, oy = rec.pixel_map[i]
            for v, u in ((10, 20), (200, 300), (380, 500)):
                cv = rec.world_points[i, v, u].astype(np.float64)
                ndc = world_to_camera_view(scene, cam, Vector(2.0 * (A[:3, :3] @ cv + A[:3, 3])))
                w, h = rec.original_sizes[i]
                np.testing.assert_allclose([ndc.x * w, (1 - ndc.y) * h],
                                           [sx * (u + 0.5) + ox, sy * (v + 0.5) + oy], atol=0.01)
    finally:
        bpy.ops.wm.read_homefile(use_empty=True)


def test_download_of_a_gated_checkpoint_needs_a_token(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    code = cli.main(["download", "--checkpoint", "vggt-1b-commercial", "--dest", str(tmp_path), "-q"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert "VGGT License v1" in err[0]  # the licence is shown first
    assert err[-1].startswith("error: checkpoint vggt-1b-commercial is gated")
    assert list(tmp_path.iterdir()) == []


def test_export_ply(tiny, tmp_path):
    rec = load_reconstruction(tiny["out"])
    conf = rec.depth_conf[rec.valid_mask]
    threshold = float(np.quantile(conf, 0.6))  # drops about 60 % of the points
    expected = int((conf >= threshold).sum())  # counted here, not by the exporter's own selection
    assert 0 < expected < 0.5 * conf.size
    ply = tmp_path / "points.ply"
    result = run_cli(["export-ply", str(tiny["out"]), str(ply), "--min-confidence", repr(threshold)], tiny["tmp"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"wrote {ply}: {expected:,} points\n"
    data = ply.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    assert f"element vertex {expected}".encode() in header and b"property uchar red" in header
    rows = np.frombuffer(body, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3), ("conf", "<f4")])
    assert len(rows) == expected and rows["conf"].min() >= threshold
    keep = rec.valid_mask & (rec.depth_conf >= threshold)
    # Exactly the kept points in pixel order, in the scene frame (the file's alignment applied), each with its
    # colour and confidence.
    assert "alignment" in rec.extra  # reconstruct --align auto (the default) stored one
    from vggt_blender.geometry.alignment import apply_alignment

    np.testing.assert_allclose(rows["xyz"], apply_alignment(rec.alignment, rec.world_points[keep]), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(rows["rgb"], rec.colors[keep])
    np.testing.assert_array_equal(rows["conf"], rec.depth_conf[keep])


def test_export_ply_from_the_point_map_with_a_point_limit(tiny, tmp_path):
    ply = tmp_path / "map.ply"
    result = run_cli(["export-ply", str(tiny["out"]), str(ply), "--point-source", "point_map",
                      "--max-points", "1000"], tiny["tmp"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"wrote {ply}: 1,000 points\n"
    rows = np.frombuffer(ply.read_bytes().split(b"end_header\n", 1)[1],
                         dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3), ("conf", "<f4")])
    rec = load_reconstruction(tiny["out"])
    assert not np.allclose(rec.point_map, rec.world_points)  # the two sources differ, so this test can tell
    from vggt_blender.geometry.alignment import apply_alignment

    source = apply_alignment(rec.alignment, rec.point_map[rec.valid_mask])
    # Each exported point is a point-map point (the nearest, within float32 rounding).
    picked = nearest_rows(source, rows["xyz"], 1e-5 * max(1.0, np.abs(source).max())).tolist()
    assert len(set(picked)) == 1000 and np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(rows["conf"], rec.point_map_conf[rec.valid_mask][picked])
    np.testing.assert_array_equal(rows["rgb"], rec.colors[rec.valid_mask][picked])


def _no_inference(*_args, **_kwargs):
    raise AssertionError("inference must not start")


def test_blend_without_bpy_fails_before_inference(tmp_path, monkeypatch, capsys):
    from vggt_blender.engine import inference

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bpy" else real_find_spec(name, *a))
    monkeypatch.setattr(inference, "reconstruct_to_file", _no_inference)
    code = cli.main(["reconstruct", str(tmp_path), "--blend", str(tmp_path / "s.blend"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: --blend needs the bpy module") and str(tmp_path / "s.blend") in err[0]


@pytest.mark.parametrize("explicit_npz", [False, True])
def test_failed_blend_step_removes_only_a_byproduct_npz(tmp_path, monkeypatch, capsys, explicit_npz):
    import types

    from vggt_blender.engine import inference
    from vggt_blender.errors import RequestError

    def fake_reconstruct(_inputs, output, **_kwargs):
        Path(output).write_bytes(b"npz")
        return None

    def broken_blend(*_args):
        raise RequestError("blend step failed")

    monkeypatch.setattr(inference, "reconstruct_to_file", fake_reconstruct)
    monkeypatch.setitem(sys.modules, "_vggt_blender_extension.scene.blend_file", types.SimpleNamespace(write_blend=broken_blend))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    npz = tmp_path / ("mine.npz" if explicit_npz else "s.npz")
    args = ["reconstruct", str(tmp_path), "--blend", str(tmp_path / "s.blend"), "-q"]
    code = cli.main(args + (["-o", str(npz)] if explicit_npz else []))
    err = capsys.readouterr().err
    assert code == 1 and err.strip().endswith("error: blend step failed")
    if explicit_npz:
        assert npz.is_file() and f"{npz} was written and stays" in err
    else:
        assert not npz.exists() and f"removed {npz}" in err


def test_os_error_is_one_readable_line(tmp_path, monkeypatch, capsys):
    def disk_full(_args):
        raise OSError(28, "No space left on device", str(tmp_path / "points.ply"))

    monkeypatch.setitem(cli.COMMANDS, "info", disk_full)
    assert cli.main(["info", "x.npz"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'points.ply'}: No space left on device\n"


def test_download_does_not_paper_over_a_bad_weights_variable(tmp_path, monkeypatch, capsys):
    from vggt_blender.engine import inference
    from vggt_blender.weights import download

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VGGT_WEIGHTS", str(tmp_path / "typo.pt"))
    monkeypatch.setattr(download, "download_named_checkpoint", _no_inference)
    monkeypatch.setattr(inference, "reconstruct_to_file", _no_inference)
    code = cli.main(["reconstruct", str(tmp_path), "-o", str(tmp_path / "s.npz"), "--download", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "typo.pt" in err and "$VGGT_WEIGHTS" in err


def test_progress_lines_fit_the_terminal(monkeypatch):
    import io

    from vggt_blender.progress import StageProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "40")
    stream = Tty()
    bar = StageProgress(stream)
    bar("inference", 0.5, "a long message " * 10)
    bar("inference", 1.0, "short")
    bar.finish()
    drawn = [part for part in stream.getvalue().replace("\n", "\r").split("\r") if part]
    assert drawn and all(len(part) == 39 for part in drawn)  # cut and padded to width - 1


def _full_disk_at(limit: int):
    """preexec_fn: files may grow to `limit` bytes, then writes fail with EFBIG as on a full disk."""
    import resource
    import signal

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited: the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_files


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_while_writing_is_one_line(tiny, tmp_path):
    """Issue 9 §2.9: the one-line error and nothing after it (no "Exception ignored in ZipFile.__del__")."""
    out = tmp_path / "s.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    env.pop("VGGT_WEIGHTS", None)
    result = subprocess.run([sys.executable, "-m", "vggt_blender", "reconstruct", *map(str, tiny["photos"]),
                             "-o", str(out), "-q", "--weights", str(tiny["checkpoint"]), "--config",
                             str(TINY_CONFIG), "--device", "cpu"], capture_output=True, text=True, env=env,
                            timeout=180, cwd=tmp_path, preexec_fn=_full_disk_at(1 << 20))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: cannot write the file"), result.stderr
    assert "File too large" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_while_writing_clean_up_like_ctrl_c(tiny, tmp_path, signame, code):
    """Issue 9 §2.8: the run's temporary folder of upright copies is removed and one line said."""
    import signal
    import time

    from tests.test_inference import _rotated_jpeg

    photo = _rotated_jpeg(tmp_path / "rotated.jpg", 3)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests' / 'worker_hooks'}{os.pathsep}{ROOT}",
               XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1", VGGT_TEST_DELAY="4")
    env.pop("VGGT_WEIGHTS", None)
    proc = subprocess.Popen([sys.executable, "-m", "vggt_blender", "reconstruct", str(photo), *map(str, tiny["photos"]),
                             "-o", str(out_dir / "s.npz"), "-q", "--weights", str(tiny["checkpoint"]), "--config",
                             str(TINY_CONFIG), "--device", "cpu"], stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    try:
        images = out_dir / "s_images"
        deadline = time.monotonic() + 300  # every stage sleeps 4 s after its start; the copies' folder is made
        while not (images.is_dir() and any(images.iterdir())):  # before the writing stage's sleep
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(getattr(signal, signame))
        stderr = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    said = [line for line in stderr.splitlines() if line and not line.startswith("warning: ")]
    assert said == [f"terminated by {signame}"], stderr
    assert list(out_dir.iterdir()) == []


def _implausible_reconstruction():
    from tests.helpers import synthetic_reconstruction

    rec = synthetic_reconstruction(num_images=2)
    K = np.array(rec.intrinsics_model)
    K[1, 1, 1] *= 1e7  # fy = 10 million pixels: fx/fy no camera has (random weights gave fy = 9.6e8)
    rec.intrinsics_model = K
    return rec


def test_summary_says_candidate_points_the_blend_cap_and_lens_warnings(tmp_path, monkeypatch, capsys):
    """Issue 9 §3: both counts (the file's candidates, the .blend's Max Points) and the implausible cameras."""
    import types

    from vggt_blender.engine import inference

    rec = _implausible_reconstruction()
    candidates = int(np.asarray(rec.valid_mask).sum())
    monkeypatch.setattr(inference, "reconstruct_to_file", lambda *_a, **_k: rec)
    monkeypatch.setitem(sys.modules, "_vggt_blender_extension.scene.blend_file", types.SimpleNamespace(
        write_blend=lambda *_a: None, blend_compatibility_note=lambda *_a: "note"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    code = cli.main(["reconstruct", str(tmp_path), "--blend", str(tmp_path / "s.blend"), "-q", "--align", "none",
                     "--max-points", "100"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 0, err
    warnings = [line for line in err if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {rec.image_names[1]}: implausible camera")
    assert f"{candidates:,} candidate points, 100 in the .blend's point cloud (Max Points 100)" in err[-2]
    assert err.index(warnings[0]) < len(err) - 2  # said before the summary line

    from vggt_blender.io.summary import summarize

    lines = summarize(rec).splitlines()
    assert lines[-1] == warnings[0]


def test_points_text_without_a_cap_or_a_point_cloud():
    from vggt_blender.options import SceneOptions

    assert cli._points_text(1234) == "1,234 candidate points"
    assert cli._points_text(1234, SceneOptions.from_dict({"max_points": 5000})) == \
        "1,234 candidate points, 1,234 in the .blend's point cloud (Max Points 5,000)"
    assert cli._points_text(1234, SceneOptions.from_dict({"create_point_cloud": False})) == \
        "1,234 candidate points (no point cloud in the .blend)"


def test_compress_writes_a_smaller_file_with_the_same_arrays(tiny, tmp_path):
    """Issue 9 §3: --compress (zip deflate, lossless) survives the alignment step's rewrite of the file."""
    import zipfile

    out = tmp_path / "small.npz"
    result = run_cli(["reconstruct", *map(str, tiny["photos"]), "-o", str(out), "-q", "--compress", "--weights",
                      str(tiny["checkpoint"]), "--config", str(TINY_CONFIG), "--device", "cpu"], tmp_path)
    assert result.returncode == 0, result.stderr
    members = zipfile.ZipFile(out).infolist()
    assert {m.compress_type for m in members} == {zipfile.ZIP_DEFLATED}
    assert out.stat().st_size < 0.9 * tiny["out"].stat().st_size
    small, plain = load_reconstruction(out), load_reconstruction(tiny["out"])
    for name in ("depth", "depth_conf", "point_map", "colors", "extrinsics", "intrinsics_model"):
        np.testing.assert_array_equal(getattr(small, name), getattr(plain, name))
